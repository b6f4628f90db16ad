"""Test helpers that rewrite real captures into other container formats and link layers.

The packets stay the ones a real SIP stack sent; only their framing changes, so a test can check that
sipflow reads every shape the same way (and tshark, the oracle, can read the rewritten files too).
"""
import gzip
import struct
from pathlib import Path
from typing import List, Tuple

Record = Tuple[int, int, bytes]  # seconds, microseconds, frame bytes


def read_pcap(path) -> Tuple[int, List[Record]]:
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    assert magic == 0xA1B2C3D4, "helper reads little-endian microsecond pcap only"
    linktype = struct.unpack_from("<I", data, 20)[0]
    pos, out = 24, []
    while pos + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        out.append((sec, usec, data[pos + 16:pos + 16 + caplen]))
        pos += 16 + caplen
    return linktype, out


def write_pcap(path, linktype: int, records: List[Record], nano=False, big_endian=False, gz=False) -> Path:
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    parts = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for sec, usec, frame in records:
        parts.append(struct.pack(o + "IIII", sec, usec * 1000 if nano else usec, len(frame), len(frame)))
        parts.append(frame)
    blob = b"".join(parts)
    path = Path(path)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def write_pcapng(path, interfaces: List[Tuple[int, int]], records: List[Tuple[int, int, int, bytes]],
                 simple_first: bool = False) -> Path:
    """interfaces: (linktype, tsresol exponent of 10); records: (interface, sec, usec, frame).
    ``simple_first`` writes the first packet as a Simple Packet Block (no timestamp)."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for lt, res in interfaces:
        out.append(_block(1, struct.pack("<HHI", lt, 0, 262144) + _opt(9, bytes([res])) + _opt(0, b"")))
    for n, (ifid, sec, usec, frame) in enumerate(records):
        if simple_first and n == 0:
            out.append(_block(3, struct.pack("<I", len(frame)) + frame))
            continue
        ticks = (sec * 10 ** 6 + usec) * 10 ** (interfaces[ifid][1] - 6)
        out.append(_block(6, struct.pack("<IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
                          + frame))
    path = Path(path)
    path.write_bytes(b"".join(out))
    return path


# Re-encapsulation of Ethernet frames: (linktype, function from Ethernet frame to new frame)
def to_sll(eth: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, eth[6:12] + b"\0\0", struct.unpack_from("!H", eth, 12)[0]) + eth[14:]


def to_sll2(eth: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", struct.unpack_from("!H", eth, 12)[0], 0, 1, 772, 0, 6, eth[6:12] + b"\0\0") + eth[14:]


def to_raw(eth: bytes) -> bytes:
    return eth[14:]


def to_null(eth: bytes) -> bytes:
    family = 2 if eth[14] >> 4 == 4 else 30
    return struct.pack("<I", family) + eth[14:]


def to_vlan(eth: bytes) -> bytes:
    return eth[:12] + struct.pack("!HH", 0x8100, 42) + eth[12:]


def to_qinq(eth: bytes) -> bytes:
    return eth[:12] + struct.pack("!HHHH", 0x88A8, 7, 0x8100, 42) + eth[12:]


SHAPES = {"sll": (113, to_sll), "sll2": (276, to_sll2), "raw": (101, to_raw), "null": (0, to_null),
          "vlan": (1, to_vlan), "qinq": (1, to_qinq)}


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 1) -> bytes:
    """An Ethernet/IPv4/UDP frame (valid IP checksum, UDP checksum 0) around ``payload``."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + hdr + udp


def sip_text(first_line: str, headers: List[Tuple[str, str]], body: str = "") -> bytes:
    """A SIP message with a correct Content-Length (unless the headers already carry one)."""
    lines = [first_line] + [f"{k}: {v}" for k, v in headers]
    if not any(k.lower() in ("content-length", "l") for k, _ in headers):
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
