"""The whole chain on this machine: real SIP stacks make fresh captures, sipflow reads them,
tshark checks the reading.

A module-scoped fixture runs `samples/make_samples.sh --out TMPDIR NAME...`: SIPp (UAC and UAS)
and Kamailio (registrar, record-routing proxy, WebSocket server) exchange SIP and RTP on the
loopback interface of a private network namespace (`unshare --net`, 127.0.0.1 and ::1 only),
recorded by tcpdump. make_samples.py itself fails when tshark's message/Call-ID/stream counts
differ from its EXPECTED table. Then, for every fresh capture, sipflow's JSON document
(`python -m sipflow analyze F --format json`) is compared with tshark by the same rules as
test_oracle.py (whose helpers are reused), and checked against what the scenario that made the
capture must produce (outcome, hops, registrations, transports, fragments).

Needs root, sipp, kamailio (with its websocket module), tcpdump, unshare (and a kernel that
allows network namespaces), tshark, ethtool, ip, timeout. Skipped otherwise, with the reason.
Deselect with `-m "not stacks"`. Takes about 30 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

try:
    import tshark_oracle as oracle
    import test_oracle as ot
except ImportError:  # tests/ made a package
    from tests import tshark_oracle as oracle
    from tests import test_oracle as ot

pytestmark = pytest.mark.stacks

REPO = Path(__file__).resolve().parents[1]
MAKE_SAMPLES = REPO / "samples" / "make_samples.sh"

# Captures made fresh for this module (names as in make_samples.py; about 25 s together).
LIVE = ("basic-call-rtp", "call-via-proxy", "register-401-200", "cancel-487",
        "tcp-segmented", "websocket", "call-ipv6", "udp-fragmented")

# Everything make_samples.sh runs (tshark: the oracle here and its count check there).
TOOLS = ("sipp", "kamailio", "tcpdump", "unshare", "tshark", "ethtool", "ip", "timeout", "python3")

MAKE_TIMEOUT = float(os.environ.get("SIPFLOW_STACKS_TIMEOUT", "240"))
TAIL_LINES = 60


# --------------------------------------------------------------------------- making the captures

def _skip_reason():
    """Why the stacks cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux (network namespaces)"
    if os.geteuid() != 0:
        return "needs root (unshare --net, tcpdump): run as root or through sudo"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"missing {', '.join(missing)} (Debian: apt-get install sip-tester kamailio "
                "kamailio-websocket-modules tcpdump tshark ethtool iproute2)")
    try:
        proc = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return f"`unshare --net true` failed: {e}"
    if proc.returncode != 0:
        return (f"no network namespace support: `unshare --net true` exited {proc.returncode}: "
                f"{proc.stderr.strip()[-300:]}")
    return None


def _tail(text, n=TAIL_LINES):
    lines = text.splitlines()
    return "\n".join((["..."] if len(lines) > n else []) + lines[-n:])


def _run_bounded(cmd, timeout):
    """Run cmd in its own session; on timeout stop its whole process group (SIGTERM, which
    make_samples.py turns into a clean stop of everything it started; SIGKILL 20 s later).
    Returns (returncode or None on timeout, combined output)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, _ = proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                out = ""
        return None, out


@pytest.fixture(scope="module")
def live_dir(tmp_path_factory):
    """Directory holding LIVE captures made just now by make_samples.sh."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("live-captures")
    cmd = [str(MAKE_SAMPLES), "--out", str(out), *LIVE]
    t0 = time.monotonic()
    rc, output = _run_bounded(cmd, MAKE_TIMEOUT)
    took = time.monotonic() - t0
    if rc is None:
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {MAKE_TIMEOUT:.0f} s; output tail:\n"
                    f"{_tail(output)}", pytrace=False)
    if rc != 0:
        pytest.fail(f"`{' '.join(cmd)}` exited {rc} after {took:.0f} s; output tail:\n{_tail(output)}",
                    pytrace=False)
    missing = [n for n in LIVE if not (out / f"{n}.pcap").is_file()]
    if missing:
        pytest.fail(f"make_samples.sh exited 0 but wrote no {', '.join(missing)} in {out}; output tail:\n"
                    f"{_tail(output)}", pytrace=False)
    return out


@pytest.fixture(params=LIVE)
def capture(request, live_dir):
    return live_dir / f"{request.param}.pcap"


# --------------------------------------------------------------------------- both readings

def _tshark_messages(path):
    return oracle.sip_messages(path)


def _sipflow_messages(path):
    return [m for m in ot.sipflow_doc(path).get("messages", []) if m.get("file", 0) == 0]


def test_sip_messages_found(capture):
    """Every SIP message tshark dissects is in sipflow's messages: same frame, ts (1 µs), src,
    dst, transport, method/status, Call-ID and CSeq (test_oracle's rule)."""
    expected, got = _tshark_messages(capture), _sipflow_messages(capture)
    assert expected, f"{capture.name}: tshark finds no SIP message in a fresh capture"
    missing = ot._unmatched(expected, got)
    if missing:
        pytest.fail(f"{capture.name}: tshark {len(expected)} messages, sipflow {len(got)}\n"
                    + ot._diff_report("tshark messages not found in sipflow", missing, "tshark", got,
                                      "sipflow"), pytrace=False)


def test_no_extra_sip_messages(capture):
    """sipflow reports no SIP message tshark does not."""
    expected, got = _tshark_messages(capture), _sipflow_messages(capture)
    extra = ot._unmatched(got, expected)
    if extra:
        pytest.fail(f"{capture.name}: tshark {len(expected)} messages, sipflow {len(got)}\n"
                    + ot._diff_report("sipflow messages tshark does not have", extra, "sipflow",
                                      expected, "tshark"), pytrace=False)


def test_invite_final_status(capture):
    """calls[].final_status per Call-ID equals tshark_oracle.final_status_by_call(follow_auth_retry=True),
    and sipflow has a call for exactly the Call-IDs with an initial INVITE."""
    expected = oracle.final_status_by_call(capture, messages=_tshark_messages(capture),
                                           follow_auth_retry=True)
    got = defaultdict(list)
    for call in ot.sipflow_doc(capture).get("calls", []):
        got[call.get("call_id")].append(call.get("final_status"))
    problems = []
    for call_id, status in expected.items():
        if call_id not in got:
            problems.append(f"{call_id!r}: no call in sipflow (tshark final status {status})")
        elif got[call_id] != [status]:
            problems.append(f"{call_id!r}: sipflow final_status {got[call_id]}, tshark {status}")
    for call_id, statuses in got.items():
        if call_id not in expected:
            problems.append(f"{call_id!r}: sipflow call (final_status {statuses}) has no initial "
                            "INVITE in tshark's reading")
    if problems:
        pytest.fail(f"{capture.name}:\n  " + "\n  ".join(problems), pytrace=False)


def test_rtp_streams(capture):
    """tshark's rtp,streams and sipflow's streams are the same set (src, dst, SSRC), with the same
    packets and lost, and jitter max/mean within 0.1 ms or 5 % (test_oracle's rule)."""
    expected = oracle.rtp_streams(capture)
    problems, got = ot.compare_streams(expected, ot.sipflow_doc(capture))
    for rest in got.values():
        problems += [f"not in tshark: {ot._describe_stream(s)}" for s in rest]
    if problems:
        pytest.fail(f"{capture.name}:\n  " + "\n  ".join(problems), pytrace=False)


# --------------------------------------------------------------------------- what each scenario makes
# Facts that follow from how make_samples.py makes each capture (see samples/README.md).

class Facts:
    def __init__(self, doc):
        self.doc = doc
        self.problems = []

    def eq(self, what, got, want):
        if got != want:
            self.problems.append(f"{what}: {got!r}, expected {want!r}")

    def true(self, what, cond):
        if not cond:
            self.problems.append(what)

    def one_call(self, call_id=None):
        calls = self.doc.get("calls", [])
        if call_id is not None:
            calls = [c for c in calls if c.get("call_id") == call_id]
            self.eq(f"calls with Call-ID {call_id}", len(calls), 1)
        else:
            self.eq("number of calls", len(calls), 1)
        return calls[0] if len(calls) == 1 else {}

    def call(self, c, outcome, final_status, hops, messages=None):
        cid = c.get("call_id")
        self.eq(f"call {cid} outcome", c.get("outcome"), outcome)
        self.eq(f"call {cid} final_status", c.get("final_status"), final_status)
        self.eq(f"call {cid} hops", c.get("hops"), hops)
        if messages is not None:
            self.eq(f"call {cid} messages", c.get("messages"), messages)

    def g711_streams(self, c, host):
        """The two 2.5 s PCMA streams of uac_call.xml / uas_call.xml, both tied to call c."""
        streams = self.doc.get("streams", [])
        self.eq("number of RTP streams", len(streams), 2)
        self.eq("SSRCs", sorted(s.get("ssrc") for s in streams), ["0x11223344", "0x55667788"])
        self.eq("stream endpoints", sorted((s.get("src"), s.get("dst")) for s in streams),
                [(f"{host}:6000", f"{host}:6100"), (f"{host}:6100", f"{host}:6000")])
        for s in streams:
            where = f"stream {s.get('src')} -> {s.get('dst')}"
            self.eq(f"{where} codec", s.get("codec"), "PCMA")
            self.eq(f"{where} packets", s.get("packets"), 125)
            self.eq(f"{where} lost", s.get("lost"), 0)
            self.eq(f"{where} call_id", s.get("call_id"), c.get("call_id"))
        self.eq(f"call {c.get('call_id')} streams", sorted(c.get("streams") or []),
                list(range(len(streams))))

    def no_registrations(self):
        self.eq("registrations", self.doc.get("registrations"), [])

    def messages(self, **match):
        return [m for m in self.doc.get("messages", [])
                if all(m.get(k) == v for k, v in match.items())]


def facts_basic_call_rtp(f):
    c = f.one_call()
    f.call(c, "answered", 200, hops=1, messages=7)
    f.g711_streams(c, "127.0.0.1")
    f.no_registrations()


def facts_call_via_proxy(f):
    c = f.one_call()
    f.call(c, "answered", 200, hops=2, messages=14)     # every message on both hops
    f.g711_streams(c, "127.0.0.1")                      # RTP goes directly between the UAs
    f.no_registrations()


def facts_register_401_200(f):
    f.eq("calls", f.doc.get("calls"), [])
    regs = f.doc.get("registrations", [])
    f.eq("number of registrations", len(regs), 1)
    if len(regs) == 1:
        r = regs[0]
        f.eq("registration aor", r.get("aor"), "sip:alice@sipflow.test")
        f.eq("registration outcome", r.get("outcome"), "registered")
        f.eq("registration final_status", r.get("final_status"), 200)
        f.eq("registration challenges", r.get("challenges"), 1)


def facts_cancel_487(f):
    c = f.one_call()
    f.call(c, "cancelled", 487, hops=1, messages=7)
    f.eq("CANCEL requests", len(f.messages(method="CANCEL")), 1)


def facts_tcp_segmented(f):
    f.true("every message over TCP", all(m.get("transport") == "tcp" for m in f.doc.get("messages", [])))
    c = f.one_call()
    f.call(c, "answered", 200, hops=1, messages=7)
    invites = f.messages(method="INVITE")
    f.eq("INVITEs", len(invites), 1)
    if invites:     # ~3.4 KB in one send(), MSS 1460 with timestamps: 1448 + 1448 + rest
        f.eq("TCP segments of the INVITE (frames)", len(invites[0].get("frames") or []), 3)
    options = f.messages(method="OPTIONS")
    f.eq("OPTIONS Call-IDs", sorted(m.get("call_id") for m in options),
         ["sipflow-pipelined-1@127.0.0.1", "sipflow-pipelined-2@127.0.0.1"])
    f.eq("frames holding the two OPTIONS (one send())", len({m.get("frame") for m in options}), 1)
    f.eq("200 OK to OPTIONS", len(f.messages(status=200, cseq_method="OPTIONS")), 2)


def facts_udp_fragmented(f):
    c = f.one_call()
    f.call(c, "answered", 200, hops=1, messages=7)
    invites = f.messages(method="INVITE")
    f.eq("INVITEs", len(invites), 1)
    if invites:     # ~3.4 KB datagram, MTU 1500: fragments of 1480 + 1480 + rest
        f.eq("IP fragments of the INVITE (frames)", len(invites[0].get("frames") or []), 3)
        f.eq("INVITE transport", invites[0].get("transport"), "udp")


def facts_call_ipv6(f):
    msgs = f.doc.get("messages", [])
    f.true("every message between [::1] ports",
           bool(msgs) and all(str(m.get(k)).startswith("[::1]:") for m in msgs for k in ("src", "dst")))
    c = f.one_call()
    f.call(c, "answered", 200, hops=1, messages=7)
    f.g711_streams(c, "[::1]")


WS_INVITE_CALL_ID = "ws-invite-77b9@sipflow.test"      # fixed in make_samples.py


def facts_websocket(f):
    transports = Counter(m.get("transport") for m in f.doc.get("messages", []))
    f.true(f"SIP over WebSocket messages present (transports {dict(transports)})", transports["ws"] > 0)
    # REGISTER/401/REGISTER/200, INVITE/180/486/ACK on the WS leg, 2 OPTIONS/200, INVITE/100/404/ACK
    f.eq("ws messages", transports["ws"], 14)
    f.eq("udp messages (SIPp leg: INVITE, 100, 180, 486, ACK)", transports["udp"], 5)
    regs = f.doc.get("registrations", [])
    f.eq("number of registrations", len(regs), 1)
    if len(regs) == 1:
        r = regs[0]
        f.eq("registration aor", r.get("aor"), "sip:carol@sipflow.test")
        f.eq("registration outcome", r.get("outcome"), "registered")
        f.eq("registration challenges", r.get("challenges"), 1)
    f.eq("number of calls", len(f.doc.get("calls", [])), 2)
    busy = [c for c in f.doc.get("calls", []) if c.get("call_id") != WS_INVITE_CALL_ID]
    if len(busy) == 1:      # SIPp (UDP) -> Kamailio -> WebSocket client, which answers 486
        f.call(busy[0], "busy", 486, hops=2, messages=9)
    else:
        f.problems.append(f"calls other than {WS_INVITE_CALL_ID}: {busy!r}")
    f.call(f.one_call(WS_INVITE_CALL_ID), "rejected", 404, hops=1, messages=4)
    opts = f.messages(method="OPTIONS")
    f.eq("OPTIONS (sent in two WebSocket frames)", len(opts), 1)
    if opts:
        f.eq("OPTIONS transport", opts[0].get("transport"), "ws")


SCENARIO_FACTS = {
    "basic-call-rtp": facts_basic_call_rtp,
    "call-via-proxy": facts_call_via_proxy,
    "register-401-200": facts_register_401_200,
    "cancel-487": facts_cancel_487,
    "tcp-segmented": facts_tcp_segmented,
    "udp-fragmented": facts_udp_fragmented,
    "call-ipv6": facts_call_ipv6,
    "websocket": facts_websocket,
}
assert set(SCENARIO_FACTS) == set(LIVE)


def test_scenario_facts(capture):
    """What the scenario that made the capture must give: outcome, hops and messages per call,
    registrations and challenges, transports, fragments/segments, RTP streams tied to the call;
    and nothing malformed."""
    f = Facts(ot.sipflow_doc(capture))
    SCENARIO_FACTS[capture.stem](f)
    f.eq("malformed", f.doc.get("malformed"), [])
    if f.problems:
        pytest.fail(f"{capture.name} (sipflow JSON):\n  " + "\n  ".join(f.problems), pytrace=False)
