"""SIP over TLS, decrypted by Wireshark with a key log (``--tls-keylog FILE`` on every analysis command).

Owns asking tshark for what sipflow cannot read itself: tshark decrypts the TLS sessions of a capture
with the client's key log (the ``SSLKEYLOGFILE`` a browser, SIP.js or Python's ssl writes) and exports
each SIP message it finds inside TLS as a Wireshark "upper PDU" record (``tshark -Y tls -U "OSI layer
7"``, told to read SIP on every port a TLS session was opened to): the message's bytes with tags for its
addresses, ports and original frame number. That export is opened as one more capture with the
original's file index, so its messages keep the original frame numbers and merge into the same analysis
by time; everything else (UDP, TCP, RTP) is still read by sipflow's own decoder, which sees only
ciphertext in TLS and so never reads a message twice.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import List

from sipflow.capture.files import CaptureFile
from sipflow.errors import CaptureError

TSHARK_TIMEOUT = 3600      # seconds for one file


def _tls_server_ports(path: str) -> List[int]:
    """The ports TLS sessions in the capture were opened to (their ClientHello's destination): Wireshark
    hands decrypted data to SIP only on ports it is told about (5061 by default)."""
    r = subprocess.run(["tshark", "-n", "-r", path, "-Y", "tls.handshake.type == 1", "-T", "fields", "-e",
                        "tcp.dstport"], capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    if r.returncode != 0:
        raise CaptureError(f"tshark could not read {path}: {r.stderr.strip()[-300:]}")
    return sorted({int(p) for p in r.stdout.split() if p.isdigit()})


def decrypted(paths: List[str], keylog: str) -> List[CaptureFile]:
    """One capture of upper-PDU records per input that has SIP in TLS (none for the others), each
    with its input's index. Temporary files are removed once opened (the reader keeps them open)."""
    if shutil.which("tshark") is None:
        raise CaptureError("--tls-keylog needs tshark to decrypt TLS (Debian: apt-get install tshark)")
    if not os.path.isfile(keylog):
        raise CaptureError(f"--tls-keylog {keylog}: no such file")
    out = []
    for i, path in enumerate(paths):
        if path == "-":
            raise CaptureError("--tls-keylog cannot read standard input twice: give the capture as a file")
        ports = _tls_server_ports(path)
        if not ports:
            continue
        fd, tmp = tempfile.mkstemp(prefix="sipflow-tls-", suffix=".pcapng")
        os.close(fd)
        decode_as = [arg for port in ports for arg in ("-d", f"tls.port=={port},sip")]
        try:
            r = subprocess.run(["tshark", "-n", "-r", path, "-o", f"tls.keylog_file:{keylog}", *decode_as,
                                "-Y", "tls && sip", "-U", "OSI layer 7", "-w", tmp, "-Q"], capture_output=True,
                               text=True, timeout=TSHARK_TIMEOUT)
            if r.returncode != 0:
                raise CaptureError(f"tshark could not decrypt {path}: {r.stderr.strip()[-300:]}")
            if os.path.getsize(tmp) == 0:
                continue
            f = CaptureFile(tmp, i)
            f.name = f"{path} (SIP decrypted from TLS by tshark)"
            out.append(f)
        finally:
            os.unlink(tmp)
    return out
