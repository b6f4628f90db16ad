"""Transactions, dialogs and calls rebuilt from observed SIP messages (REGISTER flows: ``analysis.registrations``).

Owns every rule that turns a sequence of ``SipEvent``s into SIP state: transaction matching (RFC 3261
§17.1.3/§17.2.3, with the RFC 2543 fallback for branches without the magic cookie), retransmission
detection, ACK and CANCEL matching, dialogs (Call-ID + tags, §12) with forking and hold, calls (all
dialogs and hops of a Call-ID), and anomalies; REGISTER transactions are handed to
``analysis.registrations``, which keeps the flows and the binding table. It is an observer:
a message that breaks the protocol is recorded as an ``Anomaly`` and processing goes on.

The state machines are tables (``TRANSACTION_TABLE``, ``CALL_TABLE``) that a test can walk. Time is the
capture timestamp of the message; nothing here reads a clock or does I/O.
"""
from __future__ import annotations

import sys

from collections import deque
from types import MappingProxyType
from typing import Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from sipflow.analysis.kinds import (Anomaly, AnomalyKind, CallState, DialogState, Outcome, TxState)
from sipflow.analysis.messages import SipEvent
from sipflow.analysis.offers import MAX_ENDPOINTS, InfoDtmf, MediaBook, MediaOffer, codec_map
from sipflow.analysis.options import LINGER, AnalyzerOptions
from sipflow.analysis.registrations import RegistrationBook
from sipflow.analysis.totals import CallTotals
from sipflow.net import fmt_endpoint, is_private
from sipflow.sip.dtmf import dtmf_of
from sipflow.sip.message import ProblemKind
from sipflow.sip.scan import SipHead, contact_host
from sipflow.sip.sdp import Session, sdp_of
from sipflow.sip.transaction import T1, TIMER_B, is_rfc3261_branch

# A "retransmission storm" is more copies than RFC 3261's timers send before giving up: an INVITE is
# retransmitted at 0.5, 1, 2, 4, 8 and 16 s (Timer A, then Timer B at 32 s); a non-INVITE request or a
# response at most ten times (Timers E and G, capped at T2 = 4 s, within 32 s). Fewer is the protocol
# working as designed, however slow it looks.
STORM_INVITE = 6
STORM_OTHER = 10
SWEEP_EVERY = 10.0         # capture seconds between sweeps of finished transactions and calls
_CSEQ_MEMORY = 1 << 16     # keep_calls: senders whose last CSeq is remembered
_NONE: Mapping = MappingProxyType({})   # a call's empty table, shared until it has an entry
_intern = sys.intern
_SHORT = 16                # a call's rarely-used sequences stay tuples up to this many items


def _grown(seq: Sequence, item) -> Sequence:
    """``seq`` with ``item`` added. What most calls have none or a few of stays a tuple (the empty one
    is shared: no list per call); past ``_SHORT`` items it becomes a list, so a flood of re-INVITEs or
    anomalies on one Call-ID appends in constant time instead of copying the tuple each time."""
    if type(seq) is list:
        seq.append(item)
        return seq
    return seq + (item,) if len(seq) < _SHORT else [*seq, item]


# ---------------------------------------------------------------------------------------------------
# Values


# (is_invite, state) -> {event: next state}. Events: "1xx", "2xx", "final" (300-699), "ack" (an ACK
# with the INVITE's branch). The table decides: an event missing from a state's row is unexpected there
# and the tracker records it as an anomaly (UNEXPECTED_IN_TRANSACTION) with its frame, state unchanged.
# Retransmissions (the same response again, the ACK again) are recognised before the table is asked.
TRANSACTION_TABLE: Dict[Tuple[bool, TxState], Dict[str, TxState]] = {
    (True, TxState.TRYING): {"1xx": TxState.PROCEEDING, "2xx": TxState.ACCEPTED, "final": TxState.COMPLETED},
    (True, TxState.PROCEEDING): {"1xx": TxState.PROCEEDING, "2xx": TxState.ACCEPTED, "final": TxState.COMPLETED},
    # §17.1.1.3: the ACK of a 3xx-6xx is part of the INVITE transaction; no other response may follow.
    (True, TxState.COMPLETED): {"ack": TxState.CONFIRMED},
    (True, TxState.CONFIRMED): {"ack": TxState.CONFIRMED},
    # RFC 6026: 2xx retransmissions by the UAS core and 2xx (or late 1xx) from other forks come after the
    # first 2xx; an ACK with the INVITE's branch here is an RFC 2543 peer acknowledging the 2xx.
    (True, TxState.ACCEPTED): {"2xx": TxState.ACCEPTED, "1xx": TxState.ACCEPTED, "ack": TxState.ACCEPTED},
    (False, TxState.TRYING): {"1xx": TxState.PROCEEDING, "2xx": TxState.COMPLETED, "final": TxState.COMPLETED},
    (False, TxState.PROCEEDING): {"1xx": TxState.PROCEEDING, "2xx": TxState.COMPLETED, "final": TxState.COMPLETED},
    # §16.7: a proxy forwards one final response to a non-INVITE request; a second one is an error.
    (False, TxState.COMPLETED): {},
}


# States in which a transaction only waits for stray retransmissions (forgotten LINGER seconds later).
_FINISHED_TX = frozenset((TxState.COMPLETED, TxState.CONFIRMED, TxState.ACCEPTED))


def response_event(status: int) -> str:
    return "1xx" if status < 200 else "2xx" if status < 300 else "final"


class Transaction:
    """One request and its responses on one hop."""
    __slots__ = ("key", "method", "request", "responses", "state", "retransmissions", "ack", "cancel",
                 "final", "first_response", "first_18x", "unexpected", "registration", "last", "first_hop")

    def __init__(self, key: tuple, request: SipEvent) -> None:
        self.key = key
        self.method = request.method
        self.request = request
        self.responses: List[SipEvent] = []
        self.state = TxState.TRYING
        self.retransmissions = 0
        self.ack: Optional[SipEvent] = None
        self.cancel: Optional["Transaction"] = None
        self.final: Optional[SipEvent] = None
        self.first_response: Optional[SipEvent] = None
        self.first_18x: Optional[SipEvent] = None
        self.registration: Optional[tuple] = None   # REGISTER: (Registration, the request's Contacts)
        self.unexpected = 0
        self.last = request.ts                       # the time of its latest message
        self.first_hop = False                       # an initial INVITE the caller itself sent

    def on(self, event: str) -> bool:
        """Take one step of the table; False (state unchanged) when the table has no such step."""
        nxt = TRANSACTION_TABLE[(self.method == "INVITE", self.state)].get(event)
        if nxt is None:
            self.unexpected += 1
            return False
        self.state = nxt
        return True


# state -> {event: next state}. Events come from the first hop (caller side): "1xx", "18x", "2xx",
# "final" (300-699), and from any hop: "cancel", "bye". The table decides the call's state; an event
# missing from a row is recorded as an anomaly (UNEXPECTED_IN_CALL). Rows absorb what RFC 3261 allows
# to arrive late: provisional and 2xx responses from other forks, a CANCEL that lost the race with the
# 200 (§9.1), a new INVITE after a 401/407 challenge (back to setup).
CALL_TABLE: Dict[CallState, Dict[str, CallState]] = {
    CallState.SETUP: {"1xx": CallState.SETUP, "18x": CallState.RINGING, "2xx": CallState.IN_CALL,
                      "final": CallState.FAILED, "cancel": CallState.CANCELLING, "bye": CallState.ENDED},
    CallState.RINGING: {"1xx": CallState.RINGING, "18x": CallState.RINGING, "2xx": CallState.IN_CALL,
                        "final": CallState.FAILED, "cancel": CallState.CANCELLING, "bye": CallState.ENDED},
    CallState.CANCELLING: {"1xx": CallState.CANCELLING, "18x": CallState.CANCELLING, "final": CallState.FAILED,
                           "2xx": CallState.IN_CALL, "cancel": CallState.CANCELLING, "bye": CallState.ENDED},
    CallState.IN_CALL: {"1xx": CallState.IN_CALL, "18x": CallState.IN_CALL, "2xx": CallState.IN_CALL,
                        "cancel": CallState.IN_CALL, "bye": CallState.ENDED},
    CallState.ENDED: {"1xx": CallState.ENDED, "18x": CallState.ENDED, "2xx": CallState.ENDED,
                      "final": CallState.ENDED, "cancel": CallState.ENDED, "bye": CallState.ENDED},
    CallState.FAILED: {"1xx": CallState.SETUP, "18x": CallState.RINGING, "2xx": CallState.IN_CALL,
                       "final": CallState.FAILED, "cancel": CallState.FAILED, "bye": CallState.FAILED},
}


class Dialog:
    """Call-ID + both tags (§12). Early on a 1xx with a To-tag, confirmed on 2xx, ended by BYE."""
    __slots__ = ("from_tag", "to_tag", "state", "created", "on_hold")

    def __init__(self, from_tag: str, to_tag: str, ts: float) -> None:
        self.from_tag, self.to_tag = from_tag, to_tag
        self.state = DialogState.EARLY
        self.created = ts
        self.on_hold = False


class Call:
    """Everything sharing one Call-ID that contains an INVITE dialog: hops, dialogs, media, timings."""
    __slots__ = ("call_id", "events", "invites", "reinvites", "caller", "caller_tag", "from_uri", "to_uri",
                 "from_user", "to_user", "from_value", "to_value",
                 "start", "state", "dialogs", "cancel", "bye", "bye_reason", "cancel_reason",
                 "ack_2xx", "media", "holds", "anomalies", "saw_initial", "last", "aged_out", "queued", "hop1",
                 "unacked", "dtmf", "caller_agent", "callee_agent")

    def __init__(self, call_id: str, first: SipEvent) -> None:
        self.call_id = call_id
        self.events: List[SipEvent] = []
        self.invites: List[Transaction] = []      # initial INVITE transactions (no To-tag), every hop
        # What a call rarely has is the shared empty tuple until it has some (``_grown``): re-INVITEs,
        # rejected INVITEs, SDP, holds, anomalies. An empty list or dict of its own each cost a call 56 to
        # 64 bytes or more (measured with the SDP words interned: 29 MB less on 440k messages).
        self.reinvites: Sequence[Transaction] = ()
        self.hop1: List[Transaction] = []         # the invites the caller sent (kept as they come: no rescans)
        self.unacked: Mapping[tuple, Transaction] = _NONE   # (CSeq, sender) -> INVITE rejected, not yet ACKed
        self.caller: Optional[Tuple[str, int]] = None
        self.caller_tag: Optional[str] = None
        # Parties as the first message names them; the initial INVITE, when seen, has the last word.
        h = first.head
        self.from_uri, self.to_uri = _intern(h.from_uri), _intern(h.to_uri)   # a user's calls share them
        self.from_user, self.to_user = h.from_user, h.to_user
        self.from_value, self.to_value = h.from_value, _intern(h.to_value)   # (an INVITE's To has no tag)
        self.start = first.ts
        self.state = CallState.SETUP
        # Most calls have one dialog: a tuple (a dict of its own cost a call 190 bytes more, measured:
        # 6.5 MB on 440k messages); past ``_SHORT`` (a fork flood) a dict, so lookups stay constant-time.
        self.dialogs: Union[Tuple[Dialog, ...], Dict[Tuple[str, str], Dialog]] = ()
        self.cancel: Optional[SipEvent] = None
        self.bye: Optional[SipEvent] = None
        self.bye_reason: Optional[str] = None      # the Reason header (RFC 3326) of the BYE and the CANCEL
        self.cancel_reason: Optional[str] = None
        self.ack_2xx: Optional[SipEvent] = None
        self.media: Sequence[MediaOffer] = ()
        self.holds: Sequence[Tuple[float, int, str]] = ()  # (ts, frame, "hold"/"unhold")
        self.dtmf: Tuple[InfoDtmf, ...] = ()      # keys sent in INFO requests (RFC 4733 keys are on streams)
        self.caller_agent: Optional[str] = None    # User-Agent (or Server) of each side
        self.callee_agent: Optional[str] = None
        self.anomalies: Sequence[Anomaly] = ()
        self.saw_initial = False
        self.last = first.ts          # the time of its latest message
        self.aged_out = False         # idle_timeout passed while it was still open
        self.queued = False           # in the tracker's queue of finished calls (keep_calls)

    # The figures below all look at the first hop: what the caller sent and received.

    def first_hop(self) -> List[Transaction]:
        """The initial INVITE transactions the caller sent (all figures are judged there)."""
        return self.hop1

    def dialog(self, from_tag: str, to_tag: str) -> Optional[Dialog]:
        ds = self.dialogs
        if type(ds) is dict:
            return ds.get((from_tag, to_tag))
        for d in ds:
            if d.to_tag == to_tag and d.from_tag == from_tag:
                return d
        return None

    def add_dialog(self, d: Dialog) -> None:
        ds = self.dialogs
        if type(ds) is dict:
            ds[(d.from_tag, d.to_tag)] = d
        elif len(ds) < _SHORT:
            self.dialogs = ds + (d,)
        else:
            self.dialogs = {(x.from_tag, x.to_tag): x for x in (*ds, d)}

    def all_dialogs(self) -> Sequence[Dialog]:
        """Every dialog, in the order they were made."""
        ds = self.dialogs
        return tuple(ds.values()) if type(ds) is dict else ds

    def final_transaction(self) -> Optional[Transaction]:
        hop = self.first_hop()
        return hop[-1] if hop else None

    def forget(self) -> None:
        """Summarised away: let go of messages and transactions (and the references between them and
        this call, so that reference counting frees them without the cyclic collector)."""
        for ev in self.events:
            ev.call = None
        self.events.clear()
        self.invites.clear()
        self.reinvites = ()
        self.hop1.clear()
        self.unacked = _NONE
        self.dialogs = ()
        self.media = ()
        self.dtmf = ()
        self.cancel = self.bye = self.ack_2xx = None

    @property
    def finished(self) -> bool:
        """Nothing more is expected: ended, failed (or aged out, when the options say so)."""
        return self.state is CallState.ENDED or self.state is CallState.FAILED or self.aged_out

    @property
    def final_status(self) -> Optional[int]:
        t = self.final_transaction()
        return t.final.status if t and t.final else None

    def outcome(self, end_ts: float) -> Outcome:
        if not self.saw_initial:
            return Outcome.PARTIAL
        status = self.final_status
        if status is None:
            if self.cancel is not None:
                return Outcome.CANCELLED
            hop = self.first_hop()
            last = hop[-1] if hop else None
            if last is not None and not last.responses and end_ts - last.request.ts >= TIMER_B:
                return Outcome.NO_RESPONSE
            return Outcome.IN_PROGRESS
        if 200 <= status < 300:
            return Outcome.ANSWERED
        if 300 <= status < 400:
            return Outcome.REDIRECTED
        if status in (486, 600):
            return Outcome.BUSY
        if status == 487:
            return Outcome.CANCELLED
        if status in (408, 480):
            return Outcome.NO_ANSWER
        return Outcome.REJECTED

    def timings(self) -> Dict[str, Optional[float]]:
        """Time to the first response, to the first 18x (PDD), to the first 2xx, to the ACK of the 2xx,
        and from the 2xx to the BYE, all on the first hop (one pass over its responses)."""
        hop = self.first_hop()
        if not hop:
            return dict(time_to_first_response=None, pdd=None, challenge=None, time_to_answer=None,
                        setup_time=None, duration=None)
        t0 = hop[0].request.ts
        first = ring = answer = None
        ring_sent = through = None    # the INVITE the first 18x answered; the one that got past a challenge
        for t in hop:
            for r in t.responses:
                ts, status = r.ts, r.status
                if first is None or ts < first:
                    first = ts
                if 180 <= status < 190 and (ring is None or ts < ring):
                    ring, ring_sent = ts, t.request.ts
                elif 200 <= status < 300 and (answer is None or ts < answer):
                    answer = ts
                if status < 300 and t is not hop[0] and through is None:
                    through = t.request.ts
        challenged = any(t.final is not None and t.final.status in (401, 407) for t in hop)
        return dict(
            time_to_first_response=first - t0 if first is not None else None,
            # PDD from the INVITE the 18x answers: a 401/407 round trip (and the phone's wait for the
            # password) is its own figure, "challenge", not dial delay
            pdd=ring - ring_sent if ring is not None else None,
            challenge=through - t0 if challenged and through is not None else None,
            time_to_answer=answer - t0 if answer is not None else None,
            setup_time=self.ack_2xx.ts - t0 if self.ack_2xx is not None else None,
            duration=self.bye.ts - answer if answer is not None and self.bye is not None else None,
        )

    @property
    def ended_by(self) -> Optional[str]:
        if self.bye is None:
            return None
        tag = self.bye.from_tag
        return "caller" if tag is not None and tag == self.caller_tag else "callee"

    @property
    def reason(self) -> Optional[str]:
        return self.bye_reason or self.cancel_reason or None

    @property
    def hops(self) -> int:
        by_cseq: Dict[int, int] = {}
        for t in self.invites:
            n = t.request.cseq or 0
            by_cseq[n] = by_cseq.get(n, 0) + 1
        return max(by_cseq.values()) if by_cseq else 0


# ---------------------------------------------------------------------------------------------------
# The tracker


def _request_key(h: SipHead, src: str, sport: int) -> tuple:
    """Transaction key of a request (§17.2.3). ACK and CANCEL share the INVITE's branch; ACK is folded
    into the INVITE (it belongs to a non-2xx INVITE transaction), CANCEL keeps its own method."""
    method = h.method
    m = "INVITE" if method == "ACK" else method
    branch = h.branch
    sent_by = h.sent_by if h.via is not None else fmt_endpoint(src, sport)
    if is_rfc3261_branch(branch):
        return ("b", branch, sent_by, m)
    # RFC 2543 peers: Request-URI, tags, Call-ID, CSeq number and top Via identify the transaction.
    return ("o", h.call_id, h.from_tag, h.cseq, m, h.via)


def _response_key(h: SipHead) -> tuple:
    branch = h.branch
    sent_by = h.sent_by if h.via is not None else ""
    if is_rfc3261_branch(branch):
        return ("b", branch, sent_by, h.cseq_method)
    return ("o", h.call_id, h.from_tag, h.cseq, h.cseq_method, h.via)


INVITE_DIALOG_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO")


class Tracker:
    """Feeds on SipEvents in capture order; holds transactions, calls and registrations."""

    def __init__(self, options: AnalyzerOptions = AnalyzerOptions()) -> None:
        self.options = options
        self.transactions: Dict[tuple, Transaction] = {}
        self.calls: Dict[str, Call] = {}
        self.registrar = RegistrationBook()
        self.registrations = self.registrar.registrations   # (Call-ID, AOR) -> its REGISTER flow
        self.bindings = self.registrar.bindings             # aor -> contact -> expires at
        self.methods: Dict[str, Dict[str, int]] = {}       # method -> {"requests": n, status: n}
        self.anomalies: List[Anomaly] = []
        self.retransmissions = 0
        self._last_cseq: Dict[Tuple[str, str], int] = {}   # (call-id, from-tag) -> last CSeq sent
        self.end_ts = 0.0
        self.next_sweep = 0.0
        self.finished: Deque[Call] = deque()   # keep_calls: finished calls, oldest first
        self.summarised = CallTotals()
        # media address -> the latest SDP there (for new streams' clocks); a bounded analysis remembers
        # 8 addresses per call it keeps (calls still in progress are the newest, so they stay), and the
        # last CSeq of 6 senders per call: both fill as the keep window does, not long after it (the
        # soak measures memory flat from then on)
        self.media_book = MediaBook(min(MAX_ENDPOINTS, max(4096, 8 * options.keep_calls))
                                    if options.keep_calls is not None else MAX_ENDPOINTS)
        self._cseq_memory = min(_CSEQ_MEMORY, max(4096, 6 * options.keep_calls)) \
            if options.keep_calls is not None else _CSEQ_MEMORY
        self.counters: Dict[str, int] = {"transactions_expired": 0, "transactions_aged_out": 0, "calls_aged_out": 0,
                                         "cseq_memory_pruned": 0}

    def release(self) -> None:
        """The input has ended and the final result is being made (``analysis.snapshot.take``): let go
        of what only matching later messages needed (transactions, the calls by Call-ID, the CSeq
        memory, the media address book). The calls themselves are the caller's to freeze; counters,
        methods, bindings and anomalies stay. Measured on 440k messages: the JSON written after the
        result peaks about 20 MB lower."""
        self.transactions = {}
        self.calls = {}
        self._last_cseq = {}
        self.media_book = MediaBook(self.media_book.limit)

    def anomaly(self, kind: AnomalyKind, ev: SipEvent, detail: str, call: Optional[Call] = None) -> None:
        a = Anomaly(kind, ev.frame, ev.call_id, detail, ev.file)
        self.anomalies.append(a)
        if call is not None:
            call.anomalies = _grown(call.anomalies, a)

    # -- entry point --------------------------------------------------------------------------------

    def feed(self, ev: SipEvent) -> List[Call]:
        """One message. Returns the calls summarised out of memory by this step (``keep_calls``)."""
        if ev.ts > self.end_ts:
            self.end_ts = ev.ts
        for p in ev.head.problems:
            if p.kind is ProblemKind.CONTENT_LENGTH:
                self.anomaly(AnomalyKind.CONTENT_LENGTH_MISMATCH, ev, p)
        if ev.method:
            self._request(ev)
        else:
            self._response(ev)
        h = ev.head
        if (h.user_agent or h.server) and ev.call is not None:
            self._agent(ev.call, ev, h.user_agent or h.server)
        if ev.ts >= self.next_sweep:
            return self.sweep(ev.ts)
        return []

    @staticmethod
    def _agent(call: Call, ev: SipEvent, agent: str) -> None:
        """The software of each side, from its User-Agent (or Server) header: a request's sender by its
        From-tag; a response's only when it carries a To-tag (a UAS answering: a proxy's 100 Trying has
        none, so it does not name the callee). The first one seen counts."""
        tag = call.caller_tag
        if tag is None:
            return
        if ev.method:
            caller = ev.from_tag == tag
        elif ev.to_tag:
            caller = ev.from_tag != tag
        else:
            return
        if caller and call.caller_agent is None:
            call.caller_agent = _intern(agent)
        elif not caller and call.callee_agent is None:
            call.callee_agent = _intern(agent)

    # -- forgetting, by RFC 3261's timers and the options -------------------------------------------------

    def sweep(self, now: float) -> List[Call]:
        """Forget transactions whose timers have run out (a finished one LINGER seconds after its last
        message, as Timers D and J do; one that never ended after ``idle_timeout``), age out idle calls,
        and summarise finished calls beyond ``keep_calls``. Returns the calls summarised."""
        self.next_sweep = now + SWEEP_EVERY
        idle = self.options.idle_timeout
        dead = []
        for key, tx in self.transactions.items():
            quiet = now - tx.last
            if tx.state in _FINISHED_TX:
                if quiet > LINGER:
                    dead.append(key)
            elif idle is not None and quiet > idle:
                dead.append(key)
                self.counters["transactions_aged_out"] += 1
                call = tx.request.call
                self.anomaly(AnomalyKind.AGED_OUT, tx.request, f"{tx.method} transaction with no final response "
                             f"for {quiet:.0f} s, forgotten", call)
        for key in dead:
            del self.transactions[key]
        self.counters["transactions_expired"] += len(dead)
        if idle is not None:
            for call in self.calls.values():
                if not call.finished and now - call.last > idle:
                    call.aged_out = True
                    self.counters["calls_aged_out"] += 1
                    self.anomaly(AnomalyKind.AGED_OUT, call.events[-1], f"call still {call.state.value} after "
                                 f"{now - call.last:.0f} s without a message, aged out", call)
        keep = self.options.keep_calls
        if keep is None:
            return []
        for call in self.calls.values():
            if not call.queued and call.finished and now - call.last > LINGER:
                call.queued = True
                self.finished.append(call)
        gone = []
        while len(self.finished) > keep:
            call = self.finished.popleft()
            if self.calls.get(call.call_id) is not call:
                continue
            self.summarised.add(call.outcome(now), call.final_status, call.saw_initial, call.timings(),
                                len(call.events))
            self.anomalies.extend(self.judge(call, now))   # its last chance to be judged: it goes now
            del self.calls[call.call_id]
            gone.append(call)   # the analyzer drops its records, then the call forgets them
        if len(self._last_cseq) > self._cseq_memory:   # oldest senders first (dicts keep insertion order)
            self.counters["cseq_memory_pruned"] += 1
            for k in list(self._last_cseq)[:len(self._last_cseq) // 2]:
                del self._last_cseq[k]
        return gone

    def _count(self, method: Optional[str], what: str) -> None:
        if not method:
            method = "?"
        row = self.methods.setdefault(method, {})
        row[what] = row.get(what, 0) + 1

    # -- requests -------------------------------------------------------------------------------------

    def _request(self, ev: SipEvent) -> None:
        h = ev.head
        method = ev.method
        key = _request_key(h, ev.src, ev.sport)
        tx = self.transactions.get(key)
        call = self._call_for(ev)
        if method == "ACK":
            if tx is None and call is not None:
                tx = self._rejected_invite_for(ev, call)
            if tx is not None and tx.state is not TxState.ACCEPTED:
                # An ACK with the INVITE's branch, for a 3xx-6xx: part of the INVITE transaction
                # (§17.1.1.3). The table says whether one may come now (not before a final response).
                if tx.ack is not None:
                    self._retransmitted(ev, tx)
                    return
                if self._step(tx, "ack", ev, call):
                    tx.ack = ev
                    self._count("ACK", "requests")
                    return
                # recorded as unexpected; read on as an ACK of its own
            # ACK for 2xx: its own transaction (new branch), belongs to the dialog (§13.2.2.4).
            key = ("ack2xx",) + key
            if key in self.transactions:
                self._retransmitted(ev, self.transactions[key])
                return
            ack = self.transactions[key] = Transaction(key, ev)
            ack.state = TxState.COMPLETED   # nothing answers an ACK: kept only to spot its retransmissions
            self._count("ACK", "requests")
            if call is not None and call.ack_2xx is None and call.caller and (ev.src, ev.sport) == call.caller \
                    and any(t.final is not None and 200 <= t.final.status < 300
                            and t.request.cseq == ev.cseq for t in call.first_hop()):
                call.ack_2xx = ev
            return
        if tx is not None and tx.method == method:
            self._retransmitted(ev, tx)
            return
        tx = self.transactions[key] = Transaction(key, ev)
        self._count(method, "requests")
        self._check_cseq(ev, call)
        self._nat_check(ev, call)
        if method == "INVITE":
            self._invite(ev, tx, call)
        elif method == "CANCEL":
            inv = self.transactions.get(key[:-1] + ("INVITE",))
            if inv is not None:
                inv.cancel = tx
            if call is not None:
                if call.cancel is None:
                    call.cancel = ev
                    call.cancel_reason = h.reason_header
                self._call_event(call, "cancel", ev)
        elif method == "BYE" and call is not None:
            if call.bye is None:
                call.bye = ev
                call.bye_reason = h.reason_header
                if call.saw_initial and not any(t.final is not None and 200 <= t.final.status < 300
                                                for t in call.invites):
                    self.anomaly(AnomalyKind.BYE_BEFORE_ANSWER, ev, "BYE before any 2xx to the INVITE", call)
            self._call_event(call, "bye", ev)
        elif method == "REGISTER":
            self.registrar.request(ev, tx, self.options.bounded)
        elif method in ("UPDATE",) and call is not None:
            self._sdp(ev, call)
        elif method == "INFO" and call is not None:
            self._info(ev, call)

    def _rejected_invite_for(self, ev: SipEvent, call: Call) -> Optional[Transaction]:
        """An ACK whose branch matches no transaction, for an INVITE rejected with 3xx-6xx on the same
        hop (same CSeq, same sender, no ACK yet): the ACK for that rejection with a new branch, which
        RFC 3261 §17.1.1.3 forbids but some WebRTC stacks send. Matched, and recorded as an anomaly."""
        t = call.unacked.get((ev.cseq, ev.src, ev.sport))
        if t is None or t.ack is not None:
            return None
        self.anomaly(AnomalyKind.ACK_BRANCH_MISMATCH, ev, f"ACK for {t.final.summary()} carries branch "
                     f"{ev.branch!r}, not its INVITE's {t.request.branch!r} (RFC 3261 §17.1.1.3)", call)
        return t

    def _retransmitted(self, ev: SipEvent, tx: Transaction) -> None:
        ev.retransmission = True
        tx.last = ev.ts
        tx.retransmissions += 1
        self.retransmissions += 1
        limit = STORM_INVITE if ev.method == "INVITE" else STORM_OTHER
        if tx.retransmissions == limit + 1:
            self.anomaly(AnomalyKind.RETRANSMISSION_STORM, ev, f"{ev.summary()} sent {limit + 2} times: more than "
                         f"RFC 3261's timers send ({limit} retransmissions)", ev.call)

    def _call_for(self, ev: SipEvent) -> Optional[Call]:
        cid = ev.call_id
        if cid is None:
            return None
        call = self.calls.get(cid)
        method = ev.method or ev.cseq_method
        if call is None and method in INVITE_DIALOG_METHODS:
            call = self.calls[cid] = Call(cid, ev)
        if call is not None:
            call.events.append(ev)
            call.last = ev.ts
            ev.call = call
        return call

    def _invite(self, ev: SipEvent, tx: Transaction, call: Optional[Call]) -> None:
        if call is None:
            return
        h = ev.head
        if h.to_tag:
            call.reinvites = _grown(call.reinvites, tx)
        else:
            if not call.saw_initial:
                call.saw_initial = True
                call.caller = (ev.src, ev.sport)
                call.caller_tag = h.from_tag
                call.start = ev.ts
                call.from_uri, call.to_uri = _intern(h.from_uri), _intern(h.to_uri)
                call.from_user, call.to_user = h.from_user, h.to_user
                call.from_value, call.to_value = h.from_value, _intern(h.to_value)
            call.invites.append(tx)
            if (ev.src, ev.sport) == call.caller:
                call.hop1.append(tx)
                tx.first_hop = True
        self._sdp(ev, call)

    def _sdp(self, ev: SipEvent, call: Call) -> Optional[Session]:
        sess = sdp_of(ev.head.content_type, ev.head.body)
        if sess is None:
            return None
        for m in sess.media:
            if m.address and m.port:
                offer = MediaOffer(_intern(m.address), m.port, ev.ts, ev.frame, codec_map(m.codecs),
                                   _intern(m.direction), ev.src, _intern(m.kind), _intern(m.proto), ev.file,
                                   call.call_id)
                call.media = _grown(call.media, offer)
                self.media_book.announce(offer)
                if is_private(m.address) and m.address != ev.src and not is_private(ev.src):
                    self.anomaly(AnomalyKind.NAT, ev, f"SDP c={m.address} is private but the packet came from {ev.src}",
                                 call)
        audio = [m for m in sess.media if m.kind == "audio"]
        if audio and ev.to_tag and ev.method in ("INVITE", "UPDATE"):
            hold = all(m.on_hold for m in audio)
            was = call.holds[-1][2] == "hold" if call.holds else False
            if hold != was:
                call.holds = _grown(call.holds, (ev.ts, ev.frame, "hold" if hold else "unhold"))
        return sess

    def _info(self, ev: SipEvent, call: Call) -> None:
        """An INFO that carries a DTMF key. Through a proxy the same request (same CSeq and From-tag)
        shows once per hop: the key is counted once, at its first hop."""
        h = ev.head
        key = dtmf_of(h.content_type, h.body)
        if key is None or any(d.cseq == ev.cseq and d.from_tag == ev.from_tag for d in call.dtmf):
            return
        call.dtmf += (InfoDtmf(key[0], key[1], ev.ts, ev.frame, ev.file, ev.source, ev.destination, ev.cseq,
                               ev.from_tag),)

    def _nat_check(self, ev: SipEvent, call: Optional[Call]) -> None:
        for c in ev.head.contacts[:1]:
            host = contact_host(c)
            if host and host != ev.src and is_private(host) and not is_private(ev.src):
                self.anomaly(AnomalyKind.NAT, ev, f"Contact host {host} is private but the packet came from {ev.src}",
                             call)

    def _check_cseq(self, ev: SipEvent, call: Optional[Call]) -> None:
        cseq = ev.cseq
        if ev.method in ("ACK", "CANCEL") or cseq is None or ev.call_id is None or not ev.head.from_uri:
            return
        k = (ev.call_id, ev.from_tag or "", ev.src)
        last = self._last_cseq.get(k)
        if last is not None and cseq < last:
            self.anomaly(AnomalyKind.CSEQ_BACKWARDS, ev, f"CSeq {cseq} after {last} from the same sender", call)
        self._last_cseq[k] = cseq if last is None else max(last, cseq)

    def _call_event(self, call: Call, event: str, ev: SipEvent) -> None:
        """One step of the call table; a step the table does not have is recorded, state unchanged."""
        nxt = CALL_TABLE[call.state].get(event)
        if nxt is None:
            self.anomaly(AnomalyKind.UNEXPECTED_IN_CALL, ev, f"{ev.summary()} after the call was already "
                         f"{call.state.value.replace('_', ' ')}", call)
            return
        call.state = nxt

    def _step(self, tx: Transaction, event: str, ev: SipEvent, call: Optional[Call]) -> bool:
        """One step of the transaction table; a step it does not have is recorded, state unchanged."""
        before = tx.state
        tx.last = ev.ts
        if tx.on(event):
            return True
        what = "ACK" if event == "ack" else ev.summary()
        self.anomaly(AnomalyKind.UNEXPECTED_IN_TRANSACTION, ev, f"{what} after the {tx.method} transaction of "
                     f"frame {tx.request.frame} was already {before.value} (RFC 3261 §17)", call)
        return False

    # -- responses ------------------------------------------------------------------------------------

    def _response(self, ev: SipEvent) -> None:
        status = ev.status
        key = _response_key(ev.head)
        tx = self.transactions.get(key)
        method = ev.cseq_method
        if tx is not None and tx.request.call_id != ev.call_id:
            # Same branch and CSeq, other Call-ID: a broken (or anonymising) middlebox. The branch is
            # what identifies the transaction (§17.1.3), so the response stays with its request's call.
            call = tx.request.call
            if call is not None:
                call.events.append(ev)
                call.last = ev.ts
                ev.call = call
            self.anomaly(AnomalyKind.CALL_ID_MISMATCH, ev, f"{ev.summary()} has Call-ID {ev.call_id!r} but its request "
                         f"(frame {tx.request.frame}) has {tx.request.call_id!r}", call)
        else:
            call = self._call_for(ev)
        if tx is None:
            self._count(method, str(status))
            self.anomaly(AnomalyKind.RESPONSE_WITHOUT_REQUEST, ev, f"{ev.summary()} to {method or '?'} with no request "
                         f"in the capture", call)
            return
        totag = ev.to_tag
        for r in tx.responses:
            if r.status == status and r.to_tag == totag \
                    and (r.src, r.sport, r.dst, r.dport) == (ev.src, ev.sport, ev.dst, ev.dport):
                self._retransmitted(ev, tx)
                return
        self._count(method, str(status))
        tx.responses.append(ev)
        self._step(tx, response_event(status), ev, call)
        if tx.first_response is None:
            tx.first_response = ev
        if 180 <= status < 190 and tx.first_18x is None:
            tx.first_18x = ev
        if status >= 200 and tx.final is None:
            tx.final = ev
        if tx.method == "INVITE" and call is not None:
            self._invite_response(ev, tx, call, totag)
        elif tx.method == "REGISTER":
            self.registrar.response(ev, tx)

    def _invite_response(self, ev: SipEvent, tx: Transaction, call: Call, totag: Optional[str]) -> None:
        status = ev.status
        ftag = ev.from_tag if ev.head.from_uri else ""
        if totag and 100 < status < 300:
            d = call.dialog(ftag, totag)
            if d is None:
                d = Dialog(ftag, totag, ev.ts)
                call.add_dialog(d)
            if status >= 200:
                d.state = DialogState.CONFIRMED
        if ev.head.body:
            self._sdp(ev, call)
        if status >= 300 and tx.final is ev and tx.ack is None:
            if call.unacked is _NONE:
                call.unacked = {}
            call.unacked[(tx.request.cseq, tx.request.src, tx.request.sport)] = tx
        if tx.first_hop:
            self._call_event(call, "18x" if 180 <= status < 190 else response_event(status), ev)

    # -- end of capture -------------------------------------------------------------------------------

    def end_judgments(self, end: float) -> List[Anomaly]:
        """Anomalies that are judged by how long nothing came: a final response to INVITE with no ACK
        2 x T1 after it (the UAC's own retransmission timer, §17.1.1.2). Computed for a moment (the
        end of the capture, or a snapshot), never stored: a later ACK would take them back."""
        out = [a for call in self.calls.values() for a in self.judge(call, end)]
        out.sort(key=lambda a: (a.file, a.frame))
        return out

    def judge(self, call: Call, end: float) -> List[Anomaly]:
        """The missing-ACK judgments of one call at time ``end``, in one pass over what it holds."""
        out: List[Anomaly] = []
        for tx in (*call.invites, *call.reinvites):
            if tx.final is not None and tx.final.status >= 300 and tx.ack is None and end - tx.final.ts > 2 * T1:
                out.append(Anomaly(AnomalyKind.MISSING_ACK, tx.final.frame, tx.final.call_id,
                                   f"no ACK for {tx.final.summary()}", tx.final.file))
        acked = None
        for tx in call.invites:
            if tx.final is not None and 200 <= tx.final.status < 300:
                if acked is None:
                    acked = {e.cseq for e in call.events if e.method == "ACK"}
                if tx.request.cseq not in acked and end - tx.final.ts > 2 * T1:
                    out.append(Anomaly(AnomalyKind.MISSING_ACK, tx.final.frame, tx.final.call_id,
                                       f"no ACK for {tx.final.summary()} to INVITE", tx.final.file))
                    break
        return out
