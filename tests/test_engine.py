"""``--engine tshark``: SIP cut out of the packets by Wireshark's dissectors (tshark's upper-PDU export)
instead of sipflow's own decoder, into the same analyzer. On every bundled sample (and the shared
captures, when present) it must give the same messages and the same calls as the native decoder:
frames, endpoints, transport, methods and statuses, Call-IDs; outcomes, statuses, parties and timings
(to the microsecond: the export is pcapng with nanosecond times, so floats round differently).
RTP is sipflow's own in both, so the streams are the same objects' figures. Skipped without tshark.
"""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from sipflow.cli import main
from conftest import SAMPLES, shared_files

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (apt-get install tshark)")

SAMPLE_FILES = sorted(SAMPLES.glob("*.pcap"))
# tshark's dissectors look for SIP on the usual ports only: these captures use others (test_oracle.py
# tells tshark with decode-as; the engine says it found nothing, tested below).
OTHER_PORTS = {"heplify__sip_ipv4_tcp_fragmented.pcap"}


def document(path, *extra):
    r = CliRunner().invoke(main, ["analyze", str(path), "--format", "json", "--no-progress", *extra])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def close(a, b) -> bool:
    """Equal, times within 2 µs (at 1.8e9 s a float's step is 0.24 µs), at any depth."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 2e-6
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("path", SAMPLE_FILES + [p for p in shared_files() if p.name not in OTHER_PORTS],
                         ids=lambda p: p.name)
def test_tshark_engine_reads_the_same_messages_and_calls(path):
    native, tshark = document(path), document(path, "--engine", "tshark")
    key = ("frame", "src", "dst", "transport", "method", "status", "call_id", "cseq", "cseq_method")
    # tshark's export repeats the first of several messages in one TCP segment (it says which frames)
    short = {27} if path.name == "tcp-segmented.pcap" else set()
    assert tshark["stats"].get("tshark_pdu_repeats", 0) == len(short)
    firsts = [m for i, m in enumerate(native["messages"])
              if m["frame"] not in short or native["messages"][i - 1]["frame"] != m["frame"]]
    assert [tuple(m.get(k) for k in key) for m in tshark["messages"]] == [tuple(m.get(k) for k in key) for m in firsts]
    assert len(native["messages"]) > 0
    assert tshark["stats"]["sip_left_to_tshark"] == native["stats"]["sip_messages"]
    assert tshark["stats"]["sip_messages"] == native["stats"]["sip_messages"] - len(short)
    assert len(tshark["calls"]) == len(native["calls"])
    for c, d in zip(native["calls"], tshark["calls"]):
        for k, v in c.items():
            if k not in ("streams", "timeline", "events", "anomalies", "dtmf"):
                assert close(v, d[k]), (path.name, c["call_id"], k, v, d[k])
    assert [(s["ssrc"], s["packets"], s["lost"]) for s in tshark["streams"]] == \
        [(s["ssrc"], s["packets"], s["lost"]) for s in native["streams"]]


def test_engine_without_tshark_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    r = CliRunner().invoke(main, ["calls", str(SAMPLE_FILES[0]), "--engine", "tshark", "--no-progress"])
    assert r.exit_code == 1 and "--engine tshark needs tshark" in r.output and "Traceback" not in r.output


def test_a_repeat_in_tsharks_export_is_dropped_and_said():
    r = CliRunner().invoke(main, ["dialogs", str(SAMPLES / "tcp-segmented.pcap"), "--engine", "tshark",
                                  "--no-progress"])
    assert r.exit_code == 0 and "tshark exported the same SIP message twice in frame(s) 27" in r.output


def test_a_capture_where_tshark_finds_no_sip_says_so(tmp_path):
    from pcaptools import sip_text, udp_frame, write_pcap
    # on port 53 both ways, Wireshark's DNS dissector takes the datagram before any SIP heuristic
    msg = sip_text("OPTIONS sip:b@192.0.2.2 SIP/2.0", [("Via", "SIP/2.0/UDP 192.0.2.1:53;branch=z9hG4bKx"),
                   ("From", "<sip:a@192.0.2.1>;tag=1"), ("To", "<sip:b@192.0.2.2>"), ("Call-ID", "x@y"),
                   ("CSeq", "1 OPTIONS")])
    path = write_pcap(tmp_path / "odd.pcap", 1, [(1_700_000_000, 0, udp_frame("192.0.2.1", 53, "192.0.2.2", 53,
                                                                               msg))])
    native = CliRunner().invoke(main, ["dialogs", str(path), "--format", "csv", "--no-progress"])
    assert "OPTIONS" in native.stdout
    r = CliRunner().invoke(main, ["dialogs", str(path), "--format", "csv", "--engine", "tshark", "--no-progress"])
    assert r.exit_code == 0 and "OPTIONS" not in r.stdout and "tshark found no SIP in" in r.output
