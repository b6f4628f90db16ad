"""``sipflow show``: a message as it was received, with where and when, and nothing raw reaches the
terminal. Checked against the bytes tshark reads for the same frame."""
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from sipflow.cli.app import main

from conftest import SAMPLES
from pcaptools import eth_ip, ipv4, udp, write_pcap

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert (r.exit_code == 0) == ok, r.output
    return r


def tshark_payload(path, frame, field):
    out = subprocess.run(["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE",
                          "-Y", f"frame.number == {frame}", "-T", "fields", "-e", field],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    return bytes.fromhex(out.replace(":", ""))


@needs_tshark
@pytest.mark.parametrize("sample,frame,field", [("call-via-proxy.pcap", 1, "udp.payload"),
                                                ("call-via-proxy.pcap", 7, "udp.payload")])
def test_a_frame_shows_the_message_tshark_reads_there(sample, frame, field):
    path = SAMPLES / sample
    out = run("show", path, "--frame", frame).output
    banner, text = out.split("\n", 1)
    assert banner.startswith(f"=== frame {frame} | ") and " UTC | " in banner and "| UDP ===" in banner
    want = tshark_payload(path, frame, field).decode().replace("\r\n", "\n").rstrip("\n")
    assert text.rstrip("\n") == want


@needs_tshark
def test_a_message_cut_into_tcp_segments_is_shown_whole_with_every_frame():
    path = SAMPLES / "tcp-segmented.pcap"
    out = subprocess.run(["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE", "-Y",
                          "sip.Method == \"INVITE\"", "-T", "fields", "-e", "frame.number", "-e", "tcp.segment"],
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    rows = [line.split("\t") for line in out if line.split("\t")[-1]]    # the INVITE in several segments
    last, segments = int(rows[0][0]), [int(f) for f in rows[0][1].split(",")]
    shown = run("show", path, "--frame", last).output
    assert shown.startswith("=== frames " + ", ".join(map(str, segments)) + " | ")
    assert "| TCP ===" in shown.splitlines()[0] and "m=audio" in shown and shown.count("INVITE sip:") == 1


def test_a_whole_call_in_order_and_nothing_raw_reaches_the_terminal(tmp_path):
    bad = ("MESSAGE sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKs\r\n"
           "From: \"\x1b]0;owned\x07Eve\" <sip:e@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: show@x\r\nCSeq: 1 MESSAGE\r\n"
           "Content-Type: text/plain\r\nContent-Length: 14\r\n\r\nhello\x1b[2J there").encode()
    blob = ("INFO sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKt\r\nFrom: <sip:e@x>;tag=1\r\n"
            "To: <sip:b@y>\r\nCall-ID: show@x\r\nCSeq: 2 INFO\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: 4\r\n\r\n").encode() + b"\x00\x01\x02\x03"
    records = [(100, i * 1000, eth_ip(ipv4("192.0.2.1", "192.0.2.2", 17, udp("192.0.2.1", "192.0.2.2", 5060, 5060, m))))
               for i, m in enumerate((bad, blob))]
    path = write_pcap(tmp_path / "hostile.pcap", 1, records)
    out = run("show", path, "--call-id", "show@x").output
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;owned" in out and "hello\\x1b[2J there" in out
    assert out.index("MESSAGE sip:b@y") < out.index("INFO sip:b@y")
    assert "[4 bytes of application/octet-stream, not text]" in out


def test_show_says_what_to_give_and_what_is_missing():
    r = run("show", SAMPLES / "busy-486.pcap", ok=False)
    assert r.exit_code == 2 and "--frame" in r.output
    r = run("show", SAMPLES / "busy-486.pcap", "--frame", 99, ok=False)
    assert r.exit_code == 1 and "no SIP message in frame 99" in r.output
