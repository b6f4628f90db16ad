"""The probe's sockets: resolving a hop, and the channel around one connection to it (UDP, TCP, TLS,
and SIP over WebSocket, RFC 7118, plain or secure).

Owns ``resolve_target``, ``Channel`` (connect, TLS handshake, the WebSocket upgrade, sending and
framing what comes back into whole SIP messages) and ``describe_failure`` (what a socket error means
for a probe). The WebSocket protocol itself (the HTTP upgrade, masked client frames, ping, close) is
``wsproto``'s, imported only here and only for a ws/wss hop. Which channel carries which request is
``probe.driver``'s; the flows never see a socket.
"""
from __future__ import annotations

import errno
import secrets
import socket
import ssl
import threading
from typing import List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.probe.common import RELIABLE, Failure, Outcome, Target, TlsOptions, check_destination, is_ip, uri_host
from sipflow.sip.framing import StreamFramer

WS_SUBPROTOCOL = "sip"    # RFC 7118 §4.1: Sec-WebSocket-Protocol: sip
MAX_REFUSAL_BODY = 300    # characters of a refused upgrade's body shown to the user


class TlsHandshakeTimeout(TimeoutError):
    """The TCP connection was made, but the TLS handshake did not finish before --timeout."""


class UpgradeTimeout(TimeoutError):
    """The connection was made, but the WebSocket upgrade was not answered before --timeout."""


class UpgradeRefused(OSError):
    """The server answered the WebSocket upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"WebSocket upgrade refused: HTTP {status} {reason}".rstrip()
                         + (f": {body}" if body else ""))
        self.status, self.reason, self.body = status, reason, body


def describe_failure(err: BaseException) -> Failure:
    """What a socket error means for the probe."""
    if isinstance(err, UpgradeRefused):
        return Failure(Outcome.ERROR, str(err), upgrade_status=err.status)
    if isinstance(err, UpgradeTimeout):
        return Failure(Outcome.TIMEOUT, "no answer to the WebSocket upgrade before --timeout")
    if isinstance(err, TlsHandshakeTimeout):
        return Failure(Outcome.TIMEOUT, "no TLS handshake before --timeout")
    if isinstance(err, ssl.SSLCertVerificationError):
        return Failure(Outcome.ERROR, f"TLS certificate verify failed: {err.verify_message or err.reason or err}")
    if isinstance(err, ssl.SSLError):
        return Failure(Outcome.ERROR, f"TLS error: {err.reason or err}")
    if isinstance(err, ConnectionRefusedError):
        return Failure(Outcome.REFUSED, "connection refused")
    if isinstance(err, (socket.timeout, TimeoutError)):
        return Failure(Outcome.TIMEOUT, "no TCP connection before --timeout")
    if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                                                  errno.ENETDOWN, errno.EADDRNOTAVAIL):
        return Failure(Outcome.UNREACHABLE, err.strerror or "unreachable")
    if isinstance(err, OSError):
        return Failure(Outcome.ERROR, err.strerror or str(err))
    return Failure(Outcome.ERROR, str(err))


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

    if is_ip(target.host):
        lookup()
    else:  # a name: DNS may hang, and --timeout bounds the whole run
        t = threading.Thread(target=lookup, daemon=True)
        t.start()
        t.join(max(0.0, limit))
    if not found:
        raise ProbeError(f"could not resolve {target.host} within --timeout")
    if isinstance(found[0], BaseException):
        err = found[0]
        if is_ip(target.host) and fam != socket.AF_UNSPEC:
            raise ProbeError(f"{target.host} is not an IPv{4 if fam == socket.AF_INET else 6} address "
                             "(check -4/-6 and --bind)")
        raise ProbeError(f"cannot resolve {target.host}: {getattr(err, 'strerror', None) or err}")
    af, _, _, _, sockaddr = found[0][0]
    check_destination(sockaddr[0])
    return af, sockaddr


class Channel:
    """One socket to a hop: a connected UDP socket (Linux then reports ICMP port unreachable as
    ECONNREFUSED on it, at once, instead of a silent loss), or one TCP connection, wrapped in TLS for a
    tls or wss hop (handshake before the first message, SNI and certificate name = the hop's host), and
    upgraded to a WebSocket for a ws or wss hop (``Sec-WebSocket-Protocol: sip``; each SIP message is
    one text message in masked frames, RFC 7118 §5).

    ``send``/``receive`` carry whole SIP messages. ``recorder`` (a ``PcapRecorder``) is given what
    crosses the connection: UDP datagrams and TCP/TLS SIP messages as they are, over WebSocket the
    upgrade and the frames (written unmasked, so the capture shows the SIP text and its digest
    responses can be redacted; the wire had them masked)."""

    def __init__(self, target: Target, family: int, remote, bind, limit: float, clock,
                 tls: Optional[TlsOptions] = None, recorder=None) -> None:
        self.transport = target.transport
        self.reliable = target.transport in RELIABLE
        self.websocket = target.transport in ("ws", "wss")
        self.recorder = recorder
        context = (tls or TlsOptions()).context() if target.transport in ("tls", "wss") else None
        self.sock = socket.socket(family, socket.SOCK_STREAM if self.reliable else socket.SOCK_DGRAM)
        self.connect_time: Optional[float] = None
        self.handshake_time: Optional[float] = None
        self.ws = None
        self.framer = StreamFramer()         # SIP messages out of the TCP/TLS byte stream
        self.out = bytearray()
        self.pending_text: List[str] = []   # a WebSocket message arriving in several frames
        self.pending_bytes = bytearray()
        # Via sent-by and Contact host: our address, or over WebSocket a random .invalid host, as
        # browsers send (RFC 7118 §5.2: the client's address is not reachable for new connections).
        self.invalid_host = f"{secrets.token_hex(6)}.invalid"
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
                self.local: Tuple[str, int] = self.sock.getsockname()[:2]
                self.peer = self.sock.getpeername()[:2]
                if self.websocket:
                    t1 = clock()
                    self.sock.settimeout(max(0.001, limit - (clock() - t0)))
                    self._upgrade(target)
                    self.handshake_time = clock() - t1
            else:
                self.sock.connect(remote)
            self.sock.setblocking(False)
            self.local = self.sock.getsockname()[:2]
            self.peer = self.sock.getpeername()[:2]
        except PermissionError:
            self.sock.close()
            raise ProbeError(f"sending to {remote[0]} is not permitted (a broadcast address, or a local "
                             "firewall)") from None
        except BaseException:
            self.sock.close()
            raise

    @property
    def sent_by(self) -> str:
        """What our Via says we are (and Contact's host part)."""
        if self.websocket:
            return self.invalid_host
        return f"{uri_host(self.local[0])}:{self.local[1]}"

    # -- the WebSocket upgrade ----------------------------------------------------------------------

    def _upgrade(self, target: Target) -> None:
        """RFC 6455 §4 with RFC 7118's subprotocol, blocking (bounded by the socket's timeout). A
        status other than 101 raises ``UpgradeRefused`` with the status and the start of the body."""
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
        self.ws = WSConnection(ConnectionType.CLIENT)
        default = {"ws": 80, "wss": 443}[self.transport]
        host = uri_host(target.host) + ("" if target.port == default else f":{target.port}")
        hello = self.ws.send(Request(host=host, target=target.path, subprotocols=[WS_SUBPROTOCOL],
                                     extra_headers=[(b"User-Agent", b"sipflow")]))
        self._record(True, hello)
        self.sock.sendall(hello)
        refused: Optional[RejectConnection] = None
        body = bytearray()
        head = bytearray()
        try:
            while True:
                data = self.sock.recv(65536)
                self._record(False, data)
                if refused is None:
                    head += data
                self.ws.receive_data(data or None)
                for event in self.ws.events():
                    if isinstance(event, AcceptConnection):
                        if event.subprotocol != WS_SUBPROTOCOL:
                            raise UpgradeRefused(101, "Switching Protocols",
                                                 f"the server did not accept the {WS_SUBPROTOCOL!r} subprotocol")
                        return
                    if isinstance(event, RejectConnection):
                        refused = event
                        if not event.has_body:
                            raise self._refusal(event.status_code, head, body)
                    elif isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished or len(body) > 4 * MAX_REFUSAL_BODY:
                            raise self._refusal(refused.status_code, head, body)
                if not data:
                    if refused is not None:
                        raise self._refusal(refused.status_code, head, body)
                    raise EOFError("connection closed by the server during the WebSocket upgrade")
        except socket.timeout:
            if refused is not None:
                raise self._refusal(refused.status_code, head, body) from None
            raise UpgradeTimeout("no answer to the WebSocket upgrade before --timeout") from None

    @staticmethod
    def _refusal(status: int, head: bytes, body: bytes) -> UpgradeRefused:
        first = bytes(head).split(b"\r\n", 1)[0].decode("latin-1", "replace")
        reason = first.split(" ", 2)[2] if first.count(" ") >= 2 else ""
        text = " ".join(bytes(body).decode("utf-8", "replace").split())
        if len(text) > MAX_REFUSAL_BODY:
            text = text[:MAX_REFUSAL_BODY] + "..."
        return UpgradeRefused(status, reason, text)

    # -- sending ------------------------------------------------------------------------------------

    def _record(self, outgoing: bool, data: bytes) -> None:
        if self.recorder is not None and data:
            (self.recorder.tcp if self.reliable else self.recorder.udp)(outgoing, self.local, self.peer, data)

    def send(self, data: bytes) -> None:
        if not self.reliable:
            self._record(True, data)
            try:
                self.sock.send(data)
            except BlockingIOError:
                pass  # a full socket buffer is a lost datagram: Timer E retransmits it
            return
        if self.ws is not None:
            from wsproto.events import BytesMessage, TextMessage
            from wsproto.frame_protocol import FrameProtocol
            try:
                text = data.decode("utf-8")
                event, opcode_text = TextMessage(data=text), True
            except UnicodeDecodeError:
                event, opcode_text = BytesMessage(data=data), False
            if self.recorder is not None:   # as the server would see it, but not masked (see the class)
                plain = FrameProtocol(client=False, extensions=[])
                self._record(True, plain.send_data(text if opcode_text else data, fin=True))
            self.out += self.ws.send(event)
        else:
            self._record(True, data)
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

    # -- receiving ----------------------------------------------------------------------------------

    def receive(self) -> List[bytes]:
        """Every whole message now readable. Raises OSError (e.g. ECONNREFUSED) or EOFError."""
        if not self.reliable:
            out = []
            while True:
                try:
                    out.append(self.sock.recv(65535))
                except BlockingIOError:
                    for data in out:
                        self._record(False, data)
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
        if self.ws is not None:
            self._record(False, data)
            return self._ws_messages(data)
        if not data:
            raise EOFError("connection closed by the server")
        out = [msg for msg, _ in self.framer.feed(data, 0)]   # the analyzer's framing (§18.3)
        for msg in out:
            self._record(False, msg)
        return out

    def _ws_messages(self, data: bytes) -> List[bytes]:
        """The SIP messages whole WebSocket messages carry (RFC 7118 §5.1: one per message); a ping
        is answered, a close is answered and ends the channel."""
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
        self.ws.receive_data(data or None)
        out = []
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.pending_text.append(event.data)
                if event.message_finished:
                    out.append("".join(self.pending_text).encode("utf-8"))
                    self.pending_text = []
            elif isinstance(event, BytesMessage):
                self.pending_bytes += event.data
                if event.message_finished:
                    out.append(bytes(self.pending_bytes))
                    self.pending_bytes = bytearray()
            elif isinstance(event, Ping):
                self.out += self.ws.send(event.response())
                self.flush()
            elif isinstance(event, CloseConnection):
                try:
                    self.out += self.ws.send(event.response())
                    self.flush()
                except Exception:   # noqa: BLE001 - a close we cannot answer is still a close
                    pass
                raise EOFError(f"WebSocket closed by the server (code {event.code}"
                               + (f", {event.reason}" if event.reason else "") + ")")
        if not data:
            raise EOFError("connection closed by the server")
        return out

    def close(self) -> None:
        if self.ws is not None:
            try:
                from wsproto.events import CloseConnection
                from wsproto.frame_protocol import FrameProtocol
                self.sock.send(self.ws.send(CloseConnection(code=1000)))
                if self.recorder is not None:
                    self._record(True, FrameProtocol(client=False, extensions=[]).close(code=1000))
            except Exception:   # noqa: BLE001 - closing is best effort
                pass
        self.sock.close()
