"""What every probe shares: the target and its TLS options, what counts as up, how a probe ends, where
its requests go, and the helpers the result formats share.

Owns ``parse_target`` (sip:/sips: URIs and ws:// URLs, transports, refused destinations), ``Expect`` and
Nagios ranges, ``Outcome`` and ``Failure``, where requests go (``first_hop``, ``hop_of``), and the
small format helpers (Nagios perfdata, the Prometheus textfile, the -v trace). The sockets are
``probe.transport``'s, the one loop around them ``probe.driver``'s; the probes themselves are the
flows in ``probe.options``, ``probe.register``, ``probe.message`` and ``probe.call``; exit codes and
options are ``cli``'s.
"""

import enum
import ipaddress
import json
import math
import re
import secrets
import ssl
from dataclasses import dataclass
from typing import List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.sip.digest import redact
from sipflow.sip.message import parse_uri
from sipflow.sip.transaction import MAGIC_COOKIE

DEFAULT_PORT = 5060        # no NAPTR/SRV lookups yet (RFC 3263): the URI's port or 5060
DEFAULT_TLS_PORT = 5061    # RFC 3261 §19.1.2: sips: and transport=tls
DEFAULT_WS_PORTS = {"ws": 80, "wss": 443}   # RFC 7118 names none: a ws:// or wss:// URL's own defaults
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
RELIABLE = ("tcp", "tls", "ws", "wss")
DEFAULT_TIMEOUT = 10.0     # the run ends this long after the last probe is sent, unless --timeout says


# ---------------------------------------------------------------------------------------------------
# Values: the target, what counts as up, Nagios ranges


@dataclass(frozen=True)
class Target:
    """Where the probe goes: the Request-URI as the user wrote it, and the host, port and transport."""
    uri: str
    host: str
    port: int
    transport: str   # "udp", "tcp", "tls", "ws" or "wss"
    path: str = "/"  # WebSocket: the HTTP request target of the upgrade

    @property
    def scheme(self) -> str:
        return self.uri.split(":", 1)[0].lower()


def contact_params(transport: str) -> str:
    """The Contact URI parameters naming our transport (none for UDP, the default). Over WebSocket,
    ``;ob`` as SIP.js sends it (RFC 5626: we keep the connection; requests for us come back on it)."""
    if transport in ("ws", "wss"):
        return ";transport=ws;ob"      # RFC 7118 §5.2: "ws" for both, as browsers write it
    return f";transport={transport}" if transport in ("tcp", "tls") else ""


def default_port(transport: str) -> int:
    return DEFAULT_WS_PORTS.get(transport) or (DEFAULT_TLS_PORT if transport == "tls" else DEFAULT_PORT)


_WS_URL = re.compile(r"(?i)(wss?)://(\[[^\]]*\]|[^/:?#\s]+)(?::(\d+))?(/[^?#\s]*)?$")


def parse_ws_url(text: str) -> Target:
    """``ws://host[:port][/path]`` or ``wss://...``: a WebSocket SIP server (RFC 7118), the way web
    phones are configured. The Request-URI becomes ``sip:host[:port];transport=ws|wss``."""
    m = _WS_URL.match(text.strip())
    if not m:
        raise ProbeError(f"{text!r} is not a ws:// or wss:// URL (ws://host[:port][/path])")
    transport, host, port, path = m.group(1).lower(), m.group(2), m.group(3), m.group(4) or "/"
    bare = host[1:-1] if host.startswith("[") else host
    if host.startswith("[") and not is_ip(bare):
        raise ProbeError(f"{text!r}: only an IPv6 address goes in brackets")
    if port is not None and not 0 < int(port) < 65536:
        raise ProbeError(f"bad port in {text!r}")
    uri = f"sip:{host}" + (f":{port}" if port else "") + f";transport={transport}"
    return Target(uri=uri, host=bare.lower(), port=int(port) if port else DEFAULT_WS_PORTS[transport],
                  transport=transport, path=path)


@dataclass(frozen=True)
class TlsOptions:
    """How a TLS (or wss) channel checks the server: against the system CA store by default, against
    ``ca`` (a PEM file of CA certificates) when given, not at all with ``insecure``. The name checked
    (and sent as SNI) is the target's host. ``keylog`` appends the session secrets to that file in the
    NSS key log format, so Wireshark can decrypt the probe's own traffic (``SSLKEYLOGFILE`` in the
    environment does the same: Python's default context reads it)."""
    ca: Optional[str] = None
    insecure: bool = False
    keylog: Optional[str] = None

    def context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
        except (OSError, ssl.SSLError) as e:
            raise ProbeError(f"--ca {self.ca}: cannot load certificates: "
                             f"{getattr(e, 'strerror', None) or getattr(e, 'reason', None) or e}") from None
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.keylog:
            try:
                ctx.keylog_filename = self.keylog
            except OSError as e:
                raise ProbeError(f"--tls-keylog {self.keylog}: {e.strerror}") from None
        return ctx


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def parse_target(text: str) -> Target:
    """``sip:host[:port][;transport=udp|tcp|tls|ws|wss]`` or ``sips:host[:port]`` (TLS); ``sip:`` may be
    left out; IPv6 goes in brackets; ``ws://`` and ``wss://`` URLs name a WebSocket server. TLS defaults
    to port 5061, ws to 80, wss to 443, the others to 5060."""
    text = text.strip()
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else ""
    if scheme in ("ws", "wss"):
        return parse_ws_url(text)
    if scheme == "sips":
        text = "sips:" + text[m.end():]
    elif scheme != "sip":
        if m and not text[m.end():m.end() + 1].isdigit() and not is_ip(text.split(";")[0]):
            raise ProbeError(f"{text!r} is not a sip: URI")
        text = "sip:" + text   # "host", "host:5060", "[::1]:5060"
    if re.search(r"[\s<>\"?]", text):
        raise ProbeError(f"{text!r}: spaces, <>, quotes and ?headers are not allowed in the target")
    hostport = text.split(":", 1)[1].split(";")[0].rpartition("@")[2]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        if ":" not in host or not is_ip(host):
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
    if scheme == "sips" and transport == "ws":
        transport = "wss"   # RFC 7118 §7: sips: over WebSocket means a secure WebSocket
    if transport not in TRANSPORTS:
        raise ProbeError(f"transport={transport} is not supported (udp, tcp, tls, ws or wss)")
    if scheme == "sips" and transport not in ("tls", "wss"):
        raise ProbeError(f"{text!r}: a sips: URI is reached over TLS only")
    port = default_port(transport)
    if tail:
        if not (tail.startswith(":") and tail[1:].isdigit() and 0 < int(tail[1:]) < 65536):
            raise ProbeError(f"bad port in {text!r}")
        port = int(tail[1:])
    return Target(uri=text, host=host.lower(), port=port, transport=transport)


def is_ip(text: str) -> bool:
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
# Requests: addresses and branches


def uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def new_branch() -> str:
    """A fresh branch with the magic cookie (§8.1.1.7), random enough to be unique in space and time."""
    return MAGIC_COOKIE + secrets.token_hex(10)

# ---------------------------------------------------------------------------------------------------
# How a probe ends


class Outcome(enum.Enum):
    UP = "up"                    # a final response that --expect counts as up
    UNEXPECTED = "unexpected"    # a final response --expect does not name
    TIMEOUT = "timeout"          # no final response: Timer F, or --timeout ended the run first
    REFUSED = "refused"          # nothing listens there: ICMP port unreachable, TCP reset on connect
    UNREACHABLE = "unreachable"  # ICMP host or network unreachable, no route
    ERROR = "error"              # another transport failure: connection reset or closed, send failed
    AUTH_FAILURE = "auth failure"  # probe register: the credentials were rejected (or could not be made)


@dataclass(frozen=True, kw_only=True)
class Result:
    """What every probe's result says: where it went, how it ended and its set-up times; each probe's
    result adds its own. Times are seconds from a monotonic clock, rounded to microseconds."""
    target: str
    transport: str
    remote: str                          # ip:port of the first hop
    local: str                           # ip:port we sent from ("" when no link could be opened)
    outcome: enum.Enum                   # an Outcome (a CallOutcome for a call)
    status: Optional[int] = None         # the final response that decided
    reason: Optional[str] = None         # its reason phrase, or what went wrong
    first_response: Optional[float] = None
    elapsed: Optional[float] = None      # the whole run (or probe), whatever ended it
    connect: Optional[float] = None      # TCP (and TLS) set-up, when this run opened the link
    handshake: Optional[float] = None    # WebSocket: the HTTP upgrade, when this run opened the link
    upgrade_status: Optional[int] = None   # WebSocket: the HTTP status of a refused upgrade
    retransmissions: int = 0
    server: Optional[str] = None         # the responder's Server (or User-Agent) header
    seen_as: Optional[str] = None        # our address as the server saw it (Via received/rport)
    call_id: Optional[str] = None
    proxy: Optional[str] = None

    @property
    def up(self) -> bool:
        return self.outcome is Outcome.UP

    # What the CLI's exit-code mapping reads (the same as a ProbeRun's).
    @property
    def results(self) -> Tuple["Result", ...]:
        return (self,)

    @property
    def first_failure(self) -> Optional["Result"]:
        return None if self.up else self

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def to_us(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 6)


@dataclass(frozen=True)
class Failure:
    """Why a link could not carry the probe: the outcome, what to tell the user and, when a WebSocket
    server refused the HTTP upgrade, its status code."""
    outcome: Outcome
    reason: str
    upgrade_status: Optional[int] = None


# ---------------------------------------------------------------------------------------------------
# Where requests go: the target, or an outbound proxy in front of it


def route_for(proxy: Optional[str]) -> Optional[str]:
    """§8.1.2: an outbound proxy is the route set's one loose-routing entry."""
    if not proxy:
        return None
    uri = parse_target(proxy).uri
    return uri if parse_uri(uri).param("lr") is not None else uri + ";lr"


def first_hop(target: Target, proxy: Optional[str]) -> Target:
    """Where the packets go: the target itself, or the outbound proxy, on the proxy's own transport
    when it names one and on the target's when it does not."""
    if not proxy:
        return target
    hop = parse_target(proxy)
    if parse_uri(hop.uri).param("transport") is None and hop.transport != target.transport \
            and not proxy.strip().lower().startswith(("ws:", "wss:")):
        hop = Target(uri=hop.uri, host=hop.host, port=hop.port, transport=target.transport, path=hop.path)
    return hop


def hop_of(uri: str, transport: str) -> Target:
    """The next hop a dialog's route set or remote target names (§8.1.2, §12.2.1.1): its host, port and
    transport (``transport`` when it names none, or none we speak)."""
    u = parse_uri(uri)
    kind = (u.param("transport") or transport).lower()
    if u.scheme == "sips":
        kind = "wss" if kind in ("ws", "wss") else "tls"
    if kind not in TRANSPORTS:
        kind = transport
    if kind == "ws" and transport == "wss":
        kind = "wss"   # browsers and proxies write ;transport=ws for both
    return Target(uri=uri, host=(u.host or "").lower(), port=u.port or default_port(kind), transport=kind)


# ---------------------------------------------------------------------------------------------------
# --bind


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
    if port is None or not port.isdigit() or int(port) > 65535 or not is_ip(host):
        raise ProbeError(f"--bind {text!r}: expected ip, ip:port or [ipv6]:port")
    return host, int(port)


# ---------------------------------------------------------------------------------------------------
# Format helpers shared by the probes


def ms_text(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


class NagiosState(enum.IntEnum):
    """Plugin return codes (Nagios plugin development guidelines)."""
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def prometheus_text(rows) -> str:
    """The text exposition format for node_exporter's textfile collector: gauges without timestamps.
    ``rows`` is ``[(name, help, [(labels, value), ...]), ...]``; NaN for a value that does not exist."""
    out = []
    for name, help_text, samples in rows:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in samples:
            text = "NaN" if isinstance(value, float) and math.isnan(value) else (
                f"{value:.6f}" if isinstance(value, float) else str(value))
            out.append(f"{name}{labels} {text}")
    return "\n".join(out) + "\n"


def closing_lines(r: Result, phases) -> List[str]:
    """The lines every probe's text ends with: its timings, retransmissions, who answered and where
    the server saw us."""
    lines = []
    shown = [f"{k.replace('_', ' ')} {ms_text(getattr(r, k))}" for k in phases if getattr(r, k) is not None]
    if shown:
        lines.append("timings: " + ", ".join(shown))
    if r.retransmissions:
        lines.append(f"retransmissions: {r.retransmissions}")
    lines += [f"{name}: {value}" for name, value in (("Server", r.server), ("Seen as", r.seen_as)) if value]
    return lines


def thresholds(state: "NagiosState", what: str, value: Optional[float], warning: Optional[NagiosRange],
               critical: Optional[NagiosRange]) -> Tuple["NagiosState", str]:
    """-w/-c applied to ``value`` (seconds): CRITICAL before WARNING, each saying which range it broke."""
    if value is not None and critical and critical.alerts(value):
        return NagiosState.CRITICAL, what + f" (critical {critical.text})"
    if value is not None and warning and warning.alerts(value):
        return NagiosState.WARNING, what + f" (warning {warning.text})"
    return state, what


def failure_text(r: Result) -> str:
    """What a CRITICAL line says of a run that did not end well."""
    return f"{r.outcome.value}: {r.reason} ({r.transport} {r.remote})"


def phases_perf(r: Result, name: str, warning: Optional[NagiosRange], critical: Optional[NagiosRange],
                phases, keep_missing: bool = False) -> List[str]:
    """Perfdata: the thresholded time ``name`` first, then each phase (seconds; "U" for one that did
    not happen, or left out), then the retransmissions."""
    perf = [threshold_perf(name, getattr(r, name), warning, critical)]
    for k in phases:
        v = getattr(r, k)
        if v is not None or keep_missing:
            perf.append(f"'{k}'={perf_value(v)}{'s' if v is not None else ''};;;0;")
    return perf + [f"'retransmissions'={r.retransmissions};;;0;"]


def threshold_perf(name: str, value: Optional[float], warning: Optional[NagiosRange],
                   critical: Optional[NagiosRange]) -> str:
    """The perfdata item the thresholds apply to (with the ranges, as the guidelines ask)."""
    return (f"'{name}'={perf_value(value)}{'s' if value is not None else ''};"
            f"{warning.text if warning else ''};{critical.text if critical else ''};0;")


def nagios_line(state: "NagiosState", what: str, perf) -> Tuple["NagiosState", str]:
    """One plugin line: '|' starts perfdata, so it may not appear in the text, nor may a newline."""
    text = what.replace("|", "/").replace("\n", " ")
    return state, f"SIP {state.name} - {text} | " + " ".join(perf)


def perf_value(v: Optional[float]) -> str:
    return "U" if v is None else f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"


def prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def trace_text(direction: str, data: bytes, password: Optional[str]) -> str:
    """A message for --verbose: who sent it and its text, with the digest response hashes and the
    password redacted."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    head = "--> sent" if direction == ">" else "<-- received"
    return f"{head}\n" + redact(text, [password] if password else [])
