"""``sipflow probe message``: one SIP MESSAGE (RFC 3428) to the URI the user names, with digest when
challenged, and what came back, as a web phone's chat does.

Owns the MESSAGE request, the sans-IO ``MessageFlow`` (send, answer a 401/407 once per realm, end on
the final response), its result and formats (text, JSON, Nagios, Prometheus). ``probe.flow.Credentials``
answers challenges, ``sip.transaction`` keeps the transactions, ``probe.driver`` runs the flow.
"""
from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.probe.common import (DEFAULT_TIMEOUT, Failure, NagiosRange, NagiosState, Outcome, Result, Target,
                                  TlsOptions, closing_lines, failure_text, first_hop, nagios_line, new_branch,
                                  parse_target, perf_value, phases_perf, prom_label, prometheus_text, route_for,
                                  thresholds, to_us, uri_host)
from sipflow.probe.driver import Driver
from sipflow.probe.flow import (Action, Credentials, Link, OneAtATime, Send, Transactions, auth_failure_text,
                                link_text, seen_as)
from sipflow.sip import builder
from sipflow.sip.message import SipMessage, parse_uri
from sipflow.sip.transaction import TIMER_F, ClientTransaction

MAX_TEXT = 1300          # bytes: RFC 3428 §8, a MESSAGE over UDP stays well under the path MTU
MAX_REQUESTS = 4         # MESSAGEs per run (challenges included): a probe never loops


@dataclass(frozen=True)
class MessageOptions:
    text: str = "sipflow probe"
    from_uri: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    proxy: Optional[str] = None
    timeout: Optional[float] = None
    bind: Optional[str] = None
    family: Optional[int] = None
    tls: TlsOptions = TlsOptions()

    def __post_init__(self) -> None:
        if len(self.text.encode("utf-8")) > MAX_TEXT:
            raise ProbeError(f"--text is {len(self.text.encode('utf-8'))} bytes; at most {MAX_TEXT} "
                             "(RFC 3428 §8: a MESSAGE is not for bulk data)")
        if self.timeout is not None and not self.timeout > 0:
            raise ProbeError("timeout must be positive")

    @property
    def run_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class MessageResult(Result):
    """One MESSAGE run. Times are seconds (monotonic clock, microseconds) from the first MESSAGE sent,
    except ``rtt`` (the request that got the final answer, to that answer)."""
    from_uri: str
    requests: int = 0
    challenges: int = 0
    auth_algorithm: Optional[str] = None
    auth_realm: Optional[str] = None
    challenge: Optional[float] = None
    rtt: Optional[float] = None
    total: Optional[float] = None
    length: int = 0                     # bytes of text sent

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["outcome"] = self.outcome.value
        d["from"] = d.pop("from_uri")
        return {"probe": "message", **d}


def message_request(target: str, from_uri: str, from_tag: str, link: Link, branch: str, call_id: str, cseq: int,
                    text: str, auth: Tuple[Tuple[str, str], ...] = (), route: Optional[str] = None) -> bytes:
    """RFC 3428 §4: a MESSAGE outside any dialog, the text as text/plain; no Contact (§10 leaves it
    out of a MESSAGE)."""
    return builder.request("MESSAGE", target, via_value=link.via(branch), route=(f"<{route}>",) if route else (),
                           from_=f"<{from_uri}>;tag={from_tag}", to=f"<{target}>", call_id=call_id, cseq=cseq,
                           headers=auth, body=text.encode("utf-8"), content_type="text/plain;charset=UTF-8")


class MessageFlow(OneAtATime):
    """``probe message``, sans-IO: one MESSAGE, retried with credentials when challenged (per realm the
    strongest algorithm; a second challenge to fresh credentials is an auth failure, stale=true is
    retried once), ended by the first other final response: 2xx is up, anything else is not."""

    def __init__(self, target: Target, options: MessageOptions, call_id: Optional[str] = None,
                 cnonce: Optional[Callable[[], str]] = None) -> None:
        self.target, self.opts = target, options
        self.hop = first_hop(target, options.proxy)
        self.route = route_for(options.proxy)
        self.call_id = call_id or f"{secrets.token_hex(12)}@sipflow"
        self.from_tag = secrets.token_hex(6)
        self.from_uri = options.from_uri
        self.cnonce = cnonce
        self.auth: Optional[Credentials] = None
        self.link: Optional[Link] = None
        self.txs = Transactions()
        self.current: Optional[ClientTransaction] = None
        self.cseq = 0
        self.first_sent: Optional[float] = None
        self.first_response_at: Optional[float] = None
        self.challenge_at: Optional[float] = None
        self.final: Optional[SipMessage] = None
        self.final_rtt: Optional[float] = None
        self.done_at: Optional[float] = None
        self.used_auth: Tuple = ()
        self.outcome: Optional[Outcome] = None
        self.reason: Optional[str] = None
        self.failure: Optional[Failure] = None
        self.stray = 0

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def connected(self, link: Link, now: float) -> List[Action]:
        self.link = link
        if not self.from_uri:
            self.from_uri = f"sip:sipflow@{uri_host(link.local[0])}"
        self.auth = Credentials(self.opts.user or parse_uri(self.from_uri).user or "sipflow", self.opts.password,
                                self.cnonce)
        return self._send(now)

    def _send(self, now: float) -> List[Action]:
        branch = new_branch()
        self.cseq += 1
        auth = self.auth.headers("MESSAGE", self.target.uri)
        request = message_request(self.target.uri, self.from_uri, self.from_tag, self.link, branch, self.call_id,
                                  self.cseq, self.opts.text, auth, self.route)
        tx = ClientTransaction(request, branch, "MESSAGE", self.link.reliable, now)
        self.txs.add(tx, "main")
        self.current = tx
        if self.first_sent is None:
            self.first_sent = now
        return [Send("main", request)]

    def after(self, tx: ClientTransaction, now: float) -> List[Action]:
        if tx is not self.current or not tx.done or self.finished:
            return []
        msg = tx.final
        if msg is None:
            return self.end(Outcome.TIMEOUT, f"no final response within {TIMER_F:g} s (Timer F)")
        self.final = msg
        text = f"{msg.status} {msg.reason or ''}".rstrip()
        if msg.status in (401, 407):
            if self.challenge_at is None:
                self.challenge_at = now
            why = self.auth.challenged(msg)
            if why is None and self.cseq >= MAX_REQUESTS:
                why = f"{text} after {self.cseq} requests"
            return self.end(Outcome.AUTH_FAILURE, why) if why else self._send(now)
        self.final_rtt, self.done_at = tx.final_at - tx.sent_at, now
        if 200 <= msg.status < 300:
            self.used_auth = self.auth.sent
            self.outcome, self.reason = Outcome.UP, text
            return []
        if msg.status == 403 and self.auth.sent_fresh:
            return self.end(Outcome.AUTH_FAILURE, auth_failure_text(msg.status, msg.reason))
        return self.end(Outcome.UNEXPECTED, text)

    def end(self, outcome: Outcome, reason: str, failure: Optional[Failure] = None) -> List[Action]:
        if self.outcome is None:
            self.outcome, self.reason, self.failure = outcome, reason, failure
        return []

    def result(self, remote: str, start: float, end: float) -> MessageResult:
        t0 = self.first_sent

        def since(t):
            return to_us(t - t0) if t is not None and t0 is not None else None
        final, link = self.final, self.link
        auth = self.auth.main(self.used_auth) if self.auth and self.used_auth else None
        return MessageResult(
            target=self.target.uri, from_uri=self.from_uri or "", transport=self.hop.transport, remote=remote,
            local=link_text(link), outcome=self.outcome or Outcome.ERROR,
            status=final.status if final is not None else None, reason=self.reason,
            requests=self.cseq, challenges=self.auth.challenges if self.auth else 0,
            auth_algorithm=auth.algorithm if auth else None, auth_realm=auth.realm if auth else None,
            first_response=since(self.first_response_at), challenge=since(self.challenge_at),
            rtt=to_us(self.final_rtt), total=since(self.done_at), elapsed=to_us(end - start),
            connect=to_us(link.connect if link else None), handshake=to_us(link.handshake if link else None),
            upgrade_status=self.failure.upgrade_status if self.failure else None,
            retransmissions=self.txs.retransmissions,
            server=(final.header("Server") or final.header("User-Agent")) if final is not None else None,
            seen_as=seen_as(final, link), call_id=self.call_id if self.cseq else None, proxy=self.opts.proxy,
            length=len(self.opts.text.encode("utf-8")))


def probe_message(target: str, options: MessageOptions = MessageOptions(),
                  on_message: Optional[Callable[[str, bytes], None]] = None,
                  clock: Callable[[], float] = time.monotonic, recorder=None) -> MessageResult:
    """Send one MESSAGE to ``target`` (``sip:user@host[;transport=...]``, ``ws://`` and ``wss://`` too)
    and return what came back. The whole run ends within ``options.run_timeout``."""
    tgt = parse_target(target)
    flow = MessageFlow(tgt, options)
    driver = Driver(flow, options.run_timeout, family=options.family, bind=options.bind, tls=options.tls,
                    clock=clock, on_message=on_message, recorder=recorder)
    start, end = driver.run()
    return flow.result(driver.remote_text, start, end)

# ---------------------------------------------------------------------------------------------------
# Formats


def message_header(target: str, options: MessageOptions) -> str:
    return (f"MESSAGE {target} ({len(options.text.encode('utf-8'))} bytes), --timeout {options.run_timeout:g} s"
            + (f", via {options.proxy}" if options.proxy else ""))


def message_text(r: MessageResult) -> str:
    lines = [f"--- {r.target} from {r.from_uri} ({r.transport} {r.remote}" + (f" from {r.local}" if r.local else "")
             + ")"]
    if r.outcome is Outcome.UP:
        lines.append(f"result: delivered: {r.reason}")
    else:
        lines.append(f"result: {r.outcome.value}: {r.reason}")
    if r.auth_algorithm:
        lines.append(f"auth: digest {r.auth_algorithm}, realm \"{r.auth_realm}\", {r.challenges} challenge(s)")
    return "\n".join(lines + closing_lines(r, PHASES))


PHASES = ("connect", "handshake", "first_response", "challenge", "rtt", "total")



def message_nagios(r: MessageResult, warning: Optional[NagiosRange] = None,
                   critical: Optional[NagiosRange] = None) -> Tuple[NagiosState, str]:
    """OK when a 2xx came; -w/-c on the total time (first MESSAGE to the final response)."""
    state = NagiosState.OK
    if r.up:
        what = f"{r.reason} for MESSAGE to {r.target} in {perf_value(r.total)}s"
        state, what = thresholds(state, what, r.total, warning, critical)
    else:
        state, what = NagiosState.CRITICAL, failure_text(r)
    return nagios_line(state, what, phases_perf(r, "total", warning, critical, PHASES[:-1]))


def message_prometheus(r: MessageResult) -> str:
    labels = f'{{target="{prom_label(r.target)}",transport="{r.transport}"}}'
    rows = [
        ("probe_success", "1 if the MESSAGE got a 2xx, else 0.", [(labels, 1 if r.up else 0)]),
        ("probe_duration_seconds", "How long the whole probe run took, in seconds.", [(labels, r.elapsed or 0.0)]),
        ("probe_sip_status_code", "Status code of the final response (0 if none).", [(labels, r.status or 0)]),
        ("probe_sip_phase_seconds", "Seconds per phase (NaN if it did not happen).",
         [(f'{labels[:-1]},phase="{k}"}}', getattr(r, k) if getattr(r, k) is not None else math.nan)
          for k in PHASES]),
        ("probe_sip_retransmissions", "Requests retransmitted during the run (Timer E).",
         [(labels, r.retransmissions)]),
        ("probe_sip_auth_failure", "1 if the credentials were rejected, else 0.",
         [(labels, 1 if r.outcome is Outcome.AUTH_FAILURE else 0)]),
    ]
    return prometheus_text(rows)
