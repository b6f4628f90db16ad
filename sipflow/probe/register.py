"""``sipflow probe register``: REGISTER (RFC 3261 §10) with digest authentication (§22, RFC 7616,
RFC 8760), and what the registrar granted.

Owns the sans-IO ``RegisterFlow`` (which REGISTER to send next: challenge, stale nonce, 423,
unregister), its result and the REGISTER result formats. ``probe.flow.Credentials`` answers the
challenges, ``sip.transaction`` keeps the transactions, ``probe.driver`` runs the flow.
"""

import ipaddress
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.probe.common import (DEFAULT_PORT, DEFAULT_TIMEOUT, Failure, NagiosRange, NagiosState, Outcome, Result,
                                  Target, TlsOptions, closing_lines, contact_params, failure_text, first_hop, ms_text,
                                  nagios_line, new_branch, parse_target, perf_value, phases_perf, prom_label,
                                  prometheus_text, route_for, thresholds, to_us, uri_host)
from sipflow.probe.driver import Driver
from sipflow.probe.flow import (Action, Credentials, Link, OneAtATime, Send, Transactions, auth_failure_text,
                                link_text, seen_as)
from sipflow.sip import builder
from sipflow.sip.message import SipMessage, parse_uri
from sipflow.sip.transaction import TIMER_F, ClientTransaction

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
    return aor, first_hop(target, proxy)


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
                     route: Optional[str] = None, sent_by: Optional[str] = None) -> bytes:
    """A REGISTER (§10.2) binding ``Contact`` (our real address and port, as the Via says, with
    ``rport``; over WebSocket the .invalid ``sent_by`` with ``;transport=ws;ob`` as SIP.js sends) to the
    AOR for ``expires`` seconds; ``auth`` is (header, value) credentials."""
    sent_by = sent_by or f"{uri_host(local[0])}:{local[1]}"
    return builder.request(
        "REGISTER", aor.request_uri, via_value=builder.via(transport, sent_by, branch),
        route=(f"<{route}>",) if route else (), from_=f"<{aor.uri}>;tag={from_tag}", to=f"<{aor.uri}>",
        call_id=call_id, cseq=cseq, contact=f"<sip:{aor.user}@{sent_by}{contact_params(transport)}>",
        headers=(("Expires", str(expires)), *auth))


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


class RegisterFlow(OneAtATime):
    """``probe register``, sans-IO: one REGISTER transaction at a time, each final response deciding
    the next (``on_final``).

    Rules (RFC 3261 §10.2, §22.2-22.3; RFC 7616 §3.3): every request of the run has the same Call-ID
    and From-tag, CSeq one more than the last, a new branch. Challenges are answered by
    ``flow.Credentials`` (per realm, the strongest algorithm; a second challenge to fresh credentials
    is a rejection unless stale, retried once). Credentials carry over to the next step (same nonce,
    nc + 1). A 423 is retried once with the Min-Expires it names (§10.2.8). Anything else ends the
    step."""

    def __init__(self, aor: Aor, options: RegisterOptions, hop: Target, call_id: str, from_tag: str,
                 cnonce: Optional[Callable[[], str]] = None) -> None:
        self.aor, self.opts, self.hop, self.transport = aor, options, hop, hop.transport
        self.call_id, self.from_tag = call_id, from_tag
        self.username = options.user or aor.user
        self.route = route_for(options.proxy)
        self.auth = Credentials(self.username, options.password, cnonce)
        self.steps: List[Step] = [Step(name, options.expires if name == "register" else 0)
                                  for name in options.steps]
        self.index = 0
        self.cseq = 0
        self.link: Optional[Link] = None
        self.txs = Transactions()
        self.current: Optional[ClientTransaction] = None
        self.used_auth: Tuple = ()              # digest.Authorization of the last request that got a 2xx
        self.min_expires_left = 1
        self.requests = 0
        self.outcome: Optional[Outcome] = None
        self.reason: Optional[str] = None
        self.failure: Optional[Failure] = None
        self.final: Optional[SipMessage] = None    # the last final response
        self.first_response_at: Optional[float] = None
        self.stray = 0

    @property
    def step(self) -> Step:
        return self.steps[self.index]

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def local(self) -> Tuple[str, int]:
        return self.link.local if self.link else ("", 0)

    # -- events -------------------------------------------------------------------------------------

    def connected(self, link: Link, now: float) -> List[Action]:
        self.link = link
        return self._send(now)

    # -- decisions ----------------------------------------------------------------------------------

    def after(self, tx: ClientTransaction, now: float) -> List[Action]:
        if tx is not self.current or not tx.done or self.finished:
            return []
        if tx.final is None:
            return self.end(Outcome.TIMEOUT, f"no final response within {TIMER_F:g} s (Timer F)")
        self.current = None
        return self._send(now) if self.on_final(tx.final, tx.sent_at, tx.final_at) == "send" else []

    def _send(self, now: float) -> List[Action]:
        branch = new_branch()
        request = self.next_request(self.link, branch, now)
        tx = ClientTransaction(request, branch, "REGISTER", self.link.reliable, now)
        self.txs.add(tx, "main")
        self.current = tx
        return [Send("main", request)]

    def next_request(self, link: Link, branch: str, now: float) -> bytes:
        """The next REGISTER (CSeq + 1), credentials included, sent on ``link`` at ``now``."""
        step = self.step
        self.cseq += 1
        self.requests += 1
        step.requests += 1
        auth = self.auth.headers("REGISTER", self.aor.request_uri)
        if step.first_sent is None:
            step.first_sent = now
        step.last_sent = now
        return register_request(self.aor, self.transport, link.local, branch, self.call_id, self.from_tag, self.cseq,
                                step.expires, auth, self.route, link.sent_by)

    def end(self, outcome: Outcome, reason: str, status: Optional[int] = None,
             failure: Optional[Failure] = None) -> List[Action]:
        if self.outcome is None:
            self.outcome, self.reason, self.failure = outcome, reason, failure
            if status is not None and self.final is not None and self.step.status is None:
                self.step.status, self.step.reason = status, self.final.reason
        return []

    def on_final(self, msg: SipMessage, sent_at: float, now: float) -> str:
        """A final response to the last request: ``"send"`` (another REGISTER is due) or ``"done"``."""
        step = self.step
        self.final = msg
        status = msg.status
        text = f"{status} {msg.reason or ''}".rstrip()
        if status in (401, 407):
            if step.challenge is None and step.requests == 1:
                step.challenge = now - step.first_sent
            why = self.auth.challenged(msg)
            if why is None and self.requests >= MAX_REQUESTS:
                why = f"{text} after {self.requests} requests"
            if why is not None:
                self.end(Outcome.AUTH_FAILURE, why, status)
                return "done"
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
            self.used_auth = self.auth.sent
            still_bound = any(b.ours and (b.expires or 0) > 0 for b in step.bindings)
            if step.name == "unregister" and still_bound:
                self.end(Outcome.UNEXPECTED, f"{text}, but our binding is still there", status)
                return "done"
            if self.index + 1 < len(self.steps):
                self.index += 1
                self.auth.next_step()       # the next step reuses these nonces: nc goes on counting
                return "send"
            self.outcome, self.reason = Outcome.UP, text
            return "done"
        if status == 403 and self.auth.sent_fresh:
            self.end(Outcome.AUTH_FAILURE, auth_failure_text(status, msg.reason), status)
        else:
            self.end(Outcome.UNEXPECTED, text, status)
        return "done"

    def _read_bindings(self, step: Step, msg: SipMessage) -> None:
        """The bindings listed in a 2xx, which of them is ours, and the expiry granted to ours: its
        Contact expires parameter, else the Expires header (§10.2.4)."""
        sent_by = self.link.sent_by if self.link else f"{uri_host(self.local[0])}:{self.local[1]}"
        ours = parse_uri(f"sip:{self.aor.user}@{sent_by}" + contact_params(self.transport))
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


@dataclass(frozen=True, kw_only=True)
class RegisterResult(Result):
    """One ``probe register`` run. Times are seconds (monotonic clock, microseconds). Holds no
    password and no digest response."""
    request_uri: str
    user: str                         # the digest username
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
    challenge: Optional[float] = None     # first REGISTER -> its 401/407
    register: Optional[float] = None      # the REGISTER that got the 2xx -> that 2xx
    unregister: Optional[float] = None
    total: Optional[float] = None         # first REGISTER sent -> last final response
    cseq: Optional[int] = None
    steps: Tuple[dict, ...] = ()

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
            "handshake": self.handshake, "upgrade_status": self.upgrade_status,
            "retransmissions": self.retransmissions, "server": self.server, "seen_as": self.seen_as,
            "call_id": self.call_id, "cseq": self.cseq, "steps": list(self.steps),
        }


def probe_register(aor: str, options: RegisterOptions,
                   on_message: Optional[Callable[[str, bytes], None]] = None,
                   clock: Callable[[], float] = time.monotonic,
                   cnonce: Optional[Callable[[], str]] = None, recorder=None) -> RegisterResult:
    """Register ``aor`` (``sip:user@domain``) with ``options`` (answering digest challenges), and
    unregister again with ``options.unregister``. ``on_message(direction, data)`` sees every message
    sent (``">"``) and received (``"<"``), e.g. for a verbose trace, which must go through
    ``digest.redact``. The whole run ends within ``options.run_timeout``."""
    a, hop = register_target(aor, options.proxy)
    flow = RegisterFlow(a, options, hop, f"{secrets.token_hex(12)}@sipflow", secrets.token_hex(6), cnonce)
    driver = Driver(flow, options.run_timeout, family=options.family, bind=options.bind, tls=options.tls,
                    clock=clock, on_message=on_message, recorder=recorder)
    start, end = driver.run()
    return register_result(flow, driver.remote_text, end - start)


def register_result(flow: RegisterFlow, remote: str, elapsed: float) -> RegisterResult:
    steps = flow.steps
    reg = next((s for s in steps if s.name == "register"), None)
    unreg = next((s for s in steps if s.name == "unregister"), None)
    first = steps[0]
    if flow.outcome is not None:
        outcome, reason = flow.outcome, flow.reason
    else:
        outcome, reason = Outcome.ERROR, "the run ended without an answer"
    final = flow.final
    main_auth = flow.auth.main(flow.used_auth)
    last_done = max((s.done_at for s in steps if s.done_at is not None), default=None)
    registered = bool(reg and reg.status and 200 <= reg.status < 300 and (reg.granted or 0) > 0)
    unregistered = None
    if unreg is not None:
        unregistered = bool(unreg.status and 200 <= unreg.status < 300
                            and not any(b.ours and (b.expires or 0) > 0 for b in unreg.bindings))
    link = flow.link
    return RegisterResult(
        target=flow.aor.uri, request_uri=flow.aor.request_uri, user=flow.username,
        transport=flow.transport, remote=remote, local=link_text(link),
        outcome=outcome, status=final.status if final is not None else None,
        reason=reason if outcome is not Outcome.UP else (final.reason if final is not None else None),
        expires_requested=flow.opts.expires,
        expires=reg.granted if reg else None, registered=registered, unregistered=unregistered,
        bindings=(reg.bindings if reg and reg.status else first.bindings),
        auth_algorithm=main_auth.algorithm if main_auth else None,
        auth_realm=main_auth.realm if main_auth else None, auth_qop=main_auth.qop if main_auth else None,
        challenges=flow.auth.challenges, stale_retries=flow.auth.stale_retries, requests=flow.requests,
        first_response=to_us(flow.first_response_at - first.first_sent)
        if flow.first_response_at is not None and first.first_sent is not None else None,
        challenge=to_us(first.challenge), register=to_us(reg.rtt) if reg and reg.status else None,
        unregister=to_us(unreg.rtt) if unreg and unreg.status else None,
        total=to_us(last_done - first.first_sent) if last_done is not None and first.first_sent is not None
        else None,
        elapsed=to_us(elapsed), connect=to_us(link.connect if link else None),
        handshake=to_us(link.handshake if link else None),
        upgrade_status=flow.failure.upgrade_status if flow.failure else None,
        retransmissions=flow.txs.retransmissions,
        server=(final.header("Server") or final.header("User-Agent")) if final is not None else None,
        seen_as=seen_as(final, link), call_id=flow.call_id if flow.requests else None, cseq=flow.cseq or None,
        proxy=flow.opts.proxy, steps=tuple(s.to_dict() for s in steps if s.requests))


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
    phases = ("connect", "handshake", "first_response", "challenge", "register", "unregister", "total")
    return "\n".join(lines + closing_lines(r, phases))



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
        state, what = thresholds(state, what, r.total, warning, critical)
    else:
        state, what = NagiosState.CRITICAL, failure_text(r)
    perf = phases_perf(r, "total", warning, critical, ("first_response", "challenge", "register", "unregister"))
    if r.expires is not None:
        perf.append(f"'expires'={r.expires}s;;;0;")
    return nagios_line(state, what, perf)


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
    return prometheus_text(rows)
