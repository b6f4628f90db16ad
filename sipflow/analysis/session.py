"""A live session: packets in as they arrive, events out as they happen (``sipflow live``, the soak bench).

Owns the loop's analysis side, apart from where packets come from and where events go: an ``Analyzer``
with bounded memory fed record by record, looked at (``look``) as often as the caller likes through a
snapshot and ``analysis.watch``, and the messages not yet handed on (``new_messages``, what a HEP
forwarder sends). ``finish`` closes the input and tells the last events.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from sipflow.analysis.analyzer import Analyzer
from sipflow.analysis.model import Analysis
from sipflow.analysis.options import AnalyzerOptions
from sipflow.analysis.watch import Event, Watcher


TRIM_EVERY = 8


def _trim() -> None:
    """glibc's malloc_trim(0), where there is one (Linux); nothing elsewhere."""
    global _libc
    if _libc is None:
        try:
            import ctypes
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class LiveSession:
    def __init__(self, options: AnalyzerOptions) -> None:
        self.analyzer = Analyzer(options)
        self.watcher = Watcher()
        self.packets = 0
        self.looks = 0
        self._handed: Optional[Tuple[float, int, int]] = None   # (ts, file, frame) of the last message handed on

    def feed(self, ts: float, file: int, frame: int, linktype: int, data: bytes) -> None:
        self.analyzer.feed(ts, file, frame, linktype, data)
        self.packets += 1

    def look(self) -> Tuple[Analysis, List[Event]]:
        """A snapshot, and what happened since the last look. Every TRIM_EVERY looks the C allocator
        is asked to hand freed memory back (each snapshot makes and drops thousands of records; glibc
        keeps the pages otherwise, and the process grows although what Python holds does not)."""
        a = self.analyzer.snapshot()
        self.looks += 1
        if self.looks % TRIM_EVERY == 0:
            _trim()
        return a, self.watcher.update(a)

    def finish(self) -> Tuple[Analysis, List[Event]]:
        """The input has ended: the final analysis and the last events."""
        a = self.analyzer.result()
        return a, self.watcher.update(a)

    def new_messages(self, a: Analysis) -> list:
        """The snapshot's messages not handed on before (capture order), marked as handed on now."""
        last = self._handed
        fresh = [e for e in a.messages if last is None or (e.ts, e.file, e.frame) > last]
        if fresh:
            self._handed = max((e.ts, e.file, e.frame) for e in fresh)
        return fresh
