"""Network layers: from a captured frame's bytes to transport payloads (datagrams).

Owns the decoding of one frame: link layers (by the table in ``net.link``: Ethernet with 802.1Q/QinQ,
Linux SLL/SLL2, raw IP, BSD loopback), IPv4/IPv6 with fragment reassembly in any order, tunnels (IP-in-IP,
GRE, ERSPAN I-III, VXLAN), UDP, TCP stream reassembly, SCTP DATA chunks, WebSocket framing (RFC
6455/7118) and HEP v2/v3 encapsulation. Leaves SIP framing and parsing to ``sip``, RTP to ``media``.
Does no I/O: frames come in, datagrams go out.

Broken or unknown layers are counted in ``Decoder.counters`` and otherwise ignored, never raised.
"""
from __future__ import annotations

import bisect
import re
import socket
import struct
from typing import Dict, List, Optional, Tuple

from sipflow.net import hep
from sipflow.net.addr import Datagram, ntop4 as _ntop4, ntop6 as _ntop6
from sipflow.net.link import LINK_TYPES
from sipflow.net.streambuf import StreamBuffer

# ---------------------------------------------------------------------------------------------------
# Decoder

_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_IP4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_H = struct.Struct("!H")
_I = struct.Struct("!I")

# IPv6 extension headers that are skipped on the way to the payload (fragment header 44 is handled).
_IP6_EXT = {0, 43, 60, 51, 135, 139, 140}

# What a frame cut short or lying about its lengths makes the decoders raise: counted, never passed on
# (OSError: an address of the wrong size for inet_ntop).
_BROKEN = (struct.error, IndexError, ValueError, OSError)

# Wireshark's exported-PDU tags (epan/exported_pdu.h) that an upper-PDU record of SIP carries.
_PDU_PROTO, _PDU_IP4_SRC, _PDU_IP4_DST, _PDU_IP6_SRC, _PDU_IP6_DST = 12, 20, 21, 22, 23
_PDU_PORT_TYPE, _PDU_SPORT, _PDU_DPORT, _PDU_FRAME = 24, 25, 26, 30

FRAG_TIMEOUT = 60.0      # seconds of capture time before an incomplete IP datagram is dropped
TCP_IDLE = 900.0         # seconds of capture time before an idle TCP stream's state is dropped
TCP_OOO_LIMIT = 1 << 20  # bytes held out of order before a gap is declared
MAX_HTTP_HEAD = 64 * 1024  # a WebSocket upgrade's HTTP head longer than this is not one
MAX_WS_MESSAGE = 1 << 20   # a WebSocket frame (or message of several) announcing more is not buffered
MAX_FRAGMENTS = 8192       # pieces of one IP datagram (65 535 bytes in 8-byte units), duplicates included


class _TcpDir:
    """One direction of a TCP connection: next expected sequence number and out-of-order segments."""
    __slots__ = ("next_seq", "ooo", "held", "last", "mode", "ws", "ws_parts", "ws_frames", "ws_skip")

    def __init__(self) -> None:
        self.next_seq: Optional[int] = None
        self.ooo: Dict[int, Tuple[bytes, int]] = {}
        self.held = 0
        self.last = 0.0
        self.mode = ""              # "" undecided, "raw" plain stream, "ws" WebSocket frames
        self.ws: Optional[StreamBuffer] = None
        self.ws_parts: List[bytes] = []
        self.ws_frames: List[int] = []
        self.ws_skip = 0            # bytes of an oversized frame still to pass by unbuffered


class Decoder:
    """Turns frames into datagrams. Holds the state reassembly needs (IP fragments, TCP streams) and
    nothing else; memory is bounded by concurrent fragments and connections, never by packets."""

    def __init__(self) -> None:
        self.frags: Dict[tuple, list] = {}
        self.tcp: Dict[tuple, _TcpDir] = {}
        self.sctp_parts: Dict[tuple, Dict[int, tuple]] = {}  # stream -> TSN -> (B/E flags, data, frame)
        self.counters: Dict[str, int] = {}
        self._sweep_at = 0.0
        # Set by decode() for the benefit of consumers of the current frame.
        self.ts = 0.0
        self.file = 0
        self.frame = 0

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- entry point --------------------------------------------------------------------------------

    def decode(self, ts: float, file: int, frame: int, linktype: int, data: bytes) -> List[Datagram]:
        self.ts, self.file, self.frame = ts, file, frame
        out: List[Datagram] = []
        if ts > self._sweep_at:
            self._sweep(ts)
        try:
            self._link(linktype, data, out, 0)
        except _BROKEN:
            self.count("truncated_headers")
        return out

    def _link(self, lt: int, data: bytes, out: list, depth: int) -> None:
        link = LINK_TYPES.get(lt)
        if link is None:
            self.count("unknown_linktype")
        elif link.kind == "ethernet":
            self._ether(data, 0, out, depth)
        elif link.kind == "cooked":  # Linux SLL (protocol last) and SLL2 (protocol first)
            self._ethertype(_H.unpack_from(data, link.ethertype_at)[0], data, link.header, out, depth)
        elif link.kind == "ip":
            self._ip(data, 0, out, depth)
        elif link.kind in ("upper_pdu", "upper_pdu_tls"):
            self._upper_pdu(data, out, secure=link.kind == "upper_pdu_tls")
        elif link.kind == "hep":   # a HEP packet as a collector received it: its own clock is the one
            if not self._hep(data, out, own_time=True):
                self.count("hep_not_understood")
        else:  # BSD loopback: address family, host order (0) or network order (108)
            fam = struct.unpack_from("!I" if link.big_endian_family else "<I", data, 0)[0]
            if not link.big_endian_family and fam > 0xFFFF:
                fam = struct.unpack_from("!I", data, 0)[0]
            if fam == 2 or fam in (10, 24, 28, 30):
                self._ip(data, link.header, out, depth)
            else:
                self.count("not_ip")

    def _ether(self, data: bytes, off: int, out: list, depth: int) -> None:
        etype = _H.unpack_from(data, off + 12)[0]
        off += 14
        while etype in _ETH_VLAN:  # 802.1Q / QinQ tags
            etype = _H.unpack_from(data, off + 2)[0]
            off += 4
        self._ethertype(etype, data, off, out, depth)

    def _ethertype(self, etype: int, data: bytes, off: int, out: list, depth: int) -> None:
        if etype == 0x0800 or etype == 0x86DD:
            self._ip(data, off, out, depth)
        elif etype == 0x8847 or etype == 0x8848:  # MPLS: pop labels until bottom of stack
            while not data[off + 2] & 1:
                off += 4
            self._ip(data, off + 4, out, depth)
        else:
            self.count("not_ip")

    # -- IP -------------------------------------------------------------------------------------------

    def _ip(self, data: bytes, off: int, out: list, depth: int) -> None:
        if depth > 4:
            self.count("tunnel_too_deep")
            return
        version = data[off] >> 4
        if version == 4:
            vihl, _, total, ident, frag, _, proto, _, s, d = _IP4.unpack_from(data, off)
            ihl = (vihl & 0x0F) * 4
            end = off + total if total >= ihl else len(data)
            payload = data[off + ihl:min(end, len(data))]
            mf = frag & 0x2000
            fofs = (frag & 0x1FFF) * 8
            src, dst = _ntop4(s), _ntop4(d)
            frames = (self.frame,)
            if mf or fofs:
                payload, frames = self._defrag((4, s, d, proto, ident), fofs, bool(mf), payload)
                if payload is None:
                    return
            self._l4(proto, src, dst, payload, out, depth, frames)
        elif version == 6:
            plen = _H.unpack_from(data, off + 4)[0]
            nxt = data[off + 6]
            s, d = data[off + 8:off + 24], data[off + 24:off + 40]
            pos = off + 40
            end = min(pos + plen, len(data)) if plen else len(data)
            frag = None
            while nxt in _IP6_EXT or nxt == 44:
                if nxt == 44:
                    fo = _H.unpack_from(data, pos + 2)[0]
                    frag = (fo & 0xFFF8, bool(fo & 1), _I.unpack_from(data, pos + 4)[0])
                    nxt = data[pos]
                    pos += 8
                else:
                    hlen = (data[pos + 1] + 1) * (4 if nxt == 51 else 8)
                    nxt = data[pos]
                    pos += hlen
            payload = data[pos:end]
            frames = (self.frame,)
            if frag is not None:
                payload, frames = self._defrag((6, s, d, frag[2]), frag[0], frag[1], payload)
                if payload is None:
                    return
            self._l4(nxt, _ntop6(s), _ntop6(d), payload, out, depth, frames)
        else:
            self.count("not_ip")

    def _defrag(self, key: tuple, offset: int, more: bool, part: bytes):
        """Collect fragments in any order; return (whole payload, frames) when every byte is in,
        (None, ()) before. Coverage from offset 0 is kept as it grows (sorted offsets and how far the
        contiguous part reaches), so each fragment costs the same however many came before it; a
        datagram of more than MAX_FRAGMENTS pieces (duplicates included) is given up on and counted."""
        entry = self.frags.get(key)
        if entry is None:   # first seen, total length, parts, frames, sorted offsets, covered up to, absorbed
            entry = self.frags[key] = [self.ts, None, {}, [], [], 0, 0]
        frames = entry[3]
        frames.append(self.frame)
        if len(frames) > MAX_FRAGMENTS:
            del self.frags[key]
            self.count("ip_fragments_dropped")
            return None, ()
        if not more:
            entry[1] = offset + len(part)
        parts, offsets = entry[2], entry[4]
        if offset not in parts:   # a duplicate offset changes nothing (the first copy stays, as before)
            parts[offset] = part
            pos = bisect.bisect_left(offsets, offset)
            offsets.insert(pos, offset)
            have, done = entry[5], entry[6]
            if pos < done:
                done += 1
            while done < len(offsets) and offsets[done] <= have:
                o = offsets[done]
                have = max(have, o + len(parts[o]))
                done += 1
            entry[5], entry[6] = have, done
        total = entry[1]
        if total is None or entry[5] < total:
            return None, ()
        del self.frags[key]
        buf = bytearray(total)
        for o in offsets:
            p = parts[o]
            buf[o:o + len(p)] = p
        self.count("ip_reassembled")
        return bytes(buf[:total]), tuple(frames)

    def _l4(self, proto: int, src: str, dst: str, payload: bytes, out: list, depth: int, frames: tuple) -> None:
        if proto == 17:
            if len(payload) < 8:
                self.count("truncated_headers")
                return
            sport, dport, ulen, _ = _UDP.unpack_from(payload, 0)
            body = payload[8:ulen] if 8 <= ulen <= len(payload) else payload[8:]
            self._udp(src, sport, dst, dport, body, frames, out, depth)
        elif proto == 6:
            self._tcp(src, dst, payload, out)
        elif proto == 132:
            self._sctp(src, dst, payload, frames, out)
        elif proto == 4 or proto == 41:  # IP-in-IP, IPv6-in-IP
            self._ip(payload, 0, out, depth + 1)
        elif proto == 47:
            self._gre(payload, out, depth + 1)
        else:
            self.count("other_ip_protocol")

    # -- UDP and what rides on it --------------------------------------------------------------------

    def _udp(self, src, sport, dst, dport, body, frames, out, depth) -> None:
        if body[:4] == b"HEP3" or (body[:1] in (b"\x01", b"\x02") and len(body) > 20 and body[2:3] in (b"\x02", b"\x0a")
                                   and (sport == 9060 or dport == 9060)):
            if self._hep(body, out):
                return
        if (dport == 4789 or sport == 4789) and len(body) > 22 and body[0] & 0x08:  # VXLAN
            self._ether(body, 8, out, depth + 1)
            return
        out.append(Datagram(self.ts, self.file, self.frame, src, sport, dst, dport, "udp", body, frames))

    def _hep(self, body: bytes, out: list, own_time: bool = False) -> bool:
        """HEP v3 chunks or HEP v1/v2 fixed header around a captured payload (``net.hep``). With
        ``own_time`` (a packet a HEP listener received) the message is timed by the agent's capture
        time in the HEP header, when it has one, not by when it reached us. What is wrong with a packet
        that cannot be read is counted by its kind (``hep_bad_chunk``, ``hep_incomplete``...)."""
        try:
            p = hep.decode(body, near=self.ts)
        except hep.HepError as e:
            self.count(f"hep_{e.kind}")
            return False
        self.count("hep")
        if p.proto_type not in (hep.PROTO_SIP, hep.PROTO_RTCP) or p.payload[:1] == b"{":
            # an agent's own report (QoS, RTCP as JSON, logs...): counted by its kind, not a packet to read
            self.count(f"hep_{p.proto_name.replace('-', '_').replace(' ', '_')}")
            return True
        ts = p.ts if own_time and p.ts is not None else self.ts
        out.append(Datagram(ts, self.file, self.frame, p.src, p.sport, p.dst, p.dport, "hep", p.payload,
                            (self.frame,)))
        return True

    def _upper_pdu(self, data: bytes, out: list, secure: bool = False) -> None:
        """A Wireshark "upper PDU" record (``tshark -U``: what ``capture.tshark`` exports): tags
        (type, length, value; type 0 ends them) naming the protocol, addresses, ports and the original
        frame number, then one whole SIP message. The tags do not tell TCP from TLS or WebSocket: a
        record from a decrypted TLS session (``secure``) is TLS, or WSS when its top Via says WS or
        WSS; another is WS when its Via says so (a plain connection, whatever the Via claims), else
        the port type's transport."""
        pos, tags = 0, {}
        while pos + 4 <= len(data):
            tag, length = struct.unpack_from("!HH", data, pos)
            pos += 4
            if tag == 0:
                break
            tags[tag] = data[pos:pos + length]
            pos += length
        payload = data[pos:]
        if tags.get(_PDU_PROTO, b"").rstrip(b"\0") != b"sip" or not payload:
            self.count("pdu_not_sip")
            return
        src = tags.get(_PDU_IP4_SRC) or tags.get(_PDU_IP6_SRC)
        dst = tags.get(_PDU_IP4_DST) or tags.get(_PDU_IP6_DST)
        if src is None or dst is None or len(src) not in (4, 16) or len(dst) != len(src):
            self.count("pdu_without_addresses")
            return
        ports = [_I.unpack(tags[t])[0] if len(tags.get(t, b"")) == 4 else 0 for t in (_PDU_SPORT, _PDU_DPORT)]
        kind = _I.unpack(tags[_PDU_PORT_TYPE])[0] if len(tags.get(_PDU_PORT_TYPE, b"")) == 4 else 0
        top = _TOP_VIA.search(payload, 0, 4096)
        websocket = top is not None and top.group(1).upper() in (b"WS", b"WSS")
        if secure:
            transport = "wss" if websocket else "tls"
        else:
            transport = "ws" if websocket else {1: "sctp", 2: "tcp"}.get(kind, "udp")
        frame = _I.unpack(tags[_PDU_FRAME])[0] if len(tags.get(_PDU_FRAME, b"")) == 4 else self.frame
        ntop = _ntop4 if len(src) == 4 else _ntop6
        self.count("upper_pdu")
        out.append(Datagram(self.ts, self.file, frame, ntop(src), ports[0], ntop(dst), ports[1], transport,
                            bytes(payload), (frame,)))

    def _gre(self, data: bytes, out: list, depth: int) -> None:
        flags, proto = struct.unpack_from("!HH", data, 0)
        off = 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0)
        seq_present = flags & 0x1000
        off += 4 if seq_present else 0
        if proto == 0x88BE:  # ERSPAN type II (sequence bit set) has an 8-byte header; type I has none
            self._ether(data, off + (8 if seq_present else 0), out, depth)
        elif proto == 0x22EB:  # ERSPAN type III: 12 bytes, plus 8 when the O flag announces a subheader
            o_flag = data[off + 11] & 0x01
            self._ether(data, off + 12 + (8 if o_flag else 0), out, depth)
        elif proto == 0x6558:  # transparent Ethernet bridging
            self._ether(data, off, out, depth)
        elif proto in (0x0800, 0x86DD):
            self._ip(data, off, out, depth)
        else:
            self.count("gre_unknown")

    # -- SCTP -----------------------------------------------------------------------------------------

    def _sctp(self, src: str, dst: str, data: bytes, frames, out: list) -> None:
        sport, dport = struct.unpack_from("!HH", data, 0)
        pos = 12
        while pos + 4 <= len(data):
            ctype, cflags, clen = struct.unpack_from("!BBH", data, pos)
            if clen < 4:
                break
            if ctype == 0 and clen >= 16:  # DATA
                sid = _H.unpack_from(data, pos + 8)[0]
                user = data[pos + 16:pos + clen]
                key = (src, sport, dst, dport, sid)
                if cflags & 3 == 3:  # unfragmented user message
                    out.append(Datagram(self.ts, self.file, self.frame, src, sport, dst, dport, "sctp", user, frames))
                else:
                    tsn = _I.unpack_from(data, pos + 4)[0]
                    parts = self.sctp_parts.setdefault(key, {})
                    parts.setdefault(tsn, (cflags & 3, user, self.frame))
                    whole = _sctp_message(parts, tsn)
                    if whole is not None:
                        out.append(Datagram(self.ts, self.file, self.frame, src, sport, dst, dport, "sctp",
                                            whole[0], whole[1]))
                    if not parts:
                        del self.sctp_parts[key]
                    elif len(parts) > 4096:  # a message that never completes must not grow memory
                        del self.sctp_parts[key]
                        self.count("sctp_fragments_dropped")
            pos += (clen + 3) & ~3

    # -- TCP ------------------------------------------------------------------------------------------

    def _tcp(self, src: str, dst: str, data: bytes, out: list) -> None:
        sport, dport, seq, _ack, offx, flags, _win, _sum, _urg = _TCP.unpack_from(data, 0)
        payload = data[(offx >> 4) * 4:]
        key = (src, sport, dst, dport)
        d = self.tcp.get(key)
        if d is None:
            if not payload and not flags & 0x02:
                return
            d = self.tcp[key] = _TcpDir()
        d.last = self.ts
        if flags & 0x02:  # SYN: data starts after it
            d.next_seq = (seq + 1) & 0xFFFFFFFF
            d.ooo.clear()
            d.held = 0
            if not payload:
                return
            seq = (seq + 1) & 0xFFFFFFFF
        if payload:
            self._tcp_segment(key, d, seq, payload, out)
        if flags & 0x05:  # FIN or RST: this direction is over
            if d.ooo:
                self._tcp_flush(key, d, out)
            del self.tcp[key]

    def _tcp_segment(self, key, d: _TcpDir, seq: int, payload: bytes, out: list) -> None:
        if d.next_seq is None:  # capture started mid-connection
            d.next_seq = seq
        rel = (seq - d.next_seq) & 0xFFFFFFFF
        if rel >= 0x80000000:
            rel -= 0x100000000
        if rel < 0:
            if rel + len(payload) <= 0:
                self.count("tcp_retransmission")
                return
            payload = payload[-rel:]
            self.count("tcp_overlap")
        elif rel > 0:
            if seq not in d.ooo:
                d.ooo[seq] = (payload, self.frame)
                d.held += len(payload)
                self.count("tcp_out_of_order")
            if d.held > TCP_OOO_LIMIT:
                self._tcp_flush(key, d, out)
            return
        self._tcp_deliver(key, d, payload, self.frame, out)
        self._tcp_drain(key, d, out)

    def _tcp_drain(self, key, d: _TcpDir, out: list) -> None:
        ooo = d.ooo
        while ooo:
            held = ooo.pop(d.next_seq, None)
            if held is not None:   # the segment that starts where the stream is: no scan of the rest
                p, fr = held
                d.held -= len(p)
                self._tcp_deliver(key, d, p, fr, out)
                continue
            # A held segment that overlaps what was delivered, or none that can go yet: one pass.
            progressed = False
            for s in list(d.ooo):
                rel = (s - d.next_seq) & 0xFFFFFFFF
                if rel >= 0x80000000:
                    rel -= 0x100000000
                if rel <= 0:
                    p, fr = d.ooo.pop(s)
                    d.held -= len(p)
                    if rel + len(p) > 0:
                        self._tcp_deliver(key, d, p[-rel:] if rel else p, fr, out)
                    progressed = True
            if not progressed:
                return

    def _tcp_flush(self, key, d: _TcpDir, out: list) -> None:
        """Give up waiting for missing bytes: skip the gap and go on from the lowest held segment."""
        while d.ooo:
            first = min(d.ooo, key=lambda s: (s - d.next_seq) & 0xFFFFFFFF)
            self.count("tcp_gap")
            self._emit(key, d, None, self.frame, out)
            d.next_seq = first
            self._tcp_drain(key, d, out)

    def _tcp_deliver(self, key, d: _TcpDir, payload: bytes, frame: int, out: list) -> None:
        d.next_seq = (d.next_seq + len(payload)) & 0xFFFFFFFF
        self._emit(key, d, payload, frame, out)

    def _emit(self, key, d: _TcpDir, payload: Optional[bytes], frame: int, out: list) -> None:
        """Hand in-order stream bytes on: as they are, or through the WebSocket de-framer."""
        if payload is not None and not d.mode:
            d.mode = self._stream_mode(key, payload)
            if d.mode == "ws":
                d.ws = StreamBuffer()
        if d.mode == "ws" or d.mode == "http":
            if payload is None:
                d.ws.clear()
                d.ws_parts.clear()
                d.ws_frames.clear()
                return
            d.ws.append(payload, frame)
            self._websocket(key, d, out)
            return
        src, sport, dst, dport = key
        out.append(Datagram(self.ts, self.file, self.frame, src, sport, dst, dport, "tcp", payload, (frame,)))

    def _stream_mode(self, key, first: bytes) -> str:
        """Decide what the stream carries from its first bytes: a WebSocket upgrade handshake (either
        side of it), WebSocket frames seen mid-connection, or anything else (plain bytes for SIP)."""
        head = first[:2048].lower()
        if (head.startswith(b"get ") and b"upgrade: websocket" in head) or \
                (head.startswith(b"http/1.1 101") and b"websocket" in head):
            return "ws"
        # Mid-connection WebSocket: a final text/binary frame whose (unmasked) payload looks like SIP.
        # The frame need not be whole: a long first message is often cut over several segments. A
        # masked frame (what a browser sends) cut before three payload bytes cannot be checked: it is
        # taken as WebSocket (a SIP stream starts with a letter, never with these bytes).
        if len(first) >= 2 and first[0] in (0x81, 0x82, 0x01, 0x02):
            try:
                start = _ws_peek(first)
            except _BROKEN:
                start = None
            if start is None or len(start) < 3:
                if first[1] & 0x80:
                    return "ws"
            elif start[:8] == b"SIP/2.0 " or (start[:3].isalpha() and b" sip:" in start[:64].lower()):
                return "ws"
        reverse = self.tcp.get((key[2], key[3], key[0], key[1]))
        if reverse is not None and reverse.mode == "ws":
            return "ws"
        return "raw"

    def _websocket(self, key, d: _TcpDir, out: list) -> None:
        buf = d.ws
        while True:
            data = buf.data
            if data[:4] in (b"GET ", b"HTTP"):  # the upgrade handshake: skip the HTTP head
                end = data.find(b"\r\n\r\n", 0, MAX_HTTP_HEAD)
                if end < 0:
                    if len(data) >= MAX_HTTP_HEAD:   # a head that never ends: not a WebSocket after all
                        self.count("ws_http_head_too_long")
                        buf.clear()
                        d.mode = "raw"
                    return
                buf.take(end + 4)
                continue
            if d.ws_skip:   # the rest of an oversized frame: let it pass without keeping it
                n = min(d.ws_skip, len(data))
                buf.take(n)
                d.ws_skip -= n
                if not len(buf.data):
                    return
                continue
            if len(data) < 2:
                return
            try:
                parsed = _ws_frame(data)
            except _BROKEN:
                return
            if parsed is None:
                return
            fin, opcode, payload, flen = parsed
            if payload is None or sum(map(len, d.ws_parts)) + len(payload) > MAX_WS_MESSAGE:
                # Never buffer a frame (or a message) this big: a lie or an attack. Count it, drop what
                # was gathered, and skip the frame's bytes as they come; framing goes on after it.
                self.count("ws_frame_oversized")
                d.ws_parts.clear()
                d.ws_frames.clear()
                n = min(flen, len(data))
                buf.take(n)
                d.ws_skip = flen - n
                continue
            _, frames = buf.take(flen)
            if opcode >= 8:  # control frames (close, ping, pong) carry no SIP
                self.count("ws_control")
                continue
            d.ws_parts.append(payload)
            d.ws_frames.extend(f for f in frames if f not in d.ws_frames)
            if fin:
                msg = b"".join(d.ws_parts)
                frames_all = tuple(d.ws_frames)
                d.ws_parts.clear()
                d.ws_frames.clear()
                src, sport, dst, dport = key
                out.append(Datagram(self.ts, self.file, self.frame, src, sport, dst, dport, "ws", msg, frames_all))

    # -- housekeeping ---------------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Drop fragments and streams idle for long (capture time) so memory stays bounded."""
        self._sweep_at = now + 10.0
        for k in [k for k, e in self.frags.items() if now - e[0] > FRAG_TIMEOUT]:
            del self.frags[k]
            self.count("ip_fragments_expired")
        for k in [k for k, d in self.tcp.items() if now - d.last > TCP_IDLE]:
            del self.tcp[k]

    def finish(self) -> List[Datagram]:
        """End of capture: deliver what TCP still holds after gaps."""
        out: List[Datagram] = []
        for key, d in list(self.tcp.items()):
            if d.ooo:
                try:
                    self._tcp_flush(key, d, out)
                except _BROKEN:   # a WebSocket header cut by the gap, say
                    self.count("truncated_headers")
        if self.frags:
            self.counters["ip_fragments_incomplete"] = self.counters.get("ip_fragments_incomplete", 0) + len(self.frags)
        return out


def _sctp_message(parts: Dict[int, tuple], tsn: int) -> Optional[Tuple[bytes, Tuple[int, ...]]]:
    """Join the pieces of a fragmented SCTP user message (RFC 9260 §6.9) once every TSN from its
    B(eginning) chunk to its E(nd) chunk is in, whatever order they came in; removes them from ``parts``.
    Only the message the chunk ``tsn`` just added can have become whole, so only its run of TSNs is
    walked: back to a B (not past an E, which ends an earlier message), then forward to an E (not past
    another B). The cost is the length of that run, whatever else is held."""
    first = tsn
    while not parts[first][0] & 2:
        prev = (first - 1) & 0xFFFFFFFF
        if prev not in parts or parts[prev][0] & 1:
            return None
        first = prev
    tsns, t = [first], first
    while not parts[t][0] & 1:
        t = (t + 1) & 0xFFFFFFFF
        if t not in parts or parts[t][0] & 2:
            return None
        tsns.append(t)
    pieces = [parts.pop(t) for t in tsns]
    return b"".join(p[1] for p in pieces), tuple(sorted({p[2] for p in pieces}))


def _ws_peek(data, n: int = 64) -> bytes:
    """The first ``n`` payload bytes (unmasked) of the WebSocket frame at the start of ``data``, as far
    as ``data`` holds them: enough to see whether the frame carries SIP before the frame is whole.
    Raises IndexError or struct.error on too few bytes for the header."""
    length, pos = data[1] & 0x7F, 2
    if length == 126:
        length, pos = _H.unpack_from(data, 2)[0], 4
    elif length == 127:
        length, pos = struct.unpack_from("!Q", data, 2)[0], 10
    mask = bytes(data[pos:pos + 4]) if data[1] & 0x80 else b""
    if data[1] & 0x80:
        if len(mask) < 4:
            return b""
        pos += 4
    head = bytes(data[pos:pos + min(n, length)])
    return bytes(b ^ mask[i % 4] for i, b in enumerate(head)) if mask else head


PDU_PORT_TYPES = {"sctp": 1, "tcp": 2, "udp": 3}    # Wireshark's exported-PDU port types


def upper_pdu(src: str, dst: str, sport: int, dport: int, frame: int, payload: bytes, transport: str = "tcp") -> bytes:
    """A SIP message as a Wireshark upper-PDU record, the shape ``_upper_pdu`` reads (for SIP a tshark
    pipe hands over as text: ``capture.tshark``'s live reading)."""
    v6 = ":" in src
    family = socket.AF_INET6 if v6 else socket.AF_INET
    tags = [(_PDU_PROTO, b"sip\0"),
            (_PDU_IP6_SRC if v6 else _PDU_IP4_SRC, socket.inet_pton(family, src)),
            (_PDU_IP6_DST if v6 else _PDU_IP4_DST, socket.inet_pton(family, dst)),
            (_PDU_PORT_TYPE, _I.pack(PDU_PORT_TYPES.get(transport, 2))), (_PDU_SPORT, _I.pack(sport)),
            (_PDU_DPORT, _I.pack(dport)),
            (_PDU_FRAME, _I.pack(frame & 0xFFFFFFFF))]
    head = b"".join(struct.pack("!HH", tag, len(value)) + value for tag, value in tags)
    return head + b"\0\0\0\0" + payload


_TOP_VIA = re.compile(rb"(?im)^(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([a-z]+)")


def _ws_frame(data) -> Optional[tuple]:
    """Parse one WebSocket frame at the start of ``data``: (fin, opcode, unmasked payload, frame length),
    or None when the frame is not complete yet; the payload is None for a frame over ``MAX_WS_MESSAGE``.
    Raises IndexError on too few bytes for the header."""
    b0, b1 = data[0], data[1]
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        n = _H.unpack_from(data, 2)[0]
        pos = 4
    elif n == 127:
        n = struct.unpack_from("!Q", data, 2)[0]
        pos = 10
    mask = None
    if b1 & 0x80:
        mask = bytes(data[pos:pos + 4])
        if len(mask) < 4:
            return None
        pos += 4
    if n > MAX_WS_MESSAGE:
        return bool(b0 & 0x80), b0 & 0x0F, None, pos + n   # too big to wait for: the caller skips it
    if len(data) < pos + n:
        return None
    payload = bytes(data[pos:pos + n])
    if mask:
        reps = mask * (n // 4 + 1)
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(reps[:n], "big")).to_bytes(n, "big") if n else b""
    return bool(b0 & 0x80), b0 & 0x0F, payload, pos + n
