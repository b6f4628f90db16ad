"""RFC 3261's transaction rules, shared by the analyzer and the probe: the magic cookie and the timers,
the client transactions (§17.1.2 non-INVITE, figure 6; §17.1.1 INVITE, figure 5), sans-IO, and the
requests a transaction itself sends (the ACK of a 3xx-6xx, CANCEL).

Owns ``ClientTransaction`` walking ``NON_INVITE_TABLE``, ``InviteClientTransaction`` walking
``INVITE_TABLE``, §17.1.3 response matching (``matches``), and the RFC 3261 timers they run on. It
does no I/O: it is given a response or "now" and hands back the bytes to send; time is always an
argument. The analyzer (``analysis.dialogs``) reads the cookie and Timer B from here; the probe's flows
carry what the transactions say.
"""

import enum
from typing import Dict, List, Optional, Tuple

from sipflow.sip import builder
from sipflow.sip.message import SipMessage, parse_message

MAGIC_COOKIE = "z9hG4bK"   # RFC 3261 §8.1.1.7: a branch starting with it is unique per transaction
T1 = 0.5                   # §17.1.1.1: round-trip estimate, first retransmission interval (s)
T2 = 4.0                   # §17.1.2.2: longest retransmission interval of a non-INVITE request (s)
T4 = 5.0                   # §17.1.2.2: how long a message may linger in the network: Timer K on UDP (s)
TIMER_F = 64 * T1          # §17.1.2.2: a non-INVITE transaction gives up after this without a final response
TIMER_B = 64 * T1             # §17.1.1.2: an INVITE gives up after this in Calling
TIMER_D_UDP = 32.0            # §17.1.1.2: how long the Completed state absorbs retransmitted finals on UDP


def matches(tx, msg: SipMessage) -> bool:
    """§17.1.3: a response belongs to a client transaction when its top Via branch and its CSeq method
    are the transaction's."""
    return msg.status is not None and msg.branch == tx.branch and msg.cseq[1] == tx.method

# ---------------------------------------------------------------------------------------------------
# The client transaction (RFC 3261 §17.1.2, figure 6), sans-IO


class TxState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


# state -> {event: (next state, action)}. Events: "timer_e", "timer_f", "timer_k", "1xx", "final"
# (200-699) and "transport_error". An event missing from a row is ignored: after the final response
# the transaction only absorbs retransmitted responses until Timer K, then forgets everything.
NON_INVITE_TABLE: Dict[TxState, Dict[str, Tuple[TxState, str]]] = {
    TxState.TRYING: {
        "timer_e": (TxState.TRYING, "retransmit"),          # and Timer E doubles, up to T2
        "timer_f": (TxState.TERMINATED, "timeout"),
        "1xx": (TxState.PROCEEDING, "provisional"),
        "final": (TxState.COMPLETED, "final"),
        "transport_error": (TxState.TERMINATED, "transport_error"),
    },
    TxState.PROCEEDING: {
        "timer_e": (TxState.PROCEEDING, "retransmit_t2"),   # once a 1xx came, every T2
        "timer_f": (TxState.TERMINATED, "timeout"),
        "1xx": (TxState.PROCEEDING, "provisional"),
        "final": (TxState.COMPLETED, "final"),
        "transport_error": (TxState.TERMINATED, "transport_error"),
    },
    TxState.COMPLETED: {
        "1xx": (TxState.COMPLETED, "absorb"),
        "final": (TxState.COMPLETED, "absorb"),
        "timer_k": (TxState.TERMINATED, "forget"),
    },
    TxState.TERMINATED: {},
}


class _Timed:
    """What both client transactions do alike: match a response (§17.1.3), say when their next timer is
    due, fire the timers that are, and end on a transport error (§17.1.4). Each subclass has its state
    table (``_event``), its timers (``self.timers``: name -> deadline) and the states it is done in."""
    DONE: Tuple[enum.Enum, ...] = ()
    branch: str
    method: str
    state: enum.Enum
    timers: Dict[str, float]

    def matches(self, msg: SipMessage) -> bool:
        return matches(self, msg)

    @property
    def done(self) -> bool:
        """The transaction user has its answer: a final response, a timeout or a transport error."""
        return self.state in self.DONE

    def next_deadline(self) -> Optional[float]:
        return min(self.timers.values()) if self.timers else None

    def on_timer(self, now: float) -> List[bytes]:
        """Fire every timer due at ``now``, earliest first (one firing per timer per call)."""
        out: List[bytes] = []
        for name, deadline in sorted(self.timers.items(), key=lambda kv: kv[1]):
            if deadline <= now and self.timers.get(name) == deadline:  # not cancelled by an earlier one
                del self.timers[name]
                out += self._event("timer_" + name.lower(), now)
        return out

    def on_transport_error(self, now: float) -> List[bytes]:
        """§17.1.4: the transport layer could not deliver: the transaction ends at once."""
        return self._event("transport_error", now)

    def _event(self, event: str, now: float, msg: Optional[SipMessage] = None) -> List[bytes]:
        raise NotImplementedError


class ClientTransaction(_Timed):
    """One non-INVITE client transaction. The caller sends ``request`` when it creates the transaction
    (at ``now``), then feeds responses (``on_response``), timer expiries (``on_timer`` at or after
    ``next_deadline()``) and transport errors; every method returns the bytes to send, if any."""

    def __init__(self, request: bytes, branch: str, method: str, reliable: bool, now: float) -> None:
        self.request = request
        self.branch = branch
        self.method = method
        self.reliable = reliable
        self.state = TxState.TRYING
        self.sent_at = now
        self.retransmissions = 0
        self.first_response_at: Optional[float] = None
        self.final: Optional[SipMessage] = None
        self.final_at: Optional[float] = None
        self.ended_at: Optional[float] = None     # timed out or transport error
        self.absorbed = 0                         # retransmitted responses after the final one
        self.ignored = 0                          # events the table has no row for
        # §17.1.2.2: Timer F always; Timer E only on an unreliable transport (§17.1.1.2 for TCP).
        self._interval = T1
        self.timers: Dict[str, float] = {"F": now + TIMER_F}
        if not reliable:
            self.timers["E"] = now + T1

    DONE = (TxState.COMPLETED, TxState.TERMINATED)

    def on_response(self, msg: SipMessage, now: float) -> List[bytes]:
        return self._event("1xx" if msg.status < 200 else "final", now, msg)

    def _event(self, event: str, now: float, msg: Optional[SipMessage] = None) -> List[bytes]:
        step = NON_INVITE_TABLE[self.state].get(event)
        if step is None:
            self.ignored += 1
            return []
        self.state, action = step
        if action in ("retransmit", "retransmit_t2"):
            # Trying: E = min(2E, T2); Proceeding: E = T2. Counted from this firing, so a late driver
            # never bursts.
            self._interval = min(2 * self._interval, T2) if action == "retransmit" else T2
            self.timers["E"] = now + self._interval
            self.retransmissions += 1
            return [self.request]
        if action == "provisional":
            if self.first_response_at is None:
                self.first_response_at = now
        elif action == "final":
            if self.first_response_at is None:
                self.first_response_at = now
            self.final, self.final_at = msg, now
            # Timer K absorbs retransmitted responses: T4 on UDP, zero on a reliable transport.
            self.timers = {"K": now + (0.0 if self.reliable else T4)}
        elif action in ("timeout", "transport_error"):
            self.timers = {}
            self.ended_at = now
        elif action == "absorb":
            self.absorbed += 1
        elif action == "forget":
            self.timers = {}
        return []


# ---------------------------------------------------------------------------------------------------
# The INVITE client transaction (RFC 3261 §17.1.1, figure 5), sans-IO


class InviteState(enum.Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


# state -> {event: (next state, action)}. Events: "timer_a", "timer_b", "timer_d", "1xx", "2xx",
# "non2xx" (300-699), "transport_error". A missing row is ignored. A 2xx ends the transaction at once:
# its ACK (and any retransmitted 2xx) belong to the transaction user, the dialog (§13.2.2.4). A non-2xx
# is ACKed here, and again for each retransmission of it, until Timer D.
INVITE_TABLE: Dict[InviteState, Dict[str, Tuple[InviteState, str]]] = {
    InviteState.CALLING: {
        "timer_a": (InviteState.CALLING, "retransmit"),     # and Timer A doubles (no T2 cap for INVITE)
        "timer_b": (InviteState.TERMINATED, "timeout"),
        "1xx": (InviteState.PROCEEDING, "provisional"),    # stops retransmissions
        "2xx": (InviteState.TERMINATED, "answered"),
        "non2xx": (InviteState.COMPLETED, "ack"),
        "transport_error": (InviteState.TERMINATED, "transport_error"),
    },
    InviteState.PROCEEDING: {
        "1xx": (InviteState.PROCEEDING, "provisional"),
        "2xx": (InviteState.TERMINATED, "answered"),
        "non2xx": (InviteState.COMPLETED, "ack"),
        "transport_error": (InviteState.TERMINATED, "transport_error"),
    },
    InviteState.COMPLETED: {
        "non2xx": (InviteState.COMPLETED, "reack"),
        "timer_d": (InviteState.TERMINATED, "forget"),
        "transport_error": (InviteState.TERMINATED, "transport_error"),
    },
    InviteState.TERMINATED: {},
}


def is_rfc3261_branch(branch: Optional[str]) -> bool:
    """§8.1.1.7: a branch with the magic cookie is unique per transaction (RFC 2543 peers' are not)."""
    return bool(branch) and branch.startswith(MAGIC_COOKIE)


def _copied(invite: SipMessage, method: str, to: str) -> bytes:
    return builder.request(method, invite.uri, via_value=invite.header_values("Via")[0],
                           route=invite.header_values("Route"), from_=invite.header("From") or "", to=to,
                           call_id=invite.call_id or "", cseq=invite.cseq[0])


def ack_for_non2xx(invite: SipMessage, response: SipMessage) -> bytes:
    """§17.1.1.3: the ACK for a 3xx-6xx: the INVITE's Request-URI, its top Via only (same branch), its
    Route, From and Call-ID, the response's To (with its tag), CSeq number of the INVITE, method ACK."""
    return _copied(invite, "ACK", response.header("To") or "")


def cancel_for(invite: SipMessage) -> bytes:
    """§9.1: CANCEL with the INVITE's Request-URI, top Via (same branch), Route, From, To, Call-ID and
    CSeq number."""
    return _copied(invite, "CANCEL", invite.header("To") or "")


class InviteClientTransaction(_Timed):
    """One INVITE client transaction. Created when the INVITE is sent (at ``now``); then fed responses,
    timer expiries and transport errors, each returning the bytes to send (retransmitted INVITEs, ACKs
    for non-2xx finals)."""

    def __init__(self, request: bytes, branch: str, reliable: bool, now: float) -> None:
        self.request = request
        self.message = parse_message(request, datagram=not reliable)
        self.branch = branch
        self.reliable = reliable
        self.state = InviteState.CALLING
        self.sent_at = now
        self.retransmissions = 0
        self.first_response_at: Optional[float] = None
        self.provisional: List[Tuple[int, float]] = []
        self.final: Optional[SipMessage] = None
        self.final_at: Optional[float] = None
        self.ended_at: Optional[float] = None    # Timer B or a transport error
        self.ack: Optional[bytes] = None         # for a non-2xx
        self.acks = 0
        self.ignored = 0
        self._interval = T1
        # §17.1.1.2: Timer A only on an unreliable transport, Timer B always.
        self.timers: Dict[str, float] = {"B": now + TIMER_B}
        if not reliable:
            self.timers["A"] = now + T1

    method = "INVITE"
    DONE = (InviteState.COMPLETED, InviteState.TERMINATED)

    def on_response(self, msg: SipMessage, now: float) -> List[bytes]:
        event = "1xx" if msg.status < 200 else "2xx" if msg.status < 300 else "non2xx"
        return self._event(event, now, msg)

    def _event(self, event: str, now: float, msg: Optional[SipMessage] = None) -> List[bytes]:
        step = INVITE_TABLE[self.state].get(event)
        if step is None:
            self.ignored += 1
            return []
        self.state, action = step
        if self.first_response_at is None and msg is not None:
            self.first_response_at = now
        if action == "retransmit":
            self._interval *= 2
            self.timers["A"] = now + self._interval
            self.retransmissions += 1
            return [self.request]
        if action == "provisional":
            self.timers.pop("A", None)
            self.timers.pop("B", None)   # Proceeding waits for the TU (CANCEL, --timeout)
            self.provisional.append((msg.status, now))
        elif action == "answered":
            self.final, self.final_at = msg, now
            self.timers = {}
        elif action == "ack":
            self.final, self.final_at = msg, now
            self.ack = ack_for_non2xx(self.message, msg)
            self.acks += 1
            self.timers = {"D": now + (0.0 if self.reliable else TIMER_D_UDP)}
            return [self.ack]
        elif action == "reack":
            self.acks += 1
            return [self.ack]
        elif action in ("timeout", "transport_error"):
            self.timers = {}
            self.ended_at = now
        elif action == "forget":
            self.timers = {}
        return []
