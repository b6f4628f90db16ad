"""Link layers: the one table of link types sipflow reads.

Owns ``LINK_TYPES``: for each pcap/pcapng link type, its name, the length of its fixed header and where
its protocol (ethertype) field sits. Every reader takes its facts from here: ``capture`` refuses link
types that are not in it, ``net.decoder`` dispatches on ``kind``, and the analyzer's hot paths take the
header length and ethertype offset for the link types marked ``fast``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class LinkType:
    code: int
    name: str
    kind: str                    # ethernet | cooked | ip | loopback | upper_pdu | upper_pdu_tls | hep
    header: int                  # bytes before the network layer (Ethernet: without VLAN tags)
    ethertype_at: Optional[int]  # offset of the ethertype / protocol field; None when there is none
    fast: bool = True            # the hot paths decode plain IPv4/IPv6 + UDP frames of this type
    big_endian_family: bool = False  # loopback: the address family is in network byte order
    internal: bool = False       # sipflow's own, for records that come from no file (never read from one)


# Records from a HEP listener (capture.hep): the data is one HEP packet, as a collector received it.
# A number outside the registered link types (and the user range 147-162), never accepted in a file.
HEP_PAYLOAD = 65000
UPPER_PDU = 252           # Wireshark's upper-PDU link type: what tshark -U writes
# Upper-PDU records tshark exported from TLS sessions it decrypted (capture.tshark reads such an
# export as this type, so the decoder knows the messages came over TLS: the tags do not say).
UPPER_PDU_TLS = 65001


LINK_TYPES: Dict[int, LinkType] = {lt.code: lt for lt in (
    LinkType(0, "BSD loopback", "loopback", 4, None, fast=False),
    LinkType(1, "Ethernet", "ethernet", 14, 12),
    LinkType(12, "raw IP", "ip", 0, None),
    LinkType(14, "raw IP", "ip", 0, None),
    LinkType(101, "raw IP", "ip", 0, None),
    LinkType(108, "OpenBSD loopback", "loopback", 4, None, fast=False, big_endian_family=True),
    LinkType(113, "Linux cooked (SLL)", "cooked", 16, 14),
    LinkType(228, "raw IPv4", "ip", 0, None),
    LinkType(229, "raw IPv6", "ip", 0, None, fast=False),
    LinkType(UPPER_PDU, "Wireshark upper PDU", "upper_pdu", 0, None, fast=False),
    LinkType(276, "Linux cooked v2 (SLL2)", "cooked", 20, 0),
    LinkType(HEP_PAYLOAD, "HEP packet", "hep", 0, None, fast=False, internal=True),
    LinkType(UPPER_PDU_TLS, "Wireshark upper PDU, decrypted TLS", "upper_pdu_tls", 0, None, fast=False,
             internal=True),
)}


def supported_names() -> str:
    """The readable link types, for an error message."""
    return ", ".join(sorted({lt.name for lt in LINK_TYPES.values() if not lt.internal}))
