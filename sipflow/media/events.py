"""RFC 4733 telephone-events (DTMF in RTP): the payload, and packets folded into key presses.

Owns the 4-byte event payload (event code, end bit, volume, duration) and ``EventLog``, which turns the
packets of one stream into events the way a receiver does: every packet of one key press carries the same
RTP timestamp (the event's start) and a growing duration, the last three repeat with the end bit set
(RFC 4733 §2.5.1.4), and any of them may be lost. State is one small record per key press, bounded per
stream. Which payload type carries events is the SDP's business (``telephone-event/8000``): the log keeps
what any dynamic payload type sends in this shape, and the join keeps only what the SDP confirms.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

EVENT = struct.Struct("!BBH")       # event code, E/R/volume, duration (RFC 4733 §2.3)
MAX_EVENTS = 1024                   # key presses kept per stream (the rest are counted in ``overflow``)


def rtp_payload(pkt, start: int, end: int) -> Optional[Tuple[int, int]]:
    """(offset, length) of the payload of the RTP packet at ``pkt[start:end]``, past CSRCs and a header
    extension (RFC 3550 §5.3.1) and without padding; None when the header runs past the end."""
    if end - start < 12:
        return None
    b0 = pkt[start]
    off = start + 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if off + 4 > end:
            return None
        off += 4 + 4 * ((pkt[off + 2] << 8) | pkt[off + 3])
    if b0 & 0x20 and end > off:
        end -= pkt[end - 1]
    return (off, end - off) if off <= end else None


class KeyPress:
    """One event as its packets tell it (mutable while packets come; see ``EventLog``)."""
    __slots__ = ("pt", "code", "rtp_ts", "start", "frame", "end_frame", "duration", "volume", "ended", "packets",
                 "file")

    def __init__(self, pt: int, code: int, rtp_ts: int, arrival: float, frame: int, file: int) -> None:
        self.pt, self.code, self.rtp_ts = pt, code, rtp_ts
        self.start, self.frame, self.file = arrival, frame, file
        self.end_frame: Optional[int] = None
        self.duration = 0          # in RTP timestamp units, the largest seen
        self.volume = 0            # dBm0 below zero (0-63)
        self.ended = False
        self.packets = 0


class EventLog:
    """The key presses of one stream, in order of their first packet."""
    __slots__ = ("presses", "by_key", "overflow", "malformed")

    def __init__(self) -> None:
        self.presses: List[KeyPress] = []
        self.by_key: Dict[Tuple[int, int], KeyPress] = {}   # (payload type, RTP timestamp) -> its press
        self.overflow = 0
        self.malformed = 0

    def add(self, pt: int, rtp_ts: int, arrival: float, frame: int, file: int, payload: bytes) -> None:
        """One packet of payload type ``pt`` (its payload only). A payload that is not a whole number of
        4-byte events is counted as malformed (it is not telephone-event, or it is damaged)."""
        if len(payload) < 4 or len(payload) % 4:
            self.malformed += 1
            return
        code, flags, duration = EVENT.unpack_from(payload, 0)
        key = (pt, rtp_ts)
        press = self.by_key.get(key)
        if press is None:
            if len(self.presses) >= MAX_EVENTS:
                self.overflow += 1
                return
            press = self.by_key[key] = KeyPress(pt, code, rtp_ts, arrival, frame, file)
            self.presses.append(press)
        press.packets += 1
        if duration > press.duration:
            press.duration = duration
        press.volume = flags & 0x3F
        if flags & 0x80 and not press.ended:
            press.ended = True
            press.end_frame = frame
