"""`sipflow probe` extras: `--pcap` (the probe's own traffic as a capture), 100rel/PRACK (RFC 3262) in
`probe call`, and `--audio FILE.wav`.

- `--pcap` on a call to SIPp's UAS with `-rtp_echo`: sipflow's analyzer finds the one answered call and
  its two RTP streams with the packet counts the probe reported; tshark reads the same SIP messages; IP,
  UDP and TCP checksums are right; over TCP the handshake and the sequence numbers are consistent;
  `probe register --pcap` against Kamailio redacts the digest response unless `--keep-secrets`.
- PRACK against tests/scenarios/uas_100rel.xml (183 with Require: 100rel and RSeq, expects PRACK) and
  against a Python UAS double that retransmits its reliable 183 (the same PRACK is sent again).
- `--audio` with a WAV written here: the echoed payload is what we sent; wrong formats are refused.

Loopback only, in the private network namespace of tests/test_probe.py (fixtures imported from there,
from tests/test_probe_call.py and from tests/test_probe_register.py).
"""
from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import wave

import pytest
from click.testing import CliRunner

import sipflow
from sipflow.cli import ProbeExit, main
from sipflow.media.g711 import SAMPLES_PER_PACKET, audio_payload, encode
from sipflow.probe.recorder import PcapRecorder, _checksum, redact
from sipflow.probe.call import CallOptions, CallOutcome, probe_call
from sipflow.sip.message import parse_message

import tshark_oracle as oracle
from test_probe import V4, V6, has_ipv6, private_loopback
from test_probe_call import received, sipp, wait_exit
from test_probe_register import PASSWORD, registrar_md5

assert private_loopback and registrar_md5   # imported fixtures: this module's too


# --------------------------------------------------------------------------- reading our pcaps back

def frames(path):
    """[(ts, ethernet frame)] of a classic pcap (the writer's own format, checked on the way)."""
    data = path.read_bytes()
    magic, major, minor, _, _, snap, link = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, link) == (0xA1B2C3D4, 2, 4, 1)
    out, off = [], 24
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig and usec < 1000000
        out.append((sec + usec / 1e6, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    assert off == len(data)
    return out


def check_ip(frame):
    """IP header fields and checksums (IP, UDP/TCP) of one frame; returns (proto, l4 bytes)."""
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if ethertype == 0x0800:
        ihl = (ip[0] & 15) * 4
        total, proto = struct.unpack_from("!H", ip, 2)[0], ip[9]
        assert total == len(ip) and _checksum(ip[:ihl]) == 0
        l4, pseudo = ip[ihl:], ip[12:20] + struct.pack("!BBH", 0, proto, len(ip) - ihl)
    else:
        assert ethertype == 0x86DD
        plen, proto = struct.unpack_from("!HB", ip, 4)
        assert plen == len(ip) - 40
        l4, pseudo = ip[40:], ip[8:40] + struct.pack("!IxxxB", plen, proto)
    assert _checksum(pseudo + l4) == 0
    if proto == 17:
        assert struct.unpack_from("!H", l4, 4)[0] == len(l4)
    return proto, l4


def sip_payloads(path):
    out = []
    for _, f in frames(path):
        proto, l4 = check_ip(f)
        payload = l4[8:] if proto == 17 else l4[(l4[12] >> 4) * 4:]
        if payload[:3] in (b"SIP", b"INV", b"ACK", b"BYE", b"PRA", b"REG", b"OPT", b"CAN"):
            out.append(payload)
    return out


def cli(*args):
    r = CliRunner().invoke(main, ["probe", *map(str, args)])
    return r.exit_code, r.stdout


# --------------------------------------------------------------------------- pcap writer, offline

def test_redaction_keeps_lengths_and_only_touches_authorization_responses():
    msg = (b'REGISTER sip:x SIP/2.0\r\nAuthorization: Digest username="a", response="0123abcd", nc=1\r\n'
           b'Proxy-Authorization: Digest response="ffff",realm="r"\r\nX-Other: response="keep"\r\n'
           b'Content-Length: 0\r\n\r\n')
    out = redact(msg)
    assert len(out) == len(msg) and b"0123abcd" not in out and b"ffff" not in out and b'response="keep"' in out
    assert b'response="xxxxxxxx"' in out and b'response="xxxx"' in out


def test_tcp_segments_have_a_handshake_and_consistent_sequence_numbers(tmp_path):
    path = tmp_path / "t.pcap"
    rec = PcapRecorder(str(path))
    rec.tcp(True, ("::1", 40000), ("::1", 5060), b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    rec.tcp(False, ("::1", 40000), ("::1", 5060), b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    rec.close()
    segs = []
    for _, f in frames(path):
        proto, l4 = check_ip(f)
        assert proto == 6
        sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", l4)
        segs.append((sport, seq, ack, flags, len(l4) - (off >> 4) * 4))
    (s1, syn_seq, _, f1, _), (_, synack_seq, a2, f2, _), (_, s3, a3, f3, _), req, resp = segs
    assert (f1, f2, f3) == (0x02, 0x12, 0x10) and a2 == syn_seq + 1 and (s3, a3) == (syn_seq + 1, synack_seq + 1)
    assert req[1:3] == (syn_seq + 1, synack_seq + 1) and resp[1:3] == (synack_seq + 1, syn_seq + 1 + req[4])


# --------------------------------------------------------------------------- --pcap against real servers

def test_call_pcap_is_one_answered_call_with_both_streams_and_tshark_agrees(tmp_path):
    pcap = tmp_path / "call.pcap"
    with sipp(tmp_path, extra=["-rtp_echo"]) as (port, proc, messages):
        code, out = cli("call", f"sip:bob@{V4}:{port}", "--duration", 1, "--format", "json", "--timeout", 10,
                        "--pcap", pcap)
    assert code == ProbeExit.OK, out
    rtp = json.loads(out)["rtp"]
    assert rtp["sent"] > 0 and rtp["received"] > 0
    a = sipflow.analyze(str(pcap))
    (c,) = a.calls
    assert c.outcome.value == "answered"
    assert sorted(s.packets for s in c.streams) == sorted([rtp["sent"], rtp["received"]])
    payloads = sip_payloads(pcap)
    methods = [parse_message(p).method or parse_message(p).status for p in payloads]
    assert methods[:1] == ["INVITE"] and "ACK" in methods and "BYE" in methods and methods[-1] == 200
    if not oracle.tshark_available():
        pytest.skip("tshark is not installed")
    theirs = [(m["method"], m["status"], m["cseq"], m["src"], m["dst"]) for m in oracle.sip_messages(pcap)]
    ours = []
    doc = json.loads(CliRunner().invoke(main, ["analyze", str(pcap), "--format", "json"]).stdout)
    for m in doc["messages"]:
        ours.append((m.get("method"), m.get("status"), m.get("cseq"), m.get("src"), m.get("dst")))
    assert len(theirs) == len(payloads) and theirs == ours


def test_call_pcap_over_ipv6_has_right_checksums_and_reads_back(tmp_path):
    if not has_ipv6():
        pytest.skip("no IPv6 loopback")
    pcap = tmp_path / "v6.pcap"
    with sipp(tmp_path, ip=V6, extra=["-rtp_echo"]) as (port, proc, messages):
        code, out = cli("call", f"sip:bob@[{V6}]:{port}", "--duration", 0.3, "--format", "json", "--timeout", 10,
                        "--pcap", pcap)
    assert code == ProbeExit.OK, out
    assert all(f[12:14] == b"\x86\xdd" and check_ip(f)[0] == 17 for _, f in frames(pcap))
    a = sipflow.analyze(str(pcap))
    (c,) = a.calls
    assert c.outcome.value == "answered" and len(c.streams) == 2


def test_call_pcap_over_tcp_reads_back(tmp_path):
    pcap = tmp_path / "tcp.pcap"
    with sipp(tmp_path, "uas_call.xml", extra=["-t", "t1", "-rtp_echo"]) as (port, proc, messages):
        code, out = cli("call", f"sip:bob@{V4}:{port};transport=tcp", "--duration", 0.3, "--format", "json",
                        "--timeout", 10, "--pcap", pcap)
    assert code == ProbeExit.OK, out
    a = sipflow.analyze(str(pcap))
    (c,) = a.calls
    assert c.outcome.value == "answered"
    assert [parse_message(p).method for p in sip_payloads(pcap)][:1] == ["INVITE"]


@pytest.mark.parametrize("keep", [False, True])
def test_register_pcap_redacts_the_digest_response_unless_keep_secrets(tmp_path, registrar_md5, keep):
    pcap = tmp_path / "reg.pcap"
    args = ["register", f"sip:alice@{V4}:{registrar_md5}", "--password", PASSWORD, "--format", "json",
            "--pcap", pcap] + (["--keep-secrets"] if keep else [])
    code, out = cli(*args)
    assert code == ProbeExit.OK, out
    data = pcap.read_bytes()
    assert PASSWORD.encode() not in data
    responses = re.findall(rb'response="([^"]*)"', data)
    assert responses
    if keep:
        assert all(re.fullmatch(rb"[0-9a-f]{32}", r) for r in responses)
    else:
        assert all(re.fullmatch(rb"x{32}", r) for r in responses)
    for p in sip_payloads(pcap):   # lengths still right: every message parses whole
        assert parse_message(p).status or parse_message(p).method


def test_options_pcap(tmp_path):
    pcap = tmp_path / "o.pcap"
    with sipp(tmp_path, "uas_options.xml") as (port, proc, messages):
        code, out = cli("options", f"sip:{V4}:{port}", "--format", "json", "--pcap", pcap)
    assert code == ProbeExit.OK, out
    msgs = [parse_message(p) for p in sip_payloads(pcap)]
    assert [m.method for m in msgs] == ["OPTIONS", None] and msgs[1].status == 200


# --------------------------------------------------------------------------- 100rel / PRACK

def test_reliable_183_gets_a_prack_with_rack_and_the_call_completes(tmp_path):
    with sipp(tmp_path, "uas_100rel.xml", extra=["-rtp_echo"]) as (port, proc, messages):
        msgs = []
        r = probe_call(f"sip:bob@{V4}:{port}", CallOptions(duration=0.4, timeout=10),
                       on_message=lambda d, data: msgs.append((d, parse_message(data))))
        assert wait_exit(proc) == 0   # the scenario checked Supported: 100rel and the RAck
        log = messages()
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200 and r.provisional == (183,)
    assert r.pracks == 1 and r.prack_status == 200 and r.rtp["received"] > 0
    (invite,) = [m for d, m in msgs if d == ">" and m.method == "INVITE"]
    (prack,) = [m for d, m in msgs if d == ">" and m.method == "PRACK"]
    assert "100rel" in invite.header("Supported")
    assert prack.header("RAck") == f"1 {invite.cseq[0]} INVITE" and prack.cseq == (invite.cseq[0] + 1, "PRACK")
    assert prack.to.tag and prack.call_id == invite.call_id
    (logged,) = received(log, "PRACK")
    assert "RAck: 1 1 INVITE" in logged
    (bye,) = [m for d, m in msgs if d == ">" and m.method == "BYE"]
    assert bye.cseq[0] == prack.cseq[0] + 1


class RetransmittingUas:
    """A UAS double that sends its reliable 183 twice (a retransmission: same RSeq), answers each PRACK
    200 OK, then the INVITE 200 OK; answers BYE."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((V4, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.got = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reply(self, msg, src, status, extra=(), cseq=None, body=""):
        head = [f"SIP/2.0 {status}"] + [f"Via: {v}" for v in msg.header_values("Via")] + [
            f"From: {msg.header('From')}", f"To: {msg.header('To')}" + ("" if msg.to.tag else ";tag=uas1"),
            f"Call-ID: {msg.call_id}", f"CSeq: {cseq or msg.header('CSeq')}"] + list(extra)
        self.sock.sendto(("\r\n".join(head + [f"Content-Length: {len(body)}", "", body])).encode(), src)

    def _run(self):
        invite = None
        while not self.stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            msg = parse_message(data)
            self.got.append(msg)
            if msg.method == "INVITE" and invite is None:
                invite = msg
                contact = f"Contact: <sip:bob@{V4}:{self.port}>"
                for _ in range(2):
                    self._reply(msg, src, "183 Session Progress", [contact, "Require: 100rel", "RSeq: 7"])
                    time.sleep(0.05)
                time.sleep(0.05)
                sdp = f"v=0\r\no=- 1 1 IN IP4 {V4}\r\ns=-\r\nc=IN IP4 {V4}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
                self._reply(msg, src, "200 OK", [contact, "Content-Type: application/sdp"], body=sdp)
            elif msg.method in ("PRACK", "BYE"):
                self._reply(msg, src, "200 OK")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def test_retransmitted_reliable_provisional_gets_the_same_prack():
    uas = RetransmittingUas()
    try:
        r = probe_call(f"sip:bob@{V4}:{uas.port}", CallOptions(duration=0.2, timeout=5))
    finally:
        uas.close()
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200
    pracks = [m for m in uas.got if m.method == "PRACK"]
    assert len(pracks) == 2 and pracks[0].raw == pracks[1].raw and pracks[0].header("RAck") == "7 1 INVITE"
    assert r.pracks == 1 and r.prack_retransmitted == 1 and r.prack_status == 200 and r.provisional == (183,)


# --------------------------------------------------------------------------- --audio FILE.wav

def write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples) if width == 2 else bytes(len(samples)))


def test_audio_payload_loops_the_file():
    enc = bytes(range(200))
    assert audio_payload(enc, 0) == enc[:160] and audio_payload(enc, 1) == enc[160:] + enc[:120]
    assert all(len(audio_payload(enc, n)) == SAMPLES_PER_PACKET for n in range(10))


def test_audio_wav_is_sent_and_echoed_back(tmp_path):
    samples = [((n * 37) % 2000) - 1000 for n in range(8000)]   # 1 s of a sawtooth
    wav = tmp_path / "a.wav"
    write_wav(wav, samples)
    pcap = tmp_path / "a.pcap"
    with sipp(tmp_path, extra=["-rtp_echo"]) as (port, proc, messages):
        code, out = cli("call", f"sip:bob@{V4}:{port}", "--duration", 0.5, "--format", "json", "--timeout", 10,
                        "--audio", wav, "--pcap", pcap)
    assert code == ProbeExit.OK, out
    rtp = json.loads(out)["rtp"]
    assert rtp["received"] > 0 and rtp["codec"] == "PCMU"
    expected = encode(samples[:SAMPLES_PER_PACKET], "PCMU")
    # by direction (the recorder's destination MAC says which), so the order in which the first echo
    # and our second packet were recorded does not matter on a busy machine
    sent, back = [], []
    for _, f in frames(pcap):
        payload = check_ip(f)[1][8:]
        if payload[:1] == b"\x80":
            (sent if f[:6] == bytes.fromhex("020000000002") else back).append(payload)
    # the first sent and the first received (echoed) packets carry the file's first 20 ms
    assert sent and back and sent[0][12:] == expected and back[0][12:] == expected
    assert expected != encode([0] * SAMPLES_PER_PACKET, "PCMU")


@pytest.mark.parametrize("kw,what", [({"rate": 16000}, "16000 Hz"), ({"channels": 2}, "2 channels"),
                                     ({"width": 1}, "8-bit")])
def test_audio_other_than_8khz_mono_16bit_is_refused(tmp_path, kw, what):
    wav = tmp_path / "bad.wav"
    write_wav(wav, [0] * 800, **kw)
    r = CliRunner().invoke(main, ["probe", "call", f"sip:bob@{V4}:5999", "--audio", str(wav)])
    assert r.exit_code == ProbeExit.ERROR and what in r.output and "8000 Hz mono 16-bit" in r.output
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    r = CliRunner().invoke(main, ["probe", "call", f"sip:bob@{V4}:5999", "--audio", str(junk)])
    assert r.exit_code == ProbeExit.ERROR and "junk.wav" in r.output


def test_options_through_an_outbound_proxy_goes_to_the_proxy_with_a_route(tmp_path):
    """--proxy: the packet goes to the proxy, the Request-URI stays the target, and one loose-routing
    Route names the proxy (RFC 3261 §8.1.2). The proxy here is a recording UDP double on loopback that
    answers 200 itself (a wire check; the real-proxy path is covered by probe call through Kamailio)."""
    import socket as _socket
    import threading

    from sipflow.probe.options import probe_options, ProbeOptions
    from sipflow.sip.message import parse_message as _parse

    srv = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    port = srv.getsockname()[1]
    seen = []

    def answer():
        data, addr = srv.recvfrom(65535)
        req = _parse(data)
        seen.append(req)
        head = "\r\n".join(f"{k}: {v}" for k, v in req.headers if k in ("Via", "From", "To", "Call-ID", "CSeq"))
        srv.sendto(f"SIP/2.0 200 OK\r\n{head}\r\nContent-Length: 0\r\n\r\n".encode(), addr)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        run = probe_options("sip:bob@127.0.0.2:5999", ProbeOptions(proxy=f"sip:127.0.0.1:{port}", timeout=5))
    finally:
        t.join(6)
        srv.close()
    (req,) = seen
    assert req.method == "OPTIONS" and req.uri == "sip:bob@127.0.0.2:5999"
    assert req.header("Route") == f"<sip:127.0.0.1:{port};lr>"
    assert run.results and run.results[0].status == 200
