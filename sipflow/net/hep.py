"""HEP (the Homer Encapsulation Protocol, EEP): the packet format, both ways.

Owns reading HEP v1/v2 (a fixed header) and v3 (typed chunks) into a ``HepPacket``, and writing v3
packets. No maintained Python library exists for it, so it is written here from the HEP3 specification
(rev 12): each chunk is vendor id (16 bits), type (16 bits), length of the whole chunk (16 bits), then
the value; the packet is ``HEP3``, its total length (16 bits), then the chunks. Version 2 puts the
agent's time (seconds, microseconds, capture id) after the addresses in the *sender's* byte order.

The payload's protocol type is kept as sent and also named: the field uses two numberings (the
specification's and HOMER's), so RTCP arrives as 5, a QoS report as 0x22 (34) or 6, and so on;
``proto_name`` folds them. Sockets are not here (``capture.hep``); neither is what the payload means
(``net.decoder`` hands it on as a datagram).
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Optional

# chunk types (vendor 0, the generic ones)
FAMILY, IP_PROTO, SRC_IP4, DST_IP4, SRC_IP6, DST_IP6, SRC_PORT, DST_PORT = 1, 2, 3, 4, 5, 6, 7, 8
TIME_SEC, TIME_USEC, PROTO_TYPE, CAPTURE_ID, KEEPALIVE, AUTH_KEY, PAYLOAD = 9, 10, 11, 12, 13, 14, 15
COMPRESSED, CORRELATION_ID, VLAN, NODE_NAME = 16, 17, 18, 19
FIXED = {FAMILY: 1, IP_PROTO: 1, SRC_IP4: 4, DST_IP4: 4, SRC_IP6: 16, DST_IP6: 16, SRC_PORT: 2, DST_PORT: 2,
         TIME_SEC: 4, TIME_USEC: 4, PROTO_TYPE: 1, CAPTURE_ID: 4, VLAN: 2}

PROTO_SIP, PROTO_RTCP = 1, 5
# What the protocol type says, in both numberings seen in the field (HOMER's agents and the spec).
PROTO_NAMES = {1: "sip", 2: "xmpp", 3: "sdp", 4: "rtp", 5: "rtcp", 6: "qos", 7: "mgcp", 8: "megaco", 9: "m2ua",
               10: "m3ua", 11: "iax", 12: "h322", 13: "h321", 32: "qos", 34: "qos", 35: "rtcp-xr", 53: "dns",
               100: "log"}

_CHUNK = struct.Struct("!HHH")
MAX_PACKET = 0xFFFF


class HepError(ValueError):
    """Bytes that are not a HEP packet (or a damaged one); ``kind`` says which: ``not_hep``,
    ``bad_chunk`` (a chunk of the wrong size, or running past the packet), ``incomplete`` (no
    addresses or payload), ``damaged`` (a length or field that cannot be read)."""

    def __init__(self, message: str, kind: str = "damaged") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class HepPacket:
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    ip_proto: int = 17                      # of the captured packet: 17 UDP, 6 TCP, 132 SCTP
    sec: Optional[int] = None               # the agent's capture time
    usec: int = 0
    proto_type: int = PROTO_SIP
    capture_id: Optional[int] = None
    correlation_id: Optional[str] = None    # what ties it to a call (a Call-ID, for RTCP and logs)
    node_name: Optional[str] = None
    auth_key: Optional[str] = None
    version: int = 3

    @property
    def ts(self) -> Optional[float]:
        return None if self.sec is None else self.sec + self.usec * 1e-6

    @property
    def proto_name(self) -> str:
        return PROTO_NAMES.get(self.proto_type, f"type {self.proto_type}")


def _ntop(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


def _text(v: bytes) -> str:
    return v.rstrip(b"\0").decode("utf-8", "replace")


def decode(data: bytes, near: Optional[float] = None) -> HepPacket:
    """A HEP v1, v2 or v3 packet. ``near``: a time the agent's clock should be close to (v2's time
    header is in the sender's byte order: the reading nearer this one is taken)."""
    try:
        if data[:4] == b"HEP3":
            return _decode3(data)
        if data[:1] in (b"\x01", b"\x02"):
            return _decode2(data, near)
    except (struct.error, IndexError, OSError, ValueError) as e:
        if isinstance(e, HepError):
            raise
        raise HepError(f"damaged HEP packet: {e}") from None
    raise HepError("not a HEP packet", "not_hep")


def _decode3(data: bytes) -> HepPacket:
    total = struct.unpack_from("!H", data, 4)[0]
    if total < 6 or total > len(data):
        raise HepError(f"HEP3 length {total} but {len(data)} bytes", "incomplete")
    pos = 6
    f = {}
    while pos + 6 <= total:
        vendor, ctype, clen = _CHUNK.unpack_from(data, pos)
        if clen < 6 or pos + clen > total:
            raise HepError(f"HEP3 chunk {ctype} of length {clen} runs past the packet", "bad_chunk")
        v = data[pos + 6:pos + clen]
        pos += clen
        if vendor != 0:
            continue                         # a vendor's own chunk: not ours to read
        if ctype in FIXED and len(v) != FIXED[ctype]:
            raise HepError(f"HEP3 chunk {ctype} is {len(v)} bytes, not {FIXED[ctype]}", "bad_chunk")
        f[ctype] = v
    src = f.get(SRC_IP4) or f.get(SRC_IP6)
    dst = f.get(DST_IP4) or f.get(DST_IP6)
    if src is None or dst is None or (PAYLOAD not in f and COMPRESSED not in f):
        raise HepError("HEP3 packet without addresses or payload", "incomplete")
    payload = f[PAYLOAD] if PAYLOAD in f else _inflate(f[COMPRESSED])
    num = lambda t, fmt, default=None: struct.unpack(fmt, f[t])[0] if t in f else default  # noqa: E731
    return HepPacket(_ntop(src), _ntop(dst), num(SRC_PORT, "!H", 0), num(DST_PORT, "!H", 0), bytes(payload),
                     num(IP_PROTO, "!B", 17), num(TIME_SEC, "!I"), num(TIME_USEC, "!I", 0),
                     num(PROTO_TYPE, "!B", PROTO_SIP), num(CAPTURE_ID, "!I"),
                     _text(f[CORRELATION_ID]) if CORRELATION_ID in f else None,
                     _text(f[NODE_NAME]) if NODE_NAME in f else None,
                     _text(f[AUTH_KEY]) if AUTH_KEY in f else None, 3)


def _inflate(v: bytes) -> bytes:
    import zlib
    try:
        return zlib.decompress(v)
    except zlib.error as e:
        raise HepError(f"HEP3 compressed payload: {e}") from None


def _decode2(data: bytes, near: Optional[float]) -> HepPacket:
    version, hlen, family, proto = data[0], data[1], data[2], data[3]
    sport, dport = struct.unpack_from("!HH", data, 4)
    size = 4 if family == 2 else 16 if family == 10 else 0
    if not size:
        raise HepError(f"HEP{version} address family {family}", "bad_chunk")
    src, dst = _ntop(data[8:8 + size]), _ntop(data[8 + size:8 + 2 * size])
    pos = 8 + 2 * size
    sec = usec = capture_id = None
    if version == 2:
        readings = [struct.unpack_from(o + "IIH", data, pos) for o in "<>"]
        readings = [r for r in readings if r[1] < 1_000_000] or readings
        if near is not None:
            readings.sort(key=lambda r: abs(r[0] + r[1] * 1e-6 - near))
        sec, usec, capture_id = readings[0]
        pos += 12
    payload = data[max(pos, hlen):]
    return HepPacket(src, dst, sport, dport, bytes(payload), proto, sec, usec or 0, PROTO_SIP, capture_id,
                     version=version)


def _chunk(ctype: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, ctype, 6 + len(value)) + value


def encode(p: HepPacket) -> bytes:
    """A HEP v3 packet; HepError when it would not fit in 65 535 bytes."""
    if len(p.payload) > MAX_PACKET - 6:
        raise HepError(f"a payload of {len(p.payload)} bytes does not fit a HEP3 packet", "too_big")
    s, d = socket.inet_pton(socket.AF_INET6 if ":" in p.src else socket.AF_INET, p.src), \
        socket.inet_pton(socket.AF_INET6 if ":" in p.dst else socket.AF_INET, p.dst)
    if len(s) != len(d):
        raise HepError("source and destination addresses of different families")
    v6 = len(s) == 16
    parts = [_chunk(FAMILY, bytes([10 if v6 else 2])), _chunk(IP_PROTO, bytes([p.ip_proto])),
             _chunk(SRC_IP6 if v6 else SRC_IP4, s), _chunk(DST_IP6 if v6 else DST_IP4, d),
             _chunk(SRC_PORT, struct.pack("!H", p.sport)), _chunk(DST_PORT, struct.pack("!H", p.dport))]
    if p.sec is not None:
        parts += [_chunk(TIME_SEC, struct.pack("!I", p.sec)), _chunk(TIME_USEC, struct.pack("!I", p.usec))]
    parts.append(_chunk(PROTO_TYPE, bytes([p.proto_type])))
    if p.capture_id is not None:
        parts.append(_chunk(CAPTURE_ID, struct.pack("!I", p.capture_id)))
    if p.auth_key:
        parts.append(_chunk(AUTH_KEY, p.auth_key.encode()))
    if p.correlation_id:
        parts.append(_chunk(CORRELATION_ID, p.correlation_id.encode("utf-8", "replace")))
    if p.node_name:
        parts.append(_chunk(NODE_NAME, p.node_name.encode("utf-8", "replace")))
    parts.append(_chunk(PAYLOAD, p.payload))
    body = b"".join(parts)
    if 6 + len(body) > MAX_PACKET:
        raise HepError(f"a HEP3 packet of {6 + len(body)} bytes does not fit its 16-bit length")
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body
