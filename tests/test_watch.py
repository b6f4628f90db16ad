"""Live events from snapshots (analysis.watch): a real capture fed to the analyzer packet by packet,
looked at every few packets as `sipflow live` does; each call's story is told once, in order, whatever
the pace of the snapshots. Also the live command's errors that need no traffic."""
import importlib.util
import os

import pytest
from click.testing import CliRunner

from sipflow.analysis.analyzer import Analyzer
from sipflow.analysis.options import AnalyzerOptions
from sipflow.analysis.watch import Watcher
from sipflow.capture.files import open_captures, records
from sipflow.cli import main
from sipflow.render.live import event_line

from conftest import SAMPLES


def watch(path, every, options=AnalyzerOptions()):
    an, w, out = Analyzer(options), Watcher(), []
    for n, (ts, fi, frame, lt, buf, off, caplen) in enumerate(records(open_captures([str(path)])), 1):
        an.feed(ts, fi, frame, lt, bytes(buf[off:off + caplen]))
        if n % every == 0:
            out += w.update(an.snapshot())
    out += w.update(an.result())
    assert w.update(an.snapshot()) == []          # nothing is told twice
    return out


@pytest.mark.parametrize("every", [1, 7, 50, 10_000])
def test_each_call_is_told_once_in_order_at_any_pace(every):
    events = watch(SAMPLES / "transfer-hold.pcap", every)
    calls = [e for e in events if e.kind == "call"]
    first = [e.what for e in calls if e.data["call"] == 1]
    assert first == ["started", "answered", "hold", "resume", "transfer", "ended"]   # a 183, no 180: no ringing
    second = [e.what for e in calls if e.data["call"] == 2]
    assert second == ["started", "ringing", "answered", "ended"]
    ended = [e for e in calls if e.what == "ended"]
    assert [e.data["outcome"] for e in ended] == ["answered", "answered"]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    for e in events:
        assert event_line(e)


def test_failed_calls_and_registrations_are_told():
    events = watch(SAMPLES / "busy-486.pcap", 3)
    ended = [e for e in events if e.what == "ended"]
    assert len(ended) == 1 and ended[0].data["outcome"] == "busy" and ended[0].data["final_status"] == 486
    assert "busy 486" in event_line(ended[0])
    regs = [e for e in watch(SAMPLES / "register-401-200.pcap", 2) if e.kind == "registration"]
    assert regs and regs[-1].what == "registered" and regs[-1].data["final_status"] == 200
    assert "register registered" in event_line(regs[-1])


def test_live_needs_an_interface_and_names_it():
    r = CliRunner().invoke(main, ["live"])
    assert r.exit_code == 2 and "-i IFACE" in r.output


@pytest.mark.skipif(os.geteuid() != 0 or importlib.util.find_spec("pcapy") is None,
                    reason="opening an interface needs root and pcapy-ng")
def test_live_refuses_a_bad_filter_and_an_unknown_interface():
    r = CliRunner().invoke(main, ["live", "-i", "lo", "-f", "port ((( 5060"])
    assert r.exit_code == 1 and "bad capture filter" in r.output
    r = CliRunner().invoke(main, ["live", "-i", "no-such-interface0"])
    assert r.exit_code == 1 and "cannot capture on no-such-interface0" in r.output
    r = CliRunner().invoke(main, ["live", "--list-interfaces"])
    assert r.exit_code == 0 and any(line.split()[0] == "lo" for line in r.output.splitlines() if line.strip())


def test_sdp_only_media_needs_one_interface_through_libpcap():
    r = CliRunner().invoke(main, ["live", "--hep-listen", "udp:127.0.0.1:9060", "--media", "sdp-only"])
    assert r.exit_code == 2 and "-i IFACE" in r.output
    for args in (["-i", "lo", "--via", "dumpcap"], ["-i", "lo", "-i", "eth0"]):
        r = CliRunner().invoke(main, ["live", *args, "--media", "sdp-only"])
        assert r.exit_code == 2 and "--media" in r.output and "dumpcap pipe cannot" in r.output, r.output


def test_the_media_filter_names_sip_fragments_and_the_media_ports_merged():
    from sipflow.capture.live import MEDIA_RANGES, media_filter
    bpf, widened = media_filter("udp port 5060", [6001, 6000, 6010, 6011, 7000, 6000])
    assert not widened
    assert bpf.split(" or ")[0] == "(udp port 5060)" and "ip[6:2] & 0x3fff != 0" in bpf and "ip6[6] == 44" in bpf
    assert bpf.endswith("udp portrange 6000-6001 or udp portrange 6010-6011 or udp port 7000")
    assert media_filter("udp port 5060", ())[0].count(" or ") == 2   # SIP and fragments only
    most, widened = media_filter("udp port 5060", range(10000, 10000 + 2 * MEDIA_RANGES, 2))
    assert not widened and most.count(" or udp port ") == MEDIA_RANGES
    wide, widened = media_filter("udp port 5060", range(10000, 10000 + 2 * MEDIA_RANGES + 2, 2))
    assert widened and wide.endswith(" or udp") and "udp port 10000" not in wide
    if importlib.util.find_spec("pcapy") is not None:   # each compiles, the longest within Linux's 4,096
        import pcapy
        for f in (bpf, most, wide):
            assert 0 < len(pcapy.compile(1, 65535, f, 1, 0).get_bpf()) <= 4096


def test_several_interfaces_need_dumpcap_and_the_option_says_so():
    r = CliRunner().invoke(main, ["live", "-i", "lo", "-i", "eth0", "--via", "pcap"])
    assert r.exit_code == 2 and "--via" in r.output and "several" in r.output


@pytest.mark.skipif(os.geteuid() != 0 or not __import__("shutil").which("dumpcap"),
                    reason="needs root and dumpcap")
def test_dumpcap_that_cannot_capture_says_why():
    r = CliRunner().invoke(main, ["live", "-i", "no-such-interface0", "--via", "dumpcap"])
    assert r.exit_code == 1 and "dumpcap could not capture on no-such-interface0" in r.output


@pytest.mark.skipif(os.geteuid() != 0 or importlib.util.find_spec("pcapy") is None,
                    reason="opening an interface needs root and pcapy-ng")
@pytest.mark.parametrize("via", ["pcap", "dumpcap"])
def test_an_idle_interface_still_stops_at_the_duration(via):
    """Nothing matches the filter (the discard port): the capture must still end at --duration, with
    its summary (libpcap's own timeout is not kept on Linux when no packet arrives)."""
    import json
    import shutil
    import subprocess
    import sys
    if via == "dumpcap" and shutil.which("dumpcap") is None:
        pytest.skip("dumpcap is not installed")
    r = subprocess.run([sys.executable, "-m", "sipflow", "live", "-i", "lo", "--via", via, "-f", "udp port 9",
                        "--duration", "1", "--format", "ndjson"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.splitlines()[-1])
    assert last["type"] == "summary" and last["counters"]["packets"] == 0
