"""The immutable pieces of an ``Analysis``: calls, transactions, dialogs, registrations, RTP streams.

Owns the frozen values a snapshot is made of. The analyzer's accumulators (``analysis.dialogs``,
``media.stats``) keep changing as packets arrive; ``analysis.snapshot`` copies what they know at one
moment into these records, so an ``Analysis`` never changes after it is made and several can be held at
once (a live view, a before/after comparison). Outcomes and states are enums (``analysis.dialogs``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from sipflow.analysis.dialogs import MediaOffer
from sipflow.analysis.kinds import Anomaly, CallState, DialogState, Outcome, RegistrationOutcome, \
    TxState
from sipflow.analysis.messages import SipEvent


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


@dataclass(frozen=True, slots=True)
class Timings:
    """A call's timings from its first hop, seconds (None: it did not happen)."""
    time_to_first_response: Optional[float] = None
    pdd: Optional[float] = None               # INVITE to the first 18x
    time_to_answer: Optional[float] = None    # INVITE to the first 2xx
    setup_time: Optional[float] = None        # INVITE to the ACK of the 2xx
    duration: Optional[float] = None          # 2xx to BYE

    def as_dict(self) -> Dict[str, Optional[float]]:
        return {"time_to_first_response": self.time_to_first_response, "pdd": self.pdd,
                "time_to_answer": self.time_to_answer, "setup_time": self.setup_time, "duration": self.duration}


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
    rate: int
    clock_rate_guessed: bool
    packets: int
    expected: int
    lost: int
    duplicates: int
    out_of_order: int
    seq_wraps: int
    max_delta: float          # seconds
    jitter: float             # the last estimate, ms
    jitter_mean: float        # ms
    jitter_max: float         # ms
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
