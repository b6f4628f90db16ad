"""RTP and RTCP on the wire (RFC 3550 §5.1, RFC 5761 §4): the one header parser, its writer, the one
RTCP rule.

Owns the fixed 12-byte RTP header as a value (``RtpHeader.parse`` and its exact inverse ``serialize``)
and the test that tells RTCP from RTP when both share a port. The analyzer's hot paths unpack the same
fields with ``HEADER`` (or the same layout on arrays) and apply ``RTCP_FIRST``/``RTCP_LAST`` as ``is_rtcp``
does; nothing else decides what RTCP is. Statistics are ``media.stats``'s.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

VERSION = 2
HEADER = struct.Struct("!BBHII")   # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
HEADER_LEN = HEADER.size
# RFC 5761 §4: the second byte of an RTCP packet (its packet type, 192-223 in practice SR=200 to
# APP=204 and the feedback types 205/206) collides with RTP's marker bit + payload types 64-95, which
# RTP must therefore not use when multiplexed. A value in this range is RTCP.
RTCP_FIRST, RTCP_LAST = 192, 223


# UDP ports of protocols whose packets can pass for RTP (first bits 10, twelve bytes or more): DNS,
# DHCP, TFTP, NTP, NetBIOS, SNMP, IKE, syslog, RIP, SSDP, IPsec NAT-T, mDNS, LLMNR. A flow on one of
# them is never taken for RTP unless an SDP announced it.
NOT_RTP_PORTS = frozenset((53, 67, 68, 69, 123, 137, 138, 161, 162, 500, 514, 520, 1900, 4500, 5353, 5355))


def is_rtcp(second_byte: int) -> bool:
    """Whether a packet whose second byte is this is RTCP (RFC 5761 §4)."""
    return RTCP_FIRST <= second_byte <= RTCP_LAST


def looks_like_rtp(data) -> bool:
    """Version 2 and long enough for the fixed header: the cheapest test (RTCP passes it too)."""
    return len(data) >= HEADER_LEN and data[0] & 0xC0 == 0x80


@dataclass(frozen=True)
class RtpHeader:
    """The fixed RTP header. CSRCs and header extensions are not kept (statistics do not need them)."""
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    padding: bool = False
    extension: bool = False
    csrc_count: int = 0
    version: int = VERSION

    @classmethod
    def parse(cls, data) -> Optional["RtpHeader"]:
        """The header at the start of ``data``, or None when it is too short or not version 2."""
        if not looks_like_rtp(data):
            return None
        b0, b1, seq, ts, ssrc = HEADER.unpack_from(data, 0)
        return cls(b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F,
                   b0 >> 6)

    def serialize(self) -> bytes:
        b0 = (self.version << 6) | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) \
            | (self.csrc_count & 0x0F)
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        return HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)

    __bytes__ = serialize


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    """A whole RTP packet: header plus payload (what the probe sends)."""
    return RtpHeader(pt, seq, ts, ssrc, marker).serialize() + payload
