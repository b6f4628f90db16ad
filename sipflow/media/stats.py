"""RTP per-stream statistics (RFC 3550): the reference implementation.

Owns what is known about one RTP stream, keyed by (source, destination, SSRC): packet count, sequence
accounting (RFC 3550 A.1/A.3: expected, lost, duplicates, out of order, wraps), inter-arrival jitter
(A.8) with the codec's clock rate, largest gap between packets, payload types. State per stream is a few
numbers: nothing keeps packets, so memory grows with streams, never with packets. Time is always passed
in (the capture timestamp); nothing here reads a clock.

Jitter needs the right clock before the first packet is folded in (RFC 3550 A.8 mixes arrival time and
RTP timestamps through it; it cannot be corrected afterwards). The clock comes, in this order, from the
SDP in force when the stream starts (the analyzer passes it in), from a static payload type, or is
measured on the stream's first packets (RTP timestamp advance over arrival time, taken to the nearest
usual rate); ``clock_source`` says which, and only a stream too short to measure is left at 8 kHz
("assumed").
Recognising RTP/RTCP packets is the analyzer's hot path (``analysis.analyzer``, with ``media.rtp``'s header
and RTCP rule); ``media.vec`` computes the same figures on arrays and is tested against ``RtpStream.flush``.
"""
from __future__ import annotations

import math
from typing import Optional

from sipflow.media.events import EventLog
from sipflow.media.video import VideoLog
from sipflow.sip.sdp import STATIC_PT

MAX_DROPOUT = 3000             # RFC 3550 A.1: a jump ahead larger than this is not loss but a restart
BATCH = 4 * 64                 # pending values (64 packets) before statistics are brought up to date
MAX_MISORDER = 100             # a packet this far behind the highest sequence number is late, not a restart
CLOCK_PROBE = 25               # packets a stream with an unknown clock waits for before its figures start
MIN_PROBE_SPAN = 0.2           # seconds of arrival time a clock measurement needs
PROBE_PAUSE = 0.25             # a longer gap between two packets is a pause, left out of the measurement
USUAL_CLOCKS = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 90000)
CLOCK_TOLERANCE = 0.2          # a measured rate more than 20 % off every usual one is not trusted
OUTAGE = 1.0                   # seconds without any packet of a stream, not ended by a talkspurt: kept
MAX_OUTAGES = 16               # outages kept per stream (the rest are counted)
# The jitter buffers simulated (see RtpStream.flush): a fixed one, FIXED_JB seconds deep, and an
# adaptive one as deep as the largest delay it has seen, that depth decaying by e every JB_DECAY seconds,
# plus 20 % headroom, ADAPTIVE_JB_MIN at least (it discards a packet much later than the ones before,
# then holds that depth a while).
# Their playout base is the earliest transit seen, allowed to move later by JB_DRIFT seconds per second
# (clocks that drift, a route that changes).
FIXED_JB = 0.060
ADAPTIVE_JB_MIN = 0.020
JB_DECAY = 5.0
JB_HEADROOM = math.log(1.2)    # the adaptive buffer holds 20 % more than its decayed depth
JB_DRIFT = 0.002

def pending_key(ssrc: int, pt: int) -> int:
    """The head of a stream's pending list: its SSRC and main payload type in one int."""
    return ssrc << 7 | pt


# Where a stream's clock rate came from (``RtpStream.clock_source``).
CLOCK_SDP, CLOCK_STATIC, CLOCK_MEASURED, CLOCK_ASSUMED = "sdp", "payload type", "measured", "assumed"


def measure_clock(values) -> int:
    """The clock rate a run of packets shows, as flat (sequence, RTP timestamp, arrival, PT byte)
    values: the RTP timestamp's advance over the arrival time, summed over consecutive packets of the
    most frequent payload type, taken to the nearest usual rate. Pairs more than ``PROBE_PAUSE`` apart
    (a pause, across which some senders advance the timestamp and some do not) are left out, and so is
    a packet whose timestamp goes back (a late or repeated one): the next packet is paired with the
    latest before it, not with it, which would count several frames' advance over one packet's gap.
    0 when it cannot tell (too little time, or a rate far from every usual one)."""
    counts: dict = {}
    for b in values[3::4]:
        counts[b & 0x7F] = counts.get(b & 0x7F, 0) + 1
    pt = max(counts, key=counts.get)
    advance = span = 0.0
    prev_ts = prev_arr = None
    for i in range(0, len(values) - 3, 4):
        if values[i + 3] & 0x7F != pt:
            continue
        ts, arr = values[i + 1], values[i + 2]
        if prev_ts is not None:
            step, dt = (ts - prev_ts) & 0xFFFFFFFF, arr - prev_arr
            if step >= 0x80000000:
                continue
            if 0.0 <= dt <= PROBE_PAUSE:
                advance += step
                span += dt
        prev_ts, prev_arr = ts, arr
    if span < MIN_PROBE_SPAN:
        return 0
    rate = advance / span
    best = min(USUAL_CLOCKS, key=lambda c: abs(rate / c - 1.0))
    return best if abs(rate / best - 1.0) <= CLOCK_TOLERANCE else 0


class RtpStream:
    """Accumulates one stream's statistics (the hot path: keep it lean).

    Packets are appended to ``pending`` as flat (sequence, RTP timestamp, arrival, second header
    byte) values and folded into the figures by ``flush`` in batches, with local variables: several
    times cheaper in Python than attribute updates per packet. Nothing else is kept per packet.
    Jitter runs in RTP timestamp units (RFC 3550 A.8: D is the difference of relative transit times,
    transit = arrival x clock rate - RTP timestamp) and is turned into milliseconds when read."""
    __slots__ = ("src", "sport", "dst", "dport", "ssrc", "pt", "rate", "clock_source",
                 "packets", "base_seq", "expect", "cycles", "duplicates", "out_of_order", "loss_events",
                 "first_ts", "last_ts", "last_arrival", "first_transit", "last_transit",
                 "jitter_ts", "jmax_ts", "jsum_ts", "jitter_n", "max_delta", "first_frame", "other_pts",
                 "marker_packets", "file", "events_only", "events", "pending", "last_any", "outages",
                 "outages_more", "video", "jb_umin", "jb_peak", "late_fixed", "late_adaptive")

    def __init__(self, src: str, sport: int, dst: str, dport: int, ssrc: int, pt: int, frame: int,
                 file: int = 0, clock_rate: int = 0, events_only: bool = False, video: Optional[str] = None) -> None:
        """``clock_rate``: the rate the SDP in force gives this payload type (0: none known);
        ``events_only``: that SDP says the payload type is telephone-event (every packet is an event);
        ``video``: that SDP names a video codec whose pictures ``media.video`` reads (VP8, VP9, H264)."""
        self.src, self.sport, self.dst, self.dport, self.ssrc = src, sport, dst, dport, ssrc
        self.pt = pt
        static = STATIC_PT.get(pt)
        if clock_rate:
            self.rate, self.clock_source = clock_rate, CLOCK_SDP
        elif static:
            self.rate, self.clock_source = static[1], CLOCK_STATIC
        else:  # measured on the first packets (see flush); 8 kHz if it cannot be
            self.rate, self.clock_source = 8000, CLOCK_ASSUMED
        self.packets = 0
        self.base_seq = 0
        self.expect = 0            # the sequence number that would come next in order (0..65536)
        self.cycles = 0            # 65536 x sequence wraps
        self.duplicates = 0
        self.out_of_order = 0
        self.loss_events = 0       # gaps in the sequence (a burst of loss each): with ``lost``, the burst ratio
        self.first_ts = self.last_ts = 0.0
        self.last_arrival = 0.0
        self.first_transit = self.last_transit = 0.0
        self.jitter_ts = 0.0       # the running RFC 3550 estimate, in RTP timestamp units
        self.jmax_ts = 0.0
        self.jsum_ts = 0.0
        self.jitter_n = 0
        self.max_delta = 0.0       # largest arrival gap between consecutive packets, seconds
        self.last_any = 0.0        # arrival of the last packet of any payload type
        self.jb_umin = 0.0         # the jitter buffers' playout base (see flush), relative to the first packet
        self.jb_peak = -math.inf   # the adaptive buffer's depth, as log(delay) + time / JB_DECAY
        self.late_fixed = 0        # packets that would come too late for a FIXED_JB buffer
        self.late_adaptive = 0     # ... and for the adaptive one
        self.outages: list = []    # (start, end) arrival of gaps of OUTAGE or more not ended by a marker
        self.outages_more = 0      # outages beyond MAX_OUTAGES
        self.first_frame = frame
        self.other_pts = {}        # payload type -> packets, for packets not of the main type (DTMF, CN)
        self.marker_packets = 0
        self.file = file
        self.events_only = events_only
        self.events: Optional[EventLog] = None   # RFC 4733 key presses, when any packet carried one
        # Packets not yet in the figures: [key, then flat (seq, ts, arrival, pt byte) per packet]. The key
        # (SSRC and main payload type) heads the list so the hot path can tell, with one index and no
        # attribute, that a packet is of this stream and of its usual type; a stream of events has no key,
        # so each of its packets goes the way that reads payloads.
        self.video: Optional[VideoLog] = VideoLog(video) if video else None
        # A stream whose payloads are read (events, pictures) has no key either.
        self.pending: list = [-1 if events_only or video else pending_key(ssrc, pt)]

    def note_event(self, pt: int, rtp_ts: int, arrival: float, frame: int, payload: bytes) -> None:
        """A packet whose payload may be an RFC 4733 event: a dynamic payload type other than the
        stream's own (or any packet of an events-only stream); the analyzer leaves out static payload
        types (comfort noise), which never carry events. Its figures still go through ``add``."""
        if self.events is None:
            self.events = EventLog()
        self.events.add(pt, rtp_ts, arrival, frame, self.file, payload)

    def add(self, seq: int, rtp_ts: int, arrival: float, pt_byte: int) -> None:
        """Record one packet (the analyzer's hot path appends to ``pending`` itself)."""
        p = self.pending
        p += (seq, rtp_ts, arrival, pt_byte)
        if len(p) > BATCH:
            self.flush(wait=True)

    @property
    def waiting(self) -> bool:
        """Whether the figures have not started yet because the clock is still to be measured."""
        return self.packets == 0 and self.clock_source == CLOCK_ASSUMED

    def flush(self, wait: bool = False) -> None:
        """Fold the pending packets into the figures. ``wait``: a stream whose clock is unknown keeps
        its first ``CLOCK_PROBE`` packets pending to measure it (the hot paths wait; a snapshot does
        not, and measures what there is)."""
        p = self.pending
        if len(p) < 5:
            return
        before = self.packets
        if before == 0 and self.clock_source == CLOCK_ASSUMED:
            if wait and len(p) < 1 + 4 * CLOCK_PROBE:
                return
            measured = measure_clock(p[1:1 + 4 * CLOCK_PROBE])   # the same packets however they were batched
            if measured:
                self.rate, self.clock_source = measured, CLOCK_MEASURED
        it = iter(p)
        next(it)  # the key
        rate = float(self.rate)
        if before == 0:  # the first packet starts the figures (a key press may come first: its timestamp
            #              is the audio's clock at that instant, RFC 4733 §2.3.4, so it is a fair reference)
            seq, rtp_ts, arrival, pt_byte = next(it), next(it), next(it), next(it)
            self.base_seq = seq
            self.expect = seq + 1
            self.first_ts = self.last_arrival = self.last_ts = self.last_any = arrival
            self.first_transit = self.last_transit = arrival * rate - rtp_ts
        expect, cycles, dup, ooo = self.expect, self.cycles, self.duplicates, self.out_of_order
        gaps = self.loss_events
        main_pt = self.pt
        marked_pt = main_pt | 0x80
        last_arrival, last_transit = self.last_arrival, self.last_transit
        jitter, jmax, jsum, jn = self.jitter_ts, self.jmax_ts, self.jsum_ts, self.jitter_n
        max_delta, markers = self.max_delta, self.marker_packets
        last_any = self.last_any
        # Jitter buffers: a packet's delay over the playout base is u - min(u) (the minimum of the packets
        # before it), with u its transit relative to the first packet's (wraps folded) less JB_DRIFT x
        # the time since: the base is the earliest transit seen, allowed to move later by JB_DRIFT per
        # second. Late for the fixed buffer: a delay over FIXED_JB. The adaptive buffer's depth is the
        # largest delay before, decayed: max(delay_j x exp(-(t - t_j) / JB_DECAY)), kept in log form as
        # the running maximum of log(delay_j) + t_j / JB_DECAY; a packet is late when it exceeds it by
        # more than the headroom.
        t0, a0, slope = self.first_transit, self.first_ts, JB_DRIFT * rate
        umin, peak, late_f, late_a = self.jb_umin, self.jb_peak, self.late_fixed, self.late_adaptive
        fixed, floor, decay = FIXED_JB * rate, ADAPTIVE_JB_MIN * rate, 1.0 / JB_DECAY
        arrival = self.last_ts
        for seq, rtp_ts, arrival, pt_byte in zip(it, it, it, it):
            # Sequence accounting (RFC 3550 A.1, as an observer: never resets, counts instead).
            if seq == expect:  # the common case: the next packet, in order
                expect = seq + 1
            else:
                top = (expect - 1) & 0xFFFF  # highest sequence number so far
                delta = (seq - top) & 0xFFFF
                if delta == 0:
                    dup += 1
                elif delta < MAX_DROPOUT:  # ahead, past a wrap or a gap (lost, or late: counted then)
                    if seq < top:
                        cycles += 65536
                    if delta > 1:
                        gaps += 1
                    expect = seq + 1
                elif delta > 65536 - MAX_MISORDER:
                    ooo += 1
                else:  # a big jump: the sender restarted its sequence; follow it
                    expect = seq + 1
            if pt_byte != main_pt and pt_byte != marked_pt:
                # DTMF events and comfort noise keep their own timestamps: leave them out of jitter.
                pt = pt_byte & 0x7F
                self.other_pts[pt] = self.other_pts.get(pt, 0) + 1
                last_any = arrival
                continue
            transit = arrival * rate - rtp_ts
            u = (transit - t0 + 2147483648.0) % 4294967296.0 - 2147483648.0 - slope * (arrival - a0)
            if u < umin:
                umin = u
            elif u - umin > floor:
                if u - umin > fixed:
                    late_f += 1
                v = math.log(u - umin) + (arrival - a0) * decay
                if v > peak:
                    if v > peak + JB_HEADROOM:
                        late_a += 1
                    peak = v
            d = transit - last_transit
            if d < 0:
                d = -d
            if d > 2147483648.0:  # the RTP timestamp wrapped
                d = 4294967296.0 - d
            jitter += (d - jitter) * 0.0625
            if pt_byte == main_pt:
                jsum += jitter
                jn += 1
                if jitter > jmax:
                    jmax = jitter
                if arrival - last_arrival > max_delta:
                    max_delta = arrival - last_arrival
                if arrival - last_any >= OUTAGE:
                    self.outage(last_any, arrival)
            else:
                # A talkspurt starts: as Wireshark does, the estimate runs on but the figures skip it.
                markers += 1
            last_arrival = last_any = arrival
            last_transit = transit
        self.packets = before + (len(p) >> 2)  # len is 1 + 4 per packet
        self.expect, self.cycles, self.duplicates, self.out_of_order = expect, cycles, dup, ooo
        self.loss_events = gaps
        self.last_arrival, self.last_transit, self.last_ts = last_arrival, last_transit, arrival
        self.jitter_ts, self.jmax_ts, self.jsum_ts, self.jitter_n = jitter, jmax, jsum, jn
        self.max_delta, self.marker_packets = max_delta, markers
        self.last_any = last_any
        self.jb_umin, self.jb_peak, self.late_fixed, self.late_adaptive = umin, peak, late_f, late_a
        del p[1:]

    def outage(self, start: float, end: float) -> None:
        """A gap of ``OUTAGE`` or more between two packets, the second not starting a talkspurt."""
        if len(self.outages) < MAX_OUTAGES:
            self.outages.append((start, end))
        else:
            self.outages_more += 1

    # -- derived figures --------------------------------------------------------------------------------

    @property
    def clock_drift(self) -> Optional[float]:
        """How far the RTP timestamps strayed from the arrival clock over the whole stream, as a
        fraction of the time it lasted (0: in step; 1: timestamps that do not advance, or a clock
        twice as fast). None for a stream too short to tell. Real media stays near 0; a UDP flow that
        only looks like RTP (NetBIOS, DNS) does not."""
        span = self.last_arrival - self.first_ts
        if self.packets < 2 or span <= 0.0:
            return None
        d = (self.last_transit - self.first_transit + 2147483648.0) % 4294967296.0 - 2147483648.0  # wraps
        return abs(d) / (self.rate * span)

    @property
    def carried_pt(self) -> int:
        """The payload type the stream carried: its main one, unless no packet after the first had it and
        key presses came instead (a separate SSRC of events, whose main type was taken from the SDP's
        audio codec because it could have been audio starting with a key press)."""
        if self.jitter_n == 0 and self.marker_packets == 0 and self.events is not None and self.events.presses:
            return self.events.presses[0].pt
        return self.pt

    @property
    def max_seq(self) -> int:
        return (self.expect - 1) & 0xFFFF

    @property
    def expected(self) -> int:
        """RFC 3550 A.3: extended highest sequence number - base + 1."""
        if self.packets == 0:
            return 0
        return self.cycles + self.expect - 1 - self.base_seq + 1

    @property
    def lost(self) -> int:
        """RFC 3550 A.3 cumulative loss: expected minus received (negative when duplicates outnumber loss)."""
        return self.expected - self.packets

    @property
    def seq_wraps(self) -> int:
        return self.cycles >> 16

    @property
    def jitter(self) -> float:
        """The last jitter estimate, milliseconds."""
        return self.jitter_ts * 1000.0 / self.rate

    @property
    def jitter_max(self) -> float:
        return self.jmax_ts * 1000.0 / self.rate

    @property
    def jitter_mean(self) -> float:
        return self.jsum_ts * 1000.0 / self.rate / self.jitter_n if self.jitter_n else 0.0
