"""RTP and RTCP: header fields and per-stream statistics (RFC 3550).

Owns what is known about one RTP stream, keyed by (source, destination, SSRC): packet count, sequence
accounting (RFC 3550 A.1/A.3: expected, lost, duplicates, out of order, wraps), inter-arrival jitter
(A.8) with the codec's clock rate, largest gap between packets, payload types. State per stream is a few
numbers: nothing keeps packets, so memory grows with streams, never with packets. Time is always passed
in (the capture timestamp); nothing here reads a clock.

Statistics never depend on having seen the SDP: a static payload type gives its clock rate, a dynamic
one starts at 8 kHz and ``clock_rate_guessed`` says so until the analyzer learns the rtpmap.
"""
from __future__ import annotations

import struct
from typing import Optional

from sipflow.sdp import STATIC_PT

RTCP_TYPES = range(192, 224)   # byte 1 of RTCP packets: SR 200, RR 201, SDES 202, BYE 203, APP 204, FB 205-207
MAX_DROPOUT = 3000             # RFC 3550 A.1: a jump ahead larger than this is not loss but a restart
MAX_MISORDER = 100             # a packet this far behind the highest sequence number is late, not a restart

_RTP = struct.Struct("!BBHII")


def uint16_diff(a: int, b: int) -> int:
    """a - b for 16-bit sequence numbers, in -32768..32767 (wrap-aware)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def is_rtp(payload: bytes) -> bool:
    """RTP version 2 with room for the fixed header and a payload type that is not RTCP's."""
    return len(payload) >= 12 and payload[0] & 0xC0 == 0x80 and payload[1] not in RTCP_TYPES


def is_rtcp(payload: bytes) -> bool:
    return len(payload) >= 8 and payload[0] & 0xC0 == 0x80 and 200 <= payload[1] <= 207


class RtpStream:
    """Accumulates one stream's statistics, one ``add`` per packet (the hot path: keep it lean)."""
    __slots__ = ("src", "sport", "dst", "dport", "ssrc", "pt", "rate", "clock_rate_guessed",
                 "packets", "base_seq", "max_seq", "cycles", "duplicates", "out_of_order",
                 "first_ts", "last_ts", "last_arrival", "last_rtp_ts", "jitter", "jitter_max", "jitter_sum",
                 "jitter_n", "max_delta", "max_delta_frame", "first_frame", "other_pts", "marker_packets",
                 "file", "call_id", "nat", "codec", "rtcp_packets")

    def __init__(self, src: str, sport: int, dst: str, dport: int, ssrc: int, pt: int, frame: int,
                 file: int = 0) -> None:
        self.src, self.sport, self.dst, self.dport, self.ssrc = src, sport, dst, dport, ssrc
        self.pt = pt
        static = STATIC_PT.get(pt)
        self.rate = static[1] if static else 8000
        self.clock_rate_guessed = static is None
        self.packets = 0
        self.base_seq = self.max_seq = -1
        self.cycles = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.first_ts = self.last_ts = 0.0
        self.last_arrival = 0.0
        self.last_rtp_ts = 0
        self.jitter = 0.0          # RFC 3550 A.8 estimate, in milliseconds
        self.jitter_max = 0.0
        self.jitter_sum = 0.0
        self.jitter_n = 0
        self.max_delta = 0.0       # largest arrival gap between consecutive packets, seconds
        self.max_delta_frame = 0
        self.first_frame = frame
        self.other_pts = {}        # payload type -> packets, for packets not of the main type (DTMF, CN)
        self.marker_packets = 0
        self.file = file
        # Filled in when streams are joined to calls at the end of the analysis.
        self.call_id: Optional[str] = None
        self.nat = False
        self.codec: Optional[str] = None
        self.rtcp_packets = 0

    def add(self, seq: int, rtp_ts: int, arrival: float, pt_byte: int, frame: int) -> None:
        self.packets += 1
        pt = pt_byte & 0x7F
        if self.packets == 1:
            self.base_seq = self.max_seq = seq
            self.first_ts = self.last_arrival = arrival
            self.last_rtp_ts = rtp_ts
            self.last_ts = arrival
            self.pt = pt
            return
        # Sequence accounting (RFC 3550 A.1, as an observer: never resets, counts instead).
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0:
            self.duplicates += 1
        elif delta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += 65536
            self.max_seq = seq
        elif delta > 65536 - MAX_MISORDER:
            self.out_of_order += 1
        else:  # a big jump: the sender restarted its sequence; follow it
            self.max_seq = seq
        gap = arrival - self.last_arrival
        if pt != self.pt:
            # DTMF events and comfort noise keep their own timestamps: leave them out of jitter.
            self.other_pts[pt] = self.other_pts.get(pt, 0) + 1
            self.last_ts = arrival
            return
        if pt_byte & 0x80:
            self.marker_packets += 1
        else:
            if gap > self.max_delta:
                self.max_delta = gap
                self.max_delta_frame = frame
        # Jitter (RFC 3550 A.8): D = arrival difference - timestamp difference, both in ms.
        ts_diff = ((rtp_ts - self.last_rtp_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        d = gap * 1000.0 - ts_diff * 1000.0 / self.rate
        if d < 0:
            d = -d
        j = self.jitter + (d - self.jitter) / 16.0
        self.jitter = j
        if not pt_byte & 0x80 and j > self.jitter_max:
            self.jitter_max = j
        self.jitter_sum += j
        self.jitter_n += 1
        self.last_arrival = arrival
        self.last_rtp_ts = rtp_ts
        self.last_ts = arrival

    # -- derived figures --------------------------------------------------------------------------------

    @property
    def expected(self) -> int:
        if self.packets == 0:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """RFC 3550 A.3 cumulative loss: expected minus received (negative when duplicates outnumber loss)."""
        return self.expected - self.packets

    @property
    def seq_wraps(self) -> int:
        return self.cycles >> 16

    @property
    def jitter_mean(self) -> float:
        return self.jitter_sum / self.jitter_n if self.jitter_n else 0.0

    def set_clock_rate(self, rate: int) -> None:
        """The SDP told the clock rate. If it differs from the guess, the jitter already gathered was
        computed with the wrong rate: ``clock_rate_guessed`` stays True so reports can say so."""
        if rate:
            self.clock_rate_guessed = self.clock_rate_guessed and rate != self.rate
            self.rate = rate


def parse_header(payload: bytes) -> Optional[tuple]:
    """(version, marker, payload type, sequence, timestamp, ssrc) of an RTP packet, or None."""
    if len(payload) < 12:
        return None
    b0, b1, seq, ts, ssrc = _RTP.unpack_from(payload, 0)
    return b0 >> 6, b1 >> 7, b1 & 0x7F, seq, ts, ssrc


def rtcp_sender_ssrc(payload: bytes) -> Optional[int]:
    if len(payload) < 8:
        return None
    return struct.unpack_from("!I", payload, 4)[0]
