"""The analysis as JSON (one document, docs/json.md) and NDJSON (one object per line), written as a
stream.

Owns the writers. The document is never built whole: each top-level member comes from
``Analysis.sections()`` and each list item is encoded on its own by the json module's C encoder (the
pure-Python encoder that ``indent`` selects costs more than the analysis on a big capture). The layout
is one list item per line, which stays readable and diffs well.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _text   # the C escaper the encoder itself uses
from typing import Dict, Iterable, Iterator, TextIO

from sipflow.analysis.messages import SipEvent
from sipflow.analysis.model import Analysis

# One encoder for everything: compact separators, C speed. ensure_ascii keeps the output 7-bit, so
# capture text (display names, reasons) cannot carry terminal control bytes through a JSON viewer.
_encode = json.JSONEncoder(separators=(", ", ": ")).encode

# NDJSON record types, by the document's member names.
NDJSON_TYPES = {"files": "file", "messages": "message", "calls": "call", "registrations": "registration",
                "bindings": "binding", "other": "other", "streams": "stream", "malformed": "malformed",
                "anomalies": "anomaly", "kpis": "kpis", "stats": "stats", "warnings": "warning"}


def _opt(v) -> str:
    return "null" if v is None else _text(v)


def _time(v) -> str:
    # as the json module writes a number: float.__repr__ for floats (NumPy's included), int.__repr__ for
    # ints (Analyzer.feed takes a time from its caller)
    return float.__repr__(v) if isinstance(v, float) else _encode(v)


def message_lines(messages: Iterable[SipEvent]) -> Iterator[str]:
    """Each message as ``_encode(message_dict(e))`` writes it, character for character, at 60 % of the
    cost (measured: 0.43 s against 0.73 s for 118k messages): the parts messages share (endpoints and
    transport, method, status and reason: the record's ``flow`` and ``kind``) are encoded once each, the
    rest goes through the json module's own C escaper. Messages are most of a big document: the whole
    writer went from 4.2 to 3.2 s on 440k messages. tests/test_jsonout.py holds the two to the same
    text."""
    wheres: Dict[tuple, str] = {}
    whats: Dict[tuple, tuple] = {}
    for e in messages:
        where = wheres.get(e.flow)
        if where is None:
            if len(wheres) >= 1 << 16:   # bounded: a capture of a million senders must not double the memory
                wheres.clear()
            where = wheres[e.flow] = '"src": %s, "dst": %s, "transport": %s' % (
                _text(e.source), _text(e.destination), _text(e.transport))
        what = whats.get(e.kind)
        if what is None:
            if len(whats) >= 1 << 16:   # (hostile reason phrases: each is a kind of its own)
                whats.clear()
            what = whats[e.kind] = ('"method": %s, "status": %s, "reason": %s' % (
                _opt(e.method), "null" if e.status is None else int.__repr__(e.status), _opt(e.reason)),
                _opt(e.cseq_method))
        yield ('{"frame": %d, "frames": [%s], "file": %d, "ts": %s, %s, %s, "call_id": %s, "cseq": %s, '
               '"cseq_method": %s, "from_user": %s, "to_user": %s, "from_tag": %s, "to_tag": %s, '
               '"branch": %s, "retransmission": %s}') % (
            e.frame, ", ".join(map(str, e.frames)), e.file, _time(e.ts), where, what[0], _opt(e.call_id),
            "null" if e.cseq is None else int.__repr__(e.cseq), what[1], _opt(e.from_user), _opt(e.to_user),
            _opt(e.from_tag), _opt(e.to_tag), _opt(e.branch), "true" if e.retransmission else "false")


def write_json(a: Analysis, out: TextIO) -> None:
    """The whole document: the same data as ``Analysis.to_dict()``, one list item per line."""
    write = out.write
    write("{")
    first = True
    for key, value, is_list in a.sections():
        write("" if first else ",")
        first = False
        write("\n %s: " % _encode(key))
        if not is_list:
            write(_encode(value))
            continue
        sep = "["
        lines = message_lines(a.messages) if key == "messages" else map(_encode, value)
        for line in lines:
            write(sep)
            write("\n  ")
            write(line)
            sep = ","
        write("[]" if sep == "[" else "\n ]")
    write("\n}\n")


def write_ndjson(a: Analysis, out: TextIO) -> None:
    """One JSON object per line, each with a ``type`` (message, call, registration, stream, ...), in the
    document's order: made for ``jq -c 'select(.type == "call")'`` and line-oriented tools."""
    write = out.write
    for key, value, is_list in a.sections():
        kind = NDJSON_TYPES.get(key)
        if kind is None:   # the version: a header line
            write(_encode({"type": "sipflow", "version": value}))
            write("\n")
            continue
        if key == "messages":
            for line in message_lines(a.messages):
                write('{"type": "message", ')
                write(line[1:])
                write("\n")
            continue
        for item in value if is_list or isinstance(value, list) else [value]:
            record = {"type": kind}
            record.update(item if isinstance(item, dict) else {"text": item})
            write(_encode(record))
            write("\n")
