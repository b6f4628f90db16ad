"""``sipflow probe options``: SIP OPTIONS sent to the one server the user names, and what came back.

Owns the OPTIONS request, its results (``ProbeResult``, ``ProbeRun``), the sans-IO ``OptionsFlow`` that
sends them at an interval (each its own ``sip.transaction`` client transaction; ``probe.driver`` runs
it), and the result formats (text, JSON lines, Nagios, Prometheus textfile).
"""

import math
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.probe.common import (DEFAULT_TIMEOUT, Expect, Failure, NagiosRange, NagiosState, Outcome, Result, Target,
                                  TlsOptions, contact_params, first_hop, ms_text, nagios_line, new_branch,
                                  parse_target, perf_value, prom_label, prometheus_text, route_for, threshold_perf,
                                  thresholds, to_us, uri_host)
from sipflow.probe.driver import Driver
from sipflow.probe.flow import Action, Connect, Flow, Link, Report, Send, Transactions, link_text, parse, seen_as
from sipflow.sip import builder
from sipflow.sip.transaction import TIMER_F, ClientTransaction

MAX_COUNT = 1000           # probes per run: a probe, not a load generator
MIN_INTERVAL = 0.1         # seconds between probes, at least


def options_request(target: Target, local: Tuple[str, int], branch: str, call_id: str, from_tag: str,
                    cseq: int, route: Optional[str] = None, transport: Optional[str] = None,
                    sent_by: Optional[str] = None) -> bytes:
    """An OPTIONS request (§11) from ``local`` (the socket's real address: the Via names the port the
    request leaves from, and ``rport`` (RFC 3581) asks for the reply to go back to it; over WebSocket
    ``sent_by`` is a .invalid host instead). With an outbound proxy, ``route`` is its URI (one
    loose-routing Route, §8.1.2) and ``transport`` the one used to reach it."""
    transport = transport or target.transport
    sent_by = sent_by or f"{uri_host(local[0])}:{local[1]}"
    return builder.request(
        "OPTIONS", target.uri, via_value=builder.via(transport, sent_by, branch),
        route=(f"<{route}>",) if route else (), from_=f"<sip:sipflow@{uri_host(local[0])}>;tag={from_tag}",
        to=f"<{target.uri}>", call_id=call_id, cseq=cseq,
        contact=f"<sip:sipflow@{sent_by}{contact_params(transport)}>", headers=(("Accept", "application/sdp"),))

# ---------------------------------------------------------------------------------------------------
# Results

OPTIONS_OUTCOMES = tuple(o for o in Outcome if o is not Outcome.AUTH_FAILURE)   # what OPTIONS can end in


@dataclass(frozen=True, kw_only=True)
class ProbeResult(Result):
    """One probe. Times are seconds from a monotonic clock, rounded to microseconds."""
    seq: int                          # 1.. in sending order
    sent_at: float = 0.0              # since the run started
    rtt: Optional[float] = None       # first transmission to final response
    allow: Tuple[str, ...] = ()
    supported: Tuple[str, ...] = ()
    cseq: Optional[int] = None
    branch: Optional[str] = None


    def to_dict(self) -> dict:
        return {
            "probe": self.seq, "target": self.target, "transport": self.transport, "remote": self.remote,
            "local": self.local, "outcome": self.outcome.value, "status": self.status, "reason": self.reason,
            "sent_at": self.sent_at, "rtt": self.rtt, "elapsed": self.elapsed, "first_response": self.first_response,
            "connect": self.connect, "handshake": self.handshake, "upgrade_status": self.upgrade_status,
            "retransmissions": self.retransmissions, "server": self.server,
            "allow": list(self.allow), "supported": list(self.supported), "seen_as": self.seen_as,
            "call_id": self.call_id, "cseq": self.cseq, "branch": self.branch,
        }


@dataclass(frozen=True)
class ProbeRun:
    """A run of ``count`` probes: the results of those that were sent, in sending order."""
    target: str
    transport: str
    remote: str
    planned: int
    timeout: float
    duration: float
    results: Tuple[ProbeResult, ...]
    expect: str = ""                  # --expect as given; "" is "any final response"
    stray: int = 0                    # datagrams or messages that were not a response of ours

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.up for r in self.results)

    @property
    def first_failure(self) -> Optional[ProbeResult]:
        return next((r for r in self.results if not r.up), None)

    @property
    def rtts(self) -> List[float]:
        return [r.rtt for r in self.results if r.rtt is not None]

# ---------------------------------------------------------------------------------------------------
# The driver: sockets, clock and select around the transactions


@dataclass(frozen=True)
class ProbeOptions:
    count: int = 1
    interval: float = 1.0
    timeout: Optional[float] = None          # the whole run; None: DEFAULT_TIMEOUT after the last probe
    expect: Expect = Expect()
    bind: Optional[str] = None               # ip, ip:port or [v6]:port
    family: Optional[int] = None             # 4 or 6: only for names; a literal decides for itself
    tls: TlsOptions = TlsOptions()           # how a TLS or wss target's certificate is checked
    proxy: Optional[str] = None              # outbound proxy URI: requests go there, with a Route to it

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ProbeError(f"count must be 1..{MAX_COUNT}")
        if self.interval < MIN_INTERVAL:
            raise ProbeError(f"interval must be at least {MIN_INTERVAL} s")
        if self.timeout is not None and not self.timeout > 0:
            raise ProbeError("timeout must be positive")

    @property
    def run_timeout(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return (self.count - 1) * self.interval + DEFAULT_TIMEOUT


class _Probe:
    """One probe's accumulator: its transaction, and how it failed when it did not get an answer."""
    __slots__ = ("seq", "cseq", "branch", "tx", "sent_at", "link", "failure", "connect", "handshake")

    def __init__(self, seq: int, cseq: int, branch: str, sent_at: float) -> None:
        self.seq, self.cseq, self.branch, self.sent_at = seq, cseq, branch, sent_at
        self.tx: Optional[ClientTransaction] = None
        self.link: Optional[Link] = None
        self.failure: Optional[Failure] = None
        self.connect: Optional[float] = None      # the link's set-up, when this probe opened it
        self.handshake: Optional[float] = None


def probe_options(target, options: ProbeOptions = ProbeOptions(),
                  on_result: Optional[Callable[[ProbeResult], None]] = None,
                  clock: Callable[[], float] = time.monotonic, recorder=None) -> ProbeRun:
    """Send ``options.count`` OPTIONS requests to ``target`` (a ``Target`` or its text), one every
    ``options.interval`` seconds (each its own transaction; they may overlap), and return what came
    back. ``on_result`` is called as each probe ends. The whole run ends within ``run_timeout``."""
    target = target if isinstance(target, Target) else parse_target(target)
    flow = OptionsFlow(target, options)
    driver = Driver(flow, options.run_timeout, family=options.family, bind=options.bind, tls=options.tls,
                    clock=clock, on_report=on_result, recorder=recorder)
    start, end = driver.run()
    return flow.run_result(driver.remote_text, start, end)


class OptionsFlow(Flow):
    """``probe options``, sans-IO: sends each probe when its time comes (one Call-ID and From-tag per
    run, CSeq 1, 2, 3...: the probes are one UAC's requests, §8.1.1), each its own transaction;
    reports each probe as it ends. A failed link fails every probe waiting on it (an ICMP error is
    reported for the socket, not for one datagram), and the next probe opens a new link."""

    def __init__(self, target: Target, options: ProbeOptions) -> None:
        self.target, self.opts = target, options
        self.dest = first_hop(target, options.proxy)
        self.route = route_for(options.proxy)
        self.call_id = f"{secrets.token_hex(12)}@sipflow"
        self.from_tag = secrets.token_hex(6)
        self.link: Optional[Link] = None
        self.probes: Dict[str, _Probe] = {}          # by branch
        self.waiting: List[_Probe] = []              # due, waiting for the link to come up
        self.txs = Transactions()
        self.results: Dict[int, ProbeResult] = {}    # by seq
        self.sent = 0
        self.stray = 0
        self.start_at = 0.0
        self.remote_text = ""

    @property
    def finished(self) -> bool:
        return self.sent == self.opts.count and len(self.results) == self.sent

    def start(self, now: float) -> List[Action]:
        self.start_at = now
        return self._send_due(now)

    def deadline(self) -> Optional[float]:
        times = [self.txs.deadline(lambda tx: self.probes[tx.branch].seq in self.results)]
        if self.sent < self.opts.count:
            times.append(self.start_at + self.sent * self.opts.interval)
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def timer(self, now: float) -> List[Action]:
        out = self._send_due(now)
        for tx, sends in self.txs.fire(now):
            out += sends
            if tx.done:
                out += self._finish(self.probes[tx.branch], now)   # Timer F (nothing for Timer K)
        return out

    def _send_due(self, now: float) -> List[Action]:
        if self.sent >= self.opts.count or now < self.start_at + self.sent * self.opts.interval:
            return []
        self.sent += 1
        p = _Probe(self.sent, self.sent, new_branch(), now)
        self.probes[p.branch] = p
        if self.link is None:
            self.waiting.append(p)
            return [Connect("main", self.dest)] if len(self.waiting) == 1 else []
        return self._send(p, now)

    def _send(self, p: _Probe, now: float) -> List[Action]:
        link = p.link = self.link
        request = options_request(self.target, link.local, p.branch, self.call_id, self.from_tag, p.cseq,
                                  self.route, self.dest.transport, link.sent_by)
        p.sent_at = now
        p.tx = ClientTransaction(request, p.branch, "OPTIONS", link.reliable, now)
        self.txs.add(p.tx, "main")
        return [Send("main", request)]

    def resolved(self, link: str, remote: Tuple[str, int]) -> None:
        self.remote_text = f"{uri_host(remote[0])}:{remote[1]}"

    def connected(self, link: Link, now: float) -> List[Action]:
        self.link = link
        waiting, self.waiting = self.waiting, []
        out: List[Action] = []
        for i, p in enumerate(waiting):
            out += self._send(p, now)
            if i == 0:
                # the set-up times belong to the probe that opened the link
                p.connect, p.handshake = link.connect, link.handshake
        return out

    def failed(self, link: str, failure: Failure, now: float) -> List[Action]:
        out: List[Action] = []
        for p in list(self.probes.values()):
            if p.seq in self.results:
                continue
            p.failure = failure
            if p.tx:
                p.tx.on_transport_error(now)
            out += self._finish(p, now)
        self.link = None
        self.waiting = []
        return out

    def received(self, link: str, data: bytes, now: float) -> List[Action]:
        msg = parse(data, self.link)
        tx = self.txs.match(msg) if msg is not None else None
        if tx is None:
            self.stray += 1   # requests to us, other branches: not ours to answer
            return []
        tx.on_response(msg, now)
        return self._finish(self.probes[tx.branch], now) if tx.done else []

    def expire(self, now: float) -> List[Action]:
        out: List[Action] = []
        for p in sorted(self.probes.values(), key=lambda p: p.seq):
            if p.seq not in self.results:
                p.failure = Failure(Outcome.TIMEOUT, f"no final response before --timeout {self.opts.run_timeout:g} s")
                out += self._finish(p, now)
        return out

    def _finish(self, p: _Probe, now: float) -> List[Action]:
        if p.seq in self.results:
            return []
        tx, link = p.tx, p.link
        base = dict(seq=p.seq, target=self.target.uri, transport=self.dest.transport, remote=self.remote_text,
                    local=link_text(link), sent_at=to_us(p.sent_at - self.start_at), elapsed=to_us(now - p.sent_at),
                    connect=to_us(p.connect), handshake=to_us(p.handshake),
                    call_id=self.call_id if tx else None, cseq=p.cseq if tx else None,
                    branch=p.branch if tx else None, retransmissions=tx.retransmissions if tx else 0,
                    first_response=to_us(tx.first_response_at - tx.sent_at)
                    if tx and tx.first_response_at is not None else None)
        if tx and tx.final is not None:
            msg = tx.final
            result = ProbeResult(
                **base, outcome=Outcome.UP if msg.status in self.opts.expect else Outcome.UNEXPECTED,
                status=msg.status, reason=msg.reason, rtt=to_us(tx.final_at - tx.sent_at),
                server=msg.header("Server") or msg.header("User-Agent"),
                allow=tuple(msg.header_values("Allow")), supported=tuple(msg.header_values("Supported")),
                seen_as=seen_as(msg, link))
        else:
            failure = p.failure or Failure(Outcome.TIMEOUT, f"no final response within {TIMER_F:g} s (Timer F)")
            result = ProbeResult(**base, outcome=failure.outcome, reason=failure.reason,
                                 upgrade_status=failure.upgrade_status)
        self.results[p.seq] = result
        return [Report(result)]

    def run_result(self, remote: str, start: float, end: float) -> ProbeRun:
        return ProbeRun(target=self.target.uri, transport=self.dest.transport, remote=remote,
                        planned=self.opts.count, timeout=self.opts.run_timeout, duration=to_us(end - start),
                        results=tuple(self.results[k] for k in sorted(self.results)),
                        expect=self.opts.expect.text, stray=self.stray)

# ---------------------------------------------------------------------------------------------------
# Formats: text, JSON lines, Nagios, Prometheus textfile


def result_text(r: ProbeResult) -> str:
    """One line per probe, as it ends: ``3: 200 OK in 1.234 ms``."""
    if r.status is not None:
        line = f"{r.seq}: {r.status} {r.reason or ''}".rstrip() + f" in {ms_text(r.rtt)}"
        if r.outcome is Outcome.UNEXPECTED:
            line += " (not expected)"
    else:
        line = f"{r.seq}: {r.outcome.value}: {r.reason}"
    if r.retransmissions:
        line += f", {r.retransmissions} retransmission(s)"
    return line


def run_header(target: Target, options: ProbeOptions) -> str:
    return (f"OPTIONS {target.uri} over {target.transport}, {options.count} probe(s), "
            f"--timeout {options.run_timeout:g} s")


def run_text(run: ProbeRun) -> str:
    """The summary after the per-probe lines: counts, round trips, and who answered."""
    counts: Dict[str, int] = {}
    for r in run.results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    parts = [f"{n} {k}" for k, n in counts.items()]
    local = next((r.local for r in run.results if r.local), "")
    lines = [f"--- {run.target} ({run.transport} {run.remote}" + (f" from {local}" if local else "") + ")",
             f"{len(run.results)} of {run.planned} probe(s) sent: " + ", ".join(parts)
             + f"; {run.duration:.3f} s in all"]
    opened = next((r for r in run.results if r.connect is not None or r.handshake is not None), None)
    if opened is not None:
        lines.append("link: " + ", ".join(f"{k} {ms_text(v)}" for k, v in (
            ("connect", opened.connect), ("WebSocket handshake", opened.handshake)) if v is not None))
    if run.rtts:
        rtts = run.rtts
        lines.append(f"rtt min/avg/max {min(rtts) * 1000:.3f}/{sum(rtts) / len(rtts) * 1000:.3f}/"
                     f"{max(rtts) * 1000:.3f} ms")
    answered = [r for r in run.results if r.status is not None]
    if answered:
        last = answered[-1]
        for name, value in (("Server", last.server), ("Allow", ", ".join(last.allow)),
                            ("Supported", ", ".join(last.supported)), ("Seen as", last.seen_as)):
            if value:
                lines.append(f"{name}: {value}")
    if len(run.results) < run.planned:
        lines.append(f"--timeout {run.timeout:g} s ended the run before every probe was sent")
    return "\n".join(lines)



def nagios(run: ProbeRun, warning: Optional[NagiosRange] = None,
           critical: Optional[NagiosRange] = None) -> Tuple[NagiosState, str]:
    """One status line with perfdata, and the state. Every probe must be up; thresholds apply to the
    largest round trip. No answer, a refusal or a timeout is CRITICAL; UNKNOWN is left to the caller
    for a check that could not run."""
    if not run.results:
        return NagiosState.UNKNOWN, f"SIP UNKNOWN - no probe could be sent to {run.target} within --timeout"
    worst = max(run.rtts) if run.rtts else None
    bad = run.first_failure
    state = NagiosState.OK
    if bad is not None:
        state = NagiosState.CRITICAL
        if bad.status is not None:
            what = f"{bad.status} {bad.reason or ''}".rstrip() + f" from {run.remote}, expected {run.expect}"
        elif bad.outcome is Outcome.TIMEOUT:
            what = f"no response from {run.remote} ({run.transport}): {bad.reason}"
            if bad.retransmissions:
                what += f", {bad.retransmissions} retransmission(s)"
        else:
            what = f"{bad.reason} ({run.transport} {run.remote})" \
                + (f" after {perf_value(bad.elapsed)}s" if bad.elapsed is not None else "")
    else:
        last = run.results[-1]
        what = f"{last.status} {last.reason or ''}".rstrip() + f" in {perf_value(worst)}s"
        if len(run.results) > 1:
            what = f"{len(run.results)}/{run.planned} up, {last.status} {last.reason or ''}".rstrip() \
                + f", max rtt {perf_value(worst)}s"
        state, what = thresholds(state, what, worst, warning, critical)
        if last.server:
            what += f" ({last.server})"
    if bad is not None and len(run.results) > 1:
        what = f"{sum(r.up for r in run.results)}/{run.planned} up, probe {bad.seq}: " + what
    perf = [threshold_perf("rtt", worst, warning, critical),
            f"'retransmissions'={sum(r.retransmissions for r in run.results)};;;0;"]
    if run.planned > 1:
        perf.append(f"'up'={sum(r.up for r in run.results)};;;0;{run.planned}")
    return nagios_line(state, what, perf)


def prometheus(run: ProbeRun) -> str:
    """Text exposition format for node_exporter's textfile collector (gauges, no timestamps)."""
    labels = f'{{target="{prom_label(run.target)}",transport="{run.transport}"}}'
    finals = [r for r in run.results if r.status is not None]
    rows = [
        ("probe_success", "1 if every probe got a final response counted as up, else 0.",
         [(labels, 1 if run.ok else 0)]),
        ("probe_duration_seconds", "How long the whole probe run took, in seconds.", [(labels, run.duration)]),
        ("probe_sip_status_code", "Status code of the last final response (0 if none).",
         [(labels, finals[-1].status if finals else 0)]),
        ("probe_sip_rtt_seconds", "Largest round trip, request to final response, in seconds (NaN if none).",
         [(labels, max(run.rtts) if run.rtts else math.nan)]),
        ("probe_sip_retransmissions", "Requests retransmitted during the run (Timer E).",
         [(labels, sum(r.retransmissions for r in run.results))]),
        ("probe_sip_probes", "Probes sent, by outcome.",
         [(f'{labels[:-1]},outcome="{o.value}"}}', sum(r.outcome is o for r in run.results))
          for o in OPTIONS_OUTCOMES]),
    ]
    return prometheus_text(rows)
