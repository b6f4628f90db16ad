"""Capture sources: pcap and pcapng files (plain, gzip-compressed or on stdin), several merged by time.

Owns reading bytes from files and turning them into records, through one API every reader uses:
``CaptureFile.batches()`` yields ``RecordBatch``es, runs of packet records that share their framing
(link type, clock, record header) inside the reader's buffer; iterating a file (or ``records()`` over
several) yields single records, the tuple ``(ts, file_index, frame, linktype, buf, offset, caplen)``.
Either way the packet's bytes are ``buf[offset:offset + caplen]`` inside a buffer the reader reuses, so a
consumer must copy what it keeps before asking for the next batch or record. The file format (pcap
record headers, pcapng blocks, sections and interfaces) never leaves this module. Nothing here decodes
a packet (that is ``net``'s job); the link types it accepts are those of ``net.link``.

The hot path follows DESIGN.md: read 8 MiB blocks with ``readinto`` into one reused buffer and walk the
records with precompiled ``struct.Struct``s, creating no object per packet beyond the record tuple.
"""
from __future__ import annotations

import functools
import heapq
import io
import math
import os
import struct
import sys
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from sipflow.errors import CaptureError
from sipflow.net.link import LINK_TYPES, supported_names

BLOCK_SIZE = 8 << 20
# A record longer than this is not a packet but a corrupt length field.
MAX_RECORD = 64 << 20
# This many empty, all-zero records in a row are not packets but a file of zeros (a gzip bomb expands
# to gigabytes of them): reading stops there with a warning.
MAX_ZERO_RECORDS = 4096
_ZERO_RECORD = bytes(16)

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

ProgressFn = Callable[[int], None]


class _Prefixed(io.RawIOBase):
    """A non-seekable stream (stdin) with the bytes already read for format detection put back in front."""

    def __init__(self, prefix: bytes, raw) -> None:
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._raw.readinto(b)


class _Gunzip(io.RawIOBase):
    """Streaming gzip decompression that, unlike ``gzip.GzipFile``, hands out every byte it could
    decompress before a cut (a capture copied while still being written) and then reports the cut."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=31)
        self._pending = b""
        self.cut = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                if not self._z.eof:
                    self.cut = True
                return 0
            if self._z.eof:  # a further gzip member (concatenated .gz files)
                self._z = zlib.decompressobj(wbits=31)
            try:
                self._pending = self._z.decompress(chunk)
            except zlib.error as e:
                raise OSError(f"corrupt gzip data ({e})") from None
            if self._z.eof and self._z.unused_data:
                rest = self._z.unused_data
                self._z = zlib.decompressobj(wbits=31)
                self._pending += self._z.decompress(rest)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_stream(path: str):
    """Open ``path`` ('-' is stdin), transparently un-gzipping; return (file object, display name)."""
    if path == "-":
        raw = sys.stdin.buffer
        head = raw.read(4)
        stream = _Prefixed(head, raw)
        if head[:2] == b"\x1f\x8b":
            return _Gunzip(stream), "<stdin>"
        return stream, "<stdin>"
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as e:
        raise CaptureError(f"{path}: cannot open ({e.strerror})") from None
    head = f.read(2)
    f.seek(0)
    if head == b"\x1f\x8b":
        return _Gunzip(f), path
    return f, path


_PCAP_FIELDS = {o: struct.Struct(o + "IIII") for o in "<>"}       # seconds, fraction, caplen, origlen
_EPB_FIELDS = {o: struct.Struct(o + "12xIIII") for o in "<>"}     # ts high, ts low, caplen, origlen


@functools.lru_cache(maxsize=None)
def _ticks_to_ns(scale: float) -> Callable[[int], int]:
    """Integer nanoseconds from a count of clock ticks of ``scale`` seconds (10^-r or 2^-r, as pcapng's
    if_tsresol gives them), without going through a float."""
    r = round(-math.log10(scale))
    if 10.0 ** -r == scale:
        if r <= 9:
            mult = 10 ** (9 - r)
            return lambda ticks: ticks * mult
        div = 10 ** (r - 9)
        return lambda ticks: ticks // div
    shift = -math.frexp(scale)[1] + 1    # scale == 2.0 ** -shift
    return lambda ticks: (ticks * 10 ** 9) >> shift


class RecordBatch:
    """Consecutive packet records of one file that share their framing, inside the reader's buffer.

    ``offsets[i]`` is where record i's header starts; ``header`` says how to read it: ``PCAP`` (16 bytes:
    seconds, fraction, caplen, original length) or ``EPB`` (pcapng enhanced packet block, 28 bytes: type,
    length, interface, timestamp high and low, caplen, original length); the packet follows the header.
    Timestamps are ``sec + frac * scale`` (pcap) or ``ticks * scale + toff`` (EPB). ``EXPLICIT`` batches
    (other pcapng packet blocks, interfaces the file never described) carry ``(ts, offset, caplen)`` in
    ``items`` instead. Valid until the next batch is asked for."""
    __slots__ = ("buf", "offsets", "header", "order", "scale", "toff", "linktype", "file", "first_frame", "items")

    PCAP, EPB, EXPLICIT = 16, 28, 0

    def __init__(self, buf, offsets, header: int, order: str, scale: float, toff: float, linktype: int,
                 file: int, first_frame: int, items: Optional[list] = None) -> None:
        self.buf, self.offsets, self.header, self.order = buf, offsets, header, order
        self.scale, self.toff, self.linktype, self.file = scale, toff, linktype, file
        self.first_frame = first_frame
        self.items = items

    def __len__(self) -> int:
        return len(self.items) if self.items is not None else len(self.offsets)

    def wire(self, ts: float, off: int, caplen: int) -> Tuple[int, int, bool]:
        """(timestamp in ns, original length, finer than microseconds) of the record whose packet is at
        ``off``, from its header when the batch has one: the float ``ts`` cannot hold a nanosecond
        timestamp exactly, and only the header knows the length on the wire (what a writer needs to
        copy a record exactly)."""
        fine = self.scale < 1e-6
        if self.header == self.PCAP:
            sec, frac, _, orig = _PCAP_FIELDS[self.order].unpack_from(self.buf, off - self.PCAP)
            return sec * 10 ** 9 + frac * round(self.scale * 1e9), orig, fine
        if self.header == self.EPB:
            tsh, tsl, _, orig = _EPB_FIELDS[self.order].unpack_from(self.buf, off - self.EPB)
            return _ticks_to_ns(self.scale)((tsh << 32) | tsl) + int(self.toff) * 10 ** 9, orig, fine
        return round(ts * 1e6) * 1000, caplen, False   # other pcapng packet blocks: the float is all there is

    def records(self) -> Iterator[Tuple[float, int, int, int]]:
        """(ts, frame, packet offset, caplen) of each record."""
        frame = self.first_frame
        if self.items is not None:
            for ts, off, caplen in self.items:
                yield ts, frame, off, caplen
                frame += 1
            return
        buf, scale, toff = self.buf, self.scale, self.toff
        if self.header == self.PCAP:
            unpack = struct.Struct(self.order + "III").unpack_from
            for pos in self.offsets:
                sec, frac, caplen = unpack(buf, pos)
                yield sec + frac * scale, frame, pos + 16, caplen
                frame += 1
        else:
            unpack = struct.Struct(self.order + "12xIII").unpack_from
            for pos in self.offsets:
                tsh, tsl, caplen = unpack(buf, pos)
                yield ((tsh << 32) | tsl) * scale + toff, frame, pos + 28, caplen
                frame += 1


class CaptureFile:
    """One capture file: iterate it for records. After iteration ``frames``, ``truncated`` and
    ``warning`` tell how it went; ``format`` is 'pcap' or 'pcapng' once the header is read."""

    def __init__(self, path: str, index: int = 0, progress: Optional[ProgressFn] = None, stream=None,
                 read_as: Optional[Dict[int, int]] = None) -> None:
        """``stream``: read this raw binary stream (a pipe from dumpcap, say) instead of opening
        ``path``, which then only names it; reads return what has arrived, never waiting for a block.
        ``read_as`` reads records of one link type as another (``capture.tshark``: its TLS exports)."""
        self.read_as = read_as or {}
        self.path = path
        self.index = index
        self.progress = progress
        self.format = "?"
        self.frames = 0
        self.truncated = False
        self.warning: Optional[str] = None
        self.linktypes: List[int] = []
        self.resume_at = 0  # where the pcap_blocks() caller stopped walking the current block
        self.ng_order = "<"  # pcapng: byte order of the current section
        self.interfaces: List[tuple] = []  # pcapng: (link type, timestamp scale, offset) per interface
        self._f, self.name = (stream, path) if stream is not None else _open_stream(path)
        try:
            self.size = os.fstat(self._f.fileno()).st_size if path != "-" and stream is None \
                and not isinstance(self._f, _Gunzip) else 0
        except (OSError, io.UnsupportedOperation):
            self.size = 0
        self._buf = bytearray(BLOCK_SIZE)
        self._start = 0
        self._end = 0
        self._eof = False
        # Read the first block now so that a file that is not a capture fails at open, not mid-analysis.
        self._fill(24)
        if self._end < 4:
            raise CaptureError(f"{self.name}: empty file, not a capture" if self._end == 0
                               else f"{self.name}: too short to be a capture ({self._end} bytes)")
        magic_le, = struct.unpack_from("<I", self._buf, 0)
        magic_be, = struct.unpack_from(">I", self._buf, 0)
        if magic_le == PCAPNG_SHB:
            self.format = "pcapng"
        elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
            self.format = "pcap"
        else:
            raise CaptureError(f"{self.name}: not a pcap or pcapng capture (first bytes "
                               f"{bytes(self._buf[:4]).hex()}); convert it with 'editcap -F pcap'")
        if self.format == "pcap":
            self._pcap_header()

    # -- buffer management -------------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available at ``_start``; False at end of file."""
        while self._end - self._start < need:
            if self._eof:
                return False
            remain = self._end - self._start
            if need > len(self._buf):
                bigger = bytearray(max(need, 2 * len(self._buf)))
                bigger[:remain] = self._buf[self._start:self._end]
                self._buf = bigger
            elif self._start:
                self._buf[:remain] = self._buf[self._start:self._end]
            self._start, self._end = 0, remain
            with memoryview(self._buf) as mv:
                try:
                    n = self._f.readinto(mv[remain:])
                except (OSError, EOFError) as e:
                    # gzip streams cut short raise here: treat as a truncated capture.
                    self._eof = True
                    self.truncated = True
                    self.warning = f"{self.name}: read error ({e}); analysed everything before it"
                    return False
            if not n:
                self._eof = True
                if getattr(self._f, "cut", False):
                    self.truncated = True
                    self.warning = f"{self.name}: compressed data is cut short; analysed everything before the cut"
                return self._end - self._start >= need
            self._end += n
            if self.progress:
                self.progress(n)
        return True

    def _cut(self, what: str) -> None:
        self.truncated = True
        self.warning = (f"{self.name}: capture is cut short inside {what} after frame {self.frames}; "
                        f"analysed everything before the cut")

    def close(self) -> None:
        self._f.close()

    def __iter__(self) -> Iterator[tuple]:
        """Single records: ``(ts, file index, frame, link type, buf, offset, caplen)``."""
        index = self.index
        for batch in self.batches():
            lt, buf = batch.linktype, batch.buf
            for ts, frame, off, caplen in batch.records():
                yield ts, index, frame, lt, buf, off, caplen

    def batches(self) -> Iterator[RecordBatch]:
        """The file as ``RecordBatch``es, in order; closes the file at the end."""
        try:
            if self.format == "pcap":
                yield from self._pcap_batches()
            else:
                yield from self._pcapng_batches()
        finally:
            self.close()

    # -- classic pcap ------------------------------------------------------------------------------

    def _pcap_header(self) -> None:
        """Read the 24-byte file header: byte order, timestamp unit, link type."""
        magic, = struct.unpack_from("<I", self._buf, 0)
        order = "<" if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
        if not self._fill(24):
            raise CaptureError(f"{self.name}: cut short inside the pcap file header")
        _, _, _, _, _, _snaplen, network = struct.unpack_from(order + "IHHiIII", self._buf, self._start)
        self.scale = 1e-9 if magic in (PCAP_MAGIC_NS, 0x4D3CB2A1) else 1e-6
        self.linktype = network & 0x0FFFFFFF
        check_linktype(self.name, self.linktype)
        self.linktype = self.read_as.get(self.linktype, self.linktype)
        self.linktypes = [self.linktype]
        self.record_header = struct.Struct(order + "IIII")
        self._start += 24

    def _pcap_blocks(self) -> Iterator[Tuple[bytearray, int, int]]:
        """The pcap hot path's interface: yields ``(buf, pos, end)``; the caller walks records
        (``record_header``: seconds, fraction, caplen, origlen; then caplen bytes) from ``pos`` while
        they are complete, then sets ``resume_at`` to where it stopped and ``frames`` to the count so
        far. The buffer is refilled between blocks, so nothing may keep a reference into it."""
        unpack = self.record_header.unpack_from
        while True:
            self.resume_at = self._start
            yield self._buf, self._start, self._end
            stop = self._start = self.resume_at
            if self._end - stop >= 16:
                caplen = unpack(self._buf, stop)[2]
                if caplen > MAX_RECORD:
                    self.truncated = True
                    self.warning = (f"{self.name}: corrupt record header after frame {self.frames} "
                                    f"(length {caplen}); analysed everything before it")
                    return
                need = 16 + caplen
            else:
                need = 16
            if not self._fill(need):
                if self._end - self._start:
                    self._cut("a packet record")
                return

    def _pcap_batches(self) -> Iterator[RecordBatch]:
        # Python walks only the record lengths; the consumer reads the rest (on arrays, or one by one).
        caplen_of = struct.Struct(self.record_header.format[0] + "8xI").unpack_from
        order = self.record_header.format[0]
        frame = 0
        zeros = 0   # consecutive all-zero record headers: a file of zeros (a gzip bomb) is no capture
        for buf, pos, end in self._pcap_blocks():
            offs = []
            add = offs.append
            last = end - 16
            while pos <= last:
                caplen = caplen_of(buf, pos)[0]
                if not caplen:   # rare in a real capture: only then look at the whole header
                    zeros = zeros + 1 if buf[pos:pos + 16] == _ZERO_RECORD else 0
                    if zeros > MAX_ZERO_RECORDS:
                        break
                else:
                    zeros = 0
                nxt = pos + 16 + caplen
                if nxt > end:
                    break
                add(pos)
                pos = nxt
            self.resume_at = pos
            if offs:
                yield RecordBatch(buf, offs, RecordBatch.PCAP, order, self.scale, 0.0, self.linktype, self.index,
                                  frame + 1)
                frame += len(offs)
            self.frames = frame
            if zeros > MAX_ZERO_RECORDS:
                self.truncated = True
                self.warning = (f"{self.name}: after frame {frame - MAX_ZERO_RECORDS} the file holds only zeros, "
                                f"not packet records; stopped reading there")
                return

    # -- pcapng ------------------------------------------------------------------------------------

    def _pcapng_blocks(self) -> Iterator[Tuple[bytearray, int, int]]:
        """Like ``pcap_blocks`` for pcapng: yields ``(buf, pos, end)`` where ``[pos, end)`` holds whole
        blocks in the current section's byte order (``ng_order``). The caller walks them, passes
        section and interface blocks to ``pcapng_meta`` and packet blocks to ``pcapng_packet`` (or reads
        EPBs itself), then sets ``resume_at`` and ``frames``."""
        while True:
            if not self._fill(12):
                if self._end - self._start:
                    self._cut("a block header")
                return
            buf, start = self._buf, self._start
            btype = struct.unpack_from("<I", buf, start)[0]
            if btype == PCAPNG_SHB:  # a new section may switch the byte order
                bom, = struct.unpack_from("<I", buf, start + 8)
                self.ng_order = "<" if bom == PCAPNG_BOM else ">"
                if self.ng_order == ">" and struct.unpack_from(">I", buf, start + 8)[0] != PCAPNG_BOM:
                    self.truncated = True
                    self.warning = f"{self.name}: corrupt section header after frame {self.frames}"
                    return
            blen = struct.unpack_from(self.ng_order + "I", buf, start + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                self.truncated = True
                self.warning = (f"{self.name}: corrupt block (type {btype:#x}, length {blen}) after frame "
                                f"{self.frames}; analysed everything before it")
                return
            if not self._fill(blen):
                self._cut("a block")
                return
            # Hand over every whole block now in the buffer (the first one at least).
            buf, pos, end = self._buf, self._start, self._start
            hdr = struct.Struct(self.ng_order + "II").unpack_from
            while self._end - end >= 12:
                t, n = hdr(buf, end)
                if t == PCAPNG_SHB or n < 12 or n % 4 or n > MAX_RECORD or end + n > self._end:
                    if end == pos:
                        end += blen  # the SHB (or the one whole block checked above) goes alone
                    break
                end += n
            self.resume_at = pos
            yield buf, pos, end
            self._start = self.resume_at

    def _pcapng_meta(self, buf, pos: int, btype: int, blen: int) -> None:
        """Section header (starts a new interface list) or interface description block."""
        if btype == PCAPNG_SHB:
            self.interfaces = []
        elif btype == 1:
            lt, _, _snap = struct.unpack_from(self.ng_order + "HHI", buf, pos + 8)
            scale, toff = _idb_options(buf, pos + 16, pos + blen - 4, self.ng_order)
            check_linktype(self.name, lt)
            lt = self.read_as.get(lt, lt)
            self.interfaces.append((lt, scale, toff))
            if lt not in self.linktypes:
                self.linktypes.append(lt)

    def _pcapng_packet(self, buf, pos: int, btype: int, blen: int) -> Optional[Tuple[float, int, int, int]]:
        """(timestamp, link type, packet offset, caplen) of an enhanced, simple or obsolete packet block;
        link type -1 when the block names no known interface; None for other blocks."""
        o = self.ng_order
        body = pos + 8
        if btype == 6:
            ifid, tsh, tsl, caplen, _ = struct.unpack_from(o + "IIIII", buf, body)
        elif btype == 2:
            ifid = struct.unpack_from(o + "H", buf, body)[0]
            tsh, tsl, caplen, _ = struct.unpack_from(o + "IIII", buf, body + 4)
        elif btype == 3:  # Simple Packet Block: no timestamp, interface 0
            origlen, = struct.unpack_from(o + "I", buf, body)
            lt = self.interfaces[0][0] if self.interfaces else -1
            return 0.0, lt, body + 4, min(origlen, blen - 16)
        else:
            return None
        if ifid >= len(self.interfaces) or caplen > blen - 32:
            return 0.0, -1, body, 0
        lt, scale, toff = self.interfaces[ifid]
        return ((tsh << 32) | tsl) * scale + toff, lt, body + 20, caplen

    def _pcapng_batches(self) -> Iterator[RecordBatch]:
        """Runs of enhanced packet blocks from one interface go out as one batch; section and interface
        blocks are read here; other packet blocks (simple, obsolete, unknown interface) go out as
        explicit batches of their own."""
        index = self.index
        frame = 0
        for buf, pos, end in self._pcapng_blocks():
            order = self.ng_order
            epb = struct.Struct(order + "III8xI").unpack_from   # type, length, interface, caplen
            hdr = struct.Struct(order + "II").unpack_from
            run: List[int] = []
            run_if = -1

            def flush():
                nonlocal run, frame
                if run:
                    lt, scale, toff = self.interfaces[run_if]
                    yield RecordBatch(buf, run, RecordBatch.EPB, order, scale, toff, lt, index, frame + 1)
                    frame += len(run)
                    run = []

            while pos < end:
                if end - pos >= 28:
                    btype, blen, ifid, caplen = epb(buf, pos)
                else:
                    (btype, blen), ifid, caplen = hdr(buf, pos), -1, 0
                if btype == 6 and ifid < len(self.interfaces) and caplen <= blen - 32:
                    if ifid != run_if:
                        yield from flush()
                        run_if = ifid
                    run.append(pos)
                elif btype == PCAPNG_SHB or btype == 1:
                    yield from flush()
                    run_if = -1
                    self._pcapng_meta(buf, pos, btype, blen)
                else:
                    pkt = self._pcapng_packet(buf, pos, btype, blen)
                    if pkt is not None:
                        yield from flush()
                        ts, lt, off, n = pkt
                        yield RecordBatch(buf, [pos], RecordBatch.EXPLICIT, order, 1.0, 0.0, lt, index, frame + 1,
                                          items=[(ts, off, n)])
                        frame += 1
                pos += blen
            yield from flush()
            self.frames = frame
            self.resume_at = pos
        self.frames = frame


def _idb_options(buf, pos: int, end: int, order: str):
    """Timestamp resolution (if_tsresol, code 9) and offset (if_tsoffset, code 14) of an interface."""
    scale, toff = 1e-6, 0
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            break
        value = pos + 4
        if code == 9 and length >= 1:
            r = buf[value]
            scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
        elif code == 14 and length >= 8:
            toff = struct.unpack_from(order + "q", buf, value)[0]
        pos = value + ((length + 3) & ~3)
    return scale, toff


def check_linktype(name: str, linktype: int) -> None:
    if linktype not in LINK_TYPES or LINK_TYPES[linktype].internal:
        raise CaptureError(f"{name}: link type {linktype} is not supported (sipflow reads "
                           f"{supported_names()}); re-capture with 'tcpdump -i any' or convert with editcap")


def open_captures(paths: List[str], progress: Optional[ProgressFn] = None) -> List[CaptureFile]:
    """Open every file first, so a missing or unreadable one is reported before any work is done."""
    if not paths:
        raise CaptureError("no capture file given")
    files = []
    try:
        for i, p in enumerate(paths):
            files.append(CaptureFile(p, i, progress))
    except CaptureError:
        for f in files:
            f.close()
        raise
    return files


def records(files: List[CaptureFile]) -> Iterator[tuple]:
    """Records of every file, merged by timestamp when there are several (stable for equal times)."""
    if len(files) == 1:
        return iter(files[0])
    # heapq.merge advances a file only after its previous record was consumed, so the reused-buffer
    # contract still holds; ties order by file index, then frame number.
    return heapq.merge(*files, key=lambda r: (r[0], r[1], r[2]))
