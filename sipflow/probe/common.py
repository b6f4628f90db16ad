"""What every probe shares: the target and its TLS options, what counts as up, how a probe ends, the
socket channel that carries requests, and the helpers the result formats share.

Owns ``parse_target`` (sip:/sips:/tel-free SIP URIs, transports, refused destinations), ``Expect`` and
Nagios ranges, ``Outcome``, ``resolve_target`` and ``Channel`` (UDP, TCP, TLS sockets with framing of
what comes back), and the small format helpers. The probes themselves are ``probe.options``,
``probe.register`` and ``probe.call``; exit codes and options are ``cli``'s.
"""

import enum
import errno
import ipaddress
import math
import re
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.sip.digest import redact
from sipflow.sip.framing import frame_stream
from sipflow.sip.message import parse_uri
from sipflow.probe.recorder import record as _pcap_record
from sipflow.probe.transaction import MAGIC_COOKIE

DEFAULT_PORT = 5060        # no NAPTR/SRV lookups yet (RFC 3263): the URI's port or 5060
DEFAULT_TLS_PORT = 5061    # RFC 3261 §19.1.2: sips: and transport=tls
TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_TIMEOUT = 10.0     # the run ends this long after the last probe is sent, unless --timeout says


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
def route_for(proxy: Optional[str]) -> Optional[str]:
    """§8.1.2: an outbound proxy is the route set's one loose-routing entry."""
    if not proxy:
        return None
    uri = parse_target(proxy).uri
    return uri if parse_uri(uri).param("lr") is not None else uri + ";lr"



# ---------------------------------------------------------------------------------------------------
# Sockets: resolving the target, and the channel around one connection


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
