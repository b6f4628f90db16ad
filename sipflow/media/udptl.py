"""T.38 fax over UDPTL (ITU-T T.38 §9.1 and Annex A): what a packet says, and a fax flow's figures.

Owns the head of a UDPTL packet (its 16-bit sequence number and the primary IFP packet's type: a T.30
indicator such as CNG, CED or a modem training, or data of a modulation such as V.21 or V.29 at 9600
bit/s) and ``FaxFlow``, the figures of one direction of a fax: packets, loss and duplicates by the
sequence number, duration, the indicators and modulations seen in order. Only the first byte of the
IFP is read: it is the same in every T.38 version; the fields after it are not (the version is an SDP
attribute). A UDPTL packet is recognised by the SDP (``m=image ... udptl t38``), not by its bytes,
which have no signature: that is the analyzer's part.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

INDICATORS = ("no-signal", "cng", "ced", "v21-preamble", "v27-2400-training", "v27-4800-training",
              "v29-7200-training", "v29-9600-training", "v17-7200-short-training", "v17-7200-long-training",
              "v17-9600-short-training", "v17-9600-long-training", "v17-12000-short-training",
              "v17-12000-long-training", "v17-14400-short-training", "v17-14400-long-training")
MODULATIONS = ("v21", "v27-2400", "v27-4800", "v29-7200", "v29-9600", "v17-7200", "v17-9600", "v17-12000",
               "v17-14400")
MAX_SIGNALS = 32      # distinct indicators and modulations kept per flow, in order of first sight


def parse(data: bytes) -> Optional[Tuple[int, str]]:
    """(sequence number, what the primary IFP packet is: an indicator name or ``data:<modulation>``),
    or None when the bytes cannot be a UDPTL packet (too short, or the IFP length runs past them)."""
    if len(data) < 4:
        return None
    seq = data[0] << 8 | data[1]
    n, at = data[2], 3
    if n & 0x80:     # a two-byte length (PER length determinant)
        if n & 0x40:
            return None
        n, at = (n & 0x3F) << 8 | data[3], 4
    if n == 0 or at + n > len(data):
        return None
    b = data[at]
    code = (b >> 1) & 0x0F
    if b & 0x40:
        return seq, "data:" + (MODULATIONS[code] if code < len(MODULATIONS) else f"type {code}")
    return seq, INDICATORS[code]


class FaxFlow:
    """One direction of a T.38 fax (source -> destination), from its UDPTL packets. Mutable while
    packets come; a snapshot copies it (``analysis.snapshot``)."""
    __slots__ = ("src", "sport", "dst", "dport", "file", "first_frame", "first_ts", "last_ts", "packets", "expect",
                 "base_seq", "duplicates", "late", "malformed", "signals", "bytes")

    def __init__(self, src: str, sport: int, dst: str, dport: int, frame: int, ts: float, file: int = 0) -> None:
        self.src, self.sport, self.dst, self.dport, self.file = src, sport, dst, dport, file
        self.first_frame, self.first_ts, self.last_ts = frame, ts, ts
        self.packets = 0
        self.expect = -1           # the next sequence number in order, extended past wraps (-1: none yet)
        self.base_seq = 0
        self.duplicates = 0
        self.late = 0
        self.malformed = 0
        self.signals: List[str] = []
        self.bytes = 0

    def add(self, ts: float, payload: bytes) -> None:
        head = parse(payload)
        self.last_ts = ts
        self.bytes += len(payload)
        if head is None:
            self.malformed += 1
            return
        seq, what = head
        self.packets += 1
        if self.expect < 0:
            self.base_seq, self.expect = seq, seq + 1
        else:
            delta = (seq - self.expect) & 0xFFFF   # 0: the next one; small: ahead (those between lost)
            if delta < 0x8000:
                self.expect += delta + 1
            elif delta == 0xFFFF:                  # the latest one again
                self.duplicates += 1
            else:                                  # an earlier one, late
                self.late += 1
        if what not in self.signals and len(self.signals) < MAX_SIGNALS:
            self.signals.append(what)

    @property
    def expected(self) -> int:
        return self.expect - self.base_seq if self.expect >= 0 else 0

    @property
    def lost(self) -> int:
        """Sequence numbers never seen (a late packet counts as received; a duplicate does not)."""
        return max(self.expected - (self.packets - self.duplicates), 0)
