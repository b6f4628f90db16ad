"""SIP on byte streams (TCP, TLS-decrypted, WebSocket-deframed): cutting messages out by Content-Length
(RFC 3261 §18.3).

Owns ``frame_stream``, a pure function in h11's "need more data" style, and ``StreamFramer``, which
keeps one direction's bytes and the frames that carried them. Leaves parsing to ``sip.message``.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from sipflow.net.streambuf import StreamBuffer
from sipflow.sip.message import KNOWN_METHODS, REQUEST_LINE, STATUS_LINE

MAX_HEAD = 64 * 1024  # a SIP head larger than this on a stream is junk, not a message in progress
MAX_BODY = 1 << 20    # a body announced larger than this on a stream is not waited for

# Where a SIP message could start inside a stream that was joined mid-way.
_RESYNC = re.compile(rb"(?:^|\n)(SIP/2\.0 [1-6][0-9][0-9] |(?:" + "|".join(KNOWN_METHODS).encode()
                     + rb") [^ \r\n]+ SIP/2\.0\r?\n)")


def frame_stream(data) -> Tuple[str, int]:
    """Decide what the start of a stream buffer holds, without consuming it (h11-style: a pure function).

    Returns ``("need", 0)`` when more bytes are needed, ``("keepalive", n)`` for CRLF keep-alives,
    ``("junk", n)`` for n bytes that cannot start a message (skip them), ``("message", n)``, or
    ``("oversized", n)``: a head whose Content-Length exceeds ``MAX_BODY``, to be taken alone.
    """
    if not data:
        return "need", 0
    n = 0
    while data[n:n + 1] in (b"\r", b"\n") and n < len(data):
        n += 1
    if n:
        return "keepalive", n
    first_nl = data.find(b"\n")
    if first_nl < 0:
        if len(data) > 1024 or not _could_start(data):
            return _junk(data)
        return "need", 0
    if not _could_start(data[:first_nl + 1]) or not (
            STATUS_LINE.match(data[:first_nl].rstrip(b"\r")) or REQUEST_LINE.match(data[:first_nl].rstrip(b"\r"))):
        return _junk(data)
    head_end = data.find(b"\r\n\r\n")
    sep = 4
    if head_end < 0:
        lf = data.find(b"\n\n")
        if lf >= 0:
            head_end, sep = lf, 2
    if head_end < 0:
        if len(data) > MAX_HEAD:
            return _junk(data, 1)
        return "need", 0
    cl = _content_length(bytes(data[:head_end]))
    if cl > MAX_BODY:
        # Never buffer a body this big (a lie, or an attack): the head goes on alone, its bad length is
        # the parser's to report, and what follows is skipped up to the next start line.
        return "oversized", head_end + sep
    total = head_end + sep + cl
    if len(data) < total:
        return "need", 0
    return "message", total


def _could_start(prefix) -> bool:
    return prefix[:1].isalpha() if prefix else True


def _junk(data, start: int = 0) -> Tuple[str, int]:
    """Skip to the next place a message could start (a stream joined mid-message, or garbage)."""
    m = _RESYNC.search(bytes(data), max(start, 1))
    if m:
        return "junk", m.start(1)
    # No start line in sight: drop every complete line; the last one may be a start line still arriving.
    cut = data.rfind(b"\n") + 1
    if cut <= 0 or len(data) - cut > 1024:
        cut = len(data)
    return ("junk", cut) if cut else ("need", 0)


# At most 18 digits (sip.message.MAX_DIGITS): a longer number is no length (the parser flags it).
_CL_RE = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*(\d{1,18})(?!\d)", re.I)


def _content_length(head: bytes) -> int:
    m = _CL_RE.search(head)
    return int(m.group(1)) if m else 0


class StreamFramer:
    """Cuts SIP messages out of one direction of a byte stream, remembering which frames carried each."""

    def __init__(self) -> None:
        self.buf = StreamBuffer()
        self.junk_bytes = 0
        self.keepalive_bytes = 0
        self.oversized = 0      # heads whose announced body was too big to wait for (MAX_BODY)

    def feed(self, payload: Optional[bytes], frame: int) -> List[Tuple[bytes, Tuple[int, ...]]]:
        """Add bytes (None: bytes were lost, resynchronise) and return the complete messages now in."""
        if payload is None:
            if len(self.buf):
                self.junk_bytes += len(self.buf)
            self.buf.clear()
            return []
        self.buf.append(payload, frame)
        out = []
        while True:
            kind, n = frame_stream(self.buf.data)
            if kind == "need" or n == 0:
                return out
            data, frames = self.buf.take(n)
            if kind == "message":
                out.append((data, frames))
            elif kind == "oversized":
                self.oversized += 1
                out.append((data, frames))
            elif kind == "junk":
                self.junk_bytes += n
            else:
                self.keepalive_bytes += n
