"""The probe's own traffic as a classic pcap (``--pcap FILE``), written with plain ``struct``.

Owns the pcap file format (libpcap 2.4, microsecond timestamps, link type 1 Ethernet with fixed dummy
MACs), the IPv4/IPv6, UDP and TCP headers (lengths and checksums computed), and the redaction of
digest responses. A ``PcapRecorder`` is given each datagram or SIP message the probe sent or received
with its local and remote address; the timestamps are the monotonic clock plus the offset to the wall
clock taken when the recorder was made, so the intervals in the capture are the probe's own.

TCP is written as a SYN / SYN-ACK / ACK handshake when a connection is first seen, then one segment
per SIP message (PSH|ACK) with consistent sequence and acknowledgement numbers; the real segmentation
on the wire is not known to the probe.

A recorder is passed to the probe (``recording`` makes one for a ``with`` block); its driver hands it
to every socket, which report what they send and receive, and cost nothing when there is none.
"""
from __future__ import annotations

import contextlib
import ipaddress
import re
import struct
import time
from typing import Dict, Iterator, Optional, Tuple

LINKTYPE_ETHERNET = 1
_MAC_LOCAL = bytes.fromhex("020000000001")
_MAC_REMOTE = bytes.fromhex("020000000002")

_AUTH_RESPONSE = re.compile(rb'(?im)^((?:proxy-)?authorization[ \t]*:[^\r\n]*?\bresponse[ \t]*=[ \t]*")([^"\r\n]*)(")')


def redact(data: bytes) -> bytes:
    """``response="..."`` in Authorization and Proxy-Authorization headers replaced by as many ``x``:
    every length (Content-Length, IP, UDP) stays what it was."""
    return _AUTH_RESPONSE.sub(lambda m: m.group(1) + b"x" * len(m.group(2)) + m.group(3), data)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(src: str, dst: str, proto: int, l4: bytes, l4_checksum_at: int) -> Tuple[bytes, int]:
    """(IP header + transport segment with its checksum filled in, ethertype)."""
    s, d = ipaddress.ip_address(src.split("%")[0]), ipaddress.ip_address(dst.split("%")[0])
    if s.version == 4 and d.version == 6:
        s = ipaddress.IPv6Address("::ffff:" + str(s))
    elif s.version == 6 and d.version == 4:
        d = ipaddress.IPv6Address("::ffff:" + str(d))
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(l4), proto)
    csum = _checksum(pseudo + l4)
    if proto == 17 and csum == 0:
        csum = 0xFFFF
    l4 = l4[:l4_checksum_at] + struct.pack("!H", csum) + l4[l4_checksum_at + 2:]
    if s.version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, s.packed, d.packed)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        return hdr + l4, 0x0800
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s.packed, d.packed)
    return hdr + l4, 0x86DD


class PcapRecorder:
    """Appends packets to an open pcap file as they are recorded."""

    def __init__(self, path: str, keep_secrets: bool = False, clock=time.monotonic) -> None:
        self.path = path
        self.keep_secrets = keep_secrets
        self.clock = clock
        self.offset = time.time() - clock()
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        self.packets = 0
        self._tcp: Dict[Tuple, list] = {}   # (local, remote) -> [our next seq, their next seq]

    def _frame(self, ts: float, outgoing: bool, ip_packet: bytes, ethertype: int) -> None:
        macs = _MAC_REMOTE + _MAC_LOCAL if outgoing else _MAC_LOCAL + _MAC_REMOTE
        frame = macs + struct.pack("!H", ethertype) + ip_packet
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        self.packets += 1

    def udp(self, outgoing: bool, local, remote, payload: bytes, now: Optional[float] = None) -> None:
        ts = (self.clock() if now is None else now) + self.offset
        if not self.keep_secrets:
            payload = redact(payload)
        (src, sport), (dst, dport) = (local[:2], remote[:2]) if outgoing else (remote[:2], local[:2])
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        packet, ethertype = _ip(src, dst, 17, l4, 6)
        self._frame(ts, outgoing, packet, ethertype)

    def _tcp_segment(self, ts: float, outgoing: bool, local, remote, seq: int, ack: int, flags: int,
                     payload: bytes = b"") -> None:
        (src, sport), (dst, dport) = (local[:2], remote[:2]) if outgoing else (remote[:2], local[:2])
        l4 = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535,
                         0, 0) + payload
        packet, ethertype = _ip(src, dst, 6, l4, 16)
        self._frame(ts, outgoing, packet, ethertype)

    def tcp(self, outgoing: bool, local, remote, payload: bytes, now: Optional[float] = None) -> None:
        ts = (self.clock() if now is None else now) + self.offset
        if not self.keep_secrets:
            payload = redact(payload)
        key = (tuple(local[:2]), tuple(remote[:2]))
        st = self._tcp.get(key)
        if st is None:   # the handshake, just before the first message
            ours, theirs = 1000, 5000
            self._tcp_segment(ts, True, local, remote, ours, 0, 0x02)
            self._tcp_segment(ts, False, local, remote, theirs, ours + 1, 0x12)
            self._tcp_segment(ts, True, local, remote, ours + 1, theirs + 1, 0x10)
            st = self._tcp[key] = [ours + 1, theirs + 1]
        if outgoing:
            self._tcp_segment(ts, True, local, remote, st[0], st[1], 0x18, payload)
            st[0] += len(payload)
        else:
            self._tcp_segment(ts, False, local, remote, st[1], st[0], 0x18, payload)
            st[1] += len(payload)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


@contextlib.contextmanager
def recording(path: Optional[str], keep_secrets: bool = False) -> Iterator[Optional[PcapRecorder]]:
    """A recorder writing to ``path`` for the ``with`` block (None when ``path`` is None), to be passed
    to the probe that should be recorded."""
    if not path:
        yield None
        return
    try:
        rec = PcapRecorder(path, keep_secrets)
    except OSError as e:
        from sipflow.errors import ProbeError
        raise ProbeError(f"cannot write {path}: {e.strerror}") from None
    try:
        yield rec
    finally:
        rec.close()
