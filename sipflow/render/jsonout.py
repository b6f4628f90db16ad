"""The analysis as JSON (one document, docs/json.md) and NDJSON (one object per line), written as a
stream.

Owns the writers. The document is never built whole: each top-level member comes from
``Analysis.sections()`` and each list item is encoded on its own by the json module's C encoder (the
pure-Python encoder that ``indent`` selects costs more than the analysis on a big capture). The layout
is one list item per line, which stays readable and diffs well.
"""
from __future__ import annotations

import json
from typing import TextIO

from sipflow.analysis.model import Analysis

# One encoder for everything: compact separators, C speed. ensure_ascii keeps the output 7-bit, so
# capture text (display names, reasons) cannot carry terminal control bytes through a JSON viewer.
_encode = json.JSONEncoder(separators=(", ", ": ")).encode

# NDJSON record types, by the document's member names.
NDJSON_TYPES = {"files": "file", "messages": "message", "calls": "call", "registrations": "registration",
                "bindings": "binding", "other": "other", "streams": "stream", "malformed": "malformed",
                "anomalies": "anomaly", "kpis": "kpis", "stats": "stats", "warnings": "warning"}


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
        for item in value:
            write(sep)
            write("\n  ")
            write(_encode(item))
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
        for item in value if is_list or isinstance(value, list) else [value]:
            record = {"type": kind}
            record.update(item if isinstance(item, dict) else {"text": item})
            write(_encode(record))
            write("\n")
