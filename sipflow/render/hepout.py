"""SIP messages as HEP v3 packets for a collector such as HOMER (``--hep-send``, ``sipflow hep-send``).

Owns what sipflow tells a collector about a message: its bytes as received (after reassembly), the
addresses, ports and transport it travelled with, its capture time, protocol type 1 (SIP), the
Call-ID as correlation id, and the agent's capture id, password and node name. A message too big for
one HEP packet (over 64 KiB) is left out and counted.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Tuple

from sipflow.net import hep

IP_PROTO = {"udp": 17, "tcp": 6, "tls": 6, "ws": 6, "wss": 6, "sctp": 132, "hep": 17}


def message_packets(messages: Iterable, capture_id: Optional[int] = None, password: Optional[str] = None,
                    node: Optional[str] = None) -> Iterator[Tuple[object, Optional[bytes]]]:
    """(message, its HEP packet or None when it cannot be one) for each message with its bytes."""
    for e in messages:
        raw = e.raw
        if not raw:
            continue
        sec = int(e.ts)
        usec = min(999_999, round((e.ts - sec) * 1e6))
        try:
            yield e, hep.encode(hep.HepPacket(e.src, e.dst, e.sport, e.dport, raw, IP_PROTO.get(e.transport, 17),
                                              sec, usec, hep.PROTO_SIP, capture_id, e.call_id, node, password))
        except (hep.HepError, OSError, ValueError):
            yield e, None
