"""HEP sockets: packets that capture agents (Kamailio's siptrace, FreeSWITCH, Asterisk, heplify) send to a
collector, received here as records (``sipflow live --hep-listen udp:127.0.0.1:9060``), and packets
sipflow sends to a collector such as HOMER (``HepSender``: ``--hep-send``, ``sipflow hep-send``).

Owns the sockets (the packet format is ``net.hep``'s): a UDP socket takes one HEP packet per datagram; a
TCP listener accepts agents and cuts their byte streams into HEP v3 packets by the length in each
header. Each packet leaves as a record like the files' and the interface's: ``(ts, file_index, frame,
HEP_PAYLOAD, buf, 0, len)``, with the time it arrived (``net.decoder`` takes the agent's own capture
time from the HEP header). What the packet carries is decoded by ``net.decoder`` like HEP found in a
capture file.
"""
from __future__ import annotations

import select
import socket
import struct
import time
from typing import Dict, List, Tuple

from sipflow.errors import CaptureError
from sipflow.net.link import HEP_PAYLOAD

MAX_HEP = 65535          # a HEP v3 packet's length is 16 bits
MAX_AGENTS = 64          # TCP agents connected at once
MAX_READS = 512          # datagrams taken per read() at most


def parse_spec(spec: str) -> Tuple[str, str, int]:
    """``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (IPv6 host in brackets) -> (transport, host, port);
    ValueError with the reason otherwise."""
    proto, sep, rest = spec.partition(":")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or proto not in ("udp", "tcp"):
        raise ValueError(f"{spec!r}: give udp:HOST:PORT or tcp:HOST:PORT, e.g. udp:127.0.0.1:9060")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r}: the port must be 1-65535")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{spec!r}: give the address to listen on, e.g. udp:127.0.0.1:9060")
    return proto, host, int(port)


class HepListener:
    """Listens at construction; ``read(timeout)`` returns the HEP packets that arrived (waiting up to
    ``timeout`` seconds for the first); ``close()``."""

    def __init__(self, spec: str, file_index: int = 1) -> None:
        self.spec = spec
        self.proto, host, port = parse_spec(spec)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if self.proto == "udp" else socket.SOCK_STREAM
        self._sock = socket.socket(family, kind)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            if self.proto == "tcp":
                self._sock.listen(16)
        except OSError as e:
            self._sock.close()
            raise CaptureError(f"cannot listen for HEP on {spec}: {e.strerror}") from None
        self._sock.setblocking(False)
        self._agents: Dict[socket.socket, bytearray] = {}
        self.file_index = file_index
        self.frames = 0
        self.malformed = 0        # TCP bytes that were not a HEP v3 packet (the agent is dropped)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _record(self, data: bytes) -> tuple:
        self.frames += 1
        return (time.time(), self.file_index, self.frames, HEP_PAYLOAD, data, 0, len(data))

    def read(self, timeout: float = 0.0) -> List[tuple]:
        ready, _, _ = select.select([self._sock, *self._agents], [], [], timeout)
        out: List[tuple] = []
        for s in ready:
            if s is self._sock and self.proto == "udp":
                for _ in range(MAX_READS):
                    try:
                        data = self._sock.recv(MAX_HEP)
                    except BlockingIOError:
                        break
                    out.append(self._record(data))
            elif s is self._sock:
                try:
                    agent, _ = self._sock.accept()
                except BlockingIOError:
                    continue
                if len(self._agents) >= MAX_AGENTS:
                    agent.close()
                    continue
                agent.setblocking(False)
                self._agents[agent] = bytearray()
            else:
                self._from_agent(s, out)
        return out

    def _from_agent(self, agent: socket.socket, out: List[tuple]) -> None:
        try:
            data = agent.recv(MAX_HEP)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf = self._agents[agent]
        if not data:
            del self._agents[agent]
            agent.close()
            return
        buf += data
        while len(buf) >= 6:
            if buf[:4] != b"HEP3":
                self.malformed += len(buf)      # not HEP v3 framing: nothing to resynchronise on
                del self._agents[agent]
                agent.close()
                return
            length = struct.unpack_from("!H", buf, 4)[0]
            if length < 6:
                self.malformed += len(buf)
                del self._agents[agent]
                agent.close()
                return
            if len(buf) < length:
                return
            out.append(self._record(bytes(buf[:length])))
            del buf[:length]

    def close(self) -> None:
        for agent in self._agents:
            agent.close()
        self._agents.clear()
        self._sock.close()


class HepSender:
    """Sends HEP packets to a collector (``udp:HOST:PORT`` or ``tcp:HOST:PORT``), as an agent does.
    Counts what it sent and what it could not (a collector that went away over TCP)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.proto, host, port = parse_spec(spec)
        self.address = (host, port)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM if self.proto == "udp" else socket.SOCK_STREAM)
        if self.proto == "tcp":
            self._sock.settimeout(5.0)
            try:
                self._sock.connect(self.address)
            except OSError as e:
                self._sock.close()
                raise CaptureError(f"cannot reach the HEP collector at {spec}: {e.strerror or e}") from None
        self.sent = 0
        self.failed = 0

    def send(self, packet: bytes) -> None:
        try:
            if self.proto == "udp":
                self._sock.sendto(packet, self.address)
            else:
                self._sock.sendall(packet)
            self.sent += 1
        except OSError:
            self.failed += 1

    def close(self) -> None:
        self._sock.close()
