"""Capture output: pcap and pcapng files made of frames exactly as they were read.

Owns writing captures. A ``CaptureWriter`` takes each frame's bytes, original length, link type and
timestamp (integer nanoseconds since the epoch, so nothing is lost to a float) and writes them in the
order given. Classic pcap when every frame has one link type, with microsecond or nanosecond
timestamps; pcapng otherwise: one interface description block per link type (and clock: microseconds,
or nanoseconds with ``if_tsresol`` 9, as each frame's input had), written just before its first
packet, and enhanced packet blocks.
Files are little-endian, as most writers make them; readers handle either order.

A writer can let go of its file (``suspend``) and pick it up again in append mode with the header and
the interface list already written, so ``WriterPool`` can feed thousands of outputs while keeping at
most a few hundred files open. Standard library only (``struct``); nothing here reads or decodes.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from sipflow.errors import SipflowError

PCAP = "pcap"
PCAPNG = "pcapng"

SNAPLEN = 262144      # what tcpdump and Wireshark write; readers refuse larger records in a classic pcap
MAX_OPEN = 200        # files a WriterPool keeps open at once

_PCAP_HEADER = struct.Struct("<IHHiIII")     # magic, version 2.4, zone, sigfigs, snaplen, link type
_PCAP_RECORD = struct.Struct("<IIII")        # seconds, fraction, captured length, original length
_BLOCK_HEAD = struct.Struct("<II")           # pcapng block type, total length
_EPB_HEAD = struct.Struct("<IIIIIII")        # type, length, interface, ts high, ts low, caplen, origlen
_OPTION = struct.Struct("<HH")
_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
_SHB, _IDB, _EPB = 0x0A0D0D0A, 1, 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D


def _pad(n: int) -> int:
    return -n % 4


def _option(code: int, value: bytes) -> bytes:
    return _OPTION.pack(code, len(value)) + value + bytes(_pad(len(value)))


def _block(btype: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, the body padded to 32 bits, the total length again."""
    body += bytes(_pad(len(body)))
    total = len(body) + 12
    return _BLOCK_HEAD.pack(btype, total) + body + struct.pack("<I", total)


def _section_header() -> bytes:
    # Section length -1: unknown, so readers never skip sections by it; shb_userappl (4) names the writer.
    options = _option(4, b"sipflow export") + _option(0, b"")
    return _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + options)


def _interface(linktype: int, nanoseconds: bool) -> bytes:
    # No if_tsresol means microseconds; 9 says nanoseconds. A frame keeps its input's clock, so a reader
    # computes the very same time from it.
    options = (_option(9, bytes([9])) if nanoseconds else b"") + _option(0, b"")
    return _block(_IDB, struct.pack("<HHI", linktype, 0, 0) + options)


class CaptureWriter:
    """One output capture. ``fmt`` is ``PCAP`` (then ``linktype`` is the one link type every frame must
    have) or ``PCAPNG``; ``nanoseconds`` picks the timestamp unit (for pcapng, of the frames that do not
    say). The file is created at the first write (or at ``close``, empty, when nothing was written) and
    replaced if it exists."""

    def __init__(self, path: str, fmt: str, linktype: Optional[int] = None, nanoseconds: bool = False) -> None:
        if fmt not in (PCAP, PCAPNG):
            raise ValueError(f"unknown capture format {fmt!r}")
        if fmt == PCAP and linktype is None:
            raise ValueError("a classic pcap has one link type: give it")
        self.path = path
        self.fmt = fmt
        self.linktype = linktype
        self.nanoseconds = nanoseconds
        self.frames = 0
        self._fh = None
        self._started = False                  # the file exists and its header is written
        self._interfaces: Dict[Tuple[int, bool], int] = {}  # pcapng: (link type, ns) -> interface id

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    def _open(self) -> None:
        try:
            self._fh = open(self.path, "ab" if self._started else "wb")
        except OSError as e:
            raise SipflowError(f"{self.path}: cannot write ({e.strerror})") from None
        if not self._started:
            self._started = True
            if self.fmt == PCAP:
                magic = _MAGIC_NS if self.nanoseconds else _MAGIC_US
                self._put(_PCAP_HEADER.pack(magic, 2, 4, 0, 0, SNAPLEN, self.linktype))
            else:
                self._put(_section_header())

    def _put(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as e:
            raise SipflowError(f"{self.path}: cannot write ({e.strerror})") from None

    def write(self, ns: int, linktype: int, data: bytes, orig_len: Optional[int] = None,
              nanoseconds: Optional[bool] = None) -> None:
        """Append one frame: its timestamp in nanoseconds since the epoch, its link type, the captured
        bytes, the length it had on the wire (default: as captured) and, in a pcapng, whether its time
        is written in nanoseconds (default: the writer's unit)."""
        if self._fh is None:
            self._open()
        caplen = len(data)
        orig = max(orig_len if orig_len is not None else caplen, caplen)
        if self.fmt == PCAP:
            if linktype != self.linktype:
                raise ValueError(f"link type {linktype} in a pcap of link type {self.linktype}")
            sec, frac = divmod(ns if self.nanoseconds else ns // 1000, 10 ** 9 if self.nanoseconds else 10 ** 6)
            self._put(_PCAP_RECORD.pack(sec, frac, caplen, orig) + data)
        else:
            nano = self.nanoseconds if nanoseconds is None else nanoseconds
            ifid = self._interfaces.get((linktype, nano))
            if ifid is None:   # an interface may be described anywhere before its first packet
                ifid = self._interfaces[(linktype, nano)] = len(self._interfaces)
                self._put(_interface(linktype, nano))
            ticks = ns if nano else ns // 1000
            pad = _pad(caplen)
            total = _EPB_HEAD.size + caplen + pad + 4
            self._put(_EPB_HEAD.pack(_EPB, total, ifid, ticks >> 32, ticks & 0xFFFFFFFF, caplen, orig) + data
                      + bytes(pad) + struct.pack("<I", total))
        self.frames += 1

    def suspend(self) -> None:
        """Close the file but keep what was written; the next write appends."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as e:
                raise SipflowError(f"{self.path}: cannot write ({e.strerror})") from None

    def close(self) -> None:
        """Finish the file; one that never got a frame is still a valid, empty capture."""
        if not self._started:
            self._open()
        self.suspend()


class WriterPool:
    """Several outputs fed in any order, with at most ``limit`` files open: writing to a suspended
    writer first suspends the one written least recently."""

    def __init__(self, writers: List[CaptureWriter], limit: int = MAX_OPEN) -> None:
        self.writers = writers
        self.limit = max(1, limit)
        self._open: "OrderedDict[int, CaptureWriter]" = OrderedDict()   # index -> writer, oldest first

    def write(self, index: int, ns: int, linktype: int, data: bytes, orig_len: Optional[int] = None,
              nanoseconds: Optional[bool] = None) -> None:
        w = self.writers[index]
        if index in self._open:
            self._open.move_to_end(index)
        else:
            while len(self._open) >= self.limit:
                self._open.popitem(last=False)[1].suspend()
            self._open[index] = w
        w.write(ns, linktype, data, orig_len, nanoseconds)

    def close(self) -> None:
        """Close every writer (an output that got no frame becomes an empty capture)."""
        self._open.clear()
        for w in self.writers:
            w.close()

    def abandon(self) -> None:
        """After an error: close the open files as they are, create no empty ones."""
        while self._open:
            self._open.popitem(last=False)[1].suspend()


def parse_rotation(text: str) -> Tuple[Optional[int], Optional[float]]:
    """``100MB``, ``512KB``, ``2GB`` (bytes) or ``1h``, ``30m``, ``90s`` (seconds) -> (bytes, seconds);
    ValueError with what is accepted otherwise."""
    t = text.strip().lower()
    sizes = {"kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
    times = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in sorted(sizes, key=len, reverse=True):
        if t.endswith(unit) and t[:-len(unit)].strip().isdigit() and int(t[:-len(unit)]) > 0:
            return int(t[:-len(unit)]) * sizes[unit], None
    if t and t[-1] in times and t[:-1].isdigit() and int(t[:-1]) > 0:
        return None, float(int(t[:-1]) * times[t[-1]])
    raise ValueError(f"{text!r}: give a size (100MB, 512KB, 1GB) or a time (90s, 30m, 1h, 1d)")


class RotatingWriter:
    """A capture cut into files of at most ``max_bytes`` or ``max_seconds`` each (``sipflow live -w
    --rotate``): ``NAME-0001.EXT``, ``NAME-0002.EXT``... Each file is closed, whole and valid, before the
    next is opened; with ``keep`` only the most recent ``keep`` files stay on disk."""

    def __init__(self, path: str, fmt: str, linktype: Optional[int] = None, max_bytes: Optional[int] = None,
                 max_seconds: Optional[float] = None, keep: Optional[int] = None) -> None:
        import os
        base, ext = os.path.splitext(path)
        self._name = lambda n: f"{base}-{n:04d}{ext or '.' + fmt}"
        self.fmt, self.linktype = fmt, linktype
        self.max_bytes, self.max_seconds, self.keep = max_bytes, max_seconds, keep
        self.paths: List[str] = []    # the files on disk, oldest first
        self.files = 0                # files started (numbers are never reused)
        self.frames = 0
        self._current: Optional[CaptureWriter] = None
        self._bytes = 0
        self._opened_at: Optional[int] = None     # ns of the first frame in the current file

    def _next(self) -> None:
        import os
        if self._current is not None:
            self._current.close()
        self.files += 1
        self._current = CaptureWriter(self._name(self.files), self.fmt, self.linktype)
        self.paths.append(self._current.path)
        self._bytes = 0
        self._opened_at = None
        if self.keep is not None:
            while len(self.paths) > self.keep:
                old = self.paths.pop(0)
                try:
                    os.remove(old)
                except OSError:
                    pass

    def write(self, ns: int, linktype: int, data: bytes, orig_len: Optional[int] = None) -> None:
        full = self._current is None or (
            self.max_bytes is not None and self._bytes and self._bytes + len(data) + 32 > self.max_bytes) or (
            self.max_seconds is not None and self._opened_at is not None
            and ns - self._opened_at >= self.max_seconds * 1e9)
        if full:
            self._next()
        if self._opened_at is None:
            self._opened_at = ns
        self._current.write(ns, linktype, data, orig_len)
        self._bytes += len(data) + 32
        self.frames += 1

    def close(self) -> None:
        if self._current is None:
            self._next()        # nothing captured: still one valid, empty file
        self._current.close()
