"""The immutable pieces of an ``Analysis``: calls, transactions, dialogs, registrations, RTP streams.

Owns the frozen values a snapshot is made of. The analyzer's accumulators (``analysis.dialogs``,
``media.stats``) keep changing as packets arrive; ``analysis.snapshot`` copies what they know at one
moment into these records, so an ``Analysis`` never changes after it is made and several can be held at
once (a live view, a before/after comparison). Outcomes and states are enums (``analysis.dialogs``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Tuple

from sipflow.analysis.offers import MediaOffer
from sipflow.analysis.kinds import Anomaly, CallState, DialogState, Outcome, RegistrationOutcome, \
    TxState
from sipflow.analysis.messages import SipEvent
from sipflow.media.emodel import Rating
from sipflow.media.rtcp import VoipMetrics
from sipflow.net import fmt_endpoint
from sipflow.sip.message import display_name


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One request and its responses on one hop, as of the snapshot."""
    method: Optional[str]
    request: SipEvent
    responses: Tuple[SipEvent, ...]
    state: TxState
    final: Optional[SipEvent]
    first_response: Optional[SipEvent]
    first_18x: Optional[SipEvent]
    ack: Optional[SipEvent]
    cancel: Optional["TransactionRecord"]
    retransmissions: int


@dataclass(frozen=True, slots=True)
class DialogRecord:
    from_tag: str
    to_tag: str
    state: DialogState
    created: float
    on_hold: bool


class DialogMap(Mapping):
    """A call's dialogs by (From-tag, To-tag), in the order they were made: an immutable mapping over a
    tuple (a dict and its read-only proxy cost a call about 200 bytes more; measured: 7 MB on 40,000
    calls). Lookups walk the tuple, which holds one dialog, or a few when the INVITE forked."""
    __slots__ = ("_dialogs",)

    def __init__(self, dialogs: Tuple[DialogRecord, ...] = ()) -> None:
        self._dialogs = dialogs

    def __getitem__(self, key: Tuple[str, str]) -> DialogRecord:
        for d in self._dialogs:
            if (d.from_tag, d.to_tag) == key:
                return d
        raise KeyError(key)

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return ((d.from_tag, d.to_tag) for d in self._dialogs)

    def __len__(self) -> int:
        return len(self._dialogs)

    def __repr__(self) -> str:
        return f"DialogMap({dict(self)!r})"


@dataclass(frozen=True, slots=True)
class Timings:
    """A call's timings from its first hop, seconds (None: it did not happen)."""
    time_to_first_response: Optional[float] = None
    pdd: Optional[float] = None               # the INVITE the first 18x answered, to that 18x
    time_to_answer: Optional[float] = None    # INVITE to the first 2xx
    setup_time: Optional[float] = None        # INVITE to the ACK of the 2xx
    duration: Optional[float] = None          # 2xx to BYE
    challenge: Optional[float] = None         # first INVITE to the one that passed a 401/407 (None: none)

    def as_dict(self) -> Dict[str, Optional[float]]:
        return {"time_to_first_response": self.time_to_first_response, "pdd": self.pdd, "challenge": self.challenge,
                "time_to_answer": self.time_to_answer, "setup_time": self.setup_time, "duration": self.duration}


@dataclass(frozen=True, slots=True)
class DtmfRecord:
    """One DTMF key press: from RFC 4733 events in a stream, or from a SIP INFO."""
    key: str                  # "0"-"9", "*", "#", "A"-"D", "flash", "event N"
    source: str               # "rfc4733" | "info"
    ts: float                 # the first packet (or the INFO)
    frame: int
    file: int
    src: str                  # the sender, ip:port
    dst: str
    duration_ms: Optional[float]   # rfc4733: the largest duration field; info: the Duration line (None: absent)
    end_frame: Optional[int]  # rfc4733: the first packet with the end bit (None: never seen)
    ended: Optional[bool]     # rfc4733: the end bit was seen (a key press cut short has none); info: None
    volume: Optional[int]     # rfc4733: dBm0 below zero
    packets: int              # rfc4733: packets of the key press (end retransmissions included); info: 1
    payload_type: Optional[int]
    confirmed: bool           # rfc4733: the SDP says the payload type is telephone-event; info: True


@dataclass(frozen=True, slots=True)
class RtcpRecord:
    """What RTCP said about one stream: its sender's own packets, and what its receiver reported.
    Loss and jitter are the receiver's figures, beside the capture's own in ``StreamRecord``."""
    packets: int                        # RTCP packets from the stream's sender (its address and SSRC)
    first_frame: Optional[int]
    kinds: Mapping[str, int]            # of those: packets by type (SR, RR, SDES, BYE, XR, ...)
    cname: Optional[str]
    sender_packets: Optional[int]       # the last SR's packet count: what the sender says it sent
    sender_octets: Optional[int]
    bye_frame: Optional[int]            # an RTCP BYE from the sender (None: none seen)
    bye_reason: Optional[str]
    encrypted: bool                     # SRTCP (the SDP says SAVP): headers only, no figures
    reports: int                        # report blocks about this stream from its receiver
    reporter_ssrc: Optional[int]
    fraction_lost: Optional[float]      # percent, the last report (loss since the report before)
    fraction_lost_max: Optional[float]
    cumulative_lost: Optional[int]      # the last report
    jitter: Optional[float]             # ms, the last report, with the stream's clock
    jitter_max: Optional[float]
    rtt: Optional[float]                # ms, mean round trip from LSR/DLSR, seen from the capture point
    rtt_min: Optional[float]
    rtt_max: Optional[float]
    rtt_n: int
    xr: Optional[VoipMetrics]           # the last RFC 3611 VoIP metrics block about this stream


@dataclass(frozen=True, slots=True)
class VideoRecord:
    """A video stream's pictures (``media.video``): VP8, VP9 or H.264 named by its SDP."""
    codec: str
    frames: int                    # pictures (distinct RTP timestamps)
    frame_rate: Optional[float]    # pictures per second (None: under two)
    key_frames: int
    first_key_frame: Optional[int]  # the capture frame of the first key frame (None: none seen)
    first_key_ts: Optional[float]
    damaged_frames: int            # pictures with a packet missing


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One RTP stream (source, destination, SSRC) with its RFC 3550 figures and the call it belongs to."""
    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    pt: int
    codec: Optional[str]
    rate: int                 # the clock the jitter figures were computed with, Hz
    clock_rate_guessed: bool  # measured or assumed, not confirmed by an SDP (or an SDP seen late disagrees)
    clock_source: str         # "sdp", "payload type", "measured" (from the stream itself) or "assumed" (8 kHz)
    sdp_clock_rate: Optional[int]   # what the SDP that set the stream up says (None: no SDP names it)
    packets: int
    expected: int
    lost: int
    duplicates: int
    out_of_order: int
    seq_wraps: int
    max_delta: float          # seconds
    jitter: Optional[float]   # the last estimate, ms (None: a stream of telephone-events, where RFC 3550
    jitter_mean: Optional[float]   # jitter means nothing: all packets of a key press share one timestamp)
    jitter_max: Optional[float]    # ms
    jitter_n: int             # packets that went into the jitter figures
    first_ts: float
    last_ts: float
    first_frame: int
    file: int
    marker_packets: int
    other_pts: Mapping[int, int]
    rtcp_packets: int
    call_id: Optional[str]
    nat: bool
    media: Optional[str]      # the m= line's kind (audio, video) of the SDP that set it up
    setup_frame: Optional[int]   # the frame of that SDP
    dtmf: Tuple[DtmfRecord, ...]   # RFC 4733 key presses in this stream
    loss_events: int          # gaps in the sequence (bursts of loss)
    late_fixed: int           # packets too late for a 60 ms fixed jitter buffer (media.stats)
    late_adaptive: int        # ... for an adaptive one (4 x jitter, 20 ms at least): counted as lost by the MOS
    quality: Optional[Rating]  # the G.107 E-model rating, every term (None: not rated; quality_note says why)
    quality_note: str
    rtcp: Optional[RtcpRecord] = None   # None: no RTCP from or about this stream
    video: Optional[VideoRecord] = None     # pictures of a VP8/VP9/H.264 stream
    media_gaps: Tuple[Tuple[float, float], ...] = ()   # (start, end) of pauses of 1 s or more that no hold
    #                                                    explains (audio streams of a call only)

    @property
    def source(self) -> str:
        """Where it came from, ip:port (``src`` is the address alone, ``sport`` the port)."""
        return fmt_endpoint(self.src, self.sport)

    @property
    def destination(self) -> str:
        return fmt_endpoint(self.dst, self.dport)


@dataclass(frozen=True, slots=True)
class FaxRecord:
    """One direction of a T.38 fax (UDPTL packets to an address an ``m=image ... udptl`` SDP set up)."""
    src: str
    sport: int
    dst: str
    dport: int
    packets: int
    expected: int             # by the UDPTL sequence numbers
    lost: int
    duplicates: int
    late: int
    malformed: int            # packets too short for a UDPTL header
    first_ts: float
    last_ts: float
    first_frame: int
    file: int
    signals: Tuple[str, ...]  # T.30 indicators and data modulations, in order of first sight
    setup_frame: int          # the SDP that announced the destination


@dataclass(frozen=True, slots=True)
class T38Offer:
    """A switch to fax offered in an INVITE or re-INVITE (``m=image ... udptl t38``), and its answer."""
    frame: int
    ts: float
    status: Optional[int]     # the final response (None: none seen)
    accepted: bool            # a 2xx: the media moved to UDPTL; otherwise it stayed as it was


@dataclass(frozen=True, slots=True)
class CallRecord:
    """Everything sharing one Call-ID that contains an INVITE dialog, as of the snapshot."""
    call_id: str
    from_uri: str
    to_uri: str
    from_user: Optional[str]
    to_user: Optional[str]
    start: float
    saw_initial: bool                  # False: the capture started after the INVITE
    caller: Optional[Tuple[str, int]]
    outcome: Outcome
    final_status: Optional[int]
    state: CallState
    reason: Optional[str]              # Reason header (RFC 3326) of the BYE or the CANCEL
    ended_by: Optional[str]            # caller | callee
    timing: Timings
    hops: int
    dialogs: Mapping[Tuple[str, str], DialogRecord]
    events: Tuple[SipEvent, ...]
    invites: Tuple[TransactionRecord, ...]     # initial INVITE transactions, every hop
    reinvites: Tuple[TransactionRecord, ...]
    cancel: Optional[SipEvent]
    bye: Optional[SipEvent]
    ack_2xx: Optional[SipEvent]
    media: Tuple[MediaOffer, ...]
    holds: Tuple[Tuple[float, int, str], ...]
    anomalies: Tuple[Anomaly, ...]
    streams: Tuple[StreamRecord, ...]
    dtmf: Tuple[DtmfRecord, ...]   # every key press of the call, RFC 4733 and INFO, in time order
    t38: Tuple[T38Offer, ...] = ()     # switches to T.38 fax offered, with their answers
    caller_agent: Optional[str] = None    # the caller's User-Agent (or Server) header
    callee_agent: Optional[str] = None
    faxes: Tuple[FaxRecord, ...] = ()  # T.38 fax flows (UDPTL), not RTP
    from_value: str = ""               # the From and To headers as written by the call's first message
    to_value: str = ""

    @property
    def from_display(self) -> Optional[str]:
        """The From display name: text the caller chose, never an address (shown quoted beside the URI)."""
        return display_name(self.from_value)

    @property
    def to_display(self) -> Optional[str]:
        return display_name(self.to_value)

    def first_hop(self) -> Tuple[TransactionRecord, ...]:
        """The initial INVITE transactions the caller sent (all figures are judged there)."""
        return tuple(t for t in self.invites if (t.request.src, t.request.sport) == self.caller)

    def timings(self) -> Dict[str, Optional[float]]:
        return self.timing.as_dict()


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """One client's REGISTER history for one address-of-record (one Call-ID), as of the snapshot."""
    aor: str
    call_id: str
    contact: Optional[str]
    outcome: RegistrationOutcome
    final_status: Optional[int]
    expires_requested: Optional[int]
    expires_granted: Optional[int]
    challenges: int
    refreshes: int
    requests: int
    start: float
    end: float
    unregister: bool
    events: Tuple[SipEvent, ...]
