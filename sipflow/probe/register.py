"""``sipflow probe register``: REGISTER (RFC 3261 §10) with digest authentication (§22, RFC 7616,
RFC 8760), and what the registrar granted.

Owns the sans-IO ``RegisterFlow`` (which REGISTER to send next: challenge, stale nonce, unregister),
its driver over ``probe.common.Channel`` and the REGISTER result formats. ``sip.digest`` computes the
credentials; the transaction rules are ``probe.transaction``'s.
"""

import ipaddress
import json
import math
import secrets
import select
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from sipflow import __version__
from sipflow.errors import ParseError, ProbeError
from sipflow.sip.digest import DigestSession, challenges_from, choose
from sipflow.sip.message import SipMessage, parse_message, parse_uri
from sipflow.probe.common import (DEFAULT_PORT, DEFAULT_TIMEOUT, Channel, NagiosRange, NagiosState, Outcome, Target,
                                   TlsOptions, contact_params, describe_failure, ms_text, new_branch, parse_bind,
                                   parse_target, perf_value, prom_label, resolve_target, route_for, to_us, uri_host)
from sipflow.probe.transaction import TIMER_F, ClientTransaction

DEFAULT_EXPIRES = 60         # seconds asked for when --expires is not given
MAX_EXPIRES = 2 ** 32 - 1    # §25.1: delta-seconds fits 32 bits
MAX_REQUESTS = 8             # REGISTERs per run, whatever the registrar says: a probe never loops


@dataclass(frozen=True)
class Aor:
    """The address of record (``sip:user@domain[:port][;params]``) and the REGISTER's Request-URI,
    which names the registrar's domain with no user part (§10.2: "userinfo and @ MUST NOT be present")."""
    uri: str            # sip:user@domain[:port], for To and From
    user: str
    request_uri: str    # sip:domain[:port][;params]


def parse_aor(text: str) -> Tuple[Aor, Target]:
    """The AOR, and the target it names (its domain, port and transport) when no --proxy is given."""
    target = parse_target(text)
    scheme = target.scheme
    rest = target.uri[len(scheme) + 1:]
    userinfo, at, hostpart = rest.partition("@")
    if not at or not userinfo:
        raise ProbeError(f"{text!r}: an address of record names a user, as in sip:alice@example.com")
    user = userinfo.split(":", 1)[0]
    if not user:
        raise ProbeError(f"{text!r}: no user in the address of record")
    if ":" in userinfo:
        raise ProbeError(f"{text!r}: no password in the URI; use --password (or SIPFLOW_PASSWORD)")
    hostport = hostpart.split(";", 1)[0]
    return Aor(uri=f"{scheme}:{user}@{hostport}", user=user, request_uri=f"{scheme}:" + hostpart), target


def register_target(aor_text: str, proxy: Optional[str]) -> Tuple[Aor, Target]:
    """Where the REGISTER goes: the AOR's domain, or the outbound proxy. A proxy without
    ;transport= takes the AOR's transport."""
    aor, target = parse_aor(aor_text)
    if proxy:
        via = parse_target(proxy)
        if parse_uri(via.uri).param("transport") is None and via.transport != target.transport:
            via = Target(uri=via.uri, host=via.host, port=via.port, transport=target.transport)
        target = via
    return aor, target


@dataclass(frozen=True)
class RegisterOptions:
    """What ``probe register`` does. The password never shows in ``repr``."""
    user: Optional[str] = None                     # digest username; the AOR's user when not given
    password: Optional[str] = field(default=None, repr=False)
    expires: int = DEFAULT_EXPIRES                 # 0: only remove our binding
    unregister: bool = False                       # remove our binding again once registered
    proxy: Optional[str] = None                    # outbound proxy URI (and a Route to it)
    timeout: Optional[float] = None                # the whole run; None: DEFAULT_TIMEOUT
    bind: Optional[str] = None
    family: Optional[int] = None
    tls: TlsOptions = TlsOptions()

    def __post_init__(self) -> None:
        if not 0 <= self.expires <= MAX_EXPIRES:
            raise ProbeError(f"expires must be 0..{MAX_EXPIRES}")
        if self.timeout is not None and not self.timeout > 0:
            raise ProbeError("timeout must be positive")

    @property
    def run_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT

    @property
    def steps(self) -> Tuple[str, ...]:
        """``register``, then ``unregister`` with --unregister; --expires 0 is an unregister alone."""
        if self.expires == 0:
            return ("unregister",)
        return ("register", "unregister") if self.unregister else ("register",)


def register_request(aor: Aor, transport: str, local: Tuple[str, int], branch: str, call_id: str, from_tag: str,
                     cseq: int, expires: int, auth: Tuple[Tuple[str, str], ...] = (),
                     route: Optional[str] = None) -> bytes:
    """A REGISTER (§10.2) binding ``Contact`` (our real address and port, as the Via says, with
    ``rport``) to the AOR for ``expires`` seconds; ``auth`` is (header, value) credentials."""
    via_host = f"{uri_host(local[0])}:{local[1]}"
    lines = [
        f"REGISTER {aor.request_uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host};branch={branch};rport",
        "Max-Forwards: 70",
    ]
    if route:
        lines.append(f"Route: <{route}>")
    lines += [
        f"From: <{aor.uri}>;tag={from_tag}",
        f"To: <{aor.uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{aor.user}@{via_host}{contact_params(transport)}>",
        f"Expires: {expires}",
    ]
    lines += [f"{name}: {value}" for name, value in auth]
    lines += [f"User-Agent: sipflow/{__version__}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _same_contact(a, b) -> bool:
    """Two Contact URIs name the same binding: user, host (IP compared as an address), port and
    transport (§10.2.4 uses URI comparison; these are the parts a registrar may spell differently)."""
    if (a.user or "") != (b.user or ""):
        return False
    try:
        same_host = ipaddress.ip_address(a.host) == ipaddress.ip_address(b.host)
    except ValueError:
        same_host = a.host.lower() == b.host.lower()
    ta, tb = (a.param("transport") or "udp").lower(), (b.param("transport") or "udp").lower()
    return same_host and (a.port or DEFAULT_PORT) == (b.port or DEFAULT_PORT) and ta == tb


@dataclass(frozen=True)
class Binding:
    """One Contact of a REGISTER's 200 OK: every binding the AOR has now (§10.3 step 8)."""
    contact: str
    expires: Optional[int]
    ours: bool

    def to_dict(self) -> dict:
        return {"contact": self.contact, "expires": self.expires, "ours": self.ours}


@dataclass
class Step:
    """One step of the run (register or unregister): the requests it took and how it ended."""
    name: str                                  # "register" or "unregister"
    expires: int                               # asked for (after a 423, the Min-Expires)
    requests: int = 0
    first_sent: Optional[float] = None
    challenge: Optional[float] = None          # first request sent -> its 401/407
    last_sent: Optional[float] = None
    status: Optional[int] = None
    reason: Optional[str] = None
    rtt: Optional[float] = None                # the request that got the final answer -> that answer
    done_at: Optional[float] = None
    bindings: Tuple[Binding, ...] = ()
    granted: Optional[int] = None              # expires granted to our contact

    def to_dict(self) -> dict:
        return {"step": self.name, "expires_requested": self.expires, "requests": self.requests,
                "status": self.status, "reason": self.reason, "challenge": to_us(self.challenge),
                "rtt": to_us(self.rtt),
                "expires": self.granted, "bindings": [b.to_dict() for b in self.bindings]}


class RegisterFlow:
    """The transaction user of ``probe register``, sans-IO: it says which REGISTER to send next
    (``next_request``) and what each final response means (``on_final``); the driver owns the
    transactions, sockets and clock, and passes times in.

    Rules (RFC 3261 §10.2, §22.2-22.3; RFC 7616 §3.3): every request of the run has the same Call-ID
    and From-tag, CSeq one more than the last, a new branch. A 401/407 is answered once per challenge:
    per realm, the strongest algorithm offered. A second challenge for a realm whose fresh credentials
    the request carried means they were rejected: "auth failure", unless it says stale=true, which is
    retried once with its new nonce. Credentials carry over to the next step (same nonce, nc + 1); a
    challenge to such a reused nonce is a new challenge, not a rejection. A 423 is retried once with
    the Min-Expires it names (§10.2.8). Anything else ends the step."""

    def __init__(self, aor: Aor, options: RegisterOptions, transport: str, call_id: str, from_tag: str,
                 cnonce: Optional[Callable[[], str]] = None) -> None:
        self.aor, self.opts, self.transport = aor, options, transport
        self.call_id, self.from_tag = call_id, from_tag
        self.username = options.user or aor.user
        self.route = route_for(options.proxy)
        self._cnonce = cnonce
        self.steps: List[Step] = [Step(name, options.expires if name == "register" else 0)
                                  for name in options.steps]
        self.index = 0
        self.cseq = 0
        self.sessions: Dict[Tuple[str, str], DigestSession] = {}   # by (header, realm)
        self.fresh: set = set()                 # keys whose credentials answer a challenge to this step
        self.local: Tuple[str, int] = ("", 0)   # the socket's address, set by the driver
        self.sent_fresh: set = set()            # self.fresh as it was when the last request went out
        self.sent_auth: Tuple = ()              # digest.Authorization of the last request
        self.used_auth: Tuple = ()              # ... of the last request that got a 2xx
        self.stale_left = 1
        self.min_expires_left = 1
        self.challenges = 0
        self.stale_retries = 0
        self.requests = 0
        self.outcome: Optional[Outcome] = None
        self.reason: Optional[str] = None
        self.final: Optional[SipMessage] = None    # the last final response
        self.fail_status: Optional[int] = None

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def next_request(self, local: Tuple[str, int], branch: str, now: float) -> bytes:
        """The next REGISTER (CSeq + 1), credentials included, sent from ``local`` at ``now``."""
        step = self.step
        self.cseq += 1
        self.requests += 1
        step.requests += 1
        auths = tuple(s.authorize("REGISTER", self.aor.request_uri) for s in self.sessions.values())
        self.sent_auth = auths
        self.sent_fresh = set(self.fresh)
        if step.first_sent is None:
            step.first_sent = now
        step.last_sent = now
        return register_request(self.aor, self.transport, local, branch, self.call_id, self.from_tag, self.cseq,
                                step.expires, tuple((a.header, a.value) for a in auths), self.route)

    def _fail(self, outcome: Outcome, reason: str, status: Optional[int] = None) -> str:
        self.outcome, self.reason, self.fail_status = outcome, reason, status
        if status is not None and self.final is not None and self.step.status is None:
            self.step.status, self.step.reason = status, self.final.reason
        return "done"

    def on_final(self, msg: SipMessage, sent_at: float, now: float) -> str:
        """A final response to the last request: ``"send"`` (another REGISTER is due) or ``"done"``."""
        step = self.step
        self.final = msg
        status = msg.status
        if status in (401, 407):
            self.challenges += 1
            if step.challenge is None and step.requests == 1:
                step.challenge = now - step.first_sent
            offered = challenges_from([(name, v) for name in ("WWW-Authenticate", "Proxy-Authenticate")
                                       for v in msg.header_values(name)])
            chosen = choose(offered)
            what = f"{status} {msg.reason or ''}".rstrip()
            if not chosen:
                kinds = ", ".join(sorted({c.describe() for c in offered})) or "no challenge at all"
                return self._fail(Outcome.AUTH_FAILURE, f"{what}: no digest challenge sipflow can answer "
                                                        f"({kinds})", status)
            if self.opts.password is None:
                return self._fail(Outcome.AUTH_FAILURE, f"{what} (digest {chosen[0].algorithm}, realm "
                                                        f"\"{chosen[0].realm}\") and no --password", status)
            for c in chosen:
                key = (c.answer_header, c.realm)
                if key in self.sent_fresh:
                    if c.stale and self.stale_left > 0:
                        self.stale_left -= 1
                        self.stale_retries += 1
                    else:
                        return self._fail(Outcome.AUTH_FAILURE, f"credentials rejected: {what} again "
                                                                f"(realm \"{c.realm}\")", status)
                self.sessions[key] = DigestSession(c, self.username, self.opts.password, self._cnonce)
                self.fresh.add(key)
            if self.requests >= MAX_REQUESTS:
                return self._fail(Outcome.AUTH_FAILURE, f"{what} after {self.requests} requests", status)
            return "send"
        step.status, step.reason = status, msg.reason
        step.rtt, step.done_at = now - sent_at, now
        if status == 423 and self.min_expires_left and step.name == "register":
            me = msg.header("Min-Expires")
            if me and me.strip().isdigit() and step.expires < int(me) <= MAX_EXPIRES:
                self.min_expires_left -= 1
                step.expires = int(me)      # §10.2.8: retry with at least Min-Expires
                return "send"
        if 200 <= status < 300:
            self._read_bindings(step, msg)
            self.used_auth = self.sent_auth
            still_bound = any(b.ours and (b.expires or 0) > 0 for b in step.bindings)
            if step.name == "unregister" and still_bound:
                return self._fail(Outcome.UNEXPECTED, f"{status} {msg.reason or ''}".rstrip()
                                  + ", but our binding is still there", status)
            if self.index + 1 < len(self.steps):
                self.index += 1
                self.fresh = set()       # the next step reuses these nonces: nc goes on counting
                self.stale_left = 1
                return "send"
            self.outcome, self.reason = Outcome.UP, f"{status} {msg.reason or ''}".rstrip()
            return "done"
        if status == 403 and self.sent_fresh:
            return self._fail(Outcome.AUTH_FAILURE, f"credentials rejected: {status} {msg.reason or ''}".rstrip(),
                              status)
        return self._fail(Outcome.UNEXPECTED, f"{status} {msg.reason or ''}".rstrip(), status)

    def _read_bindings(self, step: Step, msg: SipMessage) -> None:
        """The bindings listed in a 2xx, which of them is ours, and the expiry granted to ours: its
        Contact expires parameter, else the Expires header (§10.2.4)."""
        ours = parse_uri(f"sip:{self.aor.user}@{uri_host(self.local[0])}:{self.local[1]}"
                         + contact_params(self.transport))
        header_expires = to_int_or_none(msg.header("Expires"))
        out = []
        for c in msg.contacts:
            if c.uri.raw == "*":
                continue
            exp = to_int_or_none(c.param("expires"))
            out.append(Binding(contact=c.uri.raw, expires=exp if exp is not None else header_expires,
                               ours=_same_contact(c.uri, ours)))
        step.bindings = tuple(out)
        mine = next((b for b in out if b.ours), None)
        step.granted = mine.expires if mine else (header_expires if not out else None)


def to_int_or_none(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class RegisterResult:
    """One ``probe register`` run. Times are seconds (monotonic clock, microseconds). Holds no
    password and no digest response."""
    target: str                       # the AOR
    request_uri: str
    user: str                         # the digest username
    transport: str
    remote: str
    local: str
    outcome: Outcome
    status: Optional[int] = None      # the last final response
    reason: Optional[str] = None
    expires_requested: int = DEFAULT_EXPIRES
    expires: Optional[int] = None     # granted to our contact by the register step
    registered: bool = False
    unregistered: Optional[bool] = None   # None: not asked for
    bindings: Tuple[Binding, ...] = ()    # after the register step (or the unregister alone)
    auth_algorithm: Optional[str] = None
    auth_realm: Optional[str] = None
    auth_qop: Optional[str] = None
    challenges: int = 0
    stale_retries: int = 0
    requests: int = 0
    first_response: Optional[float] = None
    challenge: Optional[float] = None     # first REGISTER -> its 401/407
    register: Optional[float] = None      # the REGISTER that got the 2xx -> that 2xx
    unregister: Optional[float] = None
    total: Optional[float] = None         # first REGISTER sent -> last final response
    elapsed: Optional[float] = None       # run start -> end, whatever ended it
    connect: Optional[float] = None
    retransmissions: int = 0
    server: Optional[str] = None
    seen_as: Optional[str] = None
    call_id: Optional[str] = None
    cseq: Optional[int] = None
    proxy: Optional[str] = None
    steps: Tuple[dict, ...] = ()

    @property
    def up(self) -> bool:
        return self.outcome is Outcome.UP

    # What the CLI's exit-code mapping reads (the same as a ProbeRun's).
    @property
    def results(self) -> Tuple["RegisterResult", ...]:
        return (self,)

    @property
    def first_failure(self) -> Optional["RegisterResult"]:
        return None if self.up else self

    def to_dict(self) -> dict:
        return {
            "probe": "register", "target": self.target, "request_uri": self.request_uri, "user": self.user,
            "transport": self.transport, "remote": self.remote, "local": self.local, "proxy": self.proxy,
            "outcome": self.outcome.value, "status": self.status, "reason": self.reason,
            "expires_requested": self.expires_requested, "expires": self.expires, "registered": self.registered,
            "unregistered": self.unregistered, "bindings": [b.to_dict() for b in self.bindings],
            "auth_algorithm": self.auth_algorithm, "auth_realm": self.auth_realm, "auth_qop": self.auth_qop,
            "challenges": self.challenges, "stale_retries": self.stale_retries, "requests": self.requests,
            "first_response": self.first_response, "challenge": self.challenge, "register": self.register,
            "unregister": self.unregister, "total": self.total, "elapsed": self.elapsed, "connect": self.connect,
            "retransmissions": self.retransmissions, "server": self.server, "seen_as": self.seen_as,
            "call_id": self.call_id, "cseq": self.cseq, "steps": list(self.steps),
        }


def probe_register(aor: str, options: RegisterOptions,
                   on_message: Optional[Callable[[str, bytes], None]] = None,
                   clock: Callable[[], float] = time.monotonic,
                   cnonce: Optional[Callable[[], str]] = None) -> RegisterResult:
    """Register ``aor`` (``sip:user@domain``) with ``options`` (answering digest challenges), and
    unregister again with ``options.unregister``. ``on_message(direction, data)`` sees every message
    sent (``">"``) and received (``"<"``), e.g. for a verbose trace, which must go through
    ``digest.redact``. The whole run ends within ``options.run_timeout``."""
    a, target = register_target(aor, options.proxy)
    return _RegisterDriver(a, target, options, clock, on_message, cnonce).run()


class _RegisterDriver:
    """The socket loop of ``probe register``: one transaction at a time, as the flow asks."""

    def __init__(self, aor: Aor, target: Target, options: RegisterOptions, clock, on_message, cnonce) -> None:
        self.aor, self.target, self.opts, self.clock = aor, target, options, clock
        self.on_message = on_message
        self.bind = parse_bind(options.bind) if options.bind else None
        self.flow = RegisterFlow(aor, options, target.transport, f"{secrets.token_hex(12)}@sipflow",
                                 secrets.token_hex(6), cnonce)
        self.channel: Optional[Channel] = None
        self.txs: Dict[str, ClientTransaction] = {}
        self.current: Optional[ClientTransaction] = None
        self.first_response_at: Optional[float] = None
        self.failure: Optional[Tuple[Outcome, str]] = None
        self.stray = 0

    def run(self) -> RegisterResult:
        start = self.clock()
        deadline = start + self.opts.run_timeout
        family, remote = resolve_target(self.target, self.opts.family, self.bind, deadline - start)
        self.remote_text = f"{uri_host(remote[0])}:{remote[1]}"
        connect = None
        try:
            try:
                self.channel = Channel(self.target, family, remote, self.bind, deadline - self.clock(), self.clock,
                                        self.opts.tls)
                connect = self.channel.connect_time
                self.flow.local = self.channel.local
                self._send()
            except (OSError, EOFError) as e:
                self.failure = describe_failure(e)
            while self.failure is None and not self.flow.done:
                now = self.clock()
                if now >= deadline:
                    self.failure = (Outcome.TIMEOUT, f"no final response before --timeout "
                                                     f"{self.opts.run_timeout:g} s")
                    break
                self._fire_timers(now)
                tx = self.current
                if self.failure is not None or self.flow.done:
                    break
                if tx.done:
                    if tx.final is None:   # Timer F
                        self.failure = (Outcome.TIMEOUT, f"no final response within {TIMER_F:g} s (Timer F)")
                        break
                    if self.flow.on_final(tx.final, tx.sent_at, tx.final_at) == "send":
                        try:
                            self._send()
                        except (OSError, EOFError) as e:
                            self.failure = describe_failure(e)
                    continue
                self._wait(now, deadline)
        finally:
            if self.channel:
                self.channel.close()
        return self._result(start, deadline, connect)

    def _send(self) -> None:
        branch = new_branch()
        now = self.clock()
        request = self.flow.next_request(self.channel.local, branch, now)
        tx = ClientTransaction(request, branch, "REGISTER", self.channel.reliable, now)
        self.txs[branch] = tx
        self.current = tx
        self._trace(">", request)
        self.channel.send(request)

    def _trace(self, direction: str, data: bytes) -> None:
        if self.on_message:
            self.on_message(direction, data)

    def _fire_timers(self, now: float) -> None:
        for tx in list(self.txs.values()):
            deadline = tx.next_deadline()
            if deadline is None or deadline > now:
                continue
            for data in tx.on_timer(now):
                try:
                    self._trace(">", data)
                    self.channel.send(data)
                except (OSError, EOFError) as e:
                    self.failure = describe_failure(e)
                    return

    def _wait(self, now: float, deadline: float) -> None:
        wake = [deadline] + [t.next_deadline() for t in self.txs.values()
                             if t is self.current and t.next_deadline() is not None]
        delay = max(0.0, min(wake) - now)
        ch = self.channel
        readable, writable, _ = select.select([ch.sock], [ch.sock] if ch.wants_write else [], [], delay)
        try:
            if writable:
                ch.flush()
            if readable:
                for data in ch.receive():
                    self._on_message(data)
        except (OSError, EOFError) as e:
            self.failure = describe_failure(e)

    def _on_message(self, data: bytes) -> None:
        now = self.clock()
        self._trace("<", data)
        try:
            msg = parse_message(data, datagram=not self.channel.reliable)
        except ParseError:
            self.stray += 1
            return
        tx = self.txs.get(msg.branch or "") if msg.status is not None else None
        if tx is None or not tx.matches(msg):
            self.stray += 1
            return
        if self.first_response_at is None:
            self.first_response_at = now
        tx.on_response(msg, now)

    def _result(self, start: float, deadline: float, connect) -> RegisterResult:
        flow = self.flow
        end = min(self.clock(), deadline)
        steps = flow.steps
        reg = next((s for s in steps if s.name == "register"), None)
        unreg = next((s for s in steps if s.name == "unregister"), None)
        first = steps[0]
        if flow.outcome is not None:
            outcome, reason = flow.outcome, flow.reason
        else:
            outcome, reason = self.failure or (Outcome.ERROR, "the run ended without an answer")
        final = flow.final
        via = final.vias[0] if final is not None and final.vias else None
        seen = None
        if via is not None and (via.param("received") or via.param("rport")) and flow.local[1]:
            seen = f"{uri_host(via.param('received') or flow.local[0])}:{via.param('rport') or flow.local[1]}"
        used = flow.used_auth or flow.sent_auth
        main_auth = next((a for a in used if a.header == "Authorization"), used[0] if used else None)
        last_done = max((s.done_at for s in steps if s.done_at is not None), default=None)
        registered = bool(reg and reg.status and 200 <= reg.status < 300
                          and (reg.granted or 0) > 0)
        unregistered = None
        if unreg is not None:
            unregistered = bool(unreg.status and 200 <= unreg.status < 300
                                and not any(b.ours and (b.expires or 0) > 0 for b in unreg.bindings))
        txs = self.txs.values()
        return RegisterResult(
            target=self.aor.uri, request_uri=self.aor.request_uri, user=flow.username,
            transport=self.target.transport, remote=self.remote_text,
            local=f"{uri_host(flow.local[0])}:{flow.local[1]}" if flow.local[1] else "",
            outcome=outcome, status=final.status if final is not None else None,
            reason=reason if outcome is not Outcome.UP else (final.reason if final is not None else None),
            expires_requested=self.opts.expires,
            expires=reg.granted if reg else None, registered=registered, unregistered=unregistered,
            bindings=(reg.bindings if reg and reg.status else first.bindings),
            auth_algorithm=main_auth.algorithm if main_auth else None,
            auth_realm=main_auth.realm if main_auth else None, auth_qop=main_auth.qop if main_auth else None,
            challenges=flow.challenges, stale_retries=flow.stale_retries, requests=flow.requests,
            first_response=to_us(self.first_response_at - first.first_sent)
            if self.first_response_at is not None and first.first_sent is not None else None,
            challenge=to_us(first.challenge), register=to_us(reg.rtt) if reg and reg.status else None,
            unregister=to_us(unreg.rtt) if unreg and unreg.status else None,
            total=to_us(last_done - first.first_sent) if last_done is not None and first.first_sent is not None
            else None,
            elapsed=to_us(end - start), connect=to_us(connect),
            retransmissions=sum(t.retransmissions for t in txs),
            server=(final.header("Server") or final.header("User-Agent")) if final is not None else None,
            seen_as=seen, call_id=flow.call_id if flow.requests else None, cseq=flow.cseq or None,
            proxy=self.opts.proxy, steps=tuple(s.to_dict() for s in steps if s.requests))


# ---------------------------------------------------------------------------------------------------
# REGISTER formats


def register_header(aor: str, options: RegisterOptions) -> str:
    what = {"register": f"REGISTER {aor}", "unregister": f"unREGISTER {aor}"}[options.steps[0]]
    extra = " then unregister" if len(options.steps) > 1 else ""
    return (f"{what}{extra}, expires {options.expires}, --timeout {options.run_timeout:g} s"
            + (f", via {options.proxy}" if options.proxy else ""))


def register_text(r: RegisterResult) -> str:
    """A few lines: where, what each step got, the bindings, the timings."""
    lines = [f"--- {r.target} as {r.user} ({r.transport} {r.remote}" + (f" from {r.local}" if r.local else "") + ")"]
    for s in r.steps:
        line = f"{s['step']}: {s['status']} {s['reason'] or ''}".rstrip() if s["status"] else f"{s['step']}: -"
        if s["rtt"] is not None:
            line += f" in {ms_text(s['rtt'])}"
        if s["step"] == "register" and s["status"] and 200 <= s["status"] < 300:
            line += f", expires {s['expires']} s" if s["expires"] is not None else ", expiry not said"
            if s["expires_requested"] != r.expires_requested:
                line += f" (asked {s['expires_requested']} after 423)"
        if s["requests"] > 1:
            line += f", {s['requests']} requests"
        lines.append(line)
    if r.outcome is Outcome.UP:
        verdict = "registered" if r.registered else "answered"
        if r.unregistered:
            verdict = "registered and unregistered" if r.registered else "unregistered"
        lines.append(f"result: {verdict}")
    else:
        lines.append(f"result: {r.outcome.value}: {r.reason}")
    if r.auth_algorithm:
        lines.append(f"auth: digest {r.auth_algorithm}, realm \"{r.auth_realm}\", qop {r.auth_qop or 'none'}, "
                     f"{r.challenges} challenge(s)" + (f", {r.stale_retries} stale" if r.stale_retries else ""))
    for b in r.bindings:
        lines.append(f"binding: <{b.contact}> expires {b.expires if b.expires is not None else '?'}"
                     + (" (ours)" if b.ours else ""))
    timings = [(k, getattr(r, k)) for k in ("first_response", "challenge", "register", "unregister", "total")]
    shown = [f"{k.replace('_', ' ')} {ms_text(v)}" for k, v in timings if v is not None]
    if shown:
        lines.append("timings: " + ", ".join(shown))
    if r.retransmissions:
        lines.append(f"retransmissions: {r.retransmissions}")
    for name, value in (("Server", r.server), ("Seen as", r.seen_as)):
        if value:
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


def register_json(r: RegisterResult) -> str:
    return json.dumps(r.to_dict())


def register_nagios(r: RegisterResult, warning: Optional[NagiosRange] = None,
                    critical: Optional[NagiosRange] = None) -> Tuple[NagiosState, str]:
    """One status line: OK when registered (and unregistered when asked); -w/-c apply to the total
    time (first REGISTER to the last final response). Auth failure, timeout, refusal and unexpected
    codes are CRITICAL."""
    state = NagiosState.OK
    if r.outcome is Outcome.UP:
        what = ("registered" if r.registered else "answered") + f" {r.target}"
        if r.expires is not None:
            what += f", expires {r.expires}s"
        if r.unregistered:
            what = ("registered and unregistered" if r.registered else "unregistered") + f" {r.target}"
        if r.auth_algorithm:
            what += f" (digest {r.auth_algorithm})"
        what += f" in {perf_value(r.total)}s"
        if critical and r.total is not None and critical.alerts(r.total):
            state, what = NagiosState.CRITICAL, what + f" (critical {critical.text})"
        elif warning and r.total is not None and warning.alerts(r.total):
            state, what = NagiosState.WARNING, what + f" (warning {warning.text})"
    else:
        state = NagiosState.CRITICAL
        what = f"{r.outcome.value}: {r.reason} ({r.transport} {r.remote})"
    perf = [f"'total'={perf_value(r.total)}{'s' if r.total is not None else ''};"
            f"{warning.text if warning else ''};{critical.text if critical else ''};0;"]
    for k in ("first_response", "challenge", "register", "unregister"):
        v = getattr(r, k)
        if v is not None:
            perf.append(f"'{k}'={perf_value(v)}s;;;0;")
    perf.append(f"'retransmissions'={r.retransmissions};;;0;")
    if r.expires is not None:
        perf.append(f"'expires'={r.expires}s;;;0;")
    text = what.replace("|", "/").replace("\n", " ")
    return state, f"SIP {state.name} - {text} | " + " ".join(perf)


def register_prometheus(r: RegisterResult) -> str:
    labels = f'{{target="{prom_label(r.target)}",transport="{r.transport}"}}'
    phase = lambda p: f'{labels[:-1]},phase="{p}"}}'  # noqa: E731
    rows = [
        ("probe_success", "1 if the registration (and the unregistration, when asked) succeeded, else 0.",
         [(labels, 1 if r.up else 0)]),
        ("probe_duration_seconds", "How long the whole probe run took, in seconds.", [(labels, r.elapsed)]),
        ("probe_sip_status_code", "Status code of the last final response (0 if none).",
         [(labels, r.status or 0)]),
        ("probe_sip_phase_seconds", "Seconds per phase: first response, challenge round trip, the "
                                    "authenticated REGISTER, the unregister, total (NaN if it did not happen).",
         [(phase(k), getattr(r, k) if getattr(r, k) is not None else math.nan)
          for k in ("first_response", "challenge", "register", "unregister", "total")]),
        ("probe_sip_register_expires_seconds", "Expiry the registrar granted our binding (NaN if none).",
         [(labels, r.expires if r.expires is not None else math.nan)]),
        ("probe_sip_retransmissions", "Requests retransmitted during the run (Timer E).",
         [(labels, r.retransmissions)]),
        ("probe_sip_auth_failure", "1 if the credentials were rejected, else 0.",
         [(labels, 1 if r.outcome is Outcome.AUTH_FAILURE else 0)]),
    ]
    out = []
    for name, help_text, samples in rows:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for lab, value in samples:
            text = "NaN" if isinstance(value, float) and math.isnan(value) else (
                f"{value:.6f}" if isinstance(value, float) else str(value))
            out.append(f"{name}{lab} {text}")
    return "\n".join(out) + "\n"
