"""DTMF keys, and DTMF carried in SIP INFO bodies: ``application/dtmf-relay`` and ``application/dtmf``.

Owns the names of the keys (event codes 0-16, shared with ``media.events``, RFC 4733) and reading one
INFO body into a key and a duration. Neither format has an RFC: dtmf-relay is Cisco's
``Signal=5`` / ``Duration=160`` (milliseconds) lines, which every PBX copied; application/dtmf holds the
key alone (draft-kaplan-dispatch-info-dtmf-package), some senders write an event code (10 for "*", 11
for "#") instead of the key. Anything else is not DTMF (None), never an error.
"""
from __future__ import annotations

from typing import Optional, Tuple

from sipflow.sip.message import to_int

DIGITS = "0123456789*#ABCD"         # events 0-15 (RFC 4733 §3.2); 16 is a hook flash
DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
MAX_DURATION_MS = 60_000   # a key held longer is not a key press: the duration is left out


def event_name(code: int) -> str:
    """The key of an event code (RFC 4733 §3.2): a DTMF digit, "flash", or "event N" for the other
    RFC 4734 tones."""
    if code < len(DIGITS):
        return DIGITS[code]
    return "flash" if code == 16 else f"event {code}"


def _key(text: str) -> Optional[str]:
    text = text.strip()
    if len(text) == 1 and text.upper() in DIGITS:
        return text.upper()
    code = to_int(text) if text.isdigit() else None
    if code is not None and code <= 16:
        return event_name(code)
    return None


def dtmf_of(content_type: Optional[str], body: bytes) -> Optional[Tuple[str, Optional[int]]]:
    """(key, duration in ms or None) of an INFO body, or None when it is not a DTMF body."""
    if not content_type or not body:
        return None
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype not in DTMF_TYPES:
        return None
    text = body[:256].decode("ascii", "replace")
    if "=" not in text:
        key = _key(text) if ctype == "application/dtmf" else None
        return (key, None) if key else None
    key, duration = None, None
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip().lower()
        if name == "signal":
            key = _key(value)
        elif name == "duration":
            d = to_int(value.strip())
            duration = d if d is not None and d <= MAX_DURATION_MS else None
    return (key, duration) if key else None
