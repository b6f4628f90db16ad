"""Asking tshark for SIP: every message Wireshark's dissectors find (``--engine tshark``), or only the
SIP inside TLS sessions it decrypts with a key log (``--tls-keylog FILE`` on every analysis command).

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
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import List, Optional

from sipflow.capture.files import CaptureFile
from sipflow.errors import CaptureError
from sipflow.net.link import UPPER_PDU_TLS

UPPER_PDU = 252           # Wireshark's upper-PDU link type, what tshark -U writes

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
