"""The lean message record and where every message's bytes are kept.

Owns ``SipEvent`` (one SIP message as seen on the wire: the key fields the analysis and the views read,
plus where its bytes are) and ``RawStore`` (every message's bytes, out of the way of the heap). The
analyzer scans each message once (``sip.scan``) and keeps only this record; ``SipEvent.msg`` parses the
message in full, on demand, for the views that show one. Leaves transactions and calls to
``analysis.dialogs``.
"""
from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Dict, Optional, Tuple

from sipflow.net.addr import fmt_endpoint
from sipflow.sip.message import SipMessage, parse_message

if TYPE_CHECKING:  # pragma: no cover
    from sipflow.analysis.dialogs import Call
    from sipflow.sip.scan import SipHead

SPILL_AT = 1 << 20   # bytes of messages held in memory before they go to the spill file (measured: a 16 MiB
                     # buffer cost 35 MB of peak RSS on 440 k messages, its old copies kept by malloc, and no speed)
_LEN_BITS = 24        # a message's place is (offset << 24) | length: one int instead of two
_OFF_BITS = 40        # ... and above the offset, the store's generation (see ``RawStore.compact``)
_FRAME_BITS = 40      # a record's ``pos``: (store place << 40) | frame number (a trillion frames)
_FRAME_MASK = (1 << _FRAME_BITS) - 1
_RETRANSMITTED, _DROPPED = 1, 2   # a record's ``flags``
COMPACT_AT = 256 << 20   # bounded analysis: bytes on disk before the store keeps only the live messages


class RawStore:
    """Every SIP message's bytes, appended in order: in a memory buffer up to ``SPILL_AT`` bytes, then
    in an unnamed temporary file, so that memory does not grow with the messages' size. Works the same
    for seekable files, standard input, gzip and reassembled TCP, and is append-only: what a snapshot
    refers to never changes, until ``compact`` (endless input only) moves the live messages to a new
    file and forgets the rest: a place from before then reads as empty bytes, never as another
    message's (its generation is in the place)."""

    def __init__(self, spill_at: int = SPILL_AT) -> None:
        self.spill_at = spill_at
        self._buf = bytearray()
        self._base = 0            # offset of _buf[0]: everything before it is in the file
        self._file = None
        self.gen = 0              # compactions so far
        self.compactions = 0
        self.forgotten = 0        # bytes of messages no record needed any more, left behind by compact

    def add(self, data: bytes) -> int:
        """Keep ``data``; return its place (for ``get``)."""
        n = len(data)
        if n >> _LEN_BITS:
            data, n = data[:(1 << _LEN_BITS) - 1], (1 << _LEN_BITS) - 1  # a 16 MiB message is not SIP
        off = self._base + len(self._buf)
        self._buf += data
        if len(self._buf) >= self.spill_at:
            self._spill()
        return (((self.gen << _OFF_BITS) | off) << _LEN_BITS) | n

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="sipflow-messages-")
        self._file.seek(0, os.SEEK_END)
        self._file.write(self._buf)
        self._file.flush()
        self._base += len(self._buf)
        self._buf = bytearray()

    def get(self, place: int) -> bytes:
        off, n = place >> _LEN_BITS, place & ((1 << _LEN_BITS) - 1)
        if off >> _OFF_BITS != self.gen:
            return b""            # a message forgotten by a compaction (its record was dropped)
        off &= (1 << _OFF_BITS) - 1
        if off >= self._base:
            i = off - self._base
            return bytes(self._buf[i:i + n])
        return os.pread(self._file.fileno(), n, off)

    @property
    def size(self) -> int:
        return self._base + len(self._buf)

    def compact(self, live) -> None:
        """Keep only the messages of the ``live`` records (``SipEvent``s): copy them to a new file (a new
        generation), point each record at its new place, and drop the old file. The records not named
        here read as empty bytes from now on."""
        old_size = self.size
        keep = {id(e): e for e in live if e.store is self}
        parts = [(e, self.get(e.place)) for e in keep.values()]
        old = self._file
        self._file, self._buf, self._base = None, bytearray(), 0
        self.gen += 1
        self.compactions += 1
        for e, data in parts:
            e.place = self.add(data)
        if old is not None:
            old.close()
        self.forgotten += old_size - sum(len(d) for _, d in parts)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _flag(bit: int, doc: str) -> property:
    """A record's boolean kept as one bit of its ``flags``."""
    def get(self) -> bool:
        return bool(self.flags & bit)

    def put(self, yes: bool) -> None:
        self.flags = self.flags | bit if yes else self.flags & ~bit
    return property(get, put, doc=doc)


class Shared:
    """The parts of a message record that repeat from message to message, one tuple each: where it went
    (``flow``: endpoints, transport, file, store) and what it is (``kind``: method or status and reason,
    CSeq method). A record points at the shared tuple: 72 bytes less per message than a slot each
    (measured: 11 MB less peak RSS on 440k messages, where 58,796 flows each cost a tuple). Bounded: a
    flood of new values empties the tables (records keep their tuples)."""
    __slots__ = ("flows", "kinds", "limit")
    LIMIT = 1 << 16

    def __init__(self, limit: int = LIMIT) -> None:
        self.flows: Dict[tuple, tuple] = {}
        self.kinds: Dict[tuple, tuple] = {}
        self.limit = limit        # entries per table (less on endless input: see the analyzer)

    def flow(self, src: str, sport: int, dst: str, dport: int, transport: str, file: int,
             store: Optional[RawStore]) -> tuple:
        return self._one(self.flows, (src, sport, dst, dport, transport, file, store))

    def kind(self, method: Optional[str], status: Optional[int], reason: Optional[str],
             cseq_method: Optional[str]) -> tuple:
        return self._one(self.kinds, (method, status, reason, cseq_method))

    def _one(self, table: Dict[tuple, tuple], key: tuple) -> tuple:
        got = table.get(key)
        if got is None:
            if len(table) >= self.limit:
                table.clear()
            got = table[key] = key
        return got


class SipEvent:
    """One SIP message as seen on the wire: its key fields, where and when, and where its bytes are.

    A small mutable record (the tracker sets ``retransmission`` and ``call``); about 150 bytes. What
    repeats from message to message is shared: the endpoints, transport, file and store are one tuple
    (``flow``), the method, status, reason and CSeq method another (``kind``), both from ``Shared``;
    strings (Call-ID, tags, users) are interned. The frame number and the store place are one int
    (``pos``) and the two flags one small int (``flags``): an int object less per message, 36 bytes
    (measured: 13 MB less peak RSS on 440k messages). ``head`` is the scan's full result while the
    analyzer works on the message, then dropped."""
    __slots__ = ("ts", "pos", "_frames", "flow", "kind", "call_id", "cseq", "from_user", "to_user", "from_tag",
                 "to_tag", "branch", "flags", "call", "head")

    def __init__(self, head: "SipHead", ts: float, frame: int, frames: Tuple[int, ...], flow: tuple, kind: tuple,
                 place: int) -> None:
        self.ts = ts
        self.pos = (place << _FRAME_BITS) | frame
        self._frames = frames if len(frames) != 1 or frames[0] != frame else None
        self.flow, self.kind = flow, kind
        self.flags = 0
        self.call: Optional["Call"] = None
        self.call_id, self.cseq = head.call_id, head.cseq
        self.from_user, self.to_user = head.from_user, head.to_user
        self.from_tag, self.to_tag, self.branch = head.from_tag, head.to_tag, head.branch
        self.head: Optional["SipHead"] = head

    src = property(lambda self: self.flow[0], doc="the sender's address")
    sport = property(lambda self: self.flow[1])
    dst = property(lambda self: self.flow[2])
    dport = property(lambda self: self.flow[3])
    transport = property(lambda self: self.flow[4], doc="udp, tcp, tls, ws, wss, sctp or hep")
    file = property(lambda self: self.flow[5], doc="which capture file (0 for the first)")
    store = property(lambda self: self.flow[6], doc="the RawStore holding the message's bytes")
    method = property(lambda self: self.kind[0], doc="the request's method (None: a response)")
    status = property(lambda self: self.kind[1], doc="the response's status code (None: a request)")
    reason = property(lambda self: self.kind[2])
    cseq_method = property(lambda self: self.kind[3])
    frame = property(lambda self: self.pos & _FRAME_MASK, doc="the frame that completed the message")

    @property
    def place(self) -> int:
        """Where the store keeps the message's bytes (``RawStore.get``)."""
        return self.pos >> _FRAME_BITS

    @place.setter
    def place(self, place: int) -> None:
        self.pos = (place << _FRAME_BITS) | (self.pos & _FRAME_MASK)

    retransmission = _flag(_RETRANSMITTED, "the tracker matched it to a transaction that had seen it already")
    dropped = _flag(_DROPPED, "summarised out of memory (AnalyzerOptions.keep_calls)")

    @property
    def frames(self) -> Tuple[int, ...]:
        """Every frame that carried part of the message."""
        return self._frames if self._frames is not None else (self.frame,)

    @property
    def source(self) -> str:
        return fmt_endpoint(self.src, self.sport)

    @property
    def destination(self) -> str:
        return fmt_endpoint(self.dst, self.dport)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def summary(self) -> str:
        """What a ladder arrow or a list line says: ``INVITE`` or ``200 OK``."""
        return self.method if self.method else f"{self.status} {self.reason or ''}".rstrip()

    @property
    def raw(self) -> bytes:
        """The message's bytes as they were handed to the parser."""
        return self.store.get(self.place) if self.store is not None else b""

    @property
    def msg(self) -> SipMessage:
        """The whole message, parsed now (not cached: views that show messages parse them as they go)."""
        return parse_message(self.raw, datagram=self.transport != "tcp")
