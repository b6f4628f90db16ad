"""Streams that announce more than they will ever send are not buffered: peak memory measured in a
subprocess (the analyzer's own ru_maxrss) stays flat when such a stream grows eightfold.

- TCP: a SIP head announcing Content-Length: 1000000000, then megabytes of body that never end;
- WebSocket: a frame announcing 2^63 bytes, then megabytes of it; and a real 3 MiB frame (over the
  1 MiB ceiling) followed by a normal frame, which is still read.

Each capture is built here (no big file in the repo). Nothing is sent anywhere.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sipflow
from pcaptools import eth_ip, ipv4, sip_text, tcp, write_pcap

A, B = "192.0.2.1", "192.0.2.2"
CHUNK = 1400
UPGRADE = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

# VmHWM, not ru_maxrss: Linux carries the parent's peak at fork into a child's ru_maxrss.
RSS = """
import re, sys, sipflow
a = sipflow.analyze(sys.argv[1])
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print(hwm, a.stats.get("tcp_sip_oversized", 0), a.stats.get("net_ws_frame_oversized", 0), len(a.messages))
"""


def options() -> bytes:
    return sip_text("OPTIONS sip:b@192.0.2.2 SIP/2.0", [
        ("Via", "SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bKopt"), ("From", "<sip:a@192.0.2.1>;tag=1"),
        ("To", "<sip:b@192.0.2.2>"), ("Call-ID", "after@x"), ("CSeq", "1 OPTIONS")])


def stream(path: Path, pieces) -> Path:
    """One TCP direction carrying ``pieces`` (bytes, or (count, bytes) repeated), in order."""
    recs, seq, n = [], 1000, 0
    for piece in pieces:
        count, data = piece if isinstance(piece, tuple) else (1, piece)
        for _ in range(count):
            n += 1
            seg = tcp(A, B, 40000, 5060, seq, 1, 0x18, data)
            recs.append((1_700_000_000 + n // 1000, n % 1000, eth_ip(ipv4(A, B, 6, seg, ident=n & 0xFFFF))))
            seq += len(data)
    return write_pcap(path, 1, recs)


def peak(path: Path):
    """(peak RSS in KiB, tcp_sip_oversized, ws_frame_oversized, messages) of analysing ``path``, in a
    process of its own."""
    out = subprocess.run([sys.executable, "-c", RSS, str(path)], capture_output=True, text=True, timeout=300,
                         check=True, cwd=Path(__file__).parent)
    return tuple(int(x) for x in out.stdout.split())


def grows_flat(small: Path, big: Path) -> tuple:
    """The big capture carries 8x the endless body; if it were buffered, RSS would grow by about that."""
    s, b = peak(small), peak(big)
    extra_mb = (big.stat().st_size - small.stat().st_size) / 2 ** 20
    assert extra_mb > 40
    assert (b[0] - s[0]) / 1024 < extra_mb / 4, (s, b, extra_mb)
    return s, b


def test_a_tcp_body_announced_at_a_gigabyte_keeps_memory_flat(tmp_path):
    head = sip_text("INVITE sip:b@192.0.2.2 SIP/2.0", [
        ("Via", "SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bKbig"), ("From", "<sip:a@192.0.2.1>;tag=1"),
        ("To", "<sip:b@192.0.2.2>"), ("Call-ID", "big@x"), ("CSeq", "1 INVITE")]).replace(
        b"Content-Length: 0", b"Content-Length: 1000000000")
    body = b"x" * CHUNK
    small = stream(tmp_path / "s.pcap", [head, (5_000, body)])
    big = stream(tmp_path / "b.pcap", [head, (40_000, body)])
    s, b = grows_flat(small, big)
    assert s[1] == b[1] == 1 and b[3] == 1


def test_a_websocket_frame_announced_at_two_to_the_63_keeps_memory_flat(tmp_path):
    frame_head = b"\x81\xff" + (2 ** 63).to_bytes(8, "big") + b"\x01\x02\x03\x04"   # masked, 2^63 bytes
    body = b"y" * CHUNK
    small = stream(tmp_path / "s.pcap", [UPGRADE, frame_head, (5_000, body)])
    big = stream(tmp_path / "b.pcap", [UPGRADE, frame_head, (40_000, body)])
    s, b = grows_flat(small, big)
    assert s[2] == b[2] == 1 and b[3] == 0


def test_an_oversized_websocket_frame_is_skipped_and_the_next_frame_is_read(tmp_path):
    big = 3 * 2 ** 20
    huge_frame = b"\x82\x7f" + big.to_bytes(8, "big") + b"z" * big          # unmasked binary, 3 MiB
    sip = options()
    frame = b"\x81\x7e" + len(sip).to_bytes(2, "big") + sip
    data = UPGRADE + huge_frame + frame
    path = stream(tmp_path / "ws.pcap", [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)])
    a = sipflow.analyze(str(path))
    assert a.stats["net_ws_frame_oversized"] == 1
    assert [(m.method, m.transport, m.call_id) for m in a.messages] == [("OPTIONS", "ws", "after@x")]
