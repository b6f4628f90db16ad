"""Asking tshark for SIP: every message Wireshark's dissectors find (``--engine tshark``), or only the
SIP inside TLS sessions it decrypts with a key log (``--tls-keylog FILE`` on every analysis command, and
on ``sipflow live``).

Owns running tshark on a capture file and opening what it exports: each SIP message as a Wireshark
"upper PDU" record (``tshark -U "OSI layer 7"``): the message's bytes with tags for its addresses,
ports and original frame number. That export is opened as one more capture with the original's file
index, so its messages keep the original frame numbers and merge into the same analysis by time.
With the native engine only TLS is exported, and sipflow's own decoder reads everything else (it sees
only ciphertext in TLS, so no message is read twice). With ``--engine tshark`` every SIP message comes
from tshark and the analyzer takes SIP from the export alone (``AnalyzerOptions.sip_from``), while
RTP, RTCP and T.38 are still measured by sipflow's decoder: one parser, ours, reads all SIP bytes,
whoever cut them out. (tshark's PDU export was chosen over pyshark for this: it hands back the exact
bytes, with no per-field Python objects built.)

Live (``LiveTshark``), tshark cannot export PDUs as it captures (it refuses a display filter when it
saves, and through a pipe it writes its export only when its buffer fills): ``dumpcap`` captures
into a ``tshark -l`` that prints one JSON line per SIP packet (``-T ek -x``: the message's bytes as
hex in ``sip_raw``), flushed at once; each message becomes an upper-PDU record (of decrypted TLS
when it came out of a TLS session) for the same analyzer.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from typing import List, Optional

from sipflow.capture.files import CaptureFile
from sipflow.capture.live import rest_of, until_quiet
from sipflow.errors import CaptureError
from sipflow.net.decoder import upper_pdu
from sipflow.net.link import UPPER_PDU, UPPER_PDU_TLS

TSHARK_TIMEOUT = 3600      # seconds for one file


def _export(path: str, index: int, args: List[str], secure: bool) -> Optional[CaptureFile]:
    """Run one export; the capture of its records, or None when it holds none."""
    fd, tmp = tempfile.mkstemp(prefix="sipflow-tshark-", suffix=".pcapng")
    os.close(fd)
    try:
        r = subprocess.run(args + ["-U", "OSI layer 7", "-w", tmp, "-Q"], capture_output=True, text=True,
                           timeout=TSHARK_TIMEOUT)
        if r.returncode != 0:
            raise CaptureError(f"tshark could not read {path}: {r.stderr.strip()[-300:]}")
        if os.path.getsize(tmp) == 0 or not _has_records(tmp):
            return None
        f = CaptureFile(tmp, index, read_as={UPPER_PDU: UPPER_PDU_TLS} if secure else None)
        f.name = f"{path} (SIP {'decrypted from TLS' if secure else 'dissected'} by tshark)"
        return f
    finally:
        os.unlink(tmp)


def _has_records(path: str) -> bool:
    """tshark writes the file's header even when it exports nothing."""
    for batch in CaptureFile(path).batches():
        for _ in batch.records():
            return True
    return False


def _tls_server_ports(path: str) -> List[int]:
    """The ports TLS sessions in the capture were opened to (their ClientHello's destination): Wireshark
    hands decrypted data to SIP only on ports it is told about (5061 by default)."""
    r = subprocess.run(["tshark", "-n", "-r", path, "-Y", "tls.handshake.type == 1", "-T", "fields", "-e",
                        "tcp.dstport"], capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    if r.returncode != 0:
        raise CaptureError(f"tshark could not read {path}: {r.stderr.strip()[-300:]}")
    return sorted({int(p) for p in r.stdout.split() if p.isdigit()})


def exported(paths: List[str], keylog: Optional[str] = None, everything: bool = False,
             warnings: Optional[List[str]] = None) -> List[CaptureFile]:
    """One capture of upper-PDU records per input that has SIP to give, each with its input's index:
    every SIP message tshark dissects (``everything``), else only SIP in TLS decrypted with ``keylog``.
    What the user should know (an input where tshark found no SIP at all) goes to ``warnings``.
    Temporary files are removed once opened (the reader keeps them open)."""
    warnings = warnings if warnings is not None else []
    what = "--engine tshark" if everything else "--tls-keylog"
    if shutil.which("tshark") is None:
        raise CaptureError(f"{what} needs tshark (Debian: apt-get install tshark)")
    if keylog is not None and not os.path.isfile(keylog):
        raise CaptureError(f"--tls-keylog {keylog}: no such file")
    out = []
    for i, path in enumerate(paths):
        if path == "-":
            raise CaptureError(f"{what} cannot read standard input twice: give the capture as a file")
        ports = _tls_server_ports(path) if keylog else []
        runs = []   # (display filter, decrypted from TLS?)
        if ports:
            runs.append(("tls && sip", True))
        if everything:
            runs.append(("sip && !tls", False))
        found = False
        for where, secure in runs:
            args = ["tshark", "-n", "-r", path]
            if secure:
                args += ["-o", f"tls.keylog_file:{keylog}"]
                args += [a for port in ports for a in ("-d", f"tls.port=={port},sip")]
            f = _export(path, i, args + ["-Y", where], secure)
            if f is not None:
                out.append(f)
                found = True
        if everything and not found:
            warnings.append(f"tshark found no SIP in {path}: its dissectors look for SIP on the usual ports "
                            "only (the native engine reads it on any port)")
    return out


DUMPCAP_START = 10.0      # seconds dumpcap may take to say it is capturing


def _started(proc: subprocess.Popen) -> Optional[str]:
    """Wait (bounded) for dumpcap to say it is capturing: None then, else what it said instead. Its
    standard error is read by a thread from then on, so it never fills."""
    lines: "queue.Queue" = queue.Queue()

    def read():
        for line in proc.stderr:
            lines.put(line.decode("utf-8", "replace").strip())
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    said = []
    try:
        while True:
            line = lines.get(timeout=DUMPCAP_START)
            if line is None:
                return " ".join(said) or "it exited"
            if line.startswith("Capturing on"):
                return None
            said.append(line)
    except queue.Empty:
        return "it did not start within %g s" % DUMPCAP_START


class LiveTshark:
    """SIP on live interfaces as tshark reads it (``sipflow live --tls-keylog`` for TLS, ``--engine
    tshark`` for every SIP message): ``dumpcap`` into ``tshark -l`` (with the key log and ``-d
    tls.port==P,sip`` for each of ``ports``), whose JSON lines a thread turns into upper-PDU records,
    of decrypted TLS for what came out of a TLS session, numbered by tshark's frame numbers under
    their own ``file_index``. The key log may grow while it runs (a phone writes each session's keys
    as it opens it): tshark reads it again when a session needs keys. ``read(timeout)`` as a HEP
    listener's; ``close()`` drains and stops dumpcap and takes what tshark still prints."""

    def __init__(self, ifaces: List[str], keylog: Optional[str], ports: List[int], file_index: int,
                 everything: bool = False, bpf: Optional[str] = None) -> None:
        what = "--engine tshark" if everything else "--tls-keylog"
        for tool in ("dumpcap", "tshark"):
            if shutil.which(tool) is None:
                raise CaptureError(f"{what} needs {tool} (Debian: apt-get install tshark)")
        if keylog is not None and not os.path.isfile(keylog):
            raise CaptureError(f"--tls-keylog {keylog}: no such file (create it empty if the phone writes it "
                               "later)")
        self.file_index = file_index
        self.frames = 0
        cap = ["dumpcap", "-q", "-w", "-"]
        for name in ifaces:
            cap += ["-i", name] + (["-f", bpf] if bpf else ["-f", "tcp"] if not everything else [])
        dis = ["tshark", "-n", "-l", "-r", "-"]
        if keylog is not None:
            dis += ["-o", f"tls.keylog_file:{keylog}"] + [a for port in ports for a in ("-d", f"tls.port=={port},sip")]
        dis += ["-Y", "sip" if everything else "tls && sip", "-T", "ek", "-x"]
        self._dumpcap = subprocess.Popen(cap, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        said = _started(self._dumpcap)    # "Capturing on ...": packets from now on are seen
        if said is not None:
            self._dumpcap.kill()
            self._dumpcap.wait()
            raise CaptureError(f"dumpcap could not capture for {what}: {said}")
        self._tshark = subprocess.Popen(dis, stdin=self._dumpcap.stdout, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        self._dumpcap.stdout.close()     # tshark's now: dumpcap sees the pipe close if tshark dies
        self._queue: "queue.Queue" = queue.Queue(maxsize=100_000)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._tshark.stdout:
            for rec in self.records(line):
                self._queue.put(rec)
        self._queue.put(None)

    def records(self, line: bytes) -> List[tuple]:
        """The records of one of tshark's JSON lines (none for its index lines or a line it could not
        say in full)."""
        try:
            layers = json.loads(line).get("layers") or {}
            frame, ip = layers.get("frame") or {}, layers.get("ip") or layers.get("ipv6") or {}
            transport = next(t for t in ("tcp", "udp", "sctp") if t in layers)
            l4 = layers[transport]
            raws = layers.get("sip_raw")
            ts = float(frame["frame_frame_time_epoch"])
            number = int(frame["frame_frame_number"])
            src = ip.get("ip_ip_src") or ip.get("ipv6_ipv6_src")
            dst = ip.get("ip_ip_dst") or ip.get("ipv6_ipv6_dst")
            sport, dport = int(l4[f"{transport}_{transport}_srcport"]), int(l4[f"{transport}_{transport}_dstport"])
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            return []
        if not raws or not src or not dst:
            return []
        kind = UPPER_PDU_TLS if "tls" in layers else UPPER_PDU
        out = []
        for raw in (raws if isinstance(raws, list) else [raws]):
            try:
                data = upper_pdu(src, dst, sport, dport, number, bytes.fromhex(raw), transport)
            except (ValueError, OSError):
                continue
            out.append((ts, self.file_index, number, kind, data, 0, len(data)))
        return out

    def read(self, timeout: float = 0.0) -> List[tuple]:
        out: List[tuple] = []
        try:
            rec = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            while rec is not None and len(out) < 512:
                out.append(rec)
                rec = self._queue.get_nowait()
        except queue.Empty:
            pass
        self.frames += len(out)
        return out

    def close(self) -> List[tuple]:
        """Stop capturing; the records tshark still had to print. Packets captured before the stop may
        still be in the kernel's buffer or dumpcap's: take what comes until tshark has been quiet for
        QUIET s (at most QUIET_MAX), as the interface's own capture does, then stop dumpcap."""
        out = until_quiet(lambda: self.read(0.05))
        if self._dumpcap.poll() is None:
            self._dumpcap.send_signal(signal.SIGINT)   # as Ctrl-C: dumpcap writes out what it holds
        for proc in (self._dumpcap, self._tshark):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout=15)
        late = rest_of(self._queue)   # (read() counted the ones before the stop)
        self.frames += len(late)
        return out + late
