"""The probe's sans-IO core, in h11's shape: what a flow is told (events) and what it asks for
(actions), the client transactions it keeps, and the digest credentials every flow answers
challenges with.

A flow (``OptionsFlow``, ``RegisterFlow``, ``MessageFlow``, ``CallFlow``) never touches a socket or a
clock. It is told, with the time as an argument, that a link it asked for is up (``connected``) or
failed (``failed``), that bytes came in on a link (``received``), that its deadline passed
(``timer``), that the media socket it asked for is open (``media_opened``) or that the run is over
(``expire``); ``resolved`` tells it the address a link goes to. Each call returns the actions to carry out, in order:

- ``Connect(link, hop)``: open a link to that next hop (the driver answers with ``connected`` or
  ``failed`` before it carries out the next action);
- ``Send(link, data)``: send these bytes on that link;
- ``OpenMedia(link)``: open an RTP socket on that link's local address (answered by ``media_opened``);
- ``MediaAnswer(sdp)``, ``StartMedia(at, dtmf)``, ``StopMedia(at)``: the far end's SDP answer, start
  the tone (and DTMF), stop it;
- ``Report(result)``: one result is ready (OPTIONS reports each probe as it ends).

``deadline()`` says when ``timer`` is next due; ``finished`` says the flow is done. The one driver
(``probe.driver``) owns sockets, timers, media and the recorder; tests wire flows to scripted peers in
memory instead (tests/test_probe_flows.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from sipflow.errors import ParseError
from sipflow.probe.common import Failure, Outcome, Target, uri_host
from sipflow.sip import builder
from sipflow.sip.digest import DigestSession, challenges_from, choose
from sipflow.sip.message import SipMessage, parse_message

# ---------------------------------------------------------------------------------------------------
# Events and actions


@dataclass(frozen=True)
class Link:
    """A link the driver opened for a flow: its transport, addresses and set-up times."""
    name: str
    transport: str                # udp, tcp, tls, ws or wss
    local: Tuple[str, int]
    remote: Tuple[str, int]
    sent_by: str                  # our Via sent-by and Contact host: ip:port, or a .invalid host over WS
    connect: Optional[float] = None     # TCP (and TLS) set-up, seconds
    handshake: Optional[float] = None   # the WebSocket upgrade, seconds

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def via(self, branch: str) -> str:
        return builder.via(self.transport, self.sent_by, branch)


# What a flow asks for (see the module's text for what each means).
Connect = NamedTuple("Connect", [("link", str), ("hop", Target)])
Send = NamedTuple("Send", [("link", str), ("data", bytes)])
OpenMedia = NamedTuple("OpenMedia", [("link", str)])
MediaAnswer = NamedTuple("MediaAnswer", [("sdp", Optional[bytes])])    # None: no SDP answer came at all
StartMedia = NamedTuple("StartMedia", [("at", float), ("dtmf", str)])
StopMedia = NamedTuple("StopMedia", [("at", float)])
Report = NamedTuple("Report", [("result", object)])
Action = object   # one of the above


class Flow:
    """What every flow answers; the defaults ignore the event."""
    finished = False

    def start(self, now: float) -> List[Action]:
        raise NotImplementedError

    def resolved(self, link: str, remote: Tuple[str, int]) -> None:
        """Where a link is about to go (before it is up, or fails)."""

    def connected(self, link: Link, now: float) -> List[Action]:
        return []

    def failed(self, link: str, failure: Failure, now: float) -> List[Action]:
        return []

    def received(self, link: str, data: bytes, now: float) -> List[Action]:
        return []

    def timer(self, now: float) -> List[Action]:
        return []

    def deadline(self) -> Optional[float]:
        return None

    def media_opened(self, port: int, now: float) -> List[Action]:
        return []

    def expire(self, now: float) -> List[Action]:
        return []


class OneAtATime(Flow):
    """A flow of one client transaction at a time on one link, "main" (REGISTER, MESSAGE): responses
    and timers go to ``after(tx, now)`` for the transaction in flight, which decides what comes next;
    a failed link or the run's deadline ends the flow through ``end``."""
    hop: Target
    link: Optional[Link] = None
    txs: "Transactions"
    current = None
    first_response_at: Optional[float] = None
    stray = 0

    def start(self, now: float) -> List[Action]:
        return [Connect("main", self.hop)]

    def received(self, link: str, data: bytes, now: float) -> List[Action]:
        msg = parse(data, self.link)
        tx = self.txs.match(msg) if msg is not None else None
        if tx is None:
            self.stray += 1
            return []
        if self.first_response_at is None:
            self.first_response_at = now
        tx.on_response(msg, now)
        return self.after(tx, now)

    def failed(self, link: str, failure: Failure, now: float) -> List[Action]:
        return self.end(failure.outcome, failure.reason, failure=failure)

    def deadline(self) -> Optional[float]:
        return self.txs.deadline(lambda tx: tx is not self.current)

    def timer(self, now: float) -> List[Action]:
        out: List[Action] = []
        for tx, sends in self.txs.fire(now):
            out += sends + self.after(tx, now)
        return out

    def expire(self, now: float) -> List[Action]:
        return self.end(Outcome.TIMEOUT, f"no final response before --timeout {self.opts.run_timeout:g} s")

    def after(self, tx, now: float) -> List[Action]:
        raise NotImplementedError

    def end(self, outcome: Outcome, reason: str, status: Optional[int] = None,
            failure: Optional[Failure] = None) -> List[Action]:
        raise NotImplementedError


def parse(data: bytes, link: Optional[Link]) -> Optional[SipMessage]:
    """A received message, or None when it is not SIP (counted as stray by the flow)."""
    try:
        return parse_message(data, datagram=link is not None and not link.reliable)
    except ParseError:
        return None

# ---------------------------------------------------------------------------------------------------
# The transactions a flow keeps


class Transactions:
    """A flow's client transactions by (branch, method) (§17.1.3), each with the link it runs on."""

    def __init__(self) -> None:
        self.by_key: Dict[Tuple[str, str], object] = {}
        self.link: Dict[Tuple[str, str], str] = {}

    def add(self, tx, link: str) -> None:
        key = (tx.branch, tx.method)
        self.by_key[key] = tx
        self.link[key] = link

    def match(self, msg: SipMessage):
        """The transaction a response belongs to, or None."""
        tx = self.by_key.get((msg.branch or "", msg.cseq[1] or "")) if msg.status is not None else None
        return tx if tx is not None and tx.matches(msg) else None

    def deadline(self, skip: Callable[[object], bool] = lambda tx: False) -> Optional[float]:
        times = [tx.next_deadline() for tx in self.by_key.values() if not skip(tx)]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def fire(self, now: float) -> List[Tuple[object, List[Action]]]:
        """Every transaction whose timer is due, with what it sends (retransmissions, ACKs)."""
        out = []
        for key, tx in list(self.by_key.items()):
            due = tx.next_deadline()
            if due is None or due > now:
                continue
            out.append((tx, [Send(self.link[key], data) for data in tx.on_timer(now)]))
        return out

    def link_of(self, tx) -> str:
        return self.link[(tx.branch, tx.method)]

    @property
    def retransmissions(self) -> int:
        return sum(getattr(tx, "retransmissions", 0) for tx in self.by_key.values())

# ---------------------------------------------------------------------------------------------------
# Digest credentials (RFC 3261 §22.2-22.3; RFC 7616 §3.3)


class Credentials:
    """The answers to 401/407 challenges, one digest session per (header, realm), shared by every flow.

    A challenge is answered per realm with the strongest algorithm offered. A second challenge for a
    realm whose fresh credentials the request carried means they were rejected, unless it says
    stale=true, which is retried once with its new nonce. ``next_step`` starts a new request chain
    that reuses the nonces (nc counting on): a challenge to a reused nonce is a new challenge, not a
    rejection."""

    def __init__(self, username: str, password: Optional[str],
                 cnonce: Optional[Callable[[], str]] = None) -> None:
        self.username, self.password, self._cnonce = username, password, cnonce
        self.sessions: Dict[Tuple[str, str], DigestSession] = {}
        self.fresh: set = set()          # keys whose credentials answer a challenge in this chain
        self.sent_fresh: set = set()     # self.fresh as it was when the last request went out
        self.sent: Tuple = ()            # digest.Authorization of the last request
        self.stale_left = 1
        self.challenges = 0
        self.stale_retries = 0

    def headers(self, method: str, uri: str) -> Tuple[Tuple[str, str], ...]:
        """The Authorization/Proxy-Authorization headers for a request (none before a challenge)."""
        self.sent = tuple(s.authorize(method, uri) for s in self.sessions.values())
        self.sent_fresh = set(self.fresh)
        return tuple((a.header, a.value) for a in self.sent)

    def challenged(self, msg: SipMessage) -> Optional[str]:
        """Take a 401/407's challenges: None when a new request with credentials is due, else why not
        (the reason of an auth failure)."""
        self.challenges += 1
        what = f"{msg.status} {msg.reason or ''}".rstrip()
        offered = challenges_from([(name, v) for name in ("WWW-Authenticate", "Proxy-Authenticate")
                                   for v in msg.header_values(name)])
        chosen = choose(offered)
        if not chosen:
            kinds = ", ".join(sorted({c.describe() for c in offered})) or "no challenge at all"
            return f"{what}: no digest challenge sipflow can answer ({kinds})"
        if self.password is None:
            return f"{what} (digest {chosen[0].algorithm}, realm \"{chosen[0].realm}\") and no --password"
        for c in chosen:
            key = (c.answer_header, c.realm)
            if key in self.sent_fresh:
                if c.stale and self.stale_left > 0:
                    self.stale_left -= 1
                    self.stale_retries += 1
                else:
                    return f"credentials rejected: {what} again (realm \"{c.realm}\")"
            self.sessions[key] = DigestSession(c, self.username, self.password, self._cnonce)
            self.fresh.add(key)
        return None

    def next_step(self) -> None:
        self.fresh = set()
        self.stale_left = 1

    def main(self, used: Sequence = ()):
        """The Authorization the result reports (the WWW one when both were sent)."""
        used = used or self.sent
        return next((a for a in used if a.header == "Authorization"), used[0] if used else None)


def auth_failure_text(status: int, reason: Optional[str]) -> str:
    return f"credentials rejected: {status} {reason or ''}".rstrip()


def seen_as(msg: Optional[SipMessage], link: Optional[Link]) -> Optional[str]:
    """RFC 3581: where the server saw our request come from (its Via received/rport)."""
    via = msg.vias[0] if msg is not None and msg.vias else None
    if via is None or link is None:
        return None
    received, rport = via.param("received"), via.param("rport")
    if not (received or rport):
        return None
    return f"{uri_host(received or link.local[0])}:{rport or link.local[1]}"


def link_text(link: Optional[Link]) -> str:
    return f"{uri_host(link.local[0])}:{link.local[1]}" if link and link.local and link.local[1] else ""
