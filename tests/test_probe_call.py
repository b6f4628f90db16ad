"""`sipflow probe call`: the sans-IO INVITE transaction and the call's requests walked with a made-up
clock, the G.711 encoder against audioop, then real calls on loopback:

- SIPp's built-in UAS (`-sn uas`: 180, 200 with SDP, waits for BYE), with and without `-rtp_echo`;
- SIPp scenarios in tests/scenarios/: uas_busy.xml (486), uas_ring.xml (rings until CANCEL, then
  487), uas_race.xml (the 200 OK crosses the CANCEL), uas_call.xml (telephone-event in the answer);
- Kamailio as a record-routing proxy in front of the SIPp UAS (tests/scenarios/kamailio_proxy.cfg),
  once plain and once challenging INVITEs with 407 (SHA-256);
- a socket that never answers, and a closed port.

What SIPp received is read from its -trace_msg log. Loopback only (127.0.0.1, ::1), in the private
network namespace of tests/test_probe.py (its fixture and helpers are imported from there). Every
process started here is stopped here; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipflow.cli import ProbeExit, main
from sipflow.errors import ProbeError
from sipflow.media.g711 import SAMPLES_PER_PACKET, alaw_byte, tone_packet, ulaw_byte
from sipflow.media.rtp import rtp_packet
from sipflow.probe.call import CallOptions, CallOutcome, probe_call
from sipflow.probe.callout import call_nagios, call_prometheus
from sipflow.probe.dialog import Dialog, invite_request, sdp_offer
from sipflow.probe.media import parse_dtmf
from sipflow.sip.transaction import INVITE_TABLE, TIMER_B, InviteClientTransaction, InviteState, cancel_for
from sipflow.sip.sdp import parse_sdp
from sipflow.sip.message import parse_message

from test_probe import (NAGIOS_LINE, PERFDATA, SCENARIOS, STATES, V4, V6, check_prometheus, free_port, has_ipv6,
                        port_taken, private_loopback, server, silent_udp, walk)

assert private_loopback   # the imported fixture is this module's autouse network namespace too

PASSWORD = "secretpw"     # what tests/scenarios/kamailio_proxy.cfg accepts with -A WITH_AUTH


# --------------------------------------------------------------------------- the INVITE transaction

INVITE = invite_request("sip:bob@127.0.0.1:5070", "sip:alice@127.0.0.1", "udp", (V4, 40000), "z9hG4bKinv",
                        "cid@x", "ft", 1, sdp_offer(V4, 40002, 1), route="sip:127.0.0.1:5060;lr")


def response(status, reason="OK", branch="z9hG4bKinv", method="INVITE", to_tag="tt", extra=""):
    return parse_message((f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch={branch};rport\r\n"
                          f"From: <sip:alice@127.0.0.1>;tag=ft\r\nTo: <sip:bob@127.0.0.1:5070>;tag={to_tag}\r\n"
                          f"Call-ID: cid@x\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n").encode())


def test_timer_a_doubles_from_t1_without_cap_and_timer_b_gives_up_at_32s():
    t0 = 500.0
    tx = InviteClientTransaction(INVITE, "z9hG4bKinv", reliable=False, now=t0)
    sent = [t - t0 for t in walk(tx)]
    assert sent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]           # intervals 0.5, 1, 2, 4, 8, 16
    assert tx.state is InviteState.TERMINATED and tx.ended_at - t0 == TIMER_B == 32
    assert tx.retransmissions == 6 and tx.final is None


def test_tcp_has_no_timer_a():
    tx = InviteClientTransaction(INVITE, "z9hG4bKinv", reliable=True, now=0.0)
    assert walk(tx) == [] and tx.state is InviteState.TERMINATED and tx.ended_at == 32.0


def test_provisional_stops_retransmissions_and_2xx_ends_the_transaction():
    tx = InviteClientTransaction(INVITE, "z9hG4bKinv", reliable=False, now=0.0)
    assert walk(tx, until=0.6) == [0.5]
    assert tx.on_response(response(180, "Ringing"), 0.7) == []
    assert tx.state is InviteState.PROCEEDING and tx.next_deadline() is None and tx.first_response_at == 0.7
    assert walk(tx, until=100) == []
    assert tx.on_response(response(200), 3.0) == []           # the 2xx's ACK is the dialog's, not ours
    assert tx.state is InviteState.TERMINATED and tx.final.status == 200 and tx.final_at == 3.0


def test_non_2xx_is_acked_in_the_transaction_and_again_for_each_retransmission():
    tx = InviteClientTransaction(INVITE, "z9hG4bKinv", reliable=False, now=0.0)
    (ack,) = tx.on_response(response(486, "Busy Here"), 0.1)
    m = parse_message(ack)
    inv = parse_message(INVITE)
    assert m.method == "ACK" and m.uri == inv.uri == "sip:bob@127.0.0.1:5070"
    assert m.branch == "z9hG4bKinv" and len(m.vias) == 1           # same branch: the same transaction
    assert m.cseq == (1, "ACK") and m.to.tag == "tt" and m.from_.tag == "ft" and m.call_id == "cid@x"
    assert m.header_values("Route") == ["<sip:127.0.0.1:5060;lr>"]
    assert tx.state is InviteState.COMPLETED and tx.next_deadline() == 0.1 + 32
    assert tx.on_response(response(486, "Busy Here"), 0.5) == [ack] and tx.acks == 2
    assert walk(tx) == [] and tx.state is InviteState.TERMINATED
    tcp = InviteClientTransaction(INVITE, "z9hG4bKinv", reliable=True, now=0.0)
    tcp.on_response(response(603, "Decline"), 0.1)
    assert tcp.next_deadline() == 0.1                                  # Timer D is zero on TCP


def test_invite_table_is_closed_and_never_goes_back():
    assert set(INVITE_TABLE) == set(InviteState) and INVITE_TABLE[InviteState.TERMINATED] == {}
    for state, row in INVITE_TABLE.items():
        for event, (nxt, _) in row.items():
            assert event in ("timer_a", "timer_b", "timer_d", "1xx", "2xx", "non2xx", "transport_error")
            if state in (InviteState.COMPLETED, InviteState.TERMINATED):
                assert nxt in (InviteState.COMPLETED, InviteState.TERMINATED)


def test_cancel_copies_the_invite_request_uri_via_route_and_cseq_number():
    c = parse_message(cancel_for(parse_message(INVITE)))
    assert (c.method, c.uri, c.branch, c.cseq) == ("CANCEL", "sip:bob@127.0.0.1:5070", "z9hG4bKinv", (1, "CANCEL"))
    assert c.to.tag is None and c.header_values("Route") == ["<sip:127.0.0.1:5060;lr>"]


def test_dialog_requests_follow_the_route_set_loose_and_strict():
    d = Dialog(call_id="cid@x", local_uri="sip:alice@a", local_tag="ft", remote_uri="sip:bob@b", remote_tag="tt",
               remote_target="sip:bob@192.0.2.7:5070",
               route_set=tuple(reversed(["<sip:p2.example;lr>", "<sip:p1.example;lr>"])), cseq=1)
    bye = parse_message(d.request("BYE", "udp", (V4, 40000), "z9hG4bKbye", 2))
    assert bye.uri == "sip:bob@192.0.2.7:5070" and bye.cseq == (2, "BYE")
    assert bye.header_values("Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert (bye.from_.tag, bye.to.tag) == ("ft", "tt") and d.next_hop() == "sip:p1.example;lr"
    strict = Dialog(**{**d.__dict__, "route_set": ("<sip:strict.example>",)})
    ack = parse_message(strict.request("ACK", "udp", (V4, 40000), "z9hG4bKack", 1))
    assert ack.uri == "sip:strict.example" and ack.header_values("Route") == ["<sip:bob@192.0.2.7:5070>"]


def test_sdp_offer_names_pcmu_pcma_and_telephone_event_on_our_address():
    for ip, kind in ((V4, "IP4"), (V6, "IP6")):
        raw = sdp_offer(ip, 40002, 7)
        assert f"c=IN {kind} {ip}".encode() in raw
        (m,) = parse_sdp(raw).media
        assert (m.port, m.address) == (40002, ip)
        assert [(c.pt, c.name) for c in m.codecs] == [(0, "PCMU"), (8, "PCMA"), (101, "telephone-event")]


def test_g711_matches_the_reference_encoder_and_the_tone_fills_20ms():
    audioop = pytest.importorskip("audioop")
    import struct
    samples = list(range(-32768, 32768, 7)) + [32767, -32768, 0, -1]
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    assert bytes(ulaw_byte(s) for s in samples) == audioop.lin2ulaw(pcm, 2)
    assert bytes(alaw_byte(s) for s in samples) == audioop.lin2alaw(pcm, 2)
    for codec in ("PCMU", "PCMA"):
        payload = tone_packet(codec)
        assert len(payload) == SAMPLES_PER_PACKET == 160 and len(set(payload)) > 2
    p = rtp_packet(8, 65535, 2 ** 32 - 1, 0xDEADBEEF, b"x" * 160, marker=True)
    assert p[:2] == b"\x80\x88" and len(p) == 172


def test_options_refuse_nonsense():
    with pytest.raises(ProbeError):
        parse_dtmf("12x")
    with pytest.raises(ProbeError):
        CallOptions(duration=-1)
    with pytest.raises(ProbeError):
        probe_call("sip:127.0.0.1:5070")          # no user: a call goes to someone
    assert parse_dtmf("12*#ab") == "12*#AB"


# --------------------------------------------------------------------------- SIPp and Kamailio

def sipp_cmd(scenario, ip, port, mport, *extra):
    """SIPp as a UAS for one call, logging every message (-trace_msg) into its working directory."""
    sc = ["-sn", "uas"] if scenario == "uas" else ["-sf", SCENARIOS / scenario]
    return ["sipp", *sc, "-i", ip, "-p", port, "-mp", mport, "-m", 1, "-nostdin", "-trace_msg",
            "-timeout", "60s", *extra]


@contextlib.contextmanager
def sipp(tmp_path, scenario="uas", ip=V4, extra=()):
    """A SIPp UAS for one call; yields (port, proc, message log reader)."""
    if not shutil.which("sipp"):
        pytest.skip("sipp is not installed (Debian: apt-get install sip-tester)")
    kind = socket.SOCK_STREAM if "t1" in extra else socket.SOCK_DGRAM
    port, mport = free_port(ip, kind), free_port(ip)
    run = tmp_path / f"sipp-{port}"
    run.mkdir()

    def messages(wait_for=None, limit=3.0):
        end = time.monotonic() + limit
        while True:
            text = "".join(p.read_text(errors="replace") for p in run.glob("*_messages.log"))
            if wait_for is None or re.search(wait_for, text) or time.monotonic() > end:
                return text
            time.sleep(0.05)

    with server(sipp_cmd(scenario, ip, port, mport, *extra), run / "sipp.log",
                lambda: port_taken(ip, port, kind)) as proc:
        yield port, proc, messages


def received(log, method):
    """The requests of one method that SIPp received, as text (from its -trace_msg log)."""
    blocks = re.split(r"-{10,}[^\n]*\n", log)
    return [b for b in blocks if re.search(rf"message received \[\d+\] bytes :\s*\n\s*{method} ", b)]


def wait_exit(proc, limit=5.0):
    try:
        return proc.wait(limit)
    except Exception:
        return None


def _kamailio_modules():
    return next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                             "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
                 if Path(p, "rr.so").exists()), None)


@contextlib.contextmanager
def kamailio_proxy(tmp_path, auth=False):
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    mpath = _kamailio_modules()
    if mpath is None:
        pytest.skip("Kamailio's rr module is not found")
    run = tmp_path / ("kamailio-auth" if auth else "kamailio")
    run.mkdir()
    port = free_port(V4)
    cmd = ["kamailio", "-f", SCENARIOS / "kamailio_proxy.cfg", "-L", mpath, "-DD", "-E", "-m", 32, "-M", 4,
           "-w", run, "-Y", run, "-P", run / "kamailio.pid", "-l", f"udp:{V4}:{port}"]
    if auth:
        cmd[5:5] = ["-A", "WITH_AUTH"]
    with server(cmd, run / "kamailio.log", lambda: port_taken(V4, port, socket.SOCK_DGRAM)):
        time.sleep(0.2)
        yield port


def call(*args):
    r = CliRunner().invoke(main, ["probe", "call", *map(str, args)])
    return r.exit_code, r.output


def traced(target, **kw):
    """probe_call with every message it sent and received kept: (result, [(direction, SipMessage)])."""
    msgs = []
    result = probe_call(target, CallOptions(**kw), on_message=lambda d, data: msgs.append((d, parse_message(data))))
    return result, msgs


def sent(msgs, method):
    return [m for d, m in msgs if d == ">" and m.method == method]


def check_timings(r):
    phases = [r.first_response, r.pdd, r.answer, r.setup, r.total]
    assert all(v is not None and v > 0 for v in phases), phases
    assert r.first_response <= r.pdd <= r.answer <= r.setup <= r.total
    for v in phases + [r.bye]:
        assert v == round(v, 6) and 0 < v < 5
    # microsecond resolution: loopback phases are well under a millisecond, not rounded to it
    assert any(round(v * 1e6) % 1000 for v in phases + [r.bye])


# --------------------------------------------------------------------------- calls

def test_answered_call_acks_byes_and_reports_one_way_audio_against_plain_uas(tmp_path):
    with sipp(tmp_path) as (port, proc, messages):
        r, msgs = traced(f"sip:bob@{V4}:{port}", duration=0.4, timeout=10)
        log = messages(wait_for=r"received \[\d+\] bytes :\s*\n\s*BYE ")
    assert r.outcome is CallOutcome.ANSWERED and r.status == 200 and r.provisional == (180,)
    assert r.ack_sent and r.bye_sent and r.bye_status == 200 and r.hung_up_by == "us"
    check_timings(r)
    assert 0.35 < r.duration < 0.6
    (ack,), (bye,) = received(log, "ACK"), received(log, "BYE")
    assert f"Call-ID: {r.call_id}" in ack and "CSeq: 1 ACK" in ack and "CSeq: 2 BYE" in bye
    (inv,) = sent(msgs, "INVITE")
    assert parse_message(sent(msgs, "ACK")[0].raw).branch != inv.branch     # ACK for 2xx: a new transaction
    # -sn uas sends no RTP: we sent ~20 packets and nothing came back
    assert r.rtp["sent"] >= 15 and r.rtp["received"] == 0 and r.rtp["one_way_audio"] is True
    assert r.rtp["codec"] == "PCMU" and r.rtp["remote"].startswith(V4)
    assert not r.up and call_nagios(r)[0] == 2 and call_nagios(r)[1].startswith("SIP CRITICAL - one-way audio")


def test_rtp_echo_gives_received_packets_no_loss_and_jitter_via_the_cli(tmp_path):
    with sipp(tmp_path, extra=["-rtp_echo"]) as (port, proc, messages):
        code, out = call(f"sip:bob@{V4}:{port}", "--duration", 1, "--format", "json", "--timeout", 10)
    r = json.loads(out)
    assert code == ProbeExit.OK, out
    for key in ("target", "transport", "outcome", "status", "reason", "first_response", "pdd", "answer", "setup",
                "bye", "retransmissions", "auth_algorithm", "rtp"):
        assert key in r
    assert (r["outcome"], r["status"], r["transport"], r["auth_algorithm"]) == ("answered", 200, "udp", None)
    rtp = r["rtp"]
    assert 45 <= rtp["sent"] <= 55 and rtp["received"] >= rtp["sent"] - 3 and rtp["received"] > 0
    assert rtp["lost"] == 0 and rtp["jitter_ms"] is not None and 0 <= rtp["jitter_ms"] < 20
    assert rtp["one_way_audio"] is False


def test_dtmf_as_rfc4733_events_when_the_answer_has_telephone_event(tmp_path):
    with sipp(tmp_path, "uas_call.xml", extra=["-rtp_echo"]) as (port, proc, messages):
        r = probe_call(f"sip:bob@{V4}:{port}", CallOptions(duration=1.0, dtmf="1#", timeout=10))
        assert wait_exit(proc) == 0          # the scenario ran to its end: ACK and BYE came
    assert r.outcome is CallOutcome.ANSWERED and r.rtp["codec"] == "PCMA"
    assert r.rtp["dtmf_sent"] == "1#" and r.rtp["dtmf_packets_sent"] == 14   # per digit: 4 growing, 3 end packets
    assert r.rtp["dtmf_packets_received"] >= 12 and r.rtp["lost"] == 0 and r.up


def test_busy_486_is_acked_and_reported_as_busy(tmp_path):
    with sipp(tmp_path, "uas_busy.xml") as (port, proc, messages):
        code, out = call(f"sip:bob@{V4}:{port}", "--format", "json", "--timeout", 5)
        assert wait_exit(proc) == 0          # SIPp got its ACK
        log = messages()
    r = json.loads(out)
    assert code == ProbeExit.BUSY == 12
    assert (r["outcome"], r["status"], r["reason"], r["ack_sent"]) == ("busy", 486, "486 Busy Here", True)
    assert r["provisional"] == [100] and r["pdd"] is None and r["bye_sent"] is False and r["rtp"] is None
    (ack,) = received(log, "ACK")
    assert "CSeq: 1 ACK" in ack


def test_ring_timeout_cancels_and_acks_the_487(tmp_path):
    with sipp(tmp_path, "uas_ring.xml") as (port, proc, messages):
        t0 = time.monotonic()
        code, out = call(f"sip:bob@{V4}:{port}", "--ring-timeout", 1, "--format", "json", "--timeout", 5)
        wall = time.monotonic() - t0
        assert wait_exit(proc) == 0          # CANCEL, then the ACK for the 487
        log = messages()
    r = json.loads(out)
    assert code == ProbeExit.NO_ANSWER, out
    assert (r["outcome"], r["status"], r["cancel_sent"], r["cancel_status"], r["ack_sent"]) == \
        ("no answer", 487, True, 200, True)
    assert 0 < r["cancel"] < 0.5 and r["pdd"] > 0 and 1.0 <= wall < 3
    (cancel,) = received(log, "CANCEL")
    assert "CSeq: 1 CANCEL" in cancel and len(received(log, "ACK")) == 1


def test_200_ok_crossing_the_cancel_is_acked_and_hung_up(tmp_path):
    with sipp(tmp_path, "uas_race.xml") as (port, proc, messages):
        r = probe_call(f"sip:bob@{V4}:{port}", CallOptions(ring_timeout=0.3, timeout=5))
        assert wait_exit(proc) == 0          # ACK and BYE came
    assert r.outcome is CallOutcome.NO_ANSWER and "after the CANCEL" in r.reason
    assert r.cancel_sent and r.ack_sent and r.bye_status == 200 and r.status == 200


def test_call_through_a_record_routing_proxy_routes_ack_and_bye_via_it(tmp_path):
    with kamailio_proxy(tmp_path) as kport, sipp(tmp_path, "uas_call.xml") as (port, proc, messages):
        r, msgs = traced(f"sip:bob@{V4}:{port}", duration=0.2, proxy=f"sip:{V4}:{kport}", timeout=10)
        log = messages(wait_for=r"received \[\d+\] bytes :\s*\n\s*BYE ")
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200, r
    assert r.remote == f"{V4}:{kport}" and len(r.route_set) == 1 and f"{V4}:{kport};lr" in r.route_set[0]
    (inv,), (ack,), (bye,) = sent(msgs, "INVITE"), sent(msgs, "ACK"), sent(msgs, "BYE")
    assert inv.header_values("Route") == [f"<sip:{V4}:{kport};lr>"]
    for m in (ack, bye):   # loose routing: the Contact as Request-URI, the proxy's Record-Route as Route
        assert m.uri == r.remote_target and m.uri.startswith(f"sip:{V4}:{port}")
        assert m.header_values("Route") == list(r.route_set)
    # what the UAS got came through Kamailio: its Via is on top of ours
    for method in ("ACK", "BYE"):
        (got,) = received(log, method)
        vias = re.findall(r"^Via: SIP/2.0/UDP ([^;\s]+)", got, re.M | re.I)
        assert vias[0] == f"{V4}:{kport}" and len(vias) == 2, got


def test_invite_challenged_with_407_is_acked_and_retried_with_sha256(tmp_path):
    with kamailio_proxy(tmp_path, auth=True) as kport, \
            sipp(tmp_path, "uas_call.xml", extra=["-rtp_echo"]) as (port, proc, msgs_):
        r, msgs = traced(f"sip:bob@{V4}:{port}", duration=0.2, proxy=f"sip:{V4}:{kport}",
                         from_uri=f"sip:alice@{V4}", password=PASSWORD, timeout=10)
    assert r.outcome is CallOutcome.ANSWERED and r.auth_algorithm == "SHA-256" and r.invites == 2, r
    first, second = sent(msgs, "INVITE")
    assert second.cseq[0] == first.cseq[0] + 1 and second.branch != first.branch
    assert 'uri="sip:bob@' in second.header("Proxy-Authorization") and PASSWORD not in second.raw.decode()
    acks = sent(msgs, "ACK")
    assert acks[0].branch == first.branch and acks[0].cseq == (1, "ACK")        # the 407's ACK
    assert acks[1].cseq == (2, "ACK") and sent(msgs, "BYE")[0].cseq == (3, "BYE")
    assert 0 < r.challenge < r.answer and r.rtp["received"] > 0


def test_wrong_password_is_an_auth_failure(tmp_path):
    with kamailio_proxy(tmp_path, auth=True) as kport:
        code, out = call(f"sip:bob@{V4}:{free_port()}", "--proxy", f"sip:{V4}:{kport}", "--password", "wrong",
                         "--format", "nagios", "--timeout", 5)
        code2, out2 = call(f"sip:bob@{V4}:{free_port()}", "--proxy", f"sip:{V4}:{kport}", "--password", "wrong",
                           "--timeout", 5)
    assert code == 2 and out.startswith("SIP CRITICAL - auth failure: credentials rejected: 407"), out
    assert code2 == ProbeExit.AUTH_FAILURE and "wrong" not in out + out2


def test_ipv6_call_offers_in_ip6_and_gets_the_echo(tmp_path):
    if not has_ipv6():
        pytest.skip("no IPv6 on loopback")
    with sipp(tmp_path, ip=V6, extra=["-rtp_echo"]) as (port, proc, messages):
        r, msgs = traced(f"sip:bob@[{V6}]:{port}", duration=0.4, timeout=10)
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200 and r.remote == f"[{V6}]:{port}"
    (inv,) = sent(msgs, "INVITE")
    assert b"c=IN IP6 ::1" in inv.body and r.rtp["remote"].startswith("[::1]:")
    assert r.rtp["received"] > 0 and r.rtp["one_way_audio"] is False


def test_early_media_answer_and_the_far_end_hanging_up(tmp_path):
    with sipp(tmp_path, "uas_hangup.xml", extra=["-rtp_echo"]) as (port, proc, messages):
        r, msgs = traced(f"sip:bob@{V4}:{port}", duration=5, timeout=10)
        assert wait_exit(proc) == 0            # its BYE got our 200 OK
    assert r.outcome is CallOutcome.ANSWERED and r.hung_up_by == "them" and not r.bye_sent
    assert r.provisional == (183,) and r.pdd > 0 and 0.25 < r.elapsed < 1.5
    assert r.rtp["codec"] == "PCMU" and r.rtp["received"] > 0            # the SDP answer came in the 183
    (ok,) = [m for d, m in msgs if d == ">" and m.status == 200]
    assert ok.cseq == (1, "BYE") and ok.to.tag and ok.from_.tag


class TwoSocketUas:
    """A UAS double: INVITEs come to ``front``, whose 2xx (sent twice, as a retransmission would be)
    names ``back`` as its Contact; ``back`` answers BYE. Every datagram is kept per socket."""

    def __init__(self):
        self.front, self.back = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        for s in (self.front, self.back):
            s.bind((V4, 0))
            s.settimeout(0.05)
        self.port, self.back_port = self.front.getsockname()[1], self.back.getsockname()[1]
        self.got = {"front": [], "back": []}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    second_tag = "uas1"   # the To-tag of the second 200 OK: the same (a retransmission) or another fork's

    def _reply(self, sock, msg, src, status, extra=(), body="", tag="uas1"):
        head = [f"SIP/2.0 {status}"] + [f"Via: {v}" for v in msg.header_values("Via")] + [
            f"From: {msg.header('From')}", f"To: {msg.header('To')}" + ("" if msg.to.tag else f";tag={tag}"),
            f"Call-ID: {msg.call_id}", f"CSeq: {msg.header('CSeq')}"] + list(extra)
        sock.sendto(("\r\n".join(head + [f"Content-Length: {len(body)}", "", body])).encode(), src)

    def _run(self):
        while not self.stop.is_set():
            for name, sock in (("front", self.front), ("back", self.back)):
                try:
                    data, src = sock.recvfrom(65535)
                except socket.timeout:
                    continue
                msg = parse_message(data)
                self.got[name].append(msg)
                if msg.method == "INVITE":
                    sdp = f"v=0\r\no=- 1 1 IN IP4 {V4}\r\ns=-\r\nc=IN IP4 {V4}\r\nt=0 0\r\nm=audio 9 RTP/AVP 8\r\n"
                    extra = [f"Contact: <sip:bob@{V4}:{self.back_port}>", "Content-Type: application/sdp"]
                    for tag in ("uas1", self.second_tag):
                        self._reply(sock, msg, src, "200 OK", extra, sdp, tag)
                        time.sleep(0.05)
                elif msg.method == "BYE":
                    self._reply(sock, msg, src, "200 OK")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.front.close()
        self.back.close()


def test_ack_and_bye_go_to_the_contact_and_every_2xx_is_acked():
    uas = TwoSocketUas()
    try:
        r = probe_call(f"sip:bob@{V4}:{uas.port}", CallOptions(duration=0.3, timeout=5))
    finally:
        uas.close()
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200 and r.remote_target.endswith(f":{uas.back_port}")
    assert [m.method for m in uas.got["front"]] == ["INVITE"]
    acks = [m for m in uas.got["back"] if m.method == "ACK"]
    assert len(acks) == 2 and acks[0].raw == acks[1].raw and acks[0].cseq == (1, "ACK")   # §13.2.2.4
    assert [m.method for m in uas.got["back"] if m.method != "ACK"] == ["BYE"]
    assert r.rtp["codec"] == "PCMA" and r.rtp["one_way_audio"] is True


def test_call_over_tcp_has_no_retransmissions(tmp_path):
    with sipp(tmp_path, "uas_call.xml", extra=["-t", "t1", "-rtp_echo"]) as (port, proc, messages):
        r = probe_call(f"sip:bob@{V4}:{port};transport=tcp", CallOptions(duration=0.3, timeout=10))
        assert wait_exit(proc) == 0
    assert r.outcome is CallOutcome.ANSWERED and r.transport == "tcp" and r.bye_status == 200
    assert r.retransmissions == 0 and r.rtp["received"] > 0 and r.up


def test_timeout_shorter_than_the_call_hangs_up_and_bounds_the_run(tmp_path):
    with sipp(tmp_path) as (port, proc, messages):
        t0 = time.monotonic()
        r = probe_call(f"sip:bob@{V4}:{port}", CallOptions(duration=5, timeout=0.8))
        wall = time.monotonic() - t0
        log = messages(wait_for=r"received \[\d+\] bytes :\s*\n\s*BYE ")
    assert r.outcome is CallOutcome.ANSWERED and r.bye_sent and "--timeout 0.8 s ended the call" in r.reason
    assert r.elapsed <= 0.8 and wall < 1.3 and len(received(log, "BYE")) == 1


def test_timeout_bounds_the_run_against_a_silent_server():
    with silent_udp() as sink:
        t0 = time.monotonic()
        code, out = call(f"sip:bob@{V4}:{sink.port}", "--timeout", 1, "--format", "nagios")
        wall = time.monotonic() - t0
    m = NAGIOS_LINE.match(out)
    assert m and STATES[m.group(1)] == code == 2 and "timeout" in out, out
    assert 0.95 <= wall < 1.5
    perf = {p["label"]: p for p in map(PERFDATA.match, m.group(3).split(" "))}
    assert perf["retransmissions"]["value"] == "1" and perf["setup"]["value"] == "U"
    invites = [d for _, d, _ in sink.got if d.startswith(b"INVITE ")]
    assert len(invites) == 2                       # sent at 0 and at T1


def test_dead_port_is_refused_at_once():
    r = probe_call(f"sip:bob@{V4}:{free_port()}", CallOptions(timeout=5))
    assert r.outcome is CallOutcome.REFUSED and r.elapsed < 0.1
    code, out = call(f"sip:bob@{V4}:{free_port()}", "--timeout", 5)
    assert code == ProbeExit.REFUSED and "refused" in out


def test_nagios_and_prometheus_formats_of_an_answered_call(tmp_path):
    with sipp(tmp_path, extra=["-rtp_echo"]) as (port, proc, messages):
        r = probe_call(f"sip:bob@{V4}:{port}", CallOptions(duration=0.3, timeout=10))
    state, line = call_nagios(r, None, None)
    m = NAGIOS_LINE.match(line + "\n")
    assert m and m.group(1) == "OK" and state == 0, line
    perf = {p["label"]: p for p in map(PERFDATA.match, m.group(3).split(" "))}
    assert all(perf.values()) and perf["setup"]["uom"] == "s" and perf["jitter"]["uom"] == "ms"
    assert int(perf["rtp_received"]["value"]) > 0
    s = check_prometheus(call_prometheus(r))
    labels = f'target="sip:bob@{V4}:{port}",transport="udp"'
    assert s[("probe_success", labels)] == 1 and s[("probe_sip_status_code", labels)] == 200
    assert s[("probe_rtp_packets", labels + ',direction="received"')] > 0
    assert s[("probe_rtp_one_way_audio", labels)] == 0 and s[("probe_sip_phase_seconds", labels + ',phase="setup"')] > 0


@pytest.mark.parametrize("password,outcome", [("secretpw", CallOutcome.ANSWERED), ("wrong", None)])
def test_sipp_verifyauth_accepts_our_digest_on_invite_and_refuses_a_wrong_one(tmp_path, password, outcome):
    """SIPp's own verifyauth (MD5, qop=auth) checks the credentials of the retried INVITE: a second,
    independent digest implementation agreeing with ours (the issue's "UAS with verifyauth")."""
    with sipp(tmp_path, "uas_verifyauth.xml") as (port, proc, messages):
        r, msgs = traced(f"sip:bob@{V4}:{port}", user="alice", password=password, duration=0.3, timeout=10)
    invites = sent(msgs, "INVITE")
    assert len(invites) == 2 and invites[1].cseq[0] == invites[0].cseq[0] + 1
    auth = invites[1].header("Authorization")
    assert auth and 'uri="sip:bob@' in auth and "qop=auth" in auth
    if outcome is not None:
        assert r.outcome is outcome and r.status == 200 and r.bye_status == 200
    else:
        assert r.status == 403 and r.outcome is not CallOutcome.ANSWERED


class ForkingUas(TwoSocketUas):
    """Like TwoSocketUas, but the second 200 OK comes from another fork (another To-tag)."""
    second_tag = "fork2"


def test_a_second_fork_answering_is_acked_and_hung_up():
    uas = ForkingUas()
    try:
        r = probe_call(f"sip:bob@{V4}:{uas.port}", CallOptions(duration=0.3, timeout=5))
        time.sleep(0.2)
    finally:
        uas.close()
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200
    back = uas.got["back"]
    acks = {m.to.tag: m for m in back if m.method == "ACK"}
    byes = [m.to.tag for m in back if m.method == "BYE"]
    assert set(acks) == {"uas1", "fork2"}            # §13.2.2.4: every 2xx is ACKed, each in its dialog
    assert sorted(byes) == ["fork2", "uas1"]          # the extra fork is ended, and so is the call at the end
