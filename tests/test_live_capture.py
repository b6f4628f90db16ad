"""``sipflow live`` against real SIP stacks.

From an interface (``-i lo``): SIPp places calls (with RTP both ways) to a SIPp UAS on the loopback of
a private network namespace while sipflow sniffs it; SIGINT stops sipflow. The events it printed as
NDJSON must tell each call's start, answer and end as SIPp made them, its final summary must count
them, and the pcap it wrote (-w), read back, must hold the same calls. As a HEP collector
(``--hep-listen``): Kamailio's siptrace mirrors every message of calls SIPp places through it, and the
calls are told as they are from an interface.

Needs root, sipp, unshare, ip and ss (and kamailio for HEP); skipped otherwise. Nothing is sent outside
127.0.0.1 of the namespace; every step of tests/live_run.sh and tests/live_hep_run.sh is bounded in time.
"""
import fcntl
import importlib.util
import json
import os
import pty
import re
import struct
import termios
import threading
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sipflow

pytestmark = pytest.mark.stacks

REPO = Path(__file__).resolve().parents[1]
CALLS = 3


def _skip_reason(*more_tools):
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux (unshare --net, libpcap)"
    missing = [t for t in ("sipp", "unshare", "ip", "ss", "timeout", *more_tools) if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    if importlib.util.find_spec("pcapy") is None:
        return "pcapy-ng is not installed"
    if subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30).returncode != 0:
        return "no network namespace support"
    return None


def _media(out):
    """The RTP SIPp plays: 2.5 s of PCMA each way, as in samples/basic-call-rtp.pcap."""
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "samples" / "make_samples.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    make.write_rtp_pcap(str(out / "rtp-uac.pcap"), freq=440, pt=8, ssrc=0x11223344, seq0=1000, ts0=16000,
                        npkts=125, sport=6000, dport=6100)
    make.write_rtp_pcap(str(out / "rtp-uas.pcap"), freq=880, pt=8, ssrc=0x55667788, seq0=5000, ts0=48000,
                        npkts=125, sport=6100, dport=6000)


def _run_script(out, script, log, *extra):
    proc = subprocess.run(["unshare", "--net", "bash", str(REPO / "tests" / script), str(out),
                           str(REPO / "samples" / "scenarios"), sys.executable, str(CALLS), *extra],
                          capture_output=True, text=True, timeout=400, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    _check_status(out, proc.stdout, proc.stderr, log)


def _check_status(out, stdout, stderr, log):
    lines = stdout.splitlines() + ((out / "status").read_text().splitlines() if (out / "status").exists() else [])
    status = dict(line.split() for line in lines if line.count(" ") == 1 and line.split()[0] in ("uac", "live"))
    assert status.get("uac") == "0", (stdout, stderr, (out / log).read_text()[-2000:])
    assert status.get("live") == "0", (stdout, stderr)


@pytest.fixture(scope="module", params=["pcap", "dumpcap"])
def run(request, tmp_path_factory):
    """The calls sniffed by libpcap in-process, and through a dumpcap pipe."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if request.param == "dumpcap" and shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed (Debian: wireshark-common, which tshark brings)")
    out = tmp_path_factory.mktemp("live")
    _media(out)
    _run_script(out, "live_run.sh", "uac.log", "ndjson" if request.param == "pcap" else "dumpcap")
    events = [json.loads(line) for line in (out / "events.ndjson").read_text().splitlines()]
    return out, events


@pytest.fixture(scope="module")
def hep_run(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("kamailio") is None:
        pytest.skip("kamailio is not installed")
    mpath = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules")
                  if Path(p, "siptrace.so").exists()), None)
    if mpath is None:
        pytest.skip("Kamailio's siptrace module is not found")
    out = tmp_path_factory.mktemp("hep")
    _media(out)
    _run_script(out, "live_hep_run.sh", "hep-uac.log", mpath)
    return [json.loads(line) for line in (out / "hep-events.ndjson").read_text().splitlines()]


def test_every_call_is_told_as_it_happens(run):
    _, events = run
    calls = [e for e in events if e["type"] == "call"]
    for what in ("started", "answered", "ended"):
        told = [e for e in calls if e["event"] == what]
        assert len(told) == CALLS, (what, calls)
        assert len({e["call_id"] for e in told}) == CALLS
    for e in (e for e in calls if e["event"] == "ended"):
        assert e["outcome"] == "answered" and e["ended_by"] == "caller" and e["duration"] > 0
        assert e["streams"] == 2 and e["lost"] == 0 and e["mos"] > 4.0
    # in order: each call starts before it is answered, and is answered before it ends
    for call_id in {e["call_id"] for e in calls}:
        order = [e["event"] for e in calls if e["call_id"] == call_id]
        assert order.index("started") < order.index("answered") < order.index("ended")


def test_counters_and_final_summary(run):
    _, events = run
    stats = [e for e in events if e["type"] == "stats"]
    summary = events[-1]
    assert summary["type"] == "summary"
    assert summary["call_outcomes"] == {"answered": CALLS}
    counters = summary["counters"]
    assert counters["calls"] == CALLS and counters["rtp_packets"] == CALLS * 2 * 125
    assert counters["kernel_dropped"] == 0
    assert stats and all(s["packets"] <= counters["packets"] for s in stats)


def test_the_written_capture_holds_the_same_calls(run):
    out, events = run
    a = sipflow.analyze(str(out / "live.pcap"))
    ended = {e["call_id"]: e for e in events if e["type"] == "call" and e["event"] == "ended"}
    assert {c.call_id for c in a.calls} == set(ended)
    for c in a.calls:
        assert c.outcome.value == ended[c.call_id]["outcome"]
        assert sum(s.packets for s in c.streams) == 2 * 125
    summary = events[-1]
    assert summary["counters"]["packets"] == sum(f["frames"] for f in a.files)


@pytest.fixture(scope="module")
def sdp_run(tmp_path_factory):
    """--media sdp-only while RTP-like noise that no SDP announces goes to 127.0.0.1:7000."""
    reason = _skip_reason("tcpdump")
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("sdponly")
    _media(out)
    _run_script(out, "live_run.sh", "uac.log", "sdponly")
    assert "noise 0" in (out / "status").read_text()
    events = [json.loads(line) for line in (out / "events.ndjson").read_text().splitlines()]
    return out, events


def test_sdp_only_media_lets_the_calls_media_through_and_keeps_the_rest_out(sdp_run):
    out, events = sdp_run
    noise = sipflow.analyze(str(out / "noise.pcap"))   # tcpdump's view of port 7000 at the same time
    assert noise.stats["rtp_packets"] > 1000
    ended = [e for e in events if e["type"] == "call" and e["event"] == "ended"]
    assert len(ended) == CALLS and all(e["outcome"] == "answered" and e["streams"] == 2 for e in ended)
    seen = sipflow.analyze(str(out / "live.pcap"))     # what the filter let through, as sipflow wrote it
    assert len(seen.calls) == CALLS
    for c in seen.calls:   # the first packets may come before the filter names their port: most come after
        assert len(c.streams) == 2 and all(s.packets > 100 for s in c.streams), c.streams
    calls_rtp = sum(s.packets for c in seen.calls for s in c.streams)
    assert seen.stats["rtp_packets"] == calls_rtp <= CALLS * 2 * 125, "no noise got through"
    counters = events[-1]["counters"]
    assert counters["rtp_packets"] == calls_rtp
    # each call's ports named as its SDP came (offer, answer) and dropped at its end
    assert counters["filter_changes"] >= 2 * CALLS and counters["media_ports"] == 0


def test_a_hep_collector_tells_the_calls_kamailio_mirrors(hep_run):
    events = hep_run
    calls = [e for e in events if e["type"] == "call"]
    for what in ("started", "answered", "ended"):
        told = [e for e in calls if e["event"] == what]
        assert len(told) == CALLS and len({e["call_id"] for e in told}) == CALLS, (what, calls)
    for e in (e for e in calls if e["event"] == "ended"):
        assert e["outcome"] == "answered" and e["ended_by"] == "caller" and e["duration"] > 0
    summary = events[-1]
    assert summary["type"] == "summary" and summary["call_outcomes"] == {"answered": CALLS}
    # both hops of each call came over HEP (the proxy mirrors what it receives and what it sends): as
    # many messages as samples/call-via-proxy.pcap, which tcpdump took of the same scenarios through
    # Kamailio, holds for its one call
    per_call = len(sipflow.analyze(str(REPO / "samples" / "call-via-proxy.pcap")).messages)
    assert summary["counters"]["sip_messages"] == per_call * CALLS
    assert summary["counters"]["hep_packets"] == summary["counters"]["packets"] >= per_call * CALLS
    assert summary["methods"]["INVITE"]["requests"] == 2 * CALLS


@pytest.fixture(scope="module")
def hep_sent(tmp_path_factory):
    reason = _skip_reason("tcpdump")
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("hepsend")
    sample = REPO / "samples" / "transfer-hold.pcap"
    proc = subprocess.run(["unshare", "--net", "bash", str(REPO / "tests" / "live_hep_send.sh"), str(out),
                           str(sample), sys.executable], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    status = dict(line.split() for line in proc.stdout.splitlines() if line.count(" ") == 1)
    assert status.get("send") == "0" and status.get("live") == "0", (proc.stdout, proc.stderr)
    events = [json.loads(line) for line in (out / "sent-events.ndjson").read_text().splitlines()]
    return out, sipflow.analyze(str(sample)), events


def test_hep_send_delivers_every_message_to_a_collector(hep_sent):
    """sipflow's own collector receives exactly the capture's messages, with their addresses, ports,
    times and calls (HEP v3 out of sipflow, into sipflow)."""
    out, original, events = hep_sent
    said = re.match(r"(\d+) SIP messages, (\d+) RTCP packets and (\d+) stream reports sent",
                    (out / "hep-send.out").read_text())
    assert said, (out / "hep-send.out").read_text()
    sip, rtcp, reports = map(int, said.groups())
    streams = sum(len(c.streams) for c in original.calls)
    assert (sip, rtcp, reports) == (len(original.messages), original.stats["rtcp_packets"], streams) and streams
    summary = events[-1]
    assert summary["counters"]["hep_packets"] == sip + rtcp + reports
    assert summary["counters"]["sip_messages"] == len(original.messages)
    assert summary["methods"] == original.methods
    ended = {e["call_id"]: e for e in events if e["type"] == "call" and e["event"] == "ended"}
    assert set(ended) == {c.call_id for c in original.calls}
    for c in original.calls:
        assert ended[c.call_id]["outcome"] == c.outcome.value
        # the ended event is timed by the call's last message: the agent's time, carried over HEP
        assert ended[c.call_id]["ts"] == pytest.approx(max(e.ts for e in c.events), abs=2e-6)


def test_the_hep_traffic_on_the_wire_reads_back_as_the_same_messages(hep_sent):
    """tcpdump's capture of the HEP packets: tshark sees one UDP packet to 9060 per message, RTCP packet
    and stream report (tshark 4.0 has no HEP dissector), and sipflow reading that file (HEP decoded
    from a capture) finds the original messages, addresses and ports, and counts the reports."""
    out, original, _ = hep_sent
    sent = sum(map(int, re.match(r"(\d+) SIP messages, (\d+) RTCP packets and (\d+) stream reports",
                                 (out / "hep-send.out").read_text()).groups()))
    if shutil.which("tshark"):
        r = subprocess.run(["tshark", "-r", str(out / "hep.pcap"), "-Y", "udp.dstport == 9060", "-T", "fields",
                            "-e", "frame.number"], capture_output=True, text=True, timeout=120)
        assert len(r.stdout.split()) == sent > len(original.messages)
    again = sipflow.analyze(str(out / "hep.pcap"))
    assert [(e.src, e.sport, e.dst, e.dport, e.method, e.status, e.call_id) for e in again.messages] == \
        [(e.src, e.sport, e.dst, e.dport, e.method, e.status, e.call_id) for e in original.messages]
    assert again.stats["net_hep_qos"] == sum(len(c.streams) for c in original.calls)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def view_run(tmp_path_factory):
    """The same calls with sipflow's standard output on a pseudo-terminal of 30 x 120: its live table."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("view")
    _media(out)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(["unshare", "--net", "bash", str(REPO / "tests" / "live_run.sh"), str(out),
                             str(REPO / "samples" / "scenarios"), sys.executable, str(CALLS), "view"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color",
                                 "COLUMNS": "120", "LINES": "30"})
    os.close(slave)
    screen = bytearray()
    reader = threading.Thread(target=_drain, args=(master, screen), daemon=True)
    reader.start()
    try:
        _, err = proc.communicate(timeout=400)
    finally:
        reader.join(timeout=10)
        os.close(master)
    _check_status(out, "", err.decode(errors="replace"), "uac.log")
    return out, screen.decode("utf-8", "replace")


def _drain(fd, into):
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:       # the other side closed: EIO on Linux
            return
        if not chunk:
            return
        into += chunk


def test_the_terminal_view_draws_the_call_table_in_place(view_run):
    _, raw = view_run
    assert "\x1b[" in raw                           # drawn for a terminal, not as lines
    text = ANSI.sub("", raw)
    assert "sipflow live on lo" in text
    assert "#" in text and "State" in text and "Media" in text
    # the last frame (left on the screen when capture stops) lists the three answered calls with media
    last = text[text.rfind("sipflow live on lo"):]
    rows = [line for line in last.splitlines() if re.match(r"\s*\d+\s+│\s+\d\d:\d\d:\d\d\.\d{3}", line)]
    assert len(rows) == CALLS, last
    assert all("answered" in r and "PCMA" in r for r in rows), rows
    # the counters and the summary follow it
    assert "dropped 0/0" in last and "Calls: answered 3" in text


def test_rotated_capture_keeps_the_last_files_whole(view_run):
    """-w rot.pcap --rotate 40KB --keep-files 2 during the calls: two files left, the latest numbers,
    each a whole capture of at most about 40 KB, and the last holds the end of the last call."""
    out, _ = view_run
    kept = sorted(p.name for p in out.glob("rot-*.pcap"))
    assert len(kept) == 2
    numbers = [int(name[4:8]) for name in kept]
    assert numbers[1] == numbers[0] + 1 and numbers[0] >= 2      # older files were made and removed
    for name in kept:
        size = (out / name).stat().st_size
        assert size <= 40_000 + 2_000
        sipflow.analyze(str(out / name))                         # reads whole, no error
    last = sipflow.analyze(str(out / kept[1]))
    assert any(e.method == "BYE" for e in last.messages)


def test_live_writes_the_report_at_the_end(view_run):
    """--report: the HTML page of what was seen, with its three calls and their messages."""
    out, _ = view_run
    html = (out / "live.html").read_text()
    start = html.index('<script type="application/json" id="sipflow-data">') + len(
        '<script type="application/json" id="sipflow-data">')
    data = json.loads(html[start:html.index("</script>", start)])
    assert [c["outcome"] for c in data["calls"]] == ["answered"] * CALLS
    assert data["detailed"] == CALLS and len(data["messages"]) == 7 * CALLS
