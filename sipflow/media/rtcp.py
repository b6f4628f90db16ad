"""RTCP (RFC 3550 §6, RFC 3611, RFC 4585): compound packets, and what a capture learns from them.

Owns the wire format (``parse``: SR, RR and their report blocks, SDES CNAME, BYE, APP, the feedback
messages, XR with its VoIP metrics block) and ``RtcpBook``, which keeps, per sender and per reported
source, the few figures a report needs: what each receiver said about a stream (fraction lost,
cumulative loss, interarrival jitter), round-trip times from LSR/DLSR, the sender's own counts, its
CNAME and BYE. Nothing keeps packets: a log is a few numbers, and the number of logs is bounded.

Round trips are measured as Wireshark does, from the capture point: a report block's LSR names the
sender report it answers (the middle 32 bits of its NTP timestamp); the time between that SR and the
report, less the DLSR the reporter says it held it, is the round trip. It is exact when the capture was
taken at the SR's sender, and shorter by the capture point's distance from it otherwise.

RTCP packets are rare (one per stream every few seconds): parsing is plain Python, off the hot path.
Which packets are RTCP is ``media.rtp``'s rule (``is_rtcp``); both RTCP on RTP+1 (or an ``a=rtcp:``
port) and RTCP multiplexed on the RTP port (RFC 5761) arrive here the same way.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
KINDS = {SR: "SR", RR: "RR", SDES: "SDES", BYE: "BYE", APP: "APP", RTPFB: "RTPFB", PSFB: "PSFB", XR: "XR"}
CNAME = 1                       # SDES item type (RFC 3550 §6.5.1)
VOIP_METRICS = 7                # XR block type (RFC 3611 §4.7)
NTP_UNIX_OFFSET = 2208988800    # seconds from 1900 (NTP) to 1970 (Unix)

_BLOCK = struct.Struct("!IB3sIIII")     # SSRC, fraction lost, cumulative lost (24 bits), ext. highest seq,
                                        # jitter, LSR, DLSR (RFC 3550 §6.4.1)
_SENDER = struct.Struct("!IIIIII")      # SSRC, NTP msw, NTP lsw, RTP timestamp, packet count, octet count
_VOIP = struct.Struct("!IBBBBHHHHbbBBBBBBBxHHH")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """What one receiver says about one source (RFC 3550 §6.4.1), as on the wire."""
    ssrc: int               # the source reported on
    fraction_lost: int      # lost since the last report, in 1/256
    cumulative_lost: int    # signed: duplicates can make it negative
    highest_seq: int        # extended highest sequence number received
    jitter: int             # interarrival jitter, in the source's RTP timestamp units
    lsr: int                # middle 32 bits of the NTP timestamp of the last SR received (0: none)
    dlsr: int               # delay since that SR, in 1/65536 s


@dataclass(frozen=True, slots=True)
class SenderInfo:
    """An SR's sender information (RFC 3550 §6.4.1)."""
    ntp: int                # 64-bit NTP timestamp
    rtp_ts: int
    packets: int            # packets sent since the start
    octets: int

    @property
    def lsr_key(self) -> int:
        """The middle 32 bits of the NTP timestamp: what a report block's LSR will say."""
        return (self.ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """An XR VoIP metrics block (RFC 3611 §4.7), in the units it defines; None: "unavailable"."""
    ssrc: int
    loss_rate: float        # fraction of packets lost (0-1), network only
    discard_rate: float     # fraction discarded by the jitter buffer (late or early)
    burst_density: float
    gap_density: float
    burst_duration_ms: int
    gap_duration_ms: int
    round_trip_ms: int
    end_system_delay_ms: int
    signal_level: Optional[int]   # dBm0 (None: unavailable)
    noise_level: Optional[int]
    rerl: Optional[int]           # residual echo return loss, dB
    gmin: int
    r_factor: Optional[int]
    ext_r_factor: Optional[int]
    mos_lq: Optional[float]
    mos_cq: Optional[float]
    jb_nominal_ms: int
    jb_max_ms: int
    jb_abs_max_ms: int


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a compound RTCP packet."""
    pt: int                 # packet type (200 SR ... 207 XR)
    count: int              # the header's 5-bit count (report blocks, chunks, sources; FMT for feedback)
    ssrc: int               # the sender's SSRC (BYE: the first source leaving; 0 when absent)
    sender: Optional[SenderInfo] = None
    blocks: Tuple[ReportBlock, ...] = ()
    cname: Optional[str] = None
    reason: Optional[str] = None     # BYE
    voip: Tuple[VoipMetrics, ...] = ()

    @property
    def kind(self) -> str:
        return KINDS.get(self.pt, f"PT{self.pt}")


class RtcpError(ValueError):
    """A compound packet that breaks RFC 3550's rules; the message says how."""


def _signed24(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    return v - (1 << 24) if v & 0x800000 else v


def _blocks(data: bytes, off: int, n: int, end: int) -> Tuple[ReportBlock, ...]:
    if off + 24 * n > end:
        raise RtcpError(f"{n} report blocks do not fit in the packet")
    out = []
    for i in range(n):
        ssrc, frac, cum, ehsn, jit, lsr, dlsr = _BLOCK.unpack_from(data, off + 24 * i)
        out.append(ReportBlock(ssrc, frac, _signed24(cum), ehsn, jit, lsr, dlsr))
    return tuple(out)


def _cname(data: bytes, off: int, end: int) -> Tuple[int, Optional[str]]:
    """The first SDES chunk's SSRC and CNAME (RFC 3550 §6.5)."""
    if off + 4 > end:
        raise RtcpError("SDES chunk without an SSRC")
    ssrc = int.from_bytes(data[off:off + 4], "big")
    off += 4
    while off < end and data[off] != 0:
        if off + 2 > end or off + 2 + data[off + 1] > end:
            raise RtcpError("SDES item runs past the packet")
        kind, n = data[off], data[off + 1]
        if kind == CNAME:
            return ssrc, data[off + 2:off + 2 + n].decode("utf-8", "replace")
        off += 2 + n
    return ssrc, None


def _voip(data: bytes, off: int, end: int) -> List[VoipMetrics]:
    """The VoIP metrics blocks of an XR packet (other block types are skipped by their length)."""
    out = []
    while off + 4 <= end:
        bt, words = data[off], int.from_bytes(data[off + 2:off + 4], "big")
        body = off + 4
        if body + 4 * words > end:
            raise RtcpError(f"XR block type {bt} runs past the packet")
        if bt == VOIP_METRICS and words >= 8:
            (ssrc, loss, discard, bd, gd, bdur, gdur, rtd, esd, signal, noise, rerl, gmin, r, ext_r, lq, cq, _rx,
             jbn, jbm, jba) = _VOIP.unpack_from(data, body)
            out.append(VoipMetrics(
                ssrc, loss / 256.0, discard / 256.0, bd / 256.0, gd / 256.0, bdur, gdur, rtd, esd,
                None if signal == 127 else signal, None if noise == 127 else noise, None if rerl == 127 else rerl,
                gmin, None if r == 127 else r, None if ext_r == 127 else ext_r,
                None if lq == 127 else lq / 10.0, None if cq == 127 else cq / 10.0, jbn, jbm, jba))
        off = body + 4 * words
    return out


def parse(data: bytes) -> List[RtcpPacket]:
    """The packets of one compound RTCP packet (a UDP payload). Raises ``RtcpError`` when the first
    header is not RTCP version 2 or a length runs past the data; packets before a damaged one are
    lost with it (the caller counts the datagram as malformed). Bytes after the last packet (SRTCP's
    index and authentication tag) are left alone."""
    out: List[RtcpPacket] = []
    off, total = 0, len(data)
    while off + 4 <= total:
        b0, pt, words = data[off], data[off + 1], int.from_bytes(data[off + 2:off + 4], "big")
        if b0 >> 6 != 2 or not 192 <= pt <= 223:
            if out:   # what follows a valid chain is not RTCP: SRTCP's index and tag
                break
            raise RtcpError(f"version {b0 >> 6}, not 2" if b0 >> 6 != 2 else f"packet type {pt} is not RTCP")
        end = off + 4 + 4 * words
        if end > total:
            raise RtcpError(f"{KINDS.get(pt, pt)} packet says {4 * words + 4} bytes, {total - off} remain")
        if b0 & 0x20 and end == total and words:   # padding (the last packet only): its last byte counts it
            end -= data[end - 1]
            if end < off + 4:
                raise RtcpError("padding longer than the packet")
        n, body = b0 & 0x1F, off + 4
        ssrc = int.from_bytes(data[body:body + 4], "big") if body + 4 <= end else 0
        if pt == SR:
            if body + 24 > end:
                raise RtcpError("SR shorter than its sender information")
            _, msw, lsw, rtp_ts, pkts, octets = _SENDER.unpack_from(data, body)
            out.append(RtcpPacket(pt, n, ssrc, SenderInfo(msw << 32 | lsw, rtp_ts, pkts, octets),
                                  _blocks(data, body + 24, n, end)))
        elif pt == RR:
            out.append(RtcpPacket(pt, n, ssrc, blocks=_blocks(data, body + 4, n, end)))
        elif pt == SDES:
            ssrc, cname = _cname(data, body, end) if n else (0, None)
            out.append(RtcpPacket(pt, n, ssrc, cname=cname))
        elif pt == BYE:
            reason = None
            at = body + 4 * n
            if at < end and at + 1 + data[at] <= end:
                reason = data[at + 1:at + 1 + data[at]].decode("utf-8", "replace")
            out.append(RtcpPacket(pt, n, ssrc, reason=reason))
        elif pt == XR:
            out.append(RtcpPacket(pt, n, ssrc, voip=tuple(_voip(data, body + 4, end))))
        else:
            out.append(RtcpPacket(pt, n, ssrc))
        off = off + 4 + 4 * words
    if not out:
        raise RtcpError("shorter than an RTCP header")
    return out


# -- what a capture learns --------------------------------------------------------------------------

MAX_LOGS = 65536          # sender and report logs kept (beyond: counted in ``RtcpBook.overflow``)
SR_MEMORY = 16            # sender reports remembered per sender, to answer LSRs
RTT_SLACK = 0.001         # a round trip this far below zero is rounding (of DLSR), taken as 0


class SenderLog:
    """What one RTCP sender (address, port, SSRC) said about itself."""
    __slots__ = ("packets", "first_frame", "first_ts", "kinds", "cname", "sr_count", "last_sender", "sr_times",
                 "bye_ts", "bye_frame", "bye_reason", "encrypted")

    def __init__(self, ts: float, frame: int) -> None:
        self.packets = 0
        self.first_frame, self.first_ts = frame, ts
        self.kinds: Dict[str, int] = {}
        self.cname: Optional[str] = None
        self.sr_count = 0
        self.last_sender: Optional[SenderInfo] = None
        self.sr_times: Dict[int, float] = {}      # LSR key -> capture time of that SR (the last SR_MEMORY)
        self.bye_ts: Optional[float] = None
        self.bye_frame: Optional[int] = None
        self.bye_reason: Optional[str] = None
        self.encrypted = False                    # SRTCP: only the first header was readable


class ReportLog:
    """What one receiver (address, port) said about one source SSRC, over all its report blocks."""
    __slots__ = ("reports", "reporter", "last", "max_fraction", "max_jitter", "rtt_n", "rtt_sum", "rtt_min",
                 "rtt_max", "first_ts", "last_ts", "voip")

    def __init__(self, reporter: int, ts: float) -> None:
        self.reports = 0
        self.reporter = reporter
        self.last: Optional[ReportBlock] = None
        self.max_fraction = 0
        self.max_jitter = 0
        self.rtt_n = 0
        self.rtt_sum = 0.0
        self.rtt_min = self.rtt_max = 0.0
        self.first_ts = self.last_ts = ts
        self.voip: Optional[VoipMetrics] = None   # the last XR VoIP metrics block about the source

    def block(self, b: ReportBlock, sr_at: Dict[Tuple[int, int], float], ts: float) -> None:
        """One report block; ``sr_at`` gives the capture time of the SR its LSR names."""
        self.reports += 1
        self.last, self.last_ts = b, ts
        self.max_fraction = max(self.max_fraction, b.fraction_lost)
        self.max_jitter = max(self.max_jitter, b.jitter)
        sent = sr_at.get((b.ssrc, b.lsr)) if b.lsr else None
        if sent is None:
            return
        rtt = ts - sent - b.dlsr / 65536.0
        if rtt < -RTT_SLACK:   # the SR was captured after the report left: a capture point far from the sender
            return
        rtt = max(rtt, 0.0)    # within the slack: a DLSR rounded to the reporter's clock (many count in ms)
        if self.rtt_n == 0 or rtt < self.rtt_min:
            self.rtt_min = rtt
        if rtt > self.rtt_max:
            self.rtt_max = rtt
        self.rtt_n += 1
        self.rtt_sum += rtt


_SPARE = ReportLog(0, 0.0)   # where reports go once MAX_LOGS is reached (counted, never read)


class RtcpBook:
    """Every RTCP packet of a capture, folded into sender logs keyed by (address, port, SSRC) of the
    sender and report logs keyed by (address, port) of the reporter and the SSRC reported on. A stream
    finds its own by its source address and SSRC (``sender_for``) and its destination address and SSRC
    (``reports_for``), on its RTP port, the next one, or any port of that address (``a=rtcp:``)."""

    def __init__(self) -> None:
        self.senders: Dict[Tuple[str, int, int], SenderLog] = {}
        self.reports: Dict[Tuple[str, int, int], ReportLog] = {}
        self.by_ssrc: Dict[Tuple[str, int], List[int]] = {}   # (address, SSRC) -> ports with a sender log
        self.by_source: Dict[Tuple[str, int], List[int]] = {}  # (reporter address, source SSRC) -> its ports
        self.sr_at: Dict[Tuple[int, int], float] = {}   # (sender SSRC, LSR key) -> capture time, for any port
        self.packets = 0
        self.malformed = 0
        self.overflow = 0

    def add(self, ts: float, frame: int, src: str, sport: int, payload: bytes, encrypted: bool = False
            ) -> Optional[str]:
        """One RTCP datagram from ``src:sport``. Returns None, or what is wrong with it (the datagram
        is then counted as malformed and its packets are not used). ``encrypted``: SRTCP (RFC 3711),
        whose first 8 bytes only are clear: the sender is counted, nothing else can be read."""
        self.packets += 1
        if encrypted:
            if len(payload) < 8:
                self.malformed += 1
                return "SRTCP shorter than its clear header"
            log = self._sender(src, sport, int.from_bytes(payload[4:8], "big"), ts, frame)
            if log is not None:
                log.packets += 1
                log.encrypted = True
                kind = KINDS.get(payload[1], f"PT{payload[1]}")
                log.kinds[kind] = log.kinds.get(kind, 0) + 1
            return None
        try:
            packets = parse(payload)
        except RtcpError as e:
            self.malformed += 1
            return str(e)
        first = packets[0]
        log = self._sender(src, sport, first.ssrc, ts, frame)
        if log is None:
            return None
        log.packets += 1
        for p in packets:
            log.kinds[p.kind] = log.kinds.get(p.kind, 0) + 1
            if p.pt == SR and p.sender is not None:
                log.sr_count += 1
                log.last_sender = p.sender
                times = log.sr_times
                if len(times) >= SR_MEMORY:
                    old = next(iter(times))
                    del times[old]
                    self.sr_at.pop((p.ssrc, old), None)
                times[p.sender.lsr_key] = ts
                self.sr_at[(p.ssrc, p.sender.lsr_key)] = ts
            elif p.pt == SDES and p.cname is not None and p.ssrc == first.ssrc:
                log.cname = p.cname
            elif p.pt == BYE:
                log.bye_ts, log.bye_frame, log.bye_reason = ts, frame, p.reason
            for b in p.blocks:
                self._report(src, sport, p.ssrc, b.ssrc, ts).block(b, self.sr_at, ts)
            for v in p.voip:
                self._report(src, sport, p.ssrc, v.ssrc, ts).voip = v
        return None

    def _sender(self, src: str, sport: int, ssrc: int, ts: float, frame: int) -> Optional[SenderLog]:
        key = (src, sport, ssrc)
        log = self.senders.get(key)
        if log is None:
            if len(self.senders) >= MAX_LOGS:
                self.overflow += 1
                return None
            log = self.senders[key] = SenderLog(ts, frame)
            self.by_ssrc.setdefault((src, ssrc), []).append(sport)
        return log

    def _report(self, src: str, sport: int, reporter: int, source: int, ts: float) -> "ReportLog":
        key = (src, sport, source)
        log = self.reports.get(key)
        if log is None:
            if len(self.reports) >= MAX_LOGS:
                self.overflow += 1
                return _SPARE
            log = self.reports[key] = ReportLog(reporter, ts)
            self.by_source.setdefault((src, source), []).append(sport)
        return log

    @staticmethod
    def _pick(ports: Optional[List[int]], rtp_port: int) -> Optional[int]:
        if not ports:
            return None
        for p in (rtp_port + 1, rtp_port):
            if p in ports:
                return p
        return ports[0] if len(ports) == 1 else None

    def forget(self, src: str, dst: str, ssrc: int) -> None:
        """A stream that is forgotten (``keep_calls``): its sender's logs (source address and SSRC, any
        port) and its receiver's reports about it go too."""
        for port in self.by_ssrc.pop((src, ssrc), ()):
            log = self.senders.pop((src, port, ssrc), None)
            if log is not None:
                for key in log.sr_times:
                    self.sr_at.pop((ssrc, key), None)
        for port in self.by_source.pop((dst, ssrc), ()):
            self.reports.pop((dst, port, ssrc), None)

    def sender_for(self, src: str, sport: int, ssrc: int) -> Optional[SenderLog]:
        """The sender log of a stream's source: on RTP port + 1, on the RTP port (rtcp-mux), or on the one
        port that address sent RTCP from with that SSRC."""
        port = self._pick(self.by_ssrc.get((src, ssrc)), sport)
        return self.senders.get((src, port, ssrc)) if port is not None else None

    def reports_for(self, dst: str, dport: int, ssrc: int) -> Optional[ReportLog]:
        """What the stream's receiver reported about it, found the same way."""
        port = self._pick(self.by_source.get((dst, ssrc)), dport)
        return self.reports.get((dst, port, ssrc)) if port is not None else None
