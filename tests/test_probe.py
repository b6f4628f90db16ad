"""`sipflow probe options`: the sans-IO transaction walked with a made-up clock, then the real command
against real peers on loopback: a SIPp UAS (tests/scenarios/uas_options.xml), Kamailio
(tests/scenarios/kamailio_options.cfg), a closed port, and sockets that never answer.

Only 127.0.0.1 and ::1 are ever used. As root, the whole module runs in a private network namespace
(unshare(CLONE_NEWNET) for the test process, undone at the end; SIPp, Kamailio and the sipflow
subprocesses are born inside it), so nothing else on the machine sees the traffic; otherwise the
host's loopback. Tests that need SIPp, Kamailio or IPv6 skip with the reason when they are missing.
Every process started here is stopped here; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipflow import __version__
from sipflow.cli import ProbeExit, main
from sipflow.errors import ProbeError
from sipflow.probe.common import (Outcome, check_destination, parse_bind, parse_expect, parse_range, parse_target)
from sipflow.probe.options import (MAX_COUNT, ProbeOptions, nagios, options_request, probe_options, prometheus)
from sipflow.sip.transaction import (NON_INVITE_TABLE, T1, T2, T4, TIMER_F, ClientTransaction, TxState)
from sipflow.sip.message import parse_message

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
V4, V6 = "127.0.0.1", "::1"
CLONE_NEWNET = 0x40000000


# --------------------------------------------------------------------------- the loopback we use

@pytest.fixture(scope="module", autouse=True)
def private_loopback():
    """Move this process into a fresh network namespace with only `lo` up (root on Linux), and back
    at the end. Sockets and child processes made meanwhile live in it. Without root: the host's lo."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("ip"):
        yield "host"
        return
    libc = ctypes.CDLL(None, use_errno=True)
    old = os.open("/proc/self/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        os.close(old)
        yield "host"
        return
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            with open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "w") as f:
                f.write("0")
        yield "private"
    finally:
        assert libc.setns(old, CLONE_NEWNET) == 0, "could not go back to the original network namespace"
        os.close(old)


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6, 0))
        return True
    except OSError:
        return False


def free_port(ip=V4, kind=socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on ip (bind to port 0, then check the other protocol)."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for _ in range(50):
        with socket.socket(fam, kind) as a:
            a.bind((ip, 0))
            port = a.getsockname()[1]
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            try:
                with socket.socket(fam, other) as b:
                    b.bind((ip, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def port_taken(ip, port, kind) -> bool:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, kind) as s:
        try:
            s.bind((ip, port))
            return False
        except OSError:
            return True


def stop_group(proc, steps=((signal.SIGTERM, 5), (signal.SIGKILL, 5))) -> None:
    """Stop a process started with start_new_session=True and everything it started: each signal in turn
    to its process group, with that many seconds' grace, until it has exited."""
    for sig, grace in steps:
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


@contextlib.contextmanager
def server(cmd, log: Path, ready):
    """Run cmd (bounded by timeout(1)) until the block ends; ready() says it is listening."""
    logf = open(log, "wb")
    proc = subprocess.Popen(["timeout", "-k", "2", "120", *map(str, cmd)], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
    try:
        end = time.monotonic() + 10
        while not ready():
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"{cmd[0]} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        stop_group(proc)
        logf.close()


@contextlib.contextmanager
def sipp_uas(tmp_path, ip=V4, transport="udp"):
    """SIPp answering every OPTIONS with 200 OK; yields its port."""
    if not shutil.which("sipp"):
        pytest.skip("sipp is not installed (Debian: apt-get install sip-tester)")
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    port = free_port(ip, kind)
    cmd = ["sipp", "-sf", SCENARIOS / "uas_options.xml", "-i", ip, "-p", port, "-mp", free_port(ip),
           "-t", "t1" if transport == "tcp" else "u1", "-m", 1, "-nostdin", "-timeout", "100s"]
    with server(cmd, tmp_path / f"sipp-{transport}-{port}.log", lambda: port_taken(ip, port, kind)):
        yield port


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory):
    """Kamailio answering OPTIONS statelessly on 127.0.0.1 (and ::1), UDP and TCP; yields its port."""
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    mpath = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                              "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
                  if Path(p, "siputils.so").exists()), None)
    if mpath is None:
        pytest.skip("Kamailio's siputils module is not found")
    run = tmp_path_factory.mktemp("kamailio")
    port = free_port(V4)
    listen = [f"{proto}:{V4}:{port}" for proto in ("udp", "tcp")]
    if has_ipv6():
        listen += [f"{proto}:[{V6}]:{port}" for proto in ("udp", "tcp")]
    cmd = ["kamailio", "-f", SCENARIOS / "kamailio_options.cfg", "-L", mpath, "-DD", "-E", "-m", 32, "-M", 4,
           "-w", run, "-Y", run, "-P", run / "kamailio.pid"]
    for addr in listen:
        cmd += ["-l", addr]
    ready = lambda: port_taken(V4, port, socket.SOCK_DGRAM) and port_taken(V4, port, socket.SOCK_STREAM)  # noqa
    with server(cmd, run / "kamailio.log", ready):
        time.sleep(0.2)   # the children have the sockets too; give them a moment
        yield port


class SilentUdp:
    """A UDP socket that receives and never answers (nor does the kernel: no ICMP): a server that
    is not there. A thread notes every datagram with its monotonic arrival time."""

    def __init__(self, ip=V4):
        self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.got = []          # [(arrival, data, source)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.got.append((time.monotonic(), data, src[:2]))

    def close(self):
        if self.sock.fileno() < 0:
            return
        self.stop.set()
        self.thread.join(5)
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:   # what came in as the thread stopped
                data, src = self.sock.recvfrom(65535)
                self.got.append((time.monotonic(), data, src[:2]))
        self.sock.close()


@contextlib.contextmanager
def silent_udp(ip=V4):
    sink = SilentUdp(ip)
    try:
        yield sink
    finally:
        sink.close()


def closed_port(ip=V4, kind=socket.SOCK_DGRAM) -> int:
    return free_port(ip, kind)


def sipflow(*args, timeout=30):
    """The real command in a subprocess: (exit code, stdout, stderr, wall seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sipflow", "probe", "options", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def cli(*args):
    r = CliRunner().invoke(main, ["probe", "options", *map(str, args)])
    return r.exit_code, r.output


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- (a) the transaction table

REQUEST = options_request(parse_target("sip:127.0.0.1:5060"), (V4, 40000), "z9hG4bKtest", "cid@x", "ft", 1)


def response(status, reason="OK", branch="z9hG4bKtest", method="OPTIONS"):
    return parse_message((f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch={branch}\r\n"
                          f"From: <sip:sipflow@127.0.0.1>;tag=ft\r\nTo: <sip:127.0.0.1:5060>;tag=x\r\n"
                          f"Call-ID: cid@x\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode())


def walk(tx, until=1e9):
    """Advance an injected clock from deadline to deadline; the times at which the request was sent again."""
    sent = []
    while tx.next_deadline() is not None and tx.next_deadline() <= until:
        now = tx.next_deadline()
        if tx.on_timer(now):
            sent.append(now)
    return sent


def test_udp_retransmits_at_t1_doubling_to_t2_and_gives_up_at_timer_f():
    t0 = 1000.0     # any monotonic origin
    tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=False, now=t0)
    sent = [t - t0 for t in walk(tx)]
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [b - a for a, b in zip([0.0] + sent, sent)] == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert tx.state is TxState.TERMINATED and tx.ended_at - t0 == TIMER_F == 32
    assert tx.retransmissions == 10 and tx.final is None


def test_tcp_never_retransmits_and_times_out_at_timer_f():
    tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=True, now=0.0)
    assert walk(tx) == [] and tx.retransmissions == 0
    assert tx.state is TxState.TERMINATED and tx.ended_at == 32.0


def test_provisional_response_makes_retransmissions_every_t2():
    tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=False, now=0.0)
    assert walk(tx, until=0.6) == [0.5]
    tx.on_response(response(100, "Trying"), 0.7)
    assert tx.state is TxState.PROCEEDING and tx.first_response_at == 0.7
    # Timer E set at 0.5 still fires at 1.5; from then on every T2 (§17.1.2.2, Proceeding).
    assert walk(tx, until=10.0) == [1.5, 5.5, 9.5]
    tx.on_response(response(200), 10.0)
    assert tx.state is TxState.COMPLETED and tx.final.status == 200 and tx.final_at == 10.0
    assert tx.next_deadline() == 10.0 + T4          # Timer K on UDP
    tx.on_response(response(200), 11.0)             # a retransmitted 200 is absorbed
    assert tx.absorbed == 1 and walk(tx) == [] and tx.state is TxState.TERMINATED


def test_final_response_ends_retransmissions_and_tcp_forgets_at_once():
    for reliable, k in ((False, T4), (True, 0.0)):
        tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=reliable, now=0.0)
        tx.on_response(response(404, "Not Found"), 0.2)
        assert tx.state is TxState.COMPLETED and tx.first_response_at == 0.2
        assert tx.next_deadline() == 0.2 + k and walk(tx) == [] and tx.retransmissions == 0
        assert tx.state is TxState.TERMINATED


def test_transport_error_ends_the_transaction_and_late_events_are_ignored():
    tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=False, now=0.0)
    tx.on_transport_error(0.001)
    assert tx.state is TxState.TERMINATED and tx.ended_at == 0.001 and tx.next_deadline() is None
    tx.on_response(response(200), 0.002)
    assert tx.final is None and tx.ignored == 1


def test_responses_match_by_branch_and_cseq_method():
    tx = ClientTransaction(REQUEST, "z9hG4bKtest", "OPTIONS", reliable=False, now=0.0)
    assert tx.matches(response(200))
    assert not tx.matches(response(200, branch="z9hG4bKother"))
    assert not tx.matches(response(200, method="INVITE"))


def test_table_is_closed_and_never_goes_back():
    assert set(NON_INVITE_TABLE) == set(TxState)
    for state, row in NON_INVITE_TABLE.items():
        for event, (nxt, _action) in row.items():
            assert event in ("timer_e", "timer_f", "timer_k", "1xx", "final", "transport_error")
            assert nxt in NON_INVITE_TABLE
            if state in (TxState.COMPLETED, TxState.TERMINATED):
                assert nxt not in (TxState.TRYING, TxState.PROCEEDING)
    assert NON_INVITE_TABLE[TxState.TERMINATED] == {}
    assert T1 == 0.5 and T2 == 4.0 and TIMER_F == 64 * T1


# --------------------------------------------------------------------------- the request, the target

def test_request_is_well_formed_sip_with_the_header_set_rfc3261_asks_for():
    target = parse_target("sip:[::1]:5070;transport=tcp")
    raw = options_request(target, (V6, 41234), "z9hG4bKabc", "cid@sipflow", "tag1", 7)
    m = parse_message(raw, datagram=False)
    assert m.problems == () and m.method == "OPTIONS" and m.uri == "sip:[::1]:5070;transport=tcp"
    via = m.vias[0]
    assert (via.transport, via.host, via.port, via.branch) == ("TCP", "::1", 41234, "z9hG4bKabc")
    assert via.param("rport") == ""                                       # RFC 3581, no value
    assert m.header("Max-Forwards") == "70" and m.cseq == (7, "OPTIONS") and m.call_id == "cid@sipflow"
    assert m.from_.tag == "tag1" and m.to.tag is None and str(m.to.uri) == target.uri
    assert m.header("User-Agent") == f"sipflow/{__version__}" and m.header("Content-Length") == "0"
    assert m.contacts[0].uri.port == 41234 and m.contacts[0].uri.param("transport") == "tcp"
    assert b"Via: SIP/2.0/TCP [::1]:41234;" in raw and raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("text, host, port, transport", [
    ("sip:127.0.0.1", "127.0.0.1", 5060, "udp"),
    ("127.0.0.1:5070", "127.0.0.1", 5070, "udp"),
    ("sip:[::1]:5071;transport=TCP", "::1", 5071, "tcp"),
    ("[::1]", "::1", 5060, "udp"),
    ("sip:alice@pbx.example.com;transport=udp", "pbx.example.com", 5060, "udp"),
])
def test_targets(text, host, port, transport):
    t = parse_target(text)
    assert (t.host, t.port, t.transport) == (host, port, transport) and t.uri.startswith("sip:")


@pytest.mark.parametrize("text", ["sips:127.0.0.1;transport=udp", "sip:127.0.0.1;transport=sctp", "tel:+123", "sip:",
                                  "sip:::1", "sip:127.0.0.1:0", "sip:127.0.0.1:99999", "sip:127.0.0.1:x",
                                  "sip:[pbx]:5060", "sip:a b", "sip:h?subject=x"])
def test_bad_targets_are_refused(text):
    with pytest.raises(ProbeError):
        parse_target(text)


@pytest.mark.parametrize("ip", ["224.0.0.1", "239.255.255.250", "255.255.255.255", "0.0.0.0", "ff02::1",
                                "::", "::ffff:224.0.0.1"])
def test_broadcast_multicast_and_unspecified_destinations_are_refused(ip):
    with pytest.raises(ProbeError):
        check_destination(ip)


def test_options_are_bounded():
    with pytest.raises(ProbeError):
        ProbeOptions(count=MAX_COUNT + 1)
    with pytest.raises(ProbeError):
        ProbeOptions(interval=0.01)
    assert ProbeOptions(count=3, interval=2).run_timeout == 14.0      # 10 s after the last probe
    assert ProbeOptions(count=3, timeout=1.5).run_timeout == 1.5
    assert parse_bind("[::1]:5070") == ("::1", 5070) and parse_bind("127.0.0.1") == ("127.0.0.1", 0)


def test_expect():
    assert 404 in parse_expect(None) and 603 in parse_expect(None) and 100 not in parse_expect(None)
    e = parse_expect("200, 4xx")
    assert 200 in e and 486 in e and 201 not in e and 500 not in e
    for bad in ("100", "1xx", "700", "abc", "20"):
        with pytest.raises(ValueError):
            parse_expect(bad)


@pytest.mark.parametrize("text, alerts, quiet", [
    ("10", [-1, 10.5], [0, 5, 10]),              # outside 0..10
    ("10:", [9.9], [10, 1e9]),                   # below 10
    ("~:10", [10.1], [-1e9, 10]),                # above 10
    ("10:20", [9, 21], [10, 15, 20]),            # outside 10..20
    ("@10:20", [10, 15, 20], [9, 21]),           # inside 10..20
    ("0.5", [0.51], [0.0, 0.5]),
])
def test_nagios_ranges_follow_the_plugin_guidelines(text, alerts, quiet):
    r = parse_range(text)
    assert all(r.alerts(v) for v in alerts) and not any(r.alerts(v) for v in quiet)


@pytest.mark.parametrize("bad", ["", "x", "20:10", "1:2:3", "@", "nan"])
def test_bad_nagios_ranges(bad):
    with pytest.raises(ValueError):
        parse_range(bad)


# --------------------------------------------------------------------------- (b) real servers

def test_sipp_uas_over_udp_answers_every_probe_of_one_call(tmp_path):
    with sipp_uas(tmp_path) as port:
        code, out, err, _ = sipflow(f"sip:{V4}:{port}", "--count", 3, "--interval", 0.2, "--format", "json")
    assert code == ProbeExit.OK, (out, err)
    probes = json_lines(out)
    assert [p["probe"] for p in probes] == [1, 2, 3] and [p["cseq"] for p in probes] == [1, 2, 3]
    assert len({p["call_id"] for p in probes}) == 1 and len({p["branch"] for p in probes}) == 3
    for p in probes:
        assert (p["outcome"], p["status"], p["reason"], p["transport"]) == ("up", 200, "OK", "udp")
        assert p["target"] == f"sip:{V4}:{port}" and p["remote"] == f"{V4}:{port}"
        assert p["branch"].startswith("z9hG4bK") and p["retransmissions"] == 0
        assert 0 < p["rtt"] < 1 and p["rtt"] == round(p["rtt"], 6)       # monotonic, microseconds
        assert p["server"] == "SIPp UAS (sipflow tests)" and "OPTIONS" in p["allow"]
        assert p["supported"] == ["replaces", "timer"]
    assert probes[1]["sent_at"] - probes[0]["sent_at"] == pytest.approx(0.2, abs=0.05)


def test_sipp_uas_over_tcp_one_connection_no_retransmissions(tmp_path):
    with sipp_uas(tmp_path, transport="tcp") as port:
        code, out, err, _ = sipflow(f"sip:{V4}:{port};transport=tcp", "--count", 2, "--interval", 0.1,
                                    "--format", "json")
    assert code == ProbeExit.OK, (out, err)
    a, b = json_lines(out)
    assert a["outcome"] == b["outcome"] == "up" and a["transport"] == "tcp"
    assert a["local"] == b["local"] and a["connect"] > 0 and b["connect"] is None
    assert a["retransmissions"] == b["retransmissions"] == 0


def test_sipp_uas_over_ipv6(tmp_path):
    if not has_ipv6():
        pytest.skip("no IPv6 on loopback")
    for transport in ("udp", "tcp"):
        with sipp_uas(tmp_path, ip=V6, transport=transport) as port:
            code, out, err, _ = sipflow(f"sip:[{V6}]:{port};transport={transport}", "--format", "json")
        assert code == ProbeExit.OK, (out, err)
        (p,) = json_lines(out)
        assert p["status"] == 200 and p["remote"] == f"[{V6}]:{port}" and p["local"].startswith("[::1]:")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kamailio_answers_with_its_capabilities(kamailio, transport):
    code, out = cli(f"sip:{V4}:{kamailio};transport={transport}", "--count", 2, "--interval", 0.1)
    assert code == ProbeExit.OK, out
    assert out.count(": 200 OK in ") == 2 and "2 of 2 probe(s) sent: 2 up" in out
    assert re.search(r"^Server: kamailio", out, re.M) and re.search(r"^Allow: .*OPTIONS", out, re.M)
    assert re.search(r"^Supported: path, outbound$", out, re.M)
    assert re.search(rf"^Seen as: {V4}:\d+$", out, re.M)                 # rport filled in (RFC 3581)


def test_kamailio_over_ipv6(kamailio):
    if not has_ipv6():
        pytest.skip("no IPv6 on loopback")
    for transport in ("udp", "tcp"):
        code, out = cli(f"sip:[{V6}]:{kamailio};transport={transport}", "--format", "json")
        assert code == ProbeExit.OK, out
        (p,) = json_lines(out)
        assert p["status"] == 200 and p["server"].startswith("kamailio") and p["remote"] == f"[{V6}]:{kamailio}"


def test_any_final_response_is_up_unless_expect_says_otherwise(kamailio):
    target = f"sip:notfound@{V4}:{kamailio}"
    code, out = cli(target, "--format", "json")
    assert code == ProbeExit.OK and json_lines(out)[0]["status"] == 404
    code, out = cli(target, "--expect", "200", "--format", "json")
    assert code == ProbeExit.CLIENT_ERROR and json_lines(out)[0]["outcome"] == "unexpected"
    code, out = cli(target, "--expect", "2xx,404", "--format", "json")
    assert code == ProbeExit.OK
    code, out = cli(target, "--expect", "200", "--format", "nagios")
    assert code == 2 and out.startswith("SIP CRITICAL - 404 Not Found") and "expected 200" in out


def test_nagios_thresholds_apply_to_the_round_trip(kamailio):
    target = f"sip:{V4}:{kamailio}"
    code, out = cli(target, "--format", "nagios", "-w", "0.5", "-c", "1")
    assert code == 0 and out.startswith("SIP OK - 200 OK in ")
    code, out = cli(target, "--format", "nagios", "-w", "0.0000001", "-c", "10")     # any rtt > 0.1 µs
    assert code == 1 and out.startswith("SIP WARNING - ")
    code, out = cli(target, "--format", "nagios", "-w", "0.5", "-c", "@0:10")        # inside 0..10
    assert code == 2 and out.startswith("SIP CRITICAL - ")


# --------------------------------------------------------------------------- (c) refused at once

def test_dead_udp_port_is_refused_in_under_100_ms_and_nagios_critical():
    port = closed_port()
    t0 = time.monotonic()
    run = probe_options(f"sip:{V4}:{port}", ProbeOptions(timeout=5))
    took = time.monotonic() - t0
    (r,) = run.results
    assert r.outcome is Outcome.REFUSED and r.elapsed < 0.1 and took < 0.1, (r, took)
    code, out, err, wall = sipflow(f"sip:{V4}:{port}", "--format", "nagios", "--timeout", 5)
    assert code == 2 and out.startswith("SIP CRITICAL - connection refused (udp "), (out, err)
    assert wall < 5
    code, out, _, _ = sipflow(f"sip:{V4}:{port}")
    assert code == ProbeExit.REFUSED and "1: refused: connection refused" in out


def test_dead_tcp_port_is_refused():
    port = closed_port(kind=socket.SOCK_STREAM)
    code, out = cli(f"sip:{V4}:{port};transport=tcp", "--format", "json")
    (p,) = json_lines(out)
    assert code == ProbeExit.REFUSED and p["outcome"] == "refused" and p["elapsed"] < 0.1


# --------------------------------------------------------------------------- (d) --timeout bounds the run

def test_timeout_bounds_a_udp_run_that_gets_no_answer_and_retransmits_per_timer_e():
    with silent_udp() as sink:
        port = sink.port
        t0 = time.monotonic()
        run = probe_options(f"sip:{V4}:{port}", ProbeOptions(timeout=1.7))
        took = time.monotonic() - t0
    (r,) = run.results
    assert 1.7 <= took < 1.85 and run.duration <= 1.7
    assert r.outcome is Outcome.TIMEOUT and r.retransmissions == 2 and "--timeout" in r.reason
    # The first transmission and the retransmissions at +0.5 and +1.5 s, all the same request.
    got = sink.got
    assert len(got) == 3 and len({data for _, data, _ in got}) == 1
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    assert gaps[0] == pytest.approx(0.5, abs=0.1) and gaps[1] == pytest.approx(1.0, abs=0.1)


def test_timeout_bounds_the_whole_command_and_is_critical_for_nagios():
    with silent_udp() as sink:
        code, out, err, wall = sipflow(f"sip:{V4}:{sink.port}", "--format", "nagios",
                                       "--timeout", 1, "-w", "0.5", "-c", "1")
    assert code == 2 and out.startswith("SIP CRITICAL - no response from "), (out, err)
    assert wall < 1 + 3     # the run itself is 1 s; the rest is Python starting up
    with silent_udp() as sink:
        code, out, _, _ = sipflow(f"sip:{V4}:{sink.port}", "--timeout", 0.3)
    assert code == ProbeExit.TIMEOUT and "1: timeout: no final response before --timeout 0.3 s" in out


def test_timeout_bounds_a_tcp_server_that_never_answers_and_tcp_never_retransmits():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.bind((V4, 0))
        lsock.listen(1)          # the kernel completes the handshake; nobody ever answers
        port = lsock.getsockname()[1]
        t0 = time.monotonic()
        run = probe_options(f"sip:{V4}:{port};transport=tcp", ProbeOptions(timeout=1.2))
        took = time.monotonic() - t0
        conn, _ = lsock.accept()
        with conn:
            conn.settimeout(0.5)
            data = b""
            with contextlib.suppress(socket.timeout, ConnectionError):
                while chunk := conn.recv(65536):
                    data += chunk
    (r,) = run.results
    assert r.outcome is Outcome.TIMEOUT and r.retransmissions == 0 and 1.2 <= took < 1.35
    assert data.count(b"OPTIONS sip:") == 1


def test_timeout_bounds_a_run_with_more_probes_than_fit():
    with silent_udp() as sink:
        t0 = time.monotonic()
        run = probe_options(f"sip:{V4}:{sink.port}", ProbeOptions(count=10, interval=0.5,
                                                                             timeout=1.2))
        took = time.monotonic() - t0
    assert 1.2 <= took < 1.35 and run.planned == 10 and [r.seq for r in run.results] == [1, 2, 3]
    assert all(r.outcome is Outcome.TIMEOUT for r in run.results)
    assert sorted({parse_message(d).cseq[0] for _, d, _ in sink.got}) == [1, 2, 3]


def test_a_server_that_goes_away_fails_every_probe_still_waiting():
    """Probes overlap: probe 1 waits (no answer), the port closes, probe 2 draws ICMP port unreachable,
    which the kernel reports for the socket: both are refused at once, nothing waits for Timer F."""
    with silent_udp() as sink:
        closer = threading.Timer(0.15, sink.close)
        closer.start()
        t0 = time.monotonic()
        run = probe_options(f"sip:{V4}:{sink.port}", ProbeOptions(count=2, interval=0.3, timeout=5))
        took = time.monotonic() - t0
        closer.join(5)
    assert [r.outcome for r in run.results] == [Outcome.REFUSED, Outcome.REFUSED]
    assert 0.3 <= took < 0.45 and run.results[1].elapsed < 0.1


# --------------------------------------------------------------------------- sent from where the Via says

def test_request_leaves_from_the_address_and_port_its_via_names():
    with silent_udp() as sink:
        probe_options(f"sip:{V4}:{sink.port}", ProbeOptions(timeout=0.2))
    (_, data, src), *_ = sink.got
    via = parse_message(data).vias[0]
    assert (via.host, via.port) == src and via.param("rport") == ""


def test_bind_chooses_the_source_port():
    port = free_port()
    with silent_udp() as sink:
        probe_options(f"sip:{V4}:{sink.port}", ProbeOptions(timeout=0.2, bind=f"{V4}:{port}"))
    (_, data, src), *_ = sink.got
    assert src == (V4, port) and parse_message(data).vias[0].port == port


# --------------------------------------------------------------------------- safety: one unicast host

def test_broadcast_and_multicast_targets_send_nothing_and_cannot_run():
    # 127.255.255.255 is loopback's broadcast address: the kernel refuses it without SO_BROADCAST.
    for target in ("sip:127.255.255.255", "sip:224.0.0.1", "sip:[ff02::1]"):
        code, out = cli(target, "--timeout", 1)
        assert code == ProbeExit.ERROR, out
        code, out = cli(target, "--format", "nagios", "--timeout", 1)
        assert code == 3 and out.startswith("SIP UNKNOWN - "), out


def test_usage_errors_are_unknown_for_nagios():
    code, out = cli(f"sip:{V4}", "--count", MAX_COUNT + 1, "--format", "nagios")
    assert code == 3 and out.startswith("SIP UNKNOWN - ") and out.count("\n") == 1
    code, out = cli(f"sip:{V4}", "--count", MAX_COUNT + 1)
    assert code == ProbeExit.USAGE
    code, out = cli(f"sip:{V4}", "-w", "20:10", "--format", "nagios")
    assert code == 3


# --------------------------------------------------------------------------- (e) output formats parse

# Nagios plugin development guidelines, "Performance data": 'label'=value[UOM];[warn];[crit];[min];[max]
NAGIOS_LINE = re.compile(r"^SIP (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+) \| (.+)\n$")
PERFDATA = re.compile(r"'(?P<label>[^'=]+)'=(?P<value>U|-?\d+(?:\.\d+)?)(?P<uom>s|ms|us|%|B|KB|MB|TB|c)?"
                      r";(?P<warn>[@~]?[-\d.:~]*);(?P<crit>[@~]?[-\d.:~]*);(?P<min>-?[\d.]*);(?P<max>-?[\d.]*)$")
STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def check_nagios(code, out):
    m = NAGIOS_LINE.match(out)
    assert m, out
    assert STATES[m.group(1)] == code
    items = m.group(3).split(" ")
    perf = {}
    for item in items:
        p = PERFDATA.match(item)
        assert p, item
        for rng in (p["warn"], p["crit"]):
            if rng:
                parse_range(rng)
        perf[p["label"]] = p
    assert perf["rtt"]["uom"] in (None, "s") and perf["rtt"]["min"] == "0"
    return m.group(1), perf


def test_nagios_output_parses_in_every_state(kamailio):
    state, perf = check_nagios(*cli(f"sip:{V4}:{kamailio}", "--format", "nagios", "-w", "0.5", "-c", "1"))
    assert state == "OK" and float(perf["rtt"]["value"]) > 0
    assert (perf["rtt"]["uom"], perf["rtt"]["warn"], perf["rtt"]["crit"]) == ("s", "0.5", "1")
    state, perf = check_nagios(*cli(f"sip:{V4}:{kamailio}", "--count", 3, "--interval", 0.1, "--format",
                                    "nagios"))
    assert state == "OK" and perf["up"]["value"] == "3" and perf["up"]["max"] == "3"
    state, perf = check_nagios(*cli(f"sip:{V4}:{closed_port()}", "--format", "nagios"))
    assert state == "CRITICAL" and perf["rtt"]["value"] == "U"
    with silent_udp() as sink:
        state, perf = check_nagios(*cli(f"sip:{V4}:{sink.port}", "--format", "nagios",
                                        "--timeout", 0.6))
    assert state == "CRITICAL" and perf["retransmissions"]["value"] == "1"


PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\} '
                         r'(\S+)$')


def check_prometheus(text):
    """Text exposition format as node_exporter's textfile collector reads it: HELP and TYPE once per
    family, before its samples; samples name{labels} value; no timestamps."""
    assert text.endswith("\n")
    helped, typed, samples = set(), {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helped
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in typed
            typed[name] = kind
        else:
            m = PROM_SAMPLE.match(line)
            assert m, line
            name, labels, value = m.groups()
            assert name in helped and name in typed
            float(value)
            samples[(name, labels)] = float(value)
    return samples


def test_prometheus_textfile_parses(kamailio):
    code, out = cli(f"sip:{V4}:{kamailio}", "--format", "prometheus")
    s = check_prometheus(out)
    labels = f'target="sip:{V4}:{kamailio}",transport="udp"'
    assert code == 0 and s[("probe_success", labels)] == 1 and s[("probe_sip_status_code", labels)] == 200
    assert 0 < s[("probe_duration_seconds", labels)] < 1 and 0 < s[("probe_sip_rtt_seconds", labels)] < 1
    code, out = cli(f"sip:{V4}:{closed_port()}", "--format", "prometheus")
    s = check_prometheus(out)
    assert code == 0 and [v for (n, _), v in s.items() if n == "probe_success"] == [0]
    assert [v for (n, _), v in s.items() if n == "probe_sip_rtt_seconds"][0] != \
        [v for (n, _), v in s.items() if n == "probe_sip_rtt_seconds"][0]      # NaN: no round trip


def test_json_lines_have_the_promised_fields(kamailio):
    code, out = cli(f"sip:{V4}:{kamailio};transport=tcp", "--count", 2, "--interval", 0.1, "--format", "json")
    assert code == 0 and len(out.splitlines()) == 2
    for p in json_lines(out):
        assert {"target", "transport", "outcome", "status", "reason", "rtt", "retransmissions", "server",
                "allow", "supported", "first_response", "elapsed"} <= set(p)
        assert isinstance(p["rtt"], float) and p["transport"] == "tcp"


def test_library_formats_of_a_run_without_answers():
    with silent_udp() as sink:
        run = probe_options(f"sip:{V4}:{sink.port}", ProbeOptions(timeout=0.2))
    state, line = nagios(run, parse_range("0.5"), parse_range("1"))
    assert state == 2 and check_nagios(2, line + "\n")[1]["rtt"]["value"] == "U"
    assert math.isnan(check_prometheus(prometheus(run))[
        ("probe_sip_rtt_seconds", f'target="{run.target}",transport="udp"')])


# --------------------------------------------------------------------------- the command line itself

def test_help_documents_every_probe_exit_code():
    out = CliRunner().invoke(main, ["probe", "options", "--help"]).output
    assert "Examples:" in out and "sipflow probe options" in out
    for code in ProbeExit:
        if code is not ProbeExit.OK:
            assert re.search(rf"(^|\s){int(code)} ", out), code
