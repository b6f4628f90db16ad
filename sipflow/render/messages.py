"""SIP messages shown as they were received: ``sipflow show``.

Owns one view: each message's bytes, as the parser got them (after IP reassembly, TCP reordering and
WebSocket unmasking), under a line that says where it was in the capture (frames, file, time),
between which endpoints, over which transport, and whether it was a retransmission. Header lines are
shown one per line; a body is shown after the blank line when it is text (SDP, sipfrag, plain text,
XML), otherwise as its size and type. Capture text is hostile: control characters are escaped
(``render.safe``), so a message cannot rewrite the terminal.
"""
from __future__ import annotations

from typing import Iterable, List

from sipflow.analysis.messages import SipEvent
from sipflow.render.safe import printable
from sipflow.render.tables import fmt_datetime

TEXT_BODIES = ("application/sdp", "message/sipfrag", "text/", "application/dtmf", "application/xml",
               "application/pidf+xml", "application/json", "application/simple-message-summary", "+xml")


def _is_text(content_type: str) -> bool:
    ct = content_type.lower()
    return any(ct.startswith(t) or (t.startswith("+") and t in ct) for t in TEXT_BODIES)


def show_message(e: SipEvent) -> List[str]:
    """One message: its banner line, then its lines."""
    frames = ", ".join(map(str, e.frames))
    where = f"frame{'s' if len(e.frames) > 1 else ''} {frames}" + (f" of file {e.file}" if e.file else "")
    banner = (f"=== {where} | {fmt_datetime(e.ts)} | {e.source} -> {e.destination} | {e.transport.upper()}"
              + (" | retransmission" if e.retransmission else "") + " ===")
    raw = e.raw
    if not raw:
        return [banner, "(its bytes were not kept: summarised by --keep-calls)"]
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = [printable(line) for line in head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")]
    content_type = ""
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() in ("content-type", "c"):
            content_type = value.strip()
    out = [banner] + lines
    if body:
        out.append("")
        if _is_text(content_type):
            out += [printable(line) for line in body.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
                    .split("\n")]
        else:
            out.append(f"[{len(body)} bytes of {printable(content_type) or 'body'}, not text]")
    return out


def show_text(messages: Iterable[SipEvent]) -> str:
    blocks = ["\n".join(show_message(e)) for e in messages]
    return "\n\n".join(blocks)
