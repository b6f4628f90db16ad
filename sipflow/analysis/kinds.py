"""The analysis vocabulary: outcomes, states and anomaly kinds, as enums, and the anomaly value.

Owns the names; the rules that move between the states are ``analysis.dialogs``' tables. Every
renderer, record and total says "answered" or "missing_ack" through these, never as free text.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class AnomalyKind(str, enum.Enum):
    """Every kind of protocol problem the tracker records. A str enum: the value is what JSON shows."""
    RESPONSE_WITHOUT_REQUEST = "response_without_request"
    MISSING_ACK = "missing_ack"                  # a final response to INVITE never acknowledged
    BYE_BEFORE_ANSWER = "bye_before_answer"
    CSEQ_BACKWARDS = "cseq_backwards"
    CONTENT_LENGTH_MISMATCH = "content_length_mismatch"
    RETRANSMISSION_STORM = "retransmission_storm"
    NAT = "nat"                                  # private address in SDP/Contact, public packet source
    CALL_ID_MISMATCH = "call_id_mismatch"
    ACK_BRANCH_MISMATCH = "ack_branch_mismatch"
    UNEXPECTED_IN_TRANSACTION = "unexpected_in_transaction"   # the transaction table has no such step
    UNEXPECTED_IN_CALL = "unexpected_in_call"                 # the call table has no such step
    AGED_OUT = "aged_out"        # a call or transaction that never ended, forgotten after idle_timeout
    ONE_WAY_MEDIA = "one_way_media"   # RTP reached one announced audio address of a call, not another
    MEDIA_GAP = "media_gap"           # an audio stream stopped for a while, the call up and not on hold

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    frame: int
    call_id: Optional[str]
    detail: str
    file: int = 0


class TxState(enum.Enum):
    """Transaction states as an observer sees them (RFC 3261 §17, both sides merged)."""
    TRYING = "trying"            # request seen, no response yet (INVITE: "calling")
    PROCEEDING = "proceeding"    # a provisional response seen
    COMPLETED = "completed"      # a final response seen (INVITE: 300-699, waiting for the ACK)
    CONFIRMED = "confirmed"      # INVITE only: ACK for the non-2xx final seen
    ACCEPTED = "accepted"        # INVITE only: 2xx seen (RFC 6026); the ACK belongs to the dialog


class Outcome(enum.Enum):
    """How a call ended, judged on its first hop (what the caller sent and received)."""
    ANSWERED = "answered"
    BUSY = "busy"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    REDIRECTED = "redirected"
    NO_ANSWER = "no_answer"          # 408/480, or the caller gave up with no final answer
    NO_RESPONSE = "no_response"      # not even 100 Trying within Timer B
    IN_PROGRESS = "in_progress"      # still ringing or waiting when the capture ended
    PARTIAL = "partial"              # the capture started after the INVITE


class CallState(enum.Enum):
    """Where the call is, as sngrep users know it."""
    SETUP = "setup"
    RINGING = "ringing"
    IN_CALL = "in_call"
    ENDED = "ended"
    FAILED = "failed"
    CANCELLING = "cancelling"


class DialogState(enum.Enum):
    """RFC 3261 §12: a dialog is early on a 1xx with a To-tag and confirmed on the 2xx."""
    EARLY = "early"
    CONFIRMED = "confirmed"


class RegistrationOutcome(str, enum.Enum):
    """How one client's registration stands."""
    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    CHALLENGED = "challenged"        # the last answer was a 401/407 (the capture ended before the retry)
    FAILED = "failed"
    NO_RESPONSE = "no_response"

    def __str__(self) -> str:
        return self.value
