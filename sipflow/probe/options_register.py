"""The active probe: SIP requests sent to the one server the user names, and what came back.

Owns the probe's client transactions (RFC 3261 §17.1.2, non-INVITE), the requests it builds, the socket
driver that carries them, and the result formats (text, JSON lines, Nagios, Prometheus textfile). Leaves
message parsing and stream framing to ``sip``, options and exit codes to ``cli``.

Two halves, h11-style. The transaction (``ClientTransaction`` walking ``NON_INVITE_TABLE``) does no I/O:
it is given a response or "now" and hands back the bytes to send; time is always an argument. The driver
(``probe_options``) owns the sockets, the monotonic clock and ``select``, and is the only I/O here.

Two probes so far, over UDP and TCP: OPTIONS (``probe_options``) and REGISTER with digest
authentication (``probe_register``: the sans-IO ``RegisterFlow`` decides what to send next, ``sipflow.sip.digest``
computes the credentials, ``_RegisterDriver`` carries the requests). Test calls (INVITE, SDP, RTP) are in
``sipflow.probe.call``, which reuses the target, channel, transaction and format helpers here. TLS
(``sip:host;transport=tls`` or ``sips:host``, port 5061 by default) is TCP with an ``ssl`` wrap: the server
certificate is verified against the system CA store (or ``TlsOptions.ca``) unless ``TlsOptions.insecure``.
"""
from __future__ import annotations

import enum
import errno
import ipaddress
import json
import math
import re
import secrets
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from sipflow import __version__
from sipflow.errors import ParseError, ProbeError
from sipflow.sip.digest import DigestSession, challenges_from, choose, redact
from sipflow.sip.framing import frame_stream
from sipflow.sip.message import SipMessage, parse_message, parse_uri
from sipflow.probe.recorder import record as _pcap_record

MAGIC_COOKIE = "z9hG4bK"   # RFC 3261 §8.1.1.7: a branch starting with it is unique per transaction
T1 = 0.5                   # §17.1.1.1: round-trip estimate, first retransmission interval (s)
T2 = 4.0                   # §17.1.2.2: longest retransmission interval of a non-INVITE request (s)
T4 = 5.0                   # §17.1.2.2: how long a message may linger in the network: Timer K on UDP (s)
TIMER_F = 64 * T1          # §17.1.2.2: a non-INVITE transaction gives up after this without a final response
MAX_COUNT = 1000           # probes per run: a probe, not a load generator
MIN_INTERVAL = 0.1         # seconds between probes, at least
DEFAULT_TIMEOUT = 10.0     # the run ends this long after the last probe is sent, unless --timeout says
DEFAULT_PORT = 5060        # no NAPTR/SRV lookups yet (RFC 3263): the URI's port or 5060
DEFAULT_TLS_PORT = 5061    # RFC 3261 §19.1.2: sips: and transport=tls
TRANSPORTS = ("udp", "tcp", "tls")


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


class ClientTransaction:
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

    def matches(self, msg: SipMessage) -> bool:
        """§17.1.3: a response belongs here when its top Via branch and its CSeq method are ours."""
        return msg.status is not None and msg.branch == self.branch and msg.cseq[1] == self.method

    @property
    def done(self) -> bool:
        """The transaction user has its answer: a final response, a timeout or a transport error."""
        return self.state in (TxState.COMPLETED, TxState.TERMINATED)

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

    def on_response(self, msg: SipMessage, now: float) -> List[bytes]:
        return self._event("1xx" if msg.status < 200 else "final", now, msg)

    def on_transport_error(self, now: float) -> List[bytes]:
        """§17.1.4: the transport layer could not deliver: the transaction ends at once."""
        return self._event("transport_error", now)

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
# Values: the target, what counts as up, Nagios ranges


@dataclass(frozen=True)
class Target:
    """Where the probe goes: the Request-URI as the user wrote it, and the host, port and transport."""
    uri: str
    host: str
    port: int
    transport: str   # "udp", "tcp" or "tls"

    @property
    def scheme(self) -> str:
        return self.uri.split(":", 1)[0].lower()


def contact_params(transport: str) -> str:
    """The Contact URI parameter naming our transport (none for UDP, the default)."""
    return f";transport={transport}" if transport in ("tcp", "tls") else ""


@dataclass(frozen=True)
class TlsOptions:
    """How a TLS channel checks the server: against the system CA store by default, against ``ca``
    (a PEM file of CA certificates) when given, not at all with ``insecure``. The name checked (and
    sent as SNI) is the target's host."""
    ca: Optional[str] = None
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
        except (OSError, ssl.SSLError) as e:
            raise ProbeError(f"--ca {self.ca}: cannot load certificates: "
                             f"{getattr(e, 'strerror', None) or getattr(e, 'reason', None) or e}") from None
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def parse_target(text: str) -> Target:
    """``sip:host[:port][;transport=udp|tcp|tls]`` or ``sips:host[:port]`` (TLS); ``sip:`` may be left
    out; IPv6 goes in brackets. TLS defaults to port 5061, the others to 5060."""
    text = text.strip()
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    if scheme == "sips":
        text = "sips:" + text[m.end():]
    elif scheme != "sip":
        if m and not text[m.end():m.end() + 1].isdigit() and not _is_ip(text.split(";")[0]):
            raise ProbeError(f"{text!r} is not a sip: URI")
        text = "sip:" + text   # "host", "host:5060", "[::1]:5060"
    if re.search(r"[\s<>\"?]", text):
        raise ProbeError(f"{text!r}: spaces, <>, quotes and ?headers are not allowed in the target")
    hostport = text.split(":", 1)[1].split(";")[0].rpartition("@")[2]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if ":" not in host or not _is_ip(host):
            raise ProbeError(f"{text!r}: only an IPv6 address goes in brackets")
    elif hostport.count(":") > 1:
        raise ProbeError(f"{text!r}: IPv6 addresses go in brackets, as in sip:[::1]:5060")
    else:
        host, _, tail = hostport.partition(":")
        tail = ":" + tail if _ else ""
    if not host:
        raise ProbeError(f"no host in {text!r}")
    transport = (parse_uri(text).param("transport") or ("tls" if scheme == "sips" else "udp")).lower()
    if scheme == "sips" and transport == "tcp":
        transport = "tls"   # RFC 5630 §3.1.3: sips: with transport=tcp still means TLS over TCP
    if transport not in TRANSPORTS:
        raise ProbeError(f"transport={transport} is not supported (udp, tcp or tls)")
    if scheme == "sips" and transport != "tls":
        raise ProbeError(f"{text!r}: a sips: URI is reached over TLS only")
    port = DEFAULT_TLS_PORT if transport == "tls" else DEFAULT_PORT
    if tail:
        if not (tail.startswith(":") and tail[1:].isdigit() and 0 < int(tail[1:]) < 65536):
            raise ProbeError(f"bad port in {text!r}")
        port = int(tail[1:])
    return Target(uri=text, host=host.lower(), port=port, transport=transport)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
        return True
    except ValueError:
        return False


def check_destination(ip: str) -> None:
    """Safety: one unicast host only. Multicast, broadcast and the unspecified address are refused
    (a directed broadcast is refused by the kernel, since the probe never sets SO_BROADCAST)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    addr = mapped or addr
    if addr.is_multicast:
        raise ProbeError(f"{ip} is a multicast address: the probe only talks to one host")
    if addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ProbeError(f"{ip} is not one host's address: the probe only talks to one host")


@dataclass(frozen=True)
class Expect:
    """Which final responses mean "up": inclusive code ranges, or none for "any final response".

    By default any final response (200-699) is up: a 404 or 403 still proves a live SIP server, and
    a provisional response such as 100 Trying never is (it is not an answer)."""
    ranges: Tuple[Tuple[int, int], ...] = ()
    text: str = ""

    def __contains__(self, status: int) -> bool:
        if not self.ranges:
            return 200 <= status <= 699
        return any(lo <= status <= hi for lo, hi in self.ranges)


def parse_expect(text: Optional[str]) -> Expect:
    """``200,404`` or ``2xx,404``: codes (200-699) and classes."""
    if not text:
        return Expect()
    ranges = []
    for part in (p.strip().lower() for p in text.split(",")):
        m = re.fullmatch(r"([2-6])xx|([2-6][0-9][0-9])", part)
        if not m:
            raise ValueError(f"{part!r} is not a final status code (200-699) or class (2xx-6xx)")
        ranges.append((int(m.group(1)) * 100, int(m.group(1)) * 100 + 99) if m.group(1)
                      else (int(m.group(2)), int(m.group(2))))
    return Expect(ranges=tuple(ranges), text=",".join(p.strip() for p in text.split(",")))


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_RANGE = re.compile(rf"(@)?(?:(~|{_NUMBER})?:)?({_NUMBER})?")


@dataclass(frozen=True)
class NagiosRange:
    """A threshold in the Nagios plugin range syntax: ``10`` alerts outside 0..10, ``10:`` below 10,
    ``~:10`` above 10, ``10:20`` outside 10..20, ``@10:20`` inside 10..20 (development guidelines,
    "Threshold and ranges")."""
    text: str
    start: float
    end: float
    inside: bool

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within


def parse_range(text: str) -> NagiosRange:
    m = _RANGE.fullmatch(text.strip())
    if not text.strip() or not m or (m.group(2) is None and m.group(3) is None and ":" not in text):
        raise ValueError(f"{text!r} is not a Nagios range (10, 10:, ~:10, 10:20, @10:20)")
    inside, start, end = m.group(1) is not None, m.group(2), m.group(3)
    lo = -math.inf if start == "~" else float(start) if start else 0.0
    hi = float(end) if end else math.inf
    if lo > hi:
        raise ValueError(f"{text!r}: the range starts after it ends")
    return NagiosRange(text=text.strip(), start=lo, end=hi, inside=inside)


# ---------------------------------------------------------------------------------------------------
# The request


def uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def new_branch() -> str:
    """A fresh branch with the magic cookie (§8.1.1.7), random enough to be unique in space and time."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def options_request(target: Target, local: Tuple[str, int], branch: str, call_id: str, from_tag: str,
                    cseq: int, route: Optional[str] = None, transport: Optional[str] = None) -> bytes:
    """An OPTIONS request (§11) from ``local`` (the socket's real address: the Via names the port the
    request leaves from, and ``rport`` (RFC 3581) asks for the reply to go back to it). With an
    outbound proxy, ``route`` is its URI (one loose-routing Route, §8.1.2) and ``transport`` the one
    used to reach it."""
    transport = transport or target.transport
    via_host = f"{uri_host(local[0])}:{local[1]}"
    lines = (
        f"OPTIONS {target.uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {via_host};branch={branch};rport",
        "Max-Forwards: 70",
        *((f"Route: <{route}>",) if route else ()),
        f"From: <sip:sipflow@{uri_host(local[0])}>;tag={from_tag}",
        f"To: <{target.uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} OPTIONS",
        f"Contact: <sip:sipflow@{via_host}{contact_params(transport)}>",
        "Accept: application/sdp",
        f"User-Agent: sipflow/{__version__}",
        "Content-Length: 0",
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------------
# Results


class Outcome(enum.Enum):
    UP = "up"                    # a final response that --expect counts as up
    UNEXPECTED = "unexpected"    # a final response --expect does not name
    TIMEOUT = "timeout"          # no final response: Timer F, or --timeout ended the run first
    REFUSED = "refused"          # nothing listens there: ICMP port unreachable, TCP reset on connect
    UNREACHABLE = "unreachable"  # ICMP host or network unreachable, no route
    ERROR = "error"              # another transport failure: connection reset or closed, send failed
    AUTH_FAILURE = "auth failure"  # probe register: the credentials were rejected (or could not be made)


OPTIONS_OUTCOMES = tuple(o for o in Outcome if o is not Outcome.AUTH_FAILURE)   # what OPTIONS can end in


@dataclass(frozen=True)
class ProbeResult:
    """One probe. Times are seconds from a monotonic clock, rounded to microseconds."""
    seq: int                          # 1.. in sending order
    target: str
    transport: str
    remote: str                       # ip:port the request went to
    local: str                        # ip:port it left from ("" when no socket could be opened)
    outcome: Outcome
    status: Optional[int] = None
    reason: Optional[str] = None      # the response's reason phrase, or what went wrong
    sent_at: float = 0.0              # since the run started
    rtt: Optional[float] = None       # first transmission to final response
    elapsed: Optional[float] = None   # first transmission to the end of the probe, whatever ended it
    first_response: Optional[float] = None  # first transmission to the first response (e.g. 100)
    connect: Optional[float] = None   # TCP: connection set-up, when this probe opened the connection
    retransmissions: int = 0
    server: Optional[str] = None      # the responder's Server (or User-Agent) header
    allow: Tuple[str, ...] = ()
    supported: Tuple[str, ...] = ()
    seen_as: Optional[str] = None     # our address as the server saw it (Via received/rport)
    call_id: Optional[str] = None
    cseq: Optional[int] = None
    branch: Optional[str] = None

    @property
    def up(self) -> bool:
        return self.outcome is Outcome.UP

    def to_dict(self) -> dict:
        return {
            "probe": self.seq, "target": self.target, "transport": self.transport, "remote": self.remote,
            "local": self.local, "outcome": self.outcome.value, "status": self.status, "reason": self.reason,
            "sent_at": self.sent_at, "rtt": self.rtt, "elapsed": self.elapsed, "first_response": self.first_response,
            "connect": self.connect, "retransmissions": self.retransmissions, "server": self.server,
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


def to_us(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 6)


class TlsHandshakeTimeout(TimeoutError):
    """The TCP connection was made, but the TLS handshake did not finish before --timeout."""


def describe_failure(err: BaseException) -> Tuple[Outcome, str]:
    """What a socket error means for the probe."""
    if isinstance(err, TlsHandshakeTimeout):
        return Outcome.TIMEOUT, "no TLS handshake before --timeout"
    if isinstance(err, ssl.SSLCertVerificationError):
        return Outcome.ERROR, f"TLS certificate verify failed: {err.verify_message or err.reason or err}"
    if isinstance(err, ssl.SSLError):
        return Outcome.ERROR, f"TLS error: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return Outcome.REFUSED, "connection refused"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return Outcome.TIMEOUT, "no TCP connection before --timeout"
    if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                                                  errno.ENETDOWN, errno.EADDRNOTAVAIL):
        return Outcome.UNREACHABLE, err.strerror or "unreachable"
    if isinstance(err, OSError):
        return Outcome.ERROR, err.strerror or str(err)
    return Outcome.ERROR, str(err)


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
    tls: TlsOptions = TlsOptions()           # how a TLS target's certificate is checked
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


def parse_bind(text: str) -> Tuple[str, int]:
    """``ip``, ``ip:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else "0" if not tail else None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "0"
    if port is None or not port.isdigit() or int(port) > 65535 or not _is_ip(host):
        raise ProbeError(f"--bind {text!r}: expected ip, ip:port or [ipv6]:port")
    return host, int(port)


def resolve_target(target: Target, family: Optional[int], bind: Optional[Tuple[str, int]], limit: float):
    """The first address of the target (only that one: the probe never tries others), bounded in time."""
    fam = {4: socket.AF_INET, 6: socket.AF_INET6}.get(family or 0, socket.AF_UNSPEC)
    if bind:
        bind_fam = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        if fam not in (socket.AF_UNSPEC, bind_fam):
            raise ProbeError(f"--bind {bind[0]} and -{family} name different address families")
        fam = bind_fam
    kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
    found: list = []

    def lookup():
        try:
            found.append(socket.getaddrinfo(target.host, target.port, fam, kind))
        except (socket.gaierror, UnicodeError) as e:
            found.append(e)

    if _is_ip(target.host):
        lookup()
    else:  # a name: DNS may hang, and --timeout bounds the whole run
        t = threading.Thread(target=lookup, daemon=True)
        t.start()
        t.join(max(0.0, limit))
    if not found:
        raise ProbeError(f"could not resolve {target.host} within --timeout")
    if isinstance(found[0], BaseException):
        err = found[0]
        if _is_ip(target.host) and fam != socket.AF_UNSPEC:
            raise ProbeError(f"{target.host} is not an IPv{4 if fam == socket.AF_INET else 6} address "
                             "(check -4/-6 and --bind)")
        raise ProbeError(f"cannot resolve {target.host}: {getattr(err, 'strerror', None) or err}")
    af, _, _, _, sockaddr = found[0][0]
    check_destination(sockaddr[0])
    return af, sockaddr


class Channel:
    """One socket to the target: a connected UDP socket (Linux then reports ICMP port unreachable as
    ECONNREFUSED on it, at once, instead of a silent loss), or one TCP connection, wrapped in TLS for
    a TLS target (handshake before the first message, SNI and certificate name = the target's host).
    Over TLS, ``send``/``receive`` carry the cleartext, which is what ``--pcap`` records (as TCP)."""

    def __init__(self, target: Target, family: int, remote, bind, limit: float, clock,
                 tls: Optional[TlsOptions] = None) -> None:
        self.transport = target.transport
        self.reliable = target.transport in ("tcp", "tls")
        context = (tls or TlsOptions()).context() if target.transport == "tls" else None
        self.sock = socket.socket(family, socket.SOCK_STREAM if self.reliable else socket.SOCK_DGRAM)
        self.connect_time: Optional[float] = None
        self.buf = bytearray()
        self.out = bytearray()
        try:
            if bind:
                if self.reliable:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    self.sock.bind(bind)
                except OSError as e:
                    raise ProbeError(f"cannot bind to {uri_host(bind[0])}:{bind[1]}: {e.strerror}") from None
            if self.reliable:
                t0 = clock()
                self.sock.settimeout(max(0.001, limit))
                self.sock.connect(remote)
                if context is not None:
                    self.sock.settimeout(max(0.001, limit - (clock() - t0)))
                    try:
                        self.sock = context.wrap_socket(self.sock, server_hostname=target.host.split("%")[0])
                    except socket.timeout:
                        raise TlsHandshakeTimeout("no TLS handshake before --timeout") from None
                self.connect_time = clock() - t0
            else:
                self.sock.connect(remote)
            self.sock.setblocking(False)
            self.local: Tuple[str, int] = self.sock.getsockname()[:2]
            self.peer = self.sock.getpeername()[:2]
        except PermissionError:
            self.sock.close()
            raise ProbeError(f"sending to {remote[0]} is not permitted (a broadcast address, or a local "
                             "firewall)") from None
        except BaseException:
            self.sock.close()
            raise

    def send(self, data: bytes) -> None:
        _pcap_record(self.reliable, True, self.local, self.peer, data)
        if not self.reliable:
            try:
                self.sock.send(data)
            except BlockingIOError:
                pass  # a full socket buffer is a lost datagram: Timer E retransmits it
            return
        self.out += data
        self.flush()

    @property
    def wants_write(self) -> bool:
        return bool(self.out)

    def flush(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self.out[:n]

    def receive(self) -> List[bytes]:
        """Every whole message now readable. Raises OSError (e.g. ECONNREFUSED) or EOFError."""
        if not self.reliable:
            out = []
            while True:
                try:
                    out.append(self.sock.recv(65535))
                except BlockingIOError:
                    for data in out:
                        _pcap_record(False, False, self.local, self.peer, data)
                    return out
        try:
            data = self.sock.recv(65536)
            # TLS: a record already decrypted (or buffered) does not make the socket readable again
            while data and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                more = self.sock.recv(65536)
                if not more:
                    break
                data += more
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return []
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data
        out = []
        while True:
            kind, n = frame_stream(self.buf)  # sip.py's framing by Content-Length (§18.3)
            if kind == "need" or n == 0:
                return out
            if kind == "message":
                out.append(bytes(self.buf[:n]))
                _pcap_record(True, False, self.local, self.peer, out[-1])
            del self.buf[:n]

    def close(self) -> None:
        self.sock.close()


class _Probe:
    """One probe's accumulator: its transaction, and how it failed when it did not get an answer."""
    __slots__ = ("seq", "cseq", "branch", "tx", "sent_at", "local", "connect", "failure")

    def __init__(self, seq: int, cseq: int, branch: str, sent_at: float) -> None:
        self.seq, self.cseq, self.branch, self.sent_at = seq, cseq, branch, sent_at
        self.tx: Optional[ClientTransaction] = None
        self.local: Optional[Tuple[str, int]] = None
        self.connect: Optional[float] = None
        self.failure: Optional[Tuple[Outcome, str]] = None


def probe_options(target, options: ProbeOptions = ProbeOptions(),
                  on_result: Optional[Callable[[ProbeResult], None]] = None,
                  clock: Callable[[], float] = time.monotonic) -> ProbeRun:
    """Send ``options.count`` OPTIONS requests to ``target`` (a ``Target`` or its text), one every
    ``options.interval`` seconds (each its own transaction; they may overlap), and return what came
    back. ``on_result`` is called as each probe ends. The whole run ends within ``run_timeout``."""
    return _Driver(target if isinstance(target, Target) else parse_target(target), options, clock).run(on_result)


class _Driver:
    """The socket loop: sends each probe when its time comes, fires the transactions' timers, reads
    responses, and ends when every probe has its result or at the run's deadline."""

    def __init__(self, target: Target, options: ProbeOptions, clock) -> None:
        self.target, self.opts, self.clock = target, options, clock
        # Where packets go: the target itself, or the outbound proxy (its transport, unless it names none).
        self.dest = target
        self.route = _route_for(options.proxy)
        if options.proxy:
            dest = parse_target(options.proxy)
            if parse_uri(dest.uri).param("transport") is None and dest.transport != target.transport:
                dest = Target(uri=dest.uri, host=dest.host, port=dest.port, transport=target.transport)
            self.dest = dest
        self.bind = parse_bind(options.bind) if options.bind else None
        # One Call-ID and From-tag per run, CSeq 1, 2, 3...: the probes are one UAC's requests (§8.1.1).
        self.call_id = f"{secrets.token_hex(12)}@sipflow"
        self.from_tag = secrets.token_hex(6)
        self.channel: Optional[Channel] = None
        self.probes: Dict[str, _Probe] = {}          # by branch
        self.results: Dict[int, ProbeResult] = {}    # by seq
        self.stray = 0
        self.start = 0.0
        self.family, self.remote, self.remote_text = 0, None, ""
        self.on_result: Optional[Callable[[ProbeResult], None]] = None

    def run(self, on_result) -> ProbeRun:
        self.on_result = on_result
        start = self.start = self.clock()
        timeout = self.opts.run_timeout
        deadline = start + timeout
        self.family, self.remote = resolve_target(self.dest, self.opts.family, self.bind, deadline - start)
        self.remote_text = f"{uri_host(self.remote[0])}:{self.remote[1]}"
        sent = 0
        try:
            while True:
                now = self.clock()
                if now >= deadline:
                    break
                if sent < self.opts.count and now >= start + sent * self.opts.interval:
                    sent += 1
                    self._send_probe(sent, deadline)
                    continue
                self._fire_timers(now)
                pending = [p for p in self.probes.values() if p.seq not in self.results]
                if sent == self.opts.count and not pending:
                    break
                self._wait(now, deadline, sent, pending)
        finally:
            if self.channel:
                self.channel.close()
        for p in sorted(self.probes.values(), key=lambda p: p.seq):
            if p.seq not in self.results:
                p.failure = (Outcome.TIMEOUT, f"no final response before --timeout {timeout:g} s")
                self._finish(p, deadline)
        return ProbeRun(target=self.target.uri, transport=self.dest.transport, remote=self.remote_text,
                        planned=self.opts.count, timeout=timeout, duration=to_us(min(self.clock(), deadline) - start),
                        results=tuple(self.results[k] for k in sorted(self.results)),
                        expect=self.opts.expect.text, stray=self.stray)

    def _send_probe(self, seq: int, deadline: float) -> None:
        p = _Probe(seq, seq, new_branch(), self.clock())
        self.probes[p.branch] = p
        try:
            if self.channel is None:
                self.channel = Channel(self.dest, self.family, self.remote, self.bind,
                                        deadline - self.clock(), self.clock, self.opts.tls)
                p.connect = self.channel.connect_time
            ch = self.channel
            p.local = ch.local
            request = options_request(self.target, ch.local, p.branch, self.call_id, self.from_tag, p.cseq,
                                      self.route, self.dest.transport)
            p.sent_at = self.clock()
            p.tx = ClientTransaction(request, p.branch, "OPTIONS", ch.reliable, p.sent_at)
            ch.send(request)
        except (OSError, EOFError) as e:
            self._transport_failed(e)

    def _fire_timers(self, now: float) -> None:
        for p in list(self.probes.values()):
            tx = p.tx
            if tx is None or tx.next_deadline() is None or tx.next_deadline() > now:
                continue
            for data in tx.on_timer(now):
                try:
                    self.channel.send(data)
                except (OSError, EOFError) as e:
                    self._transport_failed(e)
                    return
            if tx.done:
                self._finish(p, now)   # Timer F (no-op for Timer K: the result is already out)

    def _wait(self, now: float, deadline: float, sent: int, pending: List[_Probe]) -> None:
        wake = [deadline]
        if sent < self.opts.count:
            wake.append(self.start + sent * self.opts.interval)
        wake += [p.tx.next_deadline() for p in pending if p.tx and p.tx.next_deadline() is not None]
        delay = max(0.0, min(wake) - now)
        ch = self.channel
        if ch is None:
            time.sleep(delay)
            return
        readable, writable, _ = select.select([ch.sock], [ch.sock] if ch.wants_write else [], [], delay)
        try:
            if writable:
                ch.flush()
            if readable:
                for data in ch.receive():
                    self._on_message(data)
        except (OSError, EOFError) as e:
            self._transport_failed(e)

    def _on_message(self, data: bytes) -> None:
        now = self.clock()
        try:
            msg = parse_message(data, datagram=not self.channel.reliable)
        except ParseError:
            self.stray += 1
            return
        p = self.probes.get(msg.branch or "") if msg.status is not None else None
        if p is None or p.tx is None or not p.tx.matches(msg):
            self.stray += 1   # requests to us, other branches: not ours to answer in this slice
            return
        p.tx.on_response(msg, now)
        if p.tx.done:
            self._finish(p, now)

    def _transport_failed(self, err: BaseException) -> None:
        """The socket failed: every probe still waiting on it fails with it (an ICMP error is reported
        for the socket, not for one datagram), and the next probe opens a new socket."""
        failure = describe_failure(err)
        now = self.clock()
        for p in list(self.probes.values()):
            if p.seq in self.results:
                continue
            p.failure = failure
            if p.tx:
                p.tx.on_transport_error(now)
            self._finish(p, now)
        if self.channel:
            self.channel.close()
            self.channel = None

    def _finish(self, p: _Probe, now: float) -> None:
        if p.seq in self.results:
            return
        tx = p.tx
        base = dict(seq=p.seq, target=self.target.uri, transport=self.dest.transport, remote=self.remote_text,
                    local=f"{uri_host(p.local[0])}:{p.local[1]}" if p.local else "",
                    sent_at=to_us(p.sent_at - self.start), elapsed=to_us(now - p.sent_at), connect=to_us(p.connect),
                    call_id=self.call_id if tx else None, cseq=p.cseq if tx else None,
                    branch=p.branch if tx else None, retransmissions=tx.retransmissions if tx else 0,
                    first_response=to_us(tx.first_response_at - tx.sent_at)
                    if tx and tx.first_response_at is not None else None)
        if tx and tx.final is not None:
            msg = tx.final
            via = msg.vias[0] if msg.vias else None
            received, rport = (via.param("received"), via.param("rport")) if via else (None, None)
            seen = None
            if received or rport:   # RFC 3581: where the server saw the request come from
                seen = f"{uri_host(received or p.local[0])}:{rport or p.local[1]}"
            result = ProbeResult(
                **base, outcome=Outcome.UP if msg.status in self.opts.expect else Outcome.UNEXPECTED,
                status=msg.status, reason=msg.reason, rtt=to_us(tx.final_at - tx.sent_at),
                server=msg.header("Server") or msg.header("User-Agent"),
                allow=tuple(msg.header_values("Allow")), supported=tuple(msg.header_values("Supported")),
                seen_as=seen)
        else:
            outcome, reason = p.failure or (Outcome.TIMEOUT, f"no final response within {TIMER_F:g} s (Timer F)")
            result = ProbeResult(**base, outcome=outcome, reason=reason)
        self.results[p.seq] = result
        if self.on_result:
            self.on_result(result)


# ---------------------------------------------------------------------------------------------------
# Formats: text, JSON lines, Nagios, Prometheus textfile


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def result_text(r: ProbeResult) -> str:
    """One line per probe, as it ends: ``3: 200 OK in 1.234 ms``."""
    if r.status is not None:
        line = f"{r.seq}: {r.status} {r.reason or ''}".rstrip() + f" in {_ms(r.rtt)}"
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


def result_json(r: ProbeResult) -> str:
    """One JSON object per probe, one per line (JSON Lines), so a long run can be followed."""
    return json.dumps(r.to_dict())


class NagiosState(enum.IntEnum):
    """Plugin return codes (Nagios plugin development guidelines)."""
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def perf_value(v: Optional[float]) -> str:
    return "U" if v is None else f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"


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
        if critical and critical.alerts(worst):
            state, what = NagiosState.CRITICAL, what + f" (critical {critical.text})"
        elif warning and warning.alerts(worst):
            state, what = NagiosState.WARNING, what + f" (warning {warning.text})"
        if last.server:
            what += f" ({last.server})"
    if bad is not None and len(run.results) > 1:
        what = f"{sum(r.up for r in run.results)}/{run.planned} up, probe {bad.seq}: " + what
    perf = [f"'rtt'={perf_value(worst)}{'s' if worst is not None else ''};"
            f"{warning.text if warning else ''};{critical.text if critical else ''};0;",
            f"'retransmissions'={sum(r.retransmissions for r in run.results)};;;0;"]
    if run.planned > 1:
        perf.append(f"'up'={sum(r.up for r in run.results)};;;0;{run.planned}")
    text = what.replace("|", "/").replace("\n", " ")   # '|' starts perfdata, the line must stay one line
    return state, f"SIP {state.name} - {text} | " + " ".join(perf)


def prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
    out = []
    for name, help_text, samples in rows:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for lab, value in samples:
            text = "NaN" if isinstance(value, float) and math.isnan(value) else (
                f"{value:.6f}" if isinstance(value, float) else str(value))
            out.append(f"{name}{lab} {text}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------
# REGISTER (RFC 3261 §10) with digest authentication (§22, RFC 7616, RFC 8760)

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


def _route_for(proxy: Optional[str]) -> Optional[str]:
    """§8.1.2: an outbound proxy is the route set's one loose-routing entry."""
    if not proxy:
        return None
    uri = parse_target(proxy).uri
    return uri if parse_uri(uri).param("lr") is not None else uri + ";lr"


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
        self.route = _route_for(options.proxy)
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
            line += f" in {_ms(s['rtt'])}"
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
    shown = [f"{k.replace('_', ' ')} {_ms(v)}" for k, v in timings if v is not None]
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


def trace_text(direction: str, data: bytes, password: Optional[str]) -> str:
    """A message for --verbose: who sent it and its text, with the digest response hashes and the
    password redacted."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    head = "--> sent" if direction == ">" else "<-- received"
    return f"{head}\n" + redact(text, [password] if password else [])
