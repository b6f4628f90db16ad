"""Registrations: one client's REGISTER flow per address-of-record and Call-ID, and the binding table.

Owns what RFC 3261 §10 makes of REGISTER requests and their responses as an observer sees them: each
flow's requests, challenges (401/407, a second in a row meaning refused credentials), refreshes,
unregistration (Expires 0 or Contact *), the expiry asked for and the one granted, and the registrar's
bindings as its 2xx lists them (§10.3 step 8). The transaction matching that delivers the responses is
``analysis.dialogs``'s; this module only reads them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from sipflow.analysis.kinds import RegistrationOutcome
from sipflow.analysis.messages import SipEvent
from sipflow.sip.message import to_int
from sipflow.sip.scan import parse_contact

REGISTRATION_EVENTS = 8    # keep_calls: message records kept per registration


class Registration:
    """One client's REGISTER history for one address-of-record (one Call-ID, RFC 3261 §10.2)."""
    __slots__ = ("aor", "call_id", "contact", "start", "end", "requests", "challenges", "consecutive_challenges",
                 "final_status", "expires_requested", "expires_granted", "successes", "unregister", "pending",
                 "events")

    def __init__(self, aor: str, call_id: str, first: SipEvent) -> None:
        self.aor, self.call_id = aor, call_id
        self.contact: Optional[str] = None
        self.start = self.end = first.ts
        self.requests = 0
        self.challenges = 0
        self.consecutive_challenges = 0
        self.final_status: Optional[int] = None
        self.expires_requested: Optional[int] = None
        self.expires_granted: Optional[int] = None
        self.successes = 0
        self.unregister = False
        self.pending = False
        self.events: List[SipEvent] = []

    @property
    def refreshes(self) -> int:
        return max(0, self.successes - 1)

    def outcome(self) -> "RegistrationOutcome":
        s = self.final_status
        if s is None:
            return RegistrationOutcome.NO_RESPONSE
        if 200 <= s < 300:
            return RegistrationOutcome.UNREGISTERED if self.unregister else RegistrationOutcome.REGISTERED
        if s in (401, 407):
            # a second challenge in a row: the credentials were refused (RFC 7616 §3.3: a stale nonce
            # is answered once more, a wrong password again and again)
            return RegistrationOutcome.FAILED if self.consecutive_challenges >= 2 else RegistrationOutcome.CHALLENGED
        return RegistrationOutcome.FAILED


class RegistrationBook:
    """Every REGISTER flow by (Call-ID, address-of-record), and the bindings: AOR -> contact -> the
    capture time its registration expires."""

    def __init__(self) -> None:
        self.registrations: Dict[Tuple[str, str], Registration] = {}
        self.bindings: Dict[str, Dict[str, float]] = {}

    def request(self, ev: SipEvent, tx, bounded: bool) -> None:
        """A REGISTER (its transaction ``tx`` carries what the response will need)."""
        h = ev.head
        aor = h.to_uri or "?"
        key = (ev.call_id or "", aor)
        reg = self.registrations.get(key)
        if reg is None:
            reg = self.registrations[key] = Registration(aor, ev.call_id or "", ev)
        reg.events.append(ev)
        if bounded and len(reg.events) > REGISTRATION_EVENTS:
            del reg.events[0]
        reg.requests += 1
        reg.end = ev.ts
        reg.pending = True
        contacts = [parse_contact(c) for c in h.contacts]
        tx.registration = (reg, contacts)   # what the response needs of its request
        if contacts:
            reg.contact = contacts[0].raw
        expires = None
        if contacts:
            expires = to_int(contacts[0].param("expires"))
        if expires is None:
            expires = to_int(h.expires)
        reg.expires_requested = expires
        reg.unregister = expires == 0 or any(c.raw == "*" for c in contacts)

    def response(self, ev: SipEvent, tx) -> None:
        """A response to a REGISTER transaction: the outcome, and on a 2xx the binding table."""
        status = ev.status
        if status < 200 or tx.registration is None:
            return
        reg, req_contacts = tx.registration
        aor = reg.aor
        reg.end = ev.ts
        reg.final_status = status
        reg.pending = False
        if status in (401, 407):
            reg.challenges += 1
            reg.consecutive_challenges += 1
            return
        reg.consecutive_challenges = 0
        if not 200 <= status < 300:
            return
        if not reg.unregister:
            reg.successes += 1
        table = self.bindings.setdefault(aor, {})
        if reg.unregister:
            if any(c.raw == "*" for c in req_contacts):
                table.clear()
            for c in req_contacts:
                table.pop(str(c.uri), None)
            reg.expires_granted = 0
            return
        # The 200 lists every binding the registrar now holds, each with its expires (§10.3 step 8).
        granted = None
        header_exp = to_int(ev.head.expires)
        mine = {str(c.uri) for c in req_contacts}
        for c in [parse_contact(v) for v in ev.head.contacts] or req_contacts:
            exp = c.param("expires")
            e = to_int(exp) if exp is not None else header_exp
            if e is None:
                e = header_exp
            if e is None:
                e = reg.expires_requested if reg.expires_requested is not None else 3600
            table[str(c.uri)] = ev.ts + e
            if str(c.uri) in mine and granted is None:
                granted = e
        reg.expires_granted = granted if granted is not None else header_exp
