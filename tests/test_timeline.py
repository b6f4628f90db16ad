"""A call's timeline: what happened in it, in plain words, from its messages and SDPs.

Hand-made dialogs for each kind of event (every message written here, field by field), and the
samples made by SIPp (hold, DTMF, T.38)."""
import pytest

import sipflow
from sipflow.analysis.analyzer import Analyzer
from sipflow.analysis.timeline import timeline

from conftest import SAMPLES
from pcaptools import eth_ip, ipv4, udp

A, B = "192.0.2.1", "192.0.2.2"


class Dialog:
    """A caller at A:5060 and a callee at B:5060; messages fed to an Analyzer in order."""

    def __init__(self):
        self.an, self.t, self.frame, self.cseq = Analyzer(), 100.0, 0, {A: 0, B: 0}

    def send(self, src, text, body="", ctype="application/sdp"):
        self.t += 0.1
        self.frame += 1
        headers = text.strip("\n").replace("\n", "\r\n")
        if body:
            headers += f"\r\nContent-Type: {ctype}"
        data = f"{headers}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}".encode()
        dst = B if src == A else A
        self.an.feed(self.t, 0, self.frame, 1, eth_ip(ipv4(src, dst, 17, udp(src, dst, 5060, 5060, data))))
        return self.frame

    def request(self, src, method, body="", ctype="application/sdp", extra="", to_tag=True):
        self.cseq[src] += 1
        frm, to = ("<sip:a@x>;tag=ca", "<sip:b@y>" + (";tag=cb" if to_tag else "")) if src == A else \
            ("<sip:b@y>;tag=cb", "<sip:a@x>;tag=ca")
        n = self.cseq[src]
        return self.send(src, f"{method} sip:{'b@y' if src == A else 'a@x'} SIP/2.0\nVia: SIP/2.0/UDP {src}:5060;"
                              f"branch=z9hG4bK{method}{n}{src[-1]}\nFrom: {frm}\nTo: {to}\nCall-ID: tl@x\n"
                              f"CSeq: {n} {method}\n{extra}".rstrip("\n"), body, ctype)

    def response(self, src, status, reason, method, body="", to_tag=True):
        req = B if src == A else A
        n = self.cseq[req]
        frm, to = ("<sip:a@x>;tag=ca", "<sip:b@y>" + (";tag=cb" if to_tag else "")) if req == A else \
            ("<sip:b@y>;tag=cb", "<sip:a@x>;tag=ca")
        return self.send(src, f"SIP/2.0 {status} {reason}\nVia: SIP/2.0/UDP {req}:5060;branch=z9hG4bK{method}{n}"
                              f"{req[-1]}\nFrom: {frm}\nTo: {to}\nCall-ID: tl@x\nCSeq: {n} {method}", body)

    def events(self):
        (call,) = self.an.result().calls
        return [(e.frame, e.kind, e.by, e.text) for e in timeline(call)]


def sdp(ip, port, direction="sendrecv", pts=(0,), version=1):
    names = {0: "PCMU", 8: "PCMA", 101: "telephone-event"}
    lines = ["v=0", f"o=- 1 {version} IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}"]
    lines += [f"a=rtpmap:{pt} {names[pt]}/8000" for pt in pts] + [f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def test_early_media_hold_inactive_resume_codec_change_message_and_hangup():
    d = Dialog()
    d.request(A, "INVITE", sdp(A, 4000, pts=(0, 8)), to_tag=False)
    ring = d.response(B, 180, "Ringing", "INVITE")
    early = d.response(B, 183, "Session Progress", "INVITE", sdp(B, 5000))
    ok = d.response(B, 200, "OK", "INVITE", sdp(B, 5000))
    d.request(A, "ACK")
    hold = d.request(A, "INVITE", sdp(A, 4000, "sendonly", version=2))
    d.response(B, 200, "OK", "INVITE", sdp(B, 5000, "recvonly", version=2))
    deeper = d.request(A, "INVITE", sdp(A, 4000, "inactive", version=3))       # still held: now both ways
    d.response(B, 200, "OK", "INVITE", sdp(B, 5000, "inactive", version=3))
    resume = d.request(A, "INVITE", sdp(A, 4000, pts=(8,), version=4))          # and PCMA from now on
    d.response(B, 200, "OK", "INVITE", sdp(B, 5000, pts=(8,), version=4))
    note = d.request(B, "MESSAGE", "Call me back when you can, the line is terrible here", "text/plain")
    d.response(A, 200, "OK", "MESSAGE")
    bye = d.request(B, "BYE")
    d.response(A, 200, "OK", "BYE")
    got = d.events()
    kinds = [(f, k, by) for f, k, by, _ in got]
    assert (ring, "ringing", "callee") in kinds and (early, "early_media", "callee") in kinds
    assert (ok, "answered", "callee") in kinds
    assert (hold, "hold", "caller") in kinds and (deeper, "hold", "caller") in kinds
    assert (resume, "resume", "caller") in kinds and (bye, "hangup", "callee") in kinds
    text = dict(((f, k), t) for f, k, _, t in got)
    assert "sendonly" in text[(hold, "hold")] and "inactive" in text[(deeper, "hold")]
    assert text[(resume, "codec")] == "codec PCMU -> PCMA (INVITE from the caller)"
    assert text[(note, "message")] == "MESSAGE: 'Call me back when you can, the line is terrible here'"
    assert [f for f, *_ in got] == sorted(f for f, *_ in got)


def test_a_blind_transfer_reads_as_refer_accept_progress_and_result():
    d = Dialog()
    d.request(A, "INVITE", sdp(A, 4000), to_tag=False)
    d.response(B, 200, "OK", "INVITE", sdp(B, 5000))
    d.request(A, "ACK")
    refer = d.request(B, "REFER", extra="Refer-To: <sip:carol@192.0.2.3>\nReferred-By: <sip:b@y>")
    d.response(A, 100, "Trying", "REFER")                  # provisional: not an answer to the transfer
    accepted = d.response(A, 202, "Accepted", "REFER")
    trying = d.request(A, "NOTIFY", "SIP/2.0 100 Trying\r\n", "message/sipfrag;version=2.0",
                       extra="Event: refer\nSubscription-State: active;expires=60")
    d.response(B, 200, "OK", "NOTIFY")
    done = d.request(A, "NOTIFY", "SIP/2.0 200 OK\r\n", "message/sipfrag;version=2.0",
                     extra="Event: refer\nSubscription-State: terminated;reason=noresource")
    d.response(B, 200, "OK", "NOTIFY")
    got = {(f, k): (by, t) for f, k, by, t in d.events()}
    assert got[(refer, "transfer")] == ("callee", "transfer to <sip:carol@192.0.2.3> (REFER from the callee)")
    assert got[(accepted, "transfer_accepted")][1] == "transfer accepted (202 Accepted)"
    assert got[(trying, "transfer_progress")][1] == "transfer progress: SIP/2.0 100 Trying"
    assert got[(done, "transfer_result")] == ("caller", "transfer result: SIP/2.0 200 OK")
    assert sum(k == "transfer_accepted" for _, k in got) == 1


def test_samples_tell_their_story():
    hold = sipflow.analyze(str(SAMPLES / "reinvite-hold.pcap"))
    assert [e.kind for e in timeline(hold.calls[0])] == ["ringing", "answered", "hold", "resume", "hangup"]
    av = sipflow.analyze(str(SAMPLES / "call-av-dtmf.pcap"))
    assert [e.text.split(" (")[0] for e in timeline(av.calls[0]) if e.kind == "dtmf"] == \
        ["DTMF 1", "DTMF 5", "DTMF #", "DTMF 5", "DTMF #"]
    fax = SAMPLES / "fax-t38.pcap"
    if fax.exists():
        kinds = [[e.text for e in timeline(c) if e.kind == "fax"] for c in sipflow.analyze(str(fax)).calls]
        assert kinds == [["switch to T.38 fax offered: accepted (200), media now UDPTL"],
                         ["switch to T.38 fax offered: refused (488), media stays as it was"]]


def test_calls_events_and_the_json_timeline():
    from click.testing import CliRunner
    import json
    from sipflow.cli.app import main
    path = SAMPLES / "reinvite-hold.pcap"
    out = CliRunner().invoke(main, ["calls", str(path), "--events", "--width", "80"]).output
    assert "hold by the caller (sendonly, re-INVITE)" in out and "resume by the caller (sendrecv)" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    doc = json.loads(CliRunner().invoke(main, ["analyze", str(path), "--format", "json"]).output)
    assert [e["kind"] for e in doc["calls"][0]["timeline"]] == ["ringing", "answered", "hold", "resume", "hangup"]


def test_the_proxied_transfer_sample_tells_its_whole_story():
    """samples/transfer-hold.pcap (SIPp through Kamailio): 183 with SDP, hold, resume, MESSAGE, INFO
    DTMF, REFER to carol, 202, NOTIFY 100 then 200, BYE; each once although every message shows on
    both hops."""
    path = SAMPLES / "transfer-hold.pcap"
    if not path.exists():
        pytest.skip("samples/transfer-hold.pcap not built")
    main = sipflow.analyze(str(path)).calls[0]
    got = [(e.kind, e.by) for e in timeline(main)]
    assert got == [("early_media", "callee"), ("answered", "callee"), ("hold", "caller"), ("resume", "caller"),
                   ("message", "caller"), ("dtmf", None), ("transfer", "caller"), ("transfer_accepted", "callee"),
                   ("transfer_progress", "callee"), ("transfer_result", "callee"), ("hangup", "caller")]
    texts = [e.text for e in timeline(main)]
    assert "transfer to <sip:carol@127.0.0.1:5080> (REFER from the caller)" in texts
    assert "MESSAGE: 'Transferring you to carol now'" in texts


def test_pdd_runs_from_the_invite_the_ringing_answers_and_the_challenge_is_its_own_figure():
    """The issue's case: an INVITE challenged with 407, the phone asks for the password, the
    authenticated INVITE gets its 183 in 0.43 s. PDD is 0.43 s, not 17.8; the challenge is 17.8 s."""
    d = Dialog()

    def at(t, fn, *args, **kw):
        d.t = 100.0 + t - 0.1
        return fn(*args, **kw)
    at(0.0, d.request, A, "INVITE", sdp(A, 4000), to_tag=False)
    at(0.01, d.response, B, 407, "Proxy Authentication Required", "INVITE")
    at(0.02, d.request, A, "ACK")
    d.cseq[A] = 1                                          # the ACK reused the INVITE's CSeq
    at(17.8, d.request, A, "INVITE", sdp(A, 4000), to_tag=False)
    at(18.23, d.response, B, 183, "Session Progress", "INVITE", sdp(B, 5000))
    at(20.0, d.response, B, 200, "OK", "INVITE", sdp(B, 5000))
    (call,) = d.an.result().calls
    t = call.timings()
    assert t["pdd"] == pytest.approx(0.43, abs=1e-6) and t["challenge"] == pytest.approx(17.8, abs=1e-6)
    assert t["time_to_answer"] == pytest.approx(20.0, abs=1e-6)    # still from the first INVITE: what the user waited


def test_each_sides_software_and_media_address_are_on_the_call():
    """User-Agent of each side (a proxy's 100 Trying, with its Server header but no To-tag, does not
    name the callee), each side's SDP address, in JSON, CSV and calls --wide."""
    import csv
    import io
    import json
    from click.testing import CliRunner
    from sipflow.cli.app import main
    path = SAMPLES / "call-via-proxy.pcap"       # UAC :5061 -> Kamailio :5060 -> UAS :5070
    doc = json.loads(CliRunner().invoke(main, ["analyze", str(path), "--format", "json"]).output)
    c = doc["calls"][0]
    assert c["caller_agent"].startswith("SIPp uac") and c["callee_agent"].startswith("SIPp uas")
    assert (c["caller_media"], c["callee_media"]) == ("127.0.0.1:6000", "127.0.0.1:6100")
    row = next(csv.DictReader(io.StringIO(CliRunner().invoke(main, ["calls", str(path), "--format", "csv"]).output)))
    assert row["callee_agent"].startswith("SIPp uas") and row["holds"] == "0"
    hold = next(csv.DictReader(io.StringIO(CliRunner().invoke(main, ["calls", str(SAMPLES / "reinvite-hold.pcap"),
                                                                     "--format", "csv"]).output)))
    assert hold["holds"] == "1"
    wide = CliRunner().invoke(main, ["calls", str(path), "--wide"]).output
    assert "Caller agent" in wide and "SIPp uas" in wide and "127.0.0.1:6100" in wide
