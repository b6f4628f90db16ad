"""Addresses and the datagram value that the network layers hand on.

Owns ``Datagram`` (a transport payload with where and when it was seen), the text form of an endpoint
and the address helpers the layers above share (private ranges, address bytes to text and back).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple


@dataclass(frozen=True)
class Datagram:
    """A transport payload with where it came from. For TCP and WebSocket it is a piece of an in-order
    byte stream (``payload`` None means "bytes were lost here": the consumer must resynchronise)."""
    __slots__ = ("ts", "file", "frame", "src", "sport", "dst", "dport", "transport", "payload", "frames")
    ts: float
    file: int
    frame: int
    src: str
    sport: int
    dst: str
    dport: int
    transport: str          # udp | tcp | sctp | ws | hep
    payload: Optional[bytes]
    frames: Tuple[int, ...]  # every frame that carried part of the payload


def fmt_endpoint(ip: str, port: int) -> str:
    """``ip:port``, or ``[ipv6]:port`` as in the JSON output and the SIP URI syntax."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


ntop4 = socket.inet_ntoa


def ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


def pack_ip(ip: str) -> bytes:
    """Text address to its 4 or 16 bytes (the form flow keys are built from)."""
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def unpack_ip(b: bytes) -> str:
    return ntop6(b) if len(b) == 16 else ntop4(b)


_PRIVATE_NETS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")]


@lru_cache(maxsize=4096)
def is_private(ip: str) -> bool:
    """RFC 1918 / RFC 6598 / ULA address: the kind a NAT rewrites."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a in n for n in _PRIVATE_NETS)
