"""A call's frames as a capture of its own: its SIP messages and its media, bytes and times as read.

Owns the second reading of a capture that only ``sipflow export`` needs: the analysis says which frames
carried each call's SIP messages (every frame of a segmented or fragmented one) and which address pairs
and times its RTP streams and T.38 flows used; this reads the captures again and copies each frame that
belongs to a call into that call's output, in capture order, through ``capture.writer``. Media frames
are those whose UDP datagram has a stream's addresses and ports (either direction), or the next ports
up (RTCP), inside the stream's time span widened by ``SLACK``. Only frames in such a span are decoded,
so exporting one call from a big capture costs little more than reading it. An RTP packet cut into IP
fragments is only recognised at its last fragment: frames that might be earlier fragments wait (with
whatever was selected after them, to keep the order) until the decoder has no reassembly pending.

Several outputs (one per call, ``--split``) are filled in the same single reading.
"""
from __future__ import annotations

import bisect
import heapq
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from sipflow.analysis.records import CallRecord
from sipflow.capture.files import CaptureFile, open_captures
from sipflow.capture.writer import PCAP, PCAPNG, CaptureWriter, WriterPool
from sipflow.errors import SipflowError
from sipflow.net import Decoder
from sipflow.net.decoder import FRAG_TIMEOUT

SLACK = 1.0          # seconds around a stream's first and last packet in which its frames are looked for
RTCP_SLACK = 6.0     # RTCP reports come every few seconds and a last one (BYE) may follow the last RTP
HELD_LIMIT = 20_000  # frames waiting for a pending IP reassembly before the oldest are let go
NAME_LIMIT = 80      # characters of the Call-ID in a --split file name

FlowKey = Tuple[str, int, str, int]


@dataclass
class Exported:
    """One written capture: the call, where it went, and what it holds."""
    call: CallRecord
    path: str
    fmt: str                 # pcap | pcapng
    messages: int = 0        # the call's SIP messages whose every frame was written
    sip_frames: int = 0
    media_packets: int = 0   # RTP, RTCP and UDPTL datagrams (an IP-fragmented one counts once)
    frames: int = 0


def split_name(number: int, call: CallRecord, fmt: str) -> str:
    """``0001_<Call-ID>.pcap``: the call's number, then its Call-ID made a portable file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", call.call_id)[:NAME_LIMIT]
    return f"{number:04d}_{safe}.{fmt}"


def output_format(files: Sequence[CaptureFile]) -> Tuple[str, Optional[int], bool]:
    """(format, link type, nanoseconds) of an export from these files: classic pcap when every input is
    one with the same link type (nanoseconds when one of them has them), pcapng otherwise (each frame
    then keeps its own input's clock)."""
    if all(f.format == "pcap" for f in files) and len({f.linktype for f in files}) == 1:
        return PCAP, files[0].linktype, any(f.scale < 1e-6 for f in files)
    return PCAPNG, None, False


def _file_records(f: CaptureFile) -> Iterator[tuple]:
    """A file's records as ``files.records`` gives them, with their batch (for ``RecordBatch.wire``) last."""
    index = f.index
    for batch in f.batches():
        lt, buf = batch.linktype, batch.buf
        for ts, frame, off, caplen in batch.records():
            yield ts, index, frame, lt, buf, off, caplen, batch


def _records(files: List[CaptureFile]) -> Iterator[tuple]:
    """Every file's records merged by time, in the same order as ``files.records``."""
    if len(files) == 1:
        return _file_records(files[0])
    return heapq.merge(*(_file_records(f) for f in files), key=lambda r: (r[0], r[1], r[2]))


# -- what belongs to which output -------------------------------------------------------------------------

class _Plan:
    """Which frames go to which output: SIP frames by (file, frame), media by flow and time span, and
    the union of every span (the cheap test that decides whether a frame is decoded at all)."""

    def __init__(self, calls: Sequence[CallRecord]) -> None:
        self.sip: Dict[Tuple[int, int], List[int]] = {}
        self.media: Dict[FlowKey, List[Tuple[float, float, int]]] = {}
        spans: List[Tuple[float, float]] = []
        for out, call in enumerate(calls):
            for e in call.events:
                for f in e.frames:
                    # one TCP segment may end one call's message and start another's: it goes to both
                    outs = self.sip.setdefault((e.file, f), [])
                    if out not in outs:
                        outs.append(out)
            for s in call.streams:
                lo, hi = s.first_ts - SLACK, s.last_ts + SLACK
                spans.append((lo, hi + RTCP_SLACK))
                self._flow(s.src, s.sport, s.dst, s.dport, lo, hi, out)
                self._flow(s.src, s.sport + 1, s.dst, s.dport + 1, lo, hi + RTCP_SLACK, out)
            for fx in call.faxes:
                lo, hi = fx.first_ts - SLACK, fx.last_ts + SLACK
                spans.append((lo, hi))
                self._flow(fx.src, fx.sport, fx.dst, fx.dport, lo, hi, out)
        self.starts: List[float] = []
        self.ends: List[float] = []
        for lo, hi in sorted(spans):
            if self.ends and lo <= self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], hi)
            else:
                self.starts.append(lo)
                self.ends.append(hi)

    def _flow(self, src: str, sport: int, dst: str, dport: int, lo: float, hi: float, out: int) -> None:
        for key in ((src, sport, dst, dport), (dst, dport, src, sport)):
            spans = self.media.setdefault(key, [])
            if (lo, hi, out) not in spans:
                spans.append((lo, hi, out))

    def in_span(self, ts: float) -> bool:
        i = bisect.bisect_right(self.starts, ts) - 1
        return i >= 0 and ts <= self.ends[i]

    def media_outputs(self, dg) -> List[int]:
        spans = self.media.get((dg.src, dg.sport, dg.dst, dg.dport)) if dg.transport == "udp" else None
        if not spans:
            return []
        return sorted({out for lo, hi, out in spans if lo <= dg.ts <= hi})


class _Pass:
    """The second reading: selected frames go to their outputs at once, unless an IP reassembly is
    pending; then every frame that might be one of its fragments, and everything selected after it,
    waits in ``queue`` (capture order) until the decoder has finished or dropped the datagram."""

    def __init__(self, plan: _Plan, pool: WriterPool, results: List[Exported]) -> None:
        self.plan, self.pool, self.results = plan, pool, results
        self.decoder = Decoder()
        self.queue: List[list] = []    # [ts, ns, linktype, bytes, orig, nanoseconds, outputs]
        self.held: Dict[Tuple[int, int], list] = {}    # (file, frame) -> its queue entry
        self.sip_seen: Set[Tuple[int, int]] = set()

    def run(self, rows: Iterator[tuple]) -> None:
        plan = self.plan
        for ts, fi, frame, lt, buf, off, caplen, batch in rows:
            outs = plan.sip.get((fi, frame))
            maybe = False
            if outs is not None:
                self.sip_seen.add((fi, frame))
                for o in outs:
                    self.results[o].sip_frames += 1
            elif not plan.in_span(ts) or lt < 0:
                continue
            data = bytes(buf[off:off + caplen])
            if outs is None:
                outs, maybe = self._media(ts, fi, frame, lt, data)
                if not outs and not maybe:
                    self._settle(ts)
                    continue
            ns, orig, fine = batch.wire(ts, off, caplen)
            entry = [ts, ns, lt, data, orig, fine, list(outs)]
            if maybe:
                self.held[(fi, frame)] = entry
            if self.queue or maybe:
                self.queue.append(entry)
            else:
                self._write(entry)
            self._settle(ts)
        self._flush(len(self.queue))

    def _media(self, ts: float, fi: int, frame: int, lt: int, data: bytes) -> Tuple[List[int], bool]:
        """The outputs a frame's datagrams belong to, and whether it may be the fragment of a datagram
        still being reassembled (nothing came out of it while a reassembly is pending)."""
        dgs = self.decoder.decode(ts, fi, frame, lt, data)
        found: List[int] = []
        for dg in dgs:
            outs = self.plan.media_outputs(dg)
            for o in outs:
                self.results[o].media_packets += 1
                if o not in found:
                    found.append(o)
            if outs and len(dg.frames) > 1:
                for f in dg.frames:   # the datagram's earlier fragments, waiting in the queue
                    entry = self.held.pop((fi, f), None)
                    if entry is not None:
                        entry[6].extend(o for o in outs if o not in entry[6])
        return found, not dgs and bool(self.decoder.frags)

    def _settle(self, ts: float) -> None:
        """Let the queue go once no reassembly is pending; past FRAG_TIMEOUT (the decoder gives up on a
        datagram then) or HELD_LIMIT frames, let the oldest go."""
        queue = self.queue
        if not queue:
            return
        if not self.decoder.frags:
            self._flush(len(queue))
            return
        n = 0
        while n < len(queue) and queue[n][0] < ts - FRAG_TIMEOUT:
            n += 1
        if len(queue) - n > HELD_LIMIT:
            n = len(queue) - HELD_LIMIT // 2
        if n:
            self._flush(n)

    def _flush(self, n: int) -> None:
        for entry in self.queue[:n]:
            self._write(entry)
        del self.queue[:n]
        if not self.queue:
            self.held.clear()
        elif len(self.held) > len(self.queue):   # forget the written ones: no datagram can claim them now
            waiting = {id(e) for e in self.queue}
            self.held = {k: e for k, e in self.held.items() if id(e) in waiting}

    def _write(self, entry: list) -> None:
        _, ns, lt, data, orig, fine, outs = entry
        for o in outs:
            self.pool.write(o, ns, lt, data, orig, fine)
            self.results[o].frames += 1


def export_calls(paths: Sequence[str], calls: Sequence[CallRecord], target: Callable[[int, str], str]
                 ) -> List[Exported]:
    """Write each call's frames to its own capture in one reading of ``paths`` (the files the analysis
    read, in the same order). ``target(i, fmt)`` names the file of ``calls[i]`` once the format
    (``pcap`` or ``pcapng``) is known; its folder must exist."""
    if "-" in paths:
        raise SipflowError("standard input cannot be read a second time: save the capture to a file first")
    files = open_captures(list(paths))
    fmt, linktype, nanoseconds = output_format(files)
    results = [Exported(c, target(i, fmt), fmt) for i, c in enumerate(calls)]
    pool = WriterPool([CaptureWriter(r.path, fmt, linktype, nanoseconds) for r in results])
    try:
        p = _Pass(_Plan(calls), pool, results)
        p.run(_records(files))
    except BaseException:
        pool.abandon()   # no empty files for the calls not reached
        raise
    finally:
        for f in files:
            f.close()
    pool.close()
    for r in results:
        r.messages = sum(all((e.file, f) in p.sip_seen for f in e.frames) for e in r.call.events)
    return results


def prepare_folder(folder: str) -> None:
    """Create the --split folder (and its parents) if missing."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise SipflowError(f"{folder}: cannot create the folder ({e.strerror})") from None
