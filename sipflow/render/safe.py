"""Capture text made safe for where it lands: terminals, text files and spreadsheets.

Owns the two rules every renderer applies, written once:
- ``printable``: C0 control characters (all but tab and newline where the caller allows them), DEL and
  C1 become visible escapes (``\\x1b``), so a display name holding ``ESC [2J`` or a bare ``CR`` cannot
  clear a screen, set a window title or hide a line. The escape is what Python's ``repr`` would show.
- ``csv_cell``: text that a spreadsheet would run as a formula (a leading ``=``, ``+``, ``-``, ``@``, tab
  or CR, as OWASP's CSV-injection guidance lists) gets a leading ``'``; numbers are left as numbers. The
  ``csv`` module quotes what needs quoting (commas, quotes, newlines).
"""
from __future__ import annotations

import re
from typing import Any

# C0 except tab and newline, DEL, C1. Tab and newline are handled by the caller's choice.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")   # a plain number is no formula


def _escape(m: "re.Match[str]") -> str:
    return f"\\x{ord(m.group(0)):02x}"


def printable(text: str, lines: bool = False) -> str:
    """``text`` with control characters shown as escapes; ``lines=True`` keeps newlines and tabs (a
    whole report), otherwise they are escaped too (one cell, one label)."""
    pattern = _CONTROL if lines else _CONTROL_ALL
    return pattern.sub(_escape, text) if pattern.search(text) else text


def csv_cell(value: Any) -> Any:
    """A CSV field: numbers and None as they are; text with control characters escaped and a formula
    prefix neutralised."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    if value.startswith(_FORMULA) and value != "-" and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
