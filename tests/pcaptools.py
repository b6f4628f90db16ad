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


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, ident: int = 1) -> bytes:
    """An Ethernet/IPv4/UDP frame (valid IP checksum, UDP checksum 0) around ``payload``."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + hdr + udp


def sip_text(first_line: str, headers: List[Tuple[str, str]], body: str = "") -> bytes:
    """A SIP message with a correct Content-Length (unless the headers already carry one)."""
    lines = [first_line] + [f"{k}: {v}" for k, v in headers]
    if not any(k.lower() in ("content-length", "l") for k, _ in headers):
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


# ---------------------------------------------------------------------------------------------------
# Building and taking apart packets (used by test_shapes.py to rewrite real packets into other shapes)

import ipaddress as _ipaddress  # noqa: E402


def _addr(ip: str) -> bytes:
    return _ipaddress.ip_address(ip).packed


def inet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum, as used by IPv4, UDP, TCP, ICMP, GRE."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, frag: int = 0x4000, ttl: int = 64,
         tos: int = 0) -> bytes:
    """An IPv4 packet (20-byte header, correct checksum). ``frag`` is the flags+offset word (DF by default)."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, frag, ttl, proto, 0, _addr(src), _addr(dst))
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, nxt: int, payload: bytes, flow: int = 0, hlim: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000 | flow, len(payload), nxt, hlim, _addr(src), _addr(dst)) + payload


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = _addr(src), _addr(dst)
    if len(s) == 4:
        return struct.pack("!4s4sBBH", s, d, 0, proto, length)
    return struct.pack("!16s16sIxxxB", s, d, length, proto)


def l4_checksum(src: str, dst: str, proto: int, segment: bytes) -> int:
    """UDP/TCP checksum of ``segment`` (its checksum field zeroed) over the pseudo header; UDP's 0 is sent as 0xFFFF."""
    c = inet_checksum(pseudo_header(src, dst, proto, len(segment)) + segment)
    return 0xFFFF if c == 0 and proto == 17 else c


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, checksum: bool = True) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if checksum:
        seg = seg[:6] + struct.pack("!H", l4_checksum(src, dst, 17, seg)) + seg[8:]
    return seg


def tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes,
        window: int = 65535, options: bytes = b"") -> bytes:
    options += b"\0" * (-len(options) % 4)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (5 + len(options) // 4) << 4,
                      flags, window, 0, 0) + options + payload
    return seg[:16] + struct.pack("!H", l4_checksum(src, dst, 6, seg)) + seg[18:]


def ether(payload: bytes, etype: int, src_mac: bytes = b"\x02\0\0\0\0\x01", dst_mac: bytes = b"\x02\0\0\0\0\x02") -> bytes:
    return dst_mac + src_mac + struct.pack("!H", etype) + payload


def eth_ip(ip_packet: bytes) -> bytes:
    """An Ethernet frame around an IPv4 or IPv6 packet."""
    return ether(ip_packet, 0x0800 if ip_packet[0] >> 4 == 4 else 0x86DD)


def parse_ip(frame: bytes, off: int = 14) -> dict:
    """The IP and UDP/TCP headers of a plain Ethernet frame (no VLAN, no IPv6 extension headers):
    {version, src, dst, proto, ip (the IP packet), l4 (the transport segment), ident, sport, dport,
    payload (transport payload), and for TCP seq, ack, flags, window, options}."""
    ip = frame[off:]
    v = ip[0] >> 4
    if v == 4:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        ip = ip[:total]
        d = dict(version=4, src=str(_ipaddress.ip_address(ip[12:16])), dst=str(_ipaddress.ip_address(ip[16:20])),
                 proto=ip[9], ident=struct.unpack_from("!H", ip, 4)[0], frag=struct.unpack_from("!H", ip, 6)[0],
                 l4=ip[ihl:])
    else:
        plen = struct.unpack_from("!H", ip, 4)[0]
        ip = ip[:40 + plen]
        d = dict(version=6, src=str(_ipaddress.ip_address(ip[8:24])), dst=str(_ipaddress.ip_address(ip[24:40])),
                 proto=ip[6], ident=None, frag=0, l4=ip[40:])
    d["ip"] = ip
    seg = d["l4"]
    if d["proto"] == 17 and not d["frag"] & 0x3FFF:
        d["sport"], d["dport"], ulen = struct.unpack_from("!HHH", seg, 0)
        d["payload"] = seg[8:ulen]
    elif d["proto"] == 6:
        d["sport"], d["dport"], d["seq"], d["ack"], offx, d["flags"], d["window"] = struct.unpack_from("!HHIIBBH", seg, 0)
        d["options"] = seg[20:(offx >> 4) * 4]
        d["payload"] = seg[(offx >> 4) * 4:]
    return d


def fragment_ipv4(ip_packet: bytes, sizes: List[int]) -> List[bytes]:
    """Cut an IPv4 packet's payload into fragments of ``sizes`` bytes (multiples of 8 except the last;
    the rest of the payload goes into a last fragment). Same identification, MF on all but the last."""
    ihl = (ip_packet[0] & 15) * 4
    hdr, payload = ip_packet[:ihl], ip_packet[ihl:]
    src, dst = str(_ipaddress.ip_address(hdr[12:16])), str(_ipaddress.ip_address(hdr[16:20]))
    ident, proto, ttl, tos = struct.unpack_from("!H", hdr, 4)[0], hdr[9], hdr[8], hdr[1]
    out, pos = [], 0
    for n in list(sizes) + [len(payload)]:
        part = payload[pos:pos + n]
        if not part:
            break
        assert pos % 8 == 0
        more = pos + len(part) < len(payload)
        out.append(ipv4(src, dst, proto, part, ident=ident, frag=(0x2000 if more else 0) | pos // 8, ttl=ttl, tos=tos))
        pos += len(part)
    return out


def fragment_ipv6(ip6_packet: bytes, sizes: List[int], ident: int) -> List[bytes]:
    """Cut an IPv6 packet (no extension headers) into fragments carrying ``sizes`` bytes of its payload
    (multiples of 8 except the last; the rest goes into a last fragment), with a Fragment header each."""
    nxt, payload = ip6_packet[6], ip6_packet[40:]
    src, dst = str(_ipaddress.ip_address(ip6_packet[8:24])), str(_ipaddress.ip_address(ip6_packet[24:40]))
    out, pos = [], 0
    for n in list(sizes) + [len(payload)]:
        part = payload[pos:pos + n]
        if not part:
            break
        assert pos % 8 == 0
        more = pos + len(part) < len(payload)
        fh = struct.pack("!BBHI", nxt, 0, pos | (1 if more else 0), ident)
        out.append(ipv6(src, dst, 44, fh + part))
        pos += len(part)
    return out


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_data_chunk(tsn: int, sid: int, ssn: int, payload: bytes, begin: bool = True, end: bool = True,
                    ppid: int = 0, unordered: bool = False) -> bytes:
    flags = (2 if begin else 0) | (1 if end else 0) | (4 if unordered else 0)
    chunk = struct.pack("!BBHIHHI", 0, flags, 16 + len(payload), tsn, sid, ssn, ppid) + payload
    return chunk + b"\0" * (-len(chunk) % 4)


def sctp(sport: int, dport: int, vtag: int, chunks: List[bytes]) -> bytes:
    """An SCTP packet with a correct CRC32c checksum (RFC 4960 appendix B, stored little-endian)."""
    pkt = struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks)
    return pkt[:8] + struct.pack("<I", crc32c(pkt)) + pkt[12:]


def gre(proto: int, payload: bytes, key: int = None, seq: int = None, checksum: bool = False) -> bytes:
    flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    opt = b""
    if checksum:
        opt += b"\0\0\0\0"
    if key is not None:
        opt += struct.pack("!I", key)
    if seq is not None:
        opt += struct.pack("!I", seq)
    pkt = struct.pack("!HH", flags, proto) + opt + payload
    if checksum:
        pkt = pkt[:4] + struct.pack("!H", inet_checksum(pkt)) + pkt[6:]
    return pkt


def erspan2(session: int, eth_frame: bytes, vlan: int = 0, index: int = 0) -> bytes:
    """ERSPAN type II header (version 1) + the mirrored Ethernet frame (goes in GRE 0x88BE with S flag)."""
    return struct.pack("!HHI", (1 << 12) | vlan, session & 0x3FF, index & 0xFFFFF) + eth_frame


def erspan3(session: int, eth_frame: bytes, timestamp: int = 0, vlan: int = 0, subheader: bytes = None) -> bytes:
    """ERSPAN type III header (version 2), with the 8-byte platform subheader when given (O flag)."""
    w0 = (2 << 28) | (vlan << 16) | (session & 0x3FF)
    w2_flags = 0x01 if subheader is not None else 0  # last byte: Gra(2) O(1) P... ; O is the lowest bit
    hdr = struct.pack("!IIHBB", w0, timestamp & 0xFFFFFFFF, 0, 0, w2_flags)
    return hdr + (subheader or b"") + eth_frame


def vxlan(vni: int, eth_frame: bytes) -> bytes:
    return struct.pack("!BxxxI", 0x08, vni << 8) + eth_frame


def hep3(src: str, dst: str, sport: int, dport: int, sec: int, usec: int, payload: bytes, proto: int = 17,
         proto_type: int = 1, capture_id: int = 2001, auth_key: bytes = None) -> bytes:
    """A HEP v3 (EEP) packet: chunks 1 ip family, 2 ip protocol, 3/4 or 5/6 addresses, 7/8 ports,
    9/10 timestamp, 11 protocol type (1 = SIP), 12 capture id, [14 auth key], 15 payload."""
    def chunk(ctype: int, value: bytes) -> bytes:
        return struct.pack("!HHH", 0, ctype, 6 + len(value)) + value
    s, d = _addr(src), _addr(dst)
    v6 = len(s) == 16
    body = [chunk(1, bytes([10 if v6 else 2])), chunk(2, bytes([proto])),
            chunk(5 if v6 else 3, s), chunk(6 if v6 else 4, d),
            chunk(7, struct.pack("!H", sport)), chunk(8, struct.pack("!H", dport)),
            chunk(9, struct.pack("!I", sec)), chunk(10, struct.pack("!I", usec)),
            chunk(11, bytes([proto_type])), chunk(12, struct.pack("!I", capture_id))]
    if auth_key is not None:
        body.append(chunk(14, auth_key))
    body.append(chunk(15, payload))
    blob = b"".join(body)
    return b"HEP3" + struct.pack("!H", 6 + len(blob)) + blob


def hep2(src: str, dst: str, sport: int, dport: int, sec: int, usec: int, payload: bytes, proto: int = 17,
         capture_id: int = 2001) -> bytes:
    """A HEP v2 packet as captagent/Kamailio's siptrace write it: version 2, header length, family
    (2 AF_INET / 10 AF_INET6), protocol, ports and addresses in network order, then the time header
    (seconds, microseconds, capture id) in the sender's byte order (little-endian here), then the payload."""
    s, d = _addr(src), _addr(dst)
    fam = 10 if len(s) == 16 else 2
    hlen = 8 + 2 * len(s) + 12
    return (struct.pack("!BBBBHH", 2, hlen, fam, proto, sport, dport) + s + d
            + struct.pack("<IIHH", sec, usec, capture_id, 0) + payload)
