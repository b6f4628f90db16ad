"""Live capture: packets from a network interface as they arrive (``sipflow live``).

Owns opening an interface through libpcap with pcapy-ng 2.x (imported here only): a BPF filter, the
snap length, a read timeout so the caller keeps control, and the kernel's drop counters
(``pcap_stats``). Packets come in batches (``next_batch``: one call into C for up to ``BATCH`` packets,
measured at 0.37 µs per packet; scapy's sniffer costs about 1 ms) and leave as the same records capture
files give: ``(ts, file_index, frame, linktype, buf, offset, caplen)``, the packet being
``buf[offset:offset + caplen]``. Frames are numbered from 1 as a file written by ``-w`` numbers them.
Several interfaces at once, or capture without root, go through ``dumpcap -w -`` (``DumpcapCapture``),
whose pcapng stream the file reader reads. Nothing here decodes a packet.
"""
from __future__ import annotations

import io
import queue
import re
import select
import shutil
import signal
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from sipflow.errors import CaptureError

BATCH = 512            # packets per call into libpcap at most
TIMEOUT_MS = 100       # a read returns after this long even with no packet: stop and refresh stay prompt
SNAPLEN = 262144
QUIET, QUIET_MAX = 0.5, 5.0   # dumpcap at the stop: wait for this much silence, at most this long
_META = struct.Struct("=IIII")   # next_batch's per-packet record: seconds, microseconds, offset, caplen
_DUMPCAP_DROPS = re.compile(r"received/dropped on interface .*: (\d+)/(\d+)")   # dumpcap's last words


SIP_FILTER = "port 5060 or port 5061"   # --media sdp-only without -f: where SIP is
MEDIA_RANGES = 600     # port ranges a media filter names at most (a BPF program has at most 4,096
                       # instructions on Linux; measured: about 5 per range); beyond, all UDP goes through


def media_filter(sip: str, ports: Iterable[int], most: int = MEDIA_RANGES) -> Tuple[str, bool]:
    """(BPF, widened) for ``--media sdp-only``: the SIP filter, IP fragments (the later pieces of a big
    SIP message carry no port), and UDP to or from each media port, neighbours merged into ranges.
    ``widened``: more than ``most`` ranges, so all UDP goes through instead."""
    ranges: List[List[int]] = []
    for p in sorted(set(ports)):
        if ranges and p == ranges[-1][1] + 1:
            ranges[-1][1] = p
        else:
            ranges.append([p, p])
    parts = [f"({sip})", "(ip[6:2] & 0x3fff != 0)", "(ip6 and ip6[6] == 44)"]
    widened = len(ranges) > most
    if widened:
        parts.append("udp")
    else:
        parts += [f"udp port {a}" if a == b else f"udp portrange {a}-{b}" for a, b in ranges]
    return " or ".join(parts), widened


@dataclass(frozen=True)
class Drops:
    """libpcap's counters since the capture started (``pcap_stats``)."""
    received: int          # packets the filter accepted (kernel's count)
    dropped: int           # dropped by the kernel: no room in the buffer (the reader was too slow)
    interface: int         # dropped by the interface or its driver (not all report it)


def interfaces() -> List[Tuple[str, str]]:
    """(name, description) of every interface libpcap can open, as ``sipflow live --list-interfaces``
    shows them."""
    pcapy = _pcapy()
    try:
        names = pcapy.findalldevs()
    except pcapy.PcapError as e:
        raise CaptureError(f"cannot list interfaces: {e}") from None
    return [(n, "every interface (Linux cooked capture)" if n == "any" else "") for n in names]


def _pcapy():
    try:
        import pcapy
    except ImportError:
        raise CaptureError("live capture needs pcapy-ng: .venv/bin/pip install pcapy-ng") from None
    return pcapy


class LiveCapture:
    """One interface, opened at construction. ``read()`` returns the records that arrived (possibly
    none, after TIMEOUT_MS); ``drops()`` the counters; ``close()`` lets the interface go."""

    def __init__(self, iface: str, bpf: Optional[str] = None, snaplen: int = SNAPLEN) -> None:
        pcapy = _pcapy()
        self.iface = iface
        try:
            self._pcap = pcapy.open_live(iface, snaplen, 0, TIMEOUT_MS)
        except pcapy.PcapError as e:
            hint = " (run as root, or give dumpcap's capabilities to your user)" if "ermission" in str(e) else \
                " (sipflow live --list-interfaces lists them)"
            raise CaptureError(f"cannot capture on {iface}: {e}{hint}") from None
        if bpf:
            try:
                self._pcap.setfilter(bpf)
            except pcapy.PcapError as e:
                self._pcap.close()
                raise CaptureError(f"bad capture filter {bpf!r}: {e}") from None
        self.linktype = self._pcap.datalink()
        self.frames = 0
        self._closed: Optional[Drops] = None
        # libpcap's read timeout is not kept when nothing arrives (Linux TPACKET_V3 waits for a first
        # packet): read without blocking, and wait on the descriptor with our own timeout instead
        self._pcap.setnonblock(1)
        self._fd = self._pcap.getfd()

    def set_filter(self, bpf: str) -> None:
        """Replace the capture filter while capturing (the kernel swaps it at once; what it let through
        before stays in the buffer)."""
        try:
            self._pcap.setfilter(bpf)
        except _pcapy().PcapError as e:
            raise CaptureError(f"bad capture filter {bpf!r}: {e}") from None

    def read(self) -> List[tuple]:
        """The packets that arrived since the last read, as records (an empty list after a timeout)."""
        data, meta = self._pcap.next_batch(BATCH)
        if not meta:
            select.select([self._fd], [], [], TIMEOUT_MS / 1000)
            data, meta = self._pcap.next_batch(BATCH)
        if not meta:
            return []
        out = []
        frame, lt = self.frames, self.linktype
        for sec, usec, off, caplen in _META.iter_unpack(meta):
            frame += 1
            out.append((sec + usec * 1e-6, 0, frame, lt, data, off, caplen))
        self.frames = frame
        return out

    def drain(self) -> List[tuple]:
        """At the stop: the packets already in the kernel's buffer (reads until one comes back empty)."""
        out: List[tuple] = []
        for _ in range(1000):
            recs = self.read()
            if not recs:
                break
            out += recs
        return out

    def drops(self) -> Drops:
        if self._closed is not None:
            return self._closed
        received, dropped, ifdropped = self._pcap.stats()
        return Drops(received, dropped, ifdropped)

    def close(self) -> None:
        """Let the interface go; ``drops()`` keeps answering with the last counts."""
        if self._closed is None:
            self._closed = self.drops()
            self._pcap.close()


def until_quiet(read: Callable[[], List[tuple]]) -> List[tuple]:
    """At a stop: what ``read`` gives until it has been quiet for QUIET s (at most QUIET_MAX)."""
    out: List[tuple] = []
    start = last = time.monotonic()
    while time.monotonic() - last < QUIET and time.monotonic() - start < QUIET_MAX:
        got = read()
        if got:
            out += got
            last = time.monotonic()
    return out


def rest_of(q: "queue.Queue") -> List[tuple]:
    """What a reader thread left in its queue, up to its end mark (None)."""
    out = []
    while True:
        try:
            rec = q.get_nowait()
        except queue.Empty:
            return out
        if rec is None:
            return out
        out.append(rec)


class DumpcapCapture:
    """Several interfaces (or one, without root: Debian lets the ``wireshark`` group run dumpcap) through
    ``dumpcap -w -``: its pcapng stream is read by ``capture.files`` in a thread, so ``read()`` keeps the
    same shape and timeout as ``LiveCapture``. Drop counts are dumpcap's, known when it stops."""

    def __init__(self, ifaces: List[str], bpf: Optional[str] = None, snaplen: int = SNAPLEN) -> None:

        from sipflow.capture.files import CaptureFile
        if shutil.which("dumpcap") is None:
            raise CaptureError("several interfaces need dumpcap (Debian: apt-get install wireshark-common)")
        cmd = ["dumpcap", "-q", "-s", str(snaplen), "-w", "-"]
        for name in ifaces:
            cmd += ["-i", name] + (["-f", bpf] if bpf else [])
        self.iface = ",".join(ifaces)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._queue: "queue.Queue" = queue.Queue(maxsize=100_000)
        self.frames = 0
        self.linktype = None
        try:
            self._file = CaptureFile(f"dumpcap ({self.iface})", 0, stream=io.FileIO(self._proc.stdout.fileno(),
                                                                                     closefd=False))
        except CaptureError:
            err = self._stop()
            raise CaptureError(f"dumpcap could not capture on {self.iface}: {err or 'it exited'}") from None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self._drops: Optional[Drops] = None

    def _pump(self) -> None:
        for ts, fi, frame, lt, buf, off, caplen in self._file:
            self._queue.put((ts, fi, frame, lt, bytes(buf[off:off + caplen]), 0, caplen))
        self._queue.put(None)

    def read(self) -> List[tuple]:
        out = []
        try:
            rec = self._queue.get(timeout=TIMEOUT_MS / 1000)
            while rec is not None and len(out) < BATCH:
                out.append(rec)
                rec = self._queue.get_nowait()
        except queue.Empty:
            pass
        self.frames += len(out)
        if out:
            self.linktype = out[-1][3]
        return out

    def drain(self) -> List[tuple]:
        """At the stop: every record still on its way, then dumpcap is stopped (as by Ctrl-C)."""
        # packets captured before the stop may still be in dumpcap's buffers (it writes every 100 ms)
        out = until_quiet(self.read) if self._drops is None else []
        if self._drops is None:
            self._stop()
        self._thread.join(timeout=30)
        late = rest_of(self._queue)   # (read() counted the ones before the stop)
        out += late
        self.frames += len(late)
        return out

    def drops(self) -> Drops:
        return self._drops or Drops(self.frames, 0, 0)

    def _stop(self) -> str:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)   # as Ctrl-C: dumpcap writes out what it holds, then exits
        try:                          # standard output is the reader thread's: only stderr is read here
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        text = self._proc.stderr.read().decode("utf-8", "replace")
        received = dropped = 0
        for m in _DUMPCAP_DROPS.finditer(text):   # "received/dropped on interface 'Loopback: lo': 771/0 (..."
            received += int(m.group(1))
            dropped += int(m.group(2))
        self._drops = Drops(received, dropped, 0)
        return " ".join(line for line in text.splitlines() if "received/dropped" not in line).strip()

    def close(self) -> None:
        """Stop dumpcap; ``drops()`` then gives its final counts."""
        if self._drops is None:
            self._stop()
        self._thread.join(timeout=10)
