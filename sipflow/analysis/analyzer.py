"""The analyzer: capture records in, ``Analysis`` snapshots (see ``analysis.model``) out.

Owns the per-packet loop that ties the layers together (capture batches -> net -> sip.scan and RTP
statistics -> dialogs) and when a snapshot is taken (``analysis.snapshot`` copies, ``analysis.join``
ties streams to calls). Renderers read the ``Analysis``; they never see packets.

Hot path (DESIGN.md "Speed is part of the design"): the common frame shape (Ethernet, Linux cooked or
raw IP; IPv4 without options or fragments; UDP; RTP) never becomes a Python object. With NumPy, Python
only walks a block's record headers and arrays do the rest (``_vec_block``, ``media.vec``); without it, one
precompiled struct unpack per frame and a dict lookup per flow feed the stream's batched statistics.
Every other frame (SIP, VLAN, IPv6, TCP, tunnels, fragments...) takes the general decoder in ``net``.
"""
from __future__ import annotations

import contextlib
import gc
import socket
import struct
import sys
from collections import deque
from typing import Callable, Deque, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

from sipflow.capture import files as _capture
from sipflow.analysis.model import Analysis, Filter, Malformed
from sipflow.analysis.dialogs import Tracker
from sipflow.analysis.options import AnalyzerOptions
from sipflow.analysis.messages import COMPACT_AT, RawStore, Shared, SipEvent
from sipflow.analysis.snapshot import take
from sipflow.errors import ParseError
from sipflow.media.rtp import HEADER as RTP_HEADER, RTCP_FIRST, RTCP_LAST, looks_like_rtp
from sipflow.net import Datagram, Decoder, fmt_endpoint
from sipflow.net.addr import pack_ip
from sipflow.net.link import LINK_TYPES, LinkType
from sipflow.media.events import rtp_payload
from sipflow.media.rtcp import RtcpBook
from sipflow.media.udptl import FaxFlow
from sipflow.media.video import CODECS as VIDEO_CODECS, HEAD as VIDEO_HEAD
from sipflow.media.stats import RtpStream
from sipflow.sip.framing import StreamFramer
from sipflow.sip.message import DAMAGE, looks_like_sip
from sipflow.sip.scan import scan
from sipflow.sip.sdp import Codec

# Link types whose records are SIP messages tshark cut out (capture.tshark), each one whole
PDU_LINKS = frozenset(code for code, link in LINK_TYPES.items() if link.kind in ("upper_pdu", "upper_pdu_tls"))

__all__ = ["Analyzer", "Analysis", "Filter", "Malformed", "analyze"]

# IPv4 (version/IHL, fragment field, protocol, then src+dst addresses and UDP ports as one 12-byte flow
# key), UDP length, RTP first bytes, sequence, timestamp, SSRC: the RTP header of ``media.rtp`` laid out
# behind the IP and UDP headers, so that one unpack reads a whole common frame.
_IP_UDP_RTP = "B5xH1xB2x12sHxx" + RTP_HEADER.format.lstrip("!")


def _fast_struct(link: LinkType) -> tuple:
    """(struct, whether the first field is an ethertype, where to start unpacking relative to the packet)
    for the pure-Python hot path. Raw-IP frames have no ethertype: their struct starts 2 bytes early
    (inside the record header, always present) so every shape unpacks to the same fields."""
    if link.ethertype_at is None:
        return struct.Struct("!H" + _IP_UDP_RTP), False, -2
    before, after = link.ethertype_at, link.header - link.ethertype_at - 2
    return struct.Struct("!" + (f"{before}x" if before else "") + "H" + (f"{after}x" if after else "")
                         + _IP_UDP_RTP), True, 0


# Both hot paths take the link types ``net.link`` marks fast; every other frame goes to the decoder.
_FAST = {code: _fast_struct(link) for code, link in LINK_TYPES.items() if link.fast}
_VEC_LINKS = {code: (link.header, link.ethertype_at) for code, link in LINK_TYPES.items() if link.fast}
_intern = sys.intern
# Record fields whose strings repeat (per call, per dialog, per transaction): kept once (sys.intern).
_SHARED_FIELDS = ("call_id", "branch", "from_tag", "to_tag", "from_user", "to_user", "sent_by")
# UDP ports the general decoder reads as encapsulation (VXLAN, HEP), never on the hot path.
_ENCAPSULATION_PORTS = frozenset((4789, 9060))
OTHERS_PER_CALL = 8   # keep_calls: records of messages outside calls kept per call kept
STREAMS_PER_CALL = 4  # keep_calls: RTP streams kept per call kept (beyond: silent ones are retired)
STREAM_IDLE = 60.0    # seconds without a packet before a stream may be retired
MAX_FAX_FLOWS = 4096  # T.38 flows kept (beyond: their packets count as undecoded)


@contextlib.contextmanager
def _gc_paused(pause: bool = True):
    """Pause Python's cyclic garbage collector while the analysis builds its records. They are all
    alive until the end, so every full collection would walk millions of objects for nothing: measured
    on 64 k SIP messages, 2.6 s with the collector and 2.0 s without. The previous state comes back
    after, exceptions included; reference counting frees everything else as usual."""
    was = gc.isenabled()
    if not pause:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Analyzer:
    """Feed it frames (``feed`` one at a time, or ``run`` over whole files); ``snapshot()`` at any time,
    ``result()`` at the end of the input."""

    def __init__(self, options: AnalyzerOptions = AnalyzerOptions()) -> None:
        self.options = options
        self.decoder = Decoder()
        self.tracker = Tracker(options)
        self.pending: Dict[bytes, list] = {}            # flow key -> pending list of its latest stream
        self.by_ssrc: Dict[tuple, RtpStream] = {}       # (flow key, SSRC) -> stream
        self.vec_streams: Dict[tuple, RtpStream] = {}   # NumPy path: (addresses, ports+SSRC) as ints -> stream
        self.rtcp = RtcpBook()                          # what RTCP said (media.rtcp)
        self.faxes: Dict[tuple, FaxFlow] = {}           # (src, sport, dst, dport) -> T.38 over UDPTL
        self.udptl_packets = 0
        self.framers: Dict[tuple, StreamFramer] = {}
        self.events: List[SipEvent] = []
        self._ports: Dict[int, int] = {}      # one int object per port or CSeq number (records share them)
        self._ip4_names: Dict[int, str] = {}   # IPv4 address as an int -> its text (the hot path's cache)
        self.sip_count = 0                  # every SIP message seen (records may be summarised away)
        self.dropped = 0                    # records in ``events`` marked dropped since the last compaction
        self.others: Deque[SipEvent] = deque()  # keep_calls: records of messages outside calls, oldest first
        self.store = RawStore()
        # The parts of message records that repeat, one tuple each; on endless input the table is sized
        # by the calls kept, as the tracker's are, so that it is full when the window is (bench/soak.py).
        self.shared = Shared(min(Shared.LIMIT, max(4096, 8 * options.keep_calls)) if options.bounded
                             else Shared.LIMIT)
        self.compact_at = COMPACT_AT        # bounded: message bytes on disk before the store is compacted
        self.malformed: List[Malformed] = []
        self.files: List[_capture.CaptureFile] = []
        self.frames = 0
        self.rtcp_packets = 0
        self.undecoded = 0
        self.keepalives = 0
        self.end_ts = 0.0
        self.closed = False
        self.final: Optional[Analysis] = None   # the result, once the input has ended
        self.retired_streams = 0            # keep_calls: streams forgotten (silent, beyond the bound)
        self.retired_packets = 0            # ... and their packets, still in the totals
        self.new_streams = 0                # streams made since the last retirement round
        self.retry_after = 1                # new streams before the next round, once over the bound
        self.pdu = False                    # the frame being fed is an upper-PDU record (SIP tshark cut out)
        # Called with every RTCP datagram as it is read: (ts, src, sport, dst, dport, payload, Call-ID or
        # ""); the live command forwards them over HEP.
        self.on_rtcp: Optional[Callable[[float, str, int, str, int, bytes, str], None]] = None
        self.sip_only_from_pdu = options.sip_from == "tshark"
        self.sip_left_to_tshark = 0         # SIP the native decoder found while tshark gives it (not read twice)
        self.last_pdu: Tuple[int, bytes] = (-1, b"")
        self.pdu_repeats: List[int] = []    # frames whose exported PDU tshark repeated (see _datagram)

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, files: Sequence[_capture.CaptureFile]) -> None:
        """Analyse whole files. One file (pcap or pcapng) is read as record batches, on NumPy arrays when
        it can; several are merged by time record by record (same logic, one generator step more)."""
        self._open()
        with _gc_paused(not self.options.bounded):   # bounded: the heap stays small, collect as usual
            self._run(list(files))

    def _run(self, files: List[_capture.CaptureFile]) -> None:
        self.files.extend(files)
        if len(files) == 1:
            vec = _numpy_available()
            for batch in files[0].batches():
                if vec and batch.header and batch.linktype in _VEC_LINKS:
                    self._vec_batch(batch)
                else:
                    self._python_batch(batch)
                if self.new_streams:
                    self._retire_streams()
        else:
            self._run_records(_capture.records(files))
        for st in self.by_ssrc.values():
            st.flush()
            if st.packets and st.last_ts > self.end_ts:
                self.end_ts = st.last_ts

    def _python_batch(self, b: _capture.RecordBatch) -> None:
        """One batch without NumPy: one precompiled unpack per record for the common frame (link +
        IPv4 + UDP + RTP), a dict lookup per flow, RTP values queued on the stream's pending list and
        folded once per batch; every other frame goes to ``feed``."""
        pending = self.pending
        pending_for = self._pending_for
        rtcp = self._rtcp_flow
        slow = self.feed
        lt, fi, buf = b.linktype, b.file, b.buf
        fast = _FAST.get(lt)
        fast_unpack, check_et, delta = (fast[0].unpack_from, fast[1], fast[2]) if fast else (None, False, 0)
        min_len = (fast[0].size + delta) if fast else 1 << 30
        rtp_at = min_len - RTP_HEADER.size   # where the RTP header starts in a record of the common frame
        taken = 0
        for ts, frame, off, caplen in b.records():
            if caplen >= min_len:
                et, vihl, frag, proto, flow, ulen, b0, b1, seq, rts, ssrc = fast_unpack(buf, off + delta)
                if b0 & 0xC0 == 0x80 and vihl == 0x45 and proto == 17 and not frag & 0x3FFF \
                        and ulen >= 20 and (et == 0x0800 or not check_et):
                    taken += 1
                    if RTCP_FIRST <= b1 <= RTCP_LAST:  # RTCP: rare, parsed off the hot path
                        rtcp(flow, ts, frame, fi, bytes(buf[off + rtp_at:off + min(caplen, rtp_at + ulen - 8)]))
                        continue
                    # The stream's pending list starts with its SSRC and payload type (RtpStream.pending):
                    # another stream, a new one or another payload type (a DTMF event) goes the long way.
                    p = pending.get(flow)
                    if p is None or p[0] != ssrc << 7 | b1 & 0x7F:
                        p = pending_for(flow, ssrc, b1, seq, frame, fi, rts, ts, buf, off + rtp_at, off + caplen)
                    p += (seq, rts, ts, b1)
                    continue
            slow(ts, fi, frame, lt, bytes(buf[off:off + caplen]))
        self.frames += taken
        self._flush_all()  # pending lists hold at most one batch's packets: memory stays bounded

    def _vec_batch(self, b: _capture.RecordBatch) -> None:
        """One batch on the NumPy path: the classification of every frame and the RTP statistics are
        array operations (``media.vec``); frames that are not plain IPv4/IPv6 UDP RTP or RTCP go one by
        one to the SIP fast path or ``feed``, in frame order."""
        import numpy as np

        from sipflow.media import vec as rtpvec
        l2, et_off = _VEC_LINKS[b.linktype]
        self._vec_block(np, rtpvec, b.buf, b.offsets, b.first_frame - 1, b.order, b.scale, b.linktype, b.file, l2,
                        et_off, l2 + 40, self.vec_streams, hdr_len=b.header, toff=b.toff)

    def _vec_block(self, np, rtpvec, buf, offs, frame_base, order, scale, lt, fi, l2, et_off, min_len,
                   vec_streams, hdr_len: int = 16, toff: float = 0.0) -> None:
        # One gather copies each record's header and the first bytes of its packet into a row; two
        # structured dtypes (IPv4, IPv6) then name the fields without any per-field byte shuffling.
        # Rows of short records hold bytes of the next record: the caplen tests mask them out.
        a = np.frombuffer(buf, dtype=np.uint8)
        o = np.array(offs, dtype=np.int64)
        width = hdr_len + l2 + 60
        windows = np.lib.stride_tricks.sliding_window_view(a, width)  # a view: row i = buf[i:i + width]
        inside = o < len(windows)  # a row that would run past the buffer goes the slow way
        rows = windows[np.where(inside, o, 0)]  # copies one row per record
        del windows, a
        r4 = rows.view(_vec_dtype(np, order, l2, et_off, hdr_len, 4)).reshape(-1)
        r6 = rows.view(_vec_dtype(np, order, l2, et_off, hdr_len, 6)).reshape(-1)
        caplen = r4["caplen"].astype(np.int64)
        if hdr_len == 16:
            ts = r4["sec"] + r4["frac"] * scale
        else:  # pcapng EPB: a 64-bit count of the interface's clock ticks
            ts = (r4["tsh"] * 4294967296.0 + r4["tsl"]) * scale + toff
        fast4 = inside & (caplen >= l2 + 40) & (r4["vihl"] == 0x45) & (r4["proto"] == 17) \
            & ((r4["frag"] & 0x3FFF) == 0) & (r4["ulen"] >= 20) & ((r4["b0"] & 0xC0) == 0x80)
        # IPv6 without extension headers (a fragment header or any other goes the slow way)
        fast6 = inside & (caplen >= l2 + 60) & ((r6["vtc"] >> 28) == 6) & (r6["nh"] == 17) & (r6["ulen"] >= 20) \
            & ((r6["b0"] & 0xC0) == 0x80)
        if et_off is not None:
            fast4 &= r4["et"] == 0x0800
            fast6 &= r4["et"] == 0x86DD
        fast = fast4 | fast6
        b1 = np.where(fast6, r6["b1"], r4["b1"])
        rtcp = fast & (b1 >= RTCP_FIRST) & (b1 <= RTCP_LAST)
        self.frames += int(fast.sum())
        slow = np.flatnonzero(~fast)
        if len(slow):
            # Plain IPv4/UDP frames that are not RTP (SIP, mostly) skip the general decoder: the arrays
            # already hold their addresses, ports and lengths. Everything else goes through ``feed``,
            # in frame order with them.
            udp4 = inside & ~fast & (caplen >= l2 + 28) & (r4["vihl"] == 0x45) & (r4["proto"] == 17) \
                & ((r4["frag"] & 0x3FFF) == 0)
            if et_off is not None:
                udp4 &= r4["et"] == 0x0800
            starts = (o[slow] + hdr_len).tolist()
            sel = udp4[slow].tolist()
            addrs, ports = r4["addrs"][slow].tolist(), r4["ports"][slow].tolist()
            iplen, ulen = r4["iplen"][slow].tolist(), r4["ulen"][slow].tolist()
            udp = self._udp_fast
            for i, st, ln, t, u, a, p, il, ul in zip(slow.tolist(), starts, caplen[slow].tolist(), ts[slow].tolist(),
                                                     sel, addrs, ports, iplen, ulen):
                if not (u and udp(t, fi, frame_base + i + 1, buf, st + l2, ln - l2, a, p, il, ul)):
                    self.feed(t, fi, frame_base + i + 1, lt, bytes(buf[st:st + ln]))
        if rtcp.any():  # rare: each is parsed in Python, with its flow key built as the RTP path builds it
            for i in np.flatnonzero(rtcp).tolist():
                v6 = bool(fast6[i])
                r = r6 if v6 else r4
                addrs = [int(r[f][i]) for f in (("a1", "a2", "a3", "a4") if v6 else ("addrs",))]
                flow = struct.pack("!%dQI" % len(addrs), *addrs, int(r["ports"][i]))
                start = int(o[i]) + hdr_len + l2 + (48 if v6 else 28)
                end = min(int(o[i]) + hdr_len + int(caplen[i]), start + int(r["ulen"][i]) - 8)
                self._rtcp_flow(flow, float(ts[i]), frame_base + i + 1, fi, bytes(buf[start:end]))
        for r, rtp, addr_fields, ip_udp in ((r4, fast4 & ~rtcp, ("addrs",), 28),
                                            (r6, fast6 & ~rtcp, ("a1", "a2", "a3", "a4"), 48)):
            ri = np.flatnonzero(rtp)
            if len(ri):
                self._vec_fold(np, rtpvec, r, ri, addr_fields, b1, ts, frame_base, fi, vec_streams,
                               (buf, o + (hdr_len + l2 + ip_udp), o + hdr_len + caplen))

    def _vec_fold(self, np, rtpvec, r, ri, addr_fields, b1, ts, frame_base, fi, vec_streams, where) -> None:
        """Group one address family's RTP packets by stream and fold them into the streams' figures.
        (Plain field arrays are gathered, never the structured rows: indexing records with void fields
        is ten times slower.) ``where``: the buffer, and each record's RTP start and end in it, for the
        few packets whose payload is read (another payload type than their stream's: DTMF events)."""
        keys = [r[f][ri].astype(np.uint64) for f in addr_fields]
        keys.append((r["ports"][ri].astype(np.uint64) << np.uint64(32)) | r["ssrc"][ri].astype(np.uint64))
        srt = np.lexsort(keys[::-1])  # by stream; lexsort is stable, so capture order within a stream
        keys = [k[srt] for k in keys]
        ri_s = ri[srt]
        change = np.zeros(len(ri_s), dtype=bool)
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
        starts = np.flatnonzero(change)
        b1_s = b1[ri_s]
        streams = []
        firsts = [k[starts].tolist() for k in keys]
        for j, s_i in enumerate(starts.tolist()):
            key = tuple(col[j] for col in firsts)
            st = vec_streams.get(key)
            if st is None:
                addrs, last = key[:-1], key[-1]
                flow = struct.pack("!%dQI" % len(addrs), *addrs, last >> 32)
                st = vec_streams[key] = self._stream_for(flow, last & 0xFFFFFFFF, int(b1_s[s_i]),
                                                         frame_base + int(ri_s[s_i]) + 1, fi)
            streams.append(st)
        main = np.array([-1 if st.events_only or st.video is not None else st.pt for st in streams], dtype=np.int64)
        group = np.repeat(np.arange(len(streams)), np.diff(np.append(starts, len(ri_s))))
        other = np.flatnonzero((b1_s & 0x7F).astype(np.int64) != main[group])
        if len(other):
            buf, rtp_at, rec_end = where
            rts, seqs = r["rts"], r["seq"]
            for i in other.tolist():
                k = int(ri_s[i])
                self._payload(streams[int(group[i])], int(b1_s[i]), int(seqs[k]), int(rts[k]), float(ts[k]),
                              frame_base + k + 1, buf, int(rtp_at[k]), int(rec_end[k]))
        rtpvec.fold(streams, starts, r["seq"][ri_s], r["rts"][ri_s], ts[ri_s], b1_s)

    def _flush_all(self) -> None:
        for st in self.by_ssrc.values():
            if len(st.pending) > 1:
                st.flush(wait=True)

    def _run_records(self, recs) -> None:
        for ts, fi, frame, lt, buf, off, caplen in recs:
            fast = _FAST.get(lt)
            if fast is not None and caplen >= fast[0].size + fast[2]:
                et, vihl, frag, proto, flow, ulen, b0, b1, seq, rts, ssrc = fast[0].unpack_from(buf, off + fast[2])
                if b0 & 0xC0 == 0x80 and vihl == 0x45 and proto == 17 and not frag & 0x3FFF and ulen >= 20 \
                        and (et == 0x0800 or not fast[1]):
                    self.frames += 1
                    if RTCP_FIRST <= b1 <= RTCP_LAST:
                        at = off + fast[0].size + fast[2] - RTP_HEADER.size
                        self._rtcp_flow(flow, ts, frame, fi, bytes(buf[at:min(off + caplen, at + ulen - 8)]))
                        continue
                    st = self.by_ssrc.get((flow, ssrc)) or self._stream_for(flow, ssrc, b1, frame, fi)
                    if b1 & 0x7F != st.pt or st.events_only or st.video is not None:
                        self._payload(st, b1, seq, rts, ts, frame, buf,
                                      off + fast[0].size + fast[2] - RTP_HEADER.size, off + caplen)
                    st.add(seq, rts, ts, b1)
                    continue
            self.feed(ts, fi, frame, lt, bytes(buf[off:off + caplen]))

    def _stream_for(self, flow: bytes, ssrc: int, b1: int, frame: int, fi: int) -> RtpStream:
        """The stream of a flow key (packed src+dst address, src+dst port) and SSRC. ``pending`` maps
        the flow to the pending list of its most recent stream, so the usual single-SSRC flow costs one
        dict lookup; ``by_ssrc`` holds every stream, for flows whose SSRC changes."""
        st = self.by_ssrc.get((flow, ssrc))
        if st is None:
            src, sport, dst, dport = _endpoints(flow)
            pt = b1 & 0x7F
            codec = self._sdp_codec(src, sport, dst, dport, pt)
            name = codec.name.upper() if codec is not None else ""
            if name == "TELEPHONE-EVENT":
                # A key pressed as the stream starts: its main payload type is the m= line's first codec
                # that is not an event or comfort noise (events only if there is none).
                audio = self._sdp_audio(src, sport, dst, dport)
                if audio is not None:
                    pt, codec, name = audio.pt, audio, audio.name.upper()
            st = RtpStream(src, sport, dst, dport, ssrc, pt, frame, fi, codec.clock_rate if codec else 0,
                           name == "TELEPHONE-EVENT", name if name in VIDEO_CODECS else None)
            self.by_ssrc[(flow, ssrc)] = st
            if self.options.bounded:
                self.new_streams += 1
        self.pending[flow] = st.pending
        return st

    def _sdp_audio(self, src: str, sport: int, dst: str, dport: int) -> Optional[Codec]:
        """The first codec of the SDP in force at a new stream's ends that carries sound (not
        telephone-event, not comfort noise), or None."""
        book = self.tracker.media_book
        for offer in (book.offer_at(dst, dport), book.offer_at(src, sport)):
            if offer is not None:
                for codec in offer.codecs.values():
                    if codec.name.upper() not in ("TELEPHONE-EVENT", "CN") and codec.clock_rate:
                        return codec
        return None

    def _sdp_codec(self, src: str, sport: int, dst: str, dport: int, pt: int) -> Optional[Codec]:
        """A new stream's codec (clock rate, telephone-event or not), from the SDP in force at its
        destination (or, symmetric RTP, at its source); None when no SDP there names its payload type."""
        book = self.tracker.media_book
        for offer in (book.offer_at(dst, dport), book.offer_at(src, sport)):
            if offer is not None:
                codec = offer.codecs.get(pt)
                if codec is not None and codec.clock_rate:
                    return codec
        return None

    def _pending_for(self, flow: bytes, ssrc: int, b1: int, seq: int, frame: int, fi: int, rts: int, ts: float,
                     buf, start: int, end: int) -> list:
        """The pending list for a packet the hot loop could not place (see ``_python_batch``)."""
        st = self._stream_for(flow, ssrc, b1, frame, fi)
        if b1 & 0x7F != st.pt or st.events_only or st.video is not None:
            self._payload(st, b1, seq, rts, ts, frame, buf, start, end)
        return st.pending

    def _rtcp_flow(self, flow: bytes, ts: float, frame: int, fi: int, payload: bytes) -> None:
        """An RTCP datagram from a hot path, which knows its flow key, not its addresses."""
        src, sport, dst, dport = _endpoints(flow)
        self._rtcp(ts, fi, frame, src, sport, dst, dport, payload)

    def _rtcp(self, ts: float, fi: int, frame: int, src: str, sport: int, dst: str, dport: int,
              payload: bytes) -> None:
        """An RTCP datagram (``media.rtcp``): folded into the book, or a malformed record that says why."""
        self.rtcp_packets += 1
        if self.on_rtcp is not None:
            self.on_rtcp(ts, src, sport, dst, dport, payload, self.rtcp_call_id(src, sport, dst, dport))
        problem = self.rtcp.add(ts, frame, src, sport, payload, self._srtcp(src, sport, dst, dport))
        if problem is not None:
            self.malformed.append(Malformed(frame, fi, ts, fmt_endpoint(src, sport), fmt_endpoint(dst, dport),
                                            f"RTCP: {problem}"))

    def rtcp_call_id(self, src: str, sport: int, dst: str, dport: int) -> str:
        """The Call-ID of the call whose SDP announced either end of an RTCP flow ("" when none did)."""
        book = self.tracker.media_book
        for ip, port in ((dst, dport), (dst, dport - 1), (src, sport), (src, sport - 1)):
            offer = book.offer_at(ip, port)
            if offer is not None:
                return offer.call_id
        return ""

    def _srtcp(self, src: str, sport: int, dst: str, dport: int) -> bool:
        """Whether the SDP in force at either end of an RTCP flow (its RTP port is the same, rtcp-mux, or
        one lower) says SRTP: then everything past the first 8 bytes is encrypted (RFC 3711)."""
        book = self.tracker.media_book
        for ip, port in ((dst, dport), (dst, dport - 1), (src, sport), (src, sport - 1)):
            offer = book.offer_at(ip, port)
            if offer is not None:
                return "SAVP" in offer.proto.upper()
        return False

    @staticmethod
    def _payload(st: RtpStream, b1: int, seq: int, rts: int, ts: float, frame: int, buf, start: int,
                 end: int) -> None:
        """A packet whose payload is read: of another payload type than its stream's, or of an
        events-only stream (an RFC 4733 event, ``media.events``), or a video picture's (``media.video``)."""
        pt = b1 & 0x7F
        if st.video is not None and pt == st.pt:
            loc = rtp_payload(buf, start, end)
            if loc is not None:
                st.video.add(seq, rts, ts, frame, bytes(buf[loc[0]:loc[0] + min(loc[1], VIDEO_HEAD)]))
            return
        if pt < 96 and not st.events_only:
            return
        loc = rtp_payload(buf, start, end)
        if loc is not None:
            st.note_event(pt, rts, ts, frame, bytes(buf[loc[0]:loc[0] + min(loc[1], 64)]))

    def feed(self, ts: float, file: int, frame: int, linktype: int, data: bytes) -> None:
        """One frame through the general decoder (everything the fast path does not take)."""
        if self.closed:
            self._open()
        self.frames += 1
        if ts > self.end_ts:
            self.end_ts = ts
        if linktype < 0:
            self.undecoded += 1
            return
        self.pdu = linktype in PDU_LINKS
        for dg in self.decoder.decode(ts, file, frame, linktype, data):
            self._datagram(dg)
        self.pdu = False
        if self.new_streams:
            self._retire_streams()

    def _udp_fast(self, ts: float, file: int, frame: int, buf, ip: int, n: int, addrs: int, ports: int,
                  iplen: int, ulen: int) -> bool:
        """A plain IPv4/UDP frame that is not RTP, read from the hot path's arrays. Applies the decoder's
        own length rules (IP total length, then the UDP length); returns False to leave the frame to the
        general decoder (HEP and VXLAN ports, a HEP3 payload, a truncated header)."""
        sport, dport = ports >> 16, ports & 0xFFFF
        if sport in _ENCAPSULATION_PORTS or dport in _ENCAPSULATION_PORTS:
            return False
        end = min(iplen, n) if iplen >= 20 else n
        if end < 28:
            return False
        body = ulen - 8 if 8 <= ulen <= end - 20 else end - 28
        payload = bytes(buf[ip + 28:ip + 28 + body])
        if payload[:4] == b"HEP3":
            return False
        self.frames += 1
        if ts > self.end_ts:
            self.end_ts = ts
        names = self._ip4_names
        if len(names) > 1 << 16:   # bounded: a flood of spoofed sources must not grow memory
            names.clear()
        src, dst = names.get(addrs >> 32), names.get(addrs & 0xFFFFFFFF)
        if src is None:
            src = names[addrs >> 32] = _intern(socket.inet_ntoa((addrs >> 32).to_bytes(4, "big")))
        if dst is None:
            dst = names[addrs & 0xFFFFFFFF] = _intern(socket.inet_ntoa((addrs & 0xFFFFFFFF).to_bytes(4, "big")))
        self._udp_payload(ts, file, frame, (frame,), src, sport, dst, dport, payload, "udp")
        return True

    def _datagram(self, dg: Datagram) -> None:
        payload = dg.payload
        if self.pdu:   # one whole SIP message, already cut out of its stream by tshark
            if (dg.frame, payload) == self.last_pdu:
                # tshark 4.0 exports the first of several SIP messages in one TCP segment once per
                # message: the repeat is dropped (and said), the others are not in its export at all.
                self.pdu_repeats.append(dg.frame)
                return
            self.last_pdu = (dg.frame, payload)
            self._sip(dg, payload, dg.frames, datagram=dg.transport in ("udp", "hep"))
            return
        if dg.transport == "tcp":
            key = (dg.src, dg.sport, dg.dst, dg.dport)
            framer = self.framers.get(key)
            if framer is None:
                framer = self.framers[key] = StreamFramer()
            for raw, frames in framer.feed(payload, dg.frames[0]):
                self._sip(dg, raw, frames, datagram=False)
            return
        if dg.transport in ("ws", "sctp"):
            if payload and looks_like_sip(payload):
                self._sip(dg, payload, dg.frames, datagram=True)
            else:
                self.undecoded += 1
            return
        self._udp_payload(dg.ts, dg.file, dg.frame, dg.frames, dg.src, dg.sport, dg.dst, dg.dport, payload,
                          dg.transport)

    def _udp_payload(self, ts: float, file: int, frame: int, frames, src: str, sport: int, dst: str, dport: int,
                     payload: bytes, transport: str) -> None:
        """A UDP (or HEP-carried) payload: RTP, RTCP, a keep-alive, SIP, or something else."""
        if len(payload) >= 8 and payload[0] & 0xC0 == 0x80 and RTCP_FIRST <= payload[1] <= RTCP_LAST:
            self._rtcp(ts, file, frame, src, sport, dst, dport, payload)   # (a lone RR or BYE has 8 bytes)
            return
        if looks_like_rtp(payload):
            b0, b1, seq, rts, ssrc = RTP_HEADER.unpack_from(payload, 0)
            flow = pack_ip(src) + pack_ip(dst) + struct.pack("!HH", sport, dport)
            st = self.by_ssrc.get((flow, ssrc)) or self._stream_for(flow, ssrc, b1, frame, file)
            if b1 & 0x7F != st.pt or st.events_only or st.video is not None:
                self._payload(st, b1, seq, rts, ts, frame, payload, 0, len(payload))
            st.add(seq, rts, ts, b1)
            return
        if payload.strip(b"\r\n\x00") == b"":
            self.keepalives += 1
            return
        if looks_like_sip(payload):
            self.sip_message(ts, file, frame, frames, src, sport, dst, dport, transport, payload, True)
            return
        offer = self.tracker.media_book.offer_at(dst, dport)
        if offer is not None and offer.proto.lower() == "udptl":   # T.38 fax: the SDP says so, not the bytes
            self._fax(ts, file, frame, src, sport, dst, dport, payload)
        else:
            self.undecoded += 1

    def _fax(self, ts: float, file: int, frame: int, src: str, sport: int, dst: str, dport: int,
             payload: bytes) -> None:
        key = (src, sport, dst, dport)
        flow = self.faxes.get(key)
        if flow is None:
            if len(self.faxes) >= MAX_FAX_FLOWS:
                self.undecoded += 1
                return
            flow = self.faxes[key] = FaxFlow(src, sport, dst, dport, frame, ts, file)
        flow.add(ts, payload)
        self.udptl_packets += 1

    def _sip(self, dg: Datagram, raw: bytes, frames, datagram: bool) -> None:
        self.sip_message(dg.ts, dg.file, dg.frame, frames, dg.src, dg.sport, dg.dst, dg.dport, dg.transport, raw,
                         datagram)

    def sip_message(self, ts: float, file: int, frame: int, frames, src: str, sport: int, dst: str, dport: int,
                    transport: str, raw: bytes, datagram: bool = True) -> None:
        """One SIP message: scanned (``sip.scan``), its bytes put in the store, its record kept and fed to
        the tracker. Strings that repeat from message to message are shared (``sys.intern``)."""
        if self.sip_only_from_pdu and not self.pdu:
            self.sip_left_to_tshark += 1     # --engine tshark: tshark's export has this message
            return
        try:
            head = scan(raw, datagram)
        except ParseError as e:
            self.malformed.append(Malformed(frame, file, ts, fmt_endpoint(src, sport), fmt_endpoint(dst, dport),
                                            str(e)))
            return
        for name in _SHARED_FIELDS:   # strings that repeat from message to message: one copy each
            v = getattr(head, name)
            if v:
                setattr(head, name, _intern(v))
        ports = self._ports   # port and CSeq numbers: one int object per value (records share them)
        if len(ports) > 1 << 16:
            ports.clear()
        if head.cseq is not None:
            head.cseq = ports.setdefault(head.cseq, head.cseq)
        shared = self.shared
        ev = SipEvent(head, ts, frame, tuple(frames),
                      shared.flow(_intern(src), ports.setdefault(sport, sport), _intern(dst),
                                  ports.setdefault(dport, dport), transport, file, self.store),
                      shared.kind(head.method, head.status, head.reason, head.cseq_method), self.store.add(raw))
        if head.problems and any(p.kind in DAMAGE for p in head.problems):
            self.malformed.append(Malformed(frame, file, ts, ev.source, ev.destination,
                                            "; ".join(p for p in head.problems if p.kind in DAMAGE)))
        self.events.append(ev)
        self.sip_count += 1
        gone = self.tracker.feed(ev)
        ev.head = None
        if self.options.bounded:
            self._forget(ev, gone)

    def _forget(self, ev: SipEvent, gone) -> None:
        """keep_calls: drop the records of summarised calls, and of messages outside calls beyond the
        most recent ``keep_calls x 8``; compact the record list once half of it is dropped."""
        if ev.call is None:
            self.others.append(ev)
            if len(self.others) > OTHERS_PER_CALL * self.options.keep_calls:
                self.others.popleft().dropped = True
                self.dropped += 1
        for call in gone:
            for e in call.events:
                if not e.dropped:
                    e.dropped = True
                    self.dropped += 1
            call.forget()
        if self.dropped > 1024 and self.dropped * 2 > len(self.events):
            self.events = [e for e in self.events if not e.dropped]
            self.dropped = 0
        if self.store.size > self.compact_at:
            self._compact_store()

    def _compact_store(self) -> None:
        """keep_calls on endless input: the message file would grow for ever (a day of a busy PBX is
        gigabytes); once it passes ``compact_at`` only the bytes of the records still held (kept messages,
        registrations' last messages, transactions in flight) move to a new file."""
        live = [e for e in self.events if not e.dropped]
        for reg in self.tracker.registrations.values():
            live += reg.events
        for tx in self.tracker.transactions.values():
            live += [e for e in (tx.request, tx.ack, *tx.responses) if e is not None]
        self.store.compact(live)

    def _retire_streams(self) -> None:
        """keep_calls: beyond STREAMS_PER_CALL x keep_calls streams, forget those silent for STREAM_IDLE,
        oldest first, down to three quarters of the bound (so this runs rarely; called between batches
        or frames, never while a batch is using the stream tables). Their packets stay in
        the totals; their figures go, as a summarised call's messages do. A stream still sending is
        never retired, whatever the count."""
        limit = STREAMS_PER_CALL * max(self.options.keep_calls or 0, 16)
        if len(self.by_ssrc) <= limit or self.new_streams < self.retry_after:
            return
        self.new_streams = 0
        horizon = self.end_ts - STREAM_IDLE
        idle = sorted((st.last_ts, key) for key, st in self.by_ssrc.items() if st.last_ts < horizon)
        gone = set()
        for _, key in idle[:len(self.by_ssrc) - limit * 3 // 4]:
            st = self.by_ssrc.pop(key)
            if len(st.pending) > 1:
                st.flush()
            self.retired_streams += 1
            self.retired_packets += st.packets
            self.rtcp.forget(st.src, st.dst, st.ssrc)
            if self.pending.get(key[0]) is st.pending:
                del self.pending[key[0]]
            gone.add(id(st))
        if gone and self.vec_streams:
            self.vec_streams = {k: v for k, v in self.vec_streams.items() if id(v) not in gone}
        # still over the bound: the streams are all still sending; look again after 64 new ones
        self.retry_after = 64 if len(self.by_ssrc) > limit else 1

    # -- the result -----------------------------------------------------------------------------------

    def _open(self) -> None:
        if self.closed:
            raise RuntimeError("this Analyzer's input was closed (result() or close()); use a new Analyzer")

    def close(self) -> None:
        """The input has ended: deliver what TCP still holds after gaps. Feeding after this is an error."""
        if self.closed:
            return
        self.closed = True
        for dg in self.decoder.finish():
            self._datagram(dg)

    def media_ports(self) -> FrozenSet[int]:
        """The UDP ports the SDP of every call still in progress announced, and the port above each
        (RTCP's, RFC 3550 §11): what ``sipflow live --media sdp-only`` lets through beside SIP."""
        ports = set()
        for call in self.tracker.calls.values():
            if not call.finished:
                for o in call.media:
                    ports.add(o.port)
                    if o.port < 65535:
                        ports.add(o.port + 1)
        return frozenset(ports)

    def snapshot(self) -> Analysis:
        """What the analysis knows now, as an immutable ``Analysis``: call it at any time, as often as
        wanted; it changes nothing, so feeding goes on afterwards and earlier snapshots stay as they
        were. Judgments that depend on time (in progress, missing ACK) are made for the latest packet."""
        if self.final is not None:
            return self.final
        with _gc_paused():
            return take(self)

    def result(self) -> Analysis:
        """The analysis at the end of the input: ``close()``, then the last snapshot. Nothing can change
        after it, so it is made once (the calls let go of their state as they are frozen, which keeps the
        peak memory down) and every later ``result()`` or ``snapshot()`` returns it."""
        self.close()
        if self.final is None:
            with _gc_paused():
                self.final = take(self, release=True)
        return self.final


def _endpoints(flow: bytes) -> Tuple[str, int, str, int]:
    """A flow key (packed source and destination address, then ports) as (src, sport, dst, dport)."""
    n = (len(flow) - 4) // 2
    fam = socket.AF_INET6 if n == 16 else socket.AF_INET
    sport, dport = struct.unpack_from("!HH", flow, 2 * n)
    return socket.inet_ntop(fam, flow[:n]), sport, socket.inet_ntop(fam, flow[n:2 * n]), dport


_VEC_DTYPES: Dict[tuple, object] = {}


def _vec_dtype(np, order: str, l2: int, et_off: Optional[int], hdr_len: int = 16, family: int = 4):
    """Record header (pcap record, or pcapng EPB) + link header + IPv4 or IPv6 + UDP + RTP fields as one
    structured NumPy dtype, ``hdr_len + l2 + 60`` bytes long (IPv4 rows end with padding)."""
    key = (order, l2, et_off, hdr_len, family)
    if key not in _VEC_DTYPES:
        if hdr_len == 16:
            fields = [("sec", order + "u4"), ("frac", order + "u4"), ("caplen", order + "u4"),
                      ("origlen", order + "u4")]
        else:
            fields = [("btype", order + "u4"), ("blen", order + "u4"), ("ifid", order + "u4"), ("tsh", order + "u4"),
                      ("tsl", order + "u4"), ("caplen", order + "u4"), ("origlen", order + "u4")]
        if et_off is not None:
            fields += [("l2a", f"V{et_off}")] if et_off else []
            fields += [("et", ">u2")]
            rest = l2 - et_off - 2
            fields += [("l2b", f"V{rest}")] if rest else []
        elif l2:
            fields += [("l2a", f"V{l2}")]
        if family == 4:
            fields += [("vihl", "u1"), ("tos", "u1"), ("iplen", ">u2"), ("ipid", ">u2"), ("frag", ">u2"),
                       ("ttl", "u1"), ("proto", "u1"), ("ipsum", ">u2"), ("addrs", ">u8")]
        else:
            fields += [("vtc", ">u4"), ("plen", ">u2"), ("nh", "u1"), ("hop", "u1"), ("a1", ">u8"), ("a2", ">u8"),
                       ("a3", ">u8"), ("a4", ">u8")]
        fields += [("ports", ">u4"), ("ulen", ">u2"), ("usum", ">u2"), ("b0", "u1"), ("b1", "u1"), ("seq", ">u2"),
                   ("rts", ">u4"), ("ssrc", ">u4")]
        if family == 4:
            fields += [("pad", "V20")]
        _VEC_DTYPES[key] = np.dtype(fields)
    return _VEC_DTYPES[key]


def _numpy_available() -> bool:
    """NumPy is optional: without it the pure-Python hot path runs (same results, slower)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def analyze(paths: Union[str, Iterable[str]], progress: Optional[Callable[[int], None]] = None,
            options: AnalyzerOptions = AnalyzerOptions()) -> Analysis:
    """Read one or more captures (merged by time) and return what they hold.

    >>> a = sipflow.analyze("samples/basic-call-rtp.pcap")   # doctest: +SKIP
    >>> [c.outcome.value for c in a.calls]                    # doctest: +SKIP
    """
    if isinstance(paths, str):
        paths = [paths]
    files = _capture.open_captures(list(paths), progress)
    an = Analyzer(options)
    an.run(files)
    return an.result()
