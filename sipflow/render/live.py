"""Live events as text lines and NDJSON (``sipflow live``).

Owns how ``analysis.watch`` events and the periodic counters read: one short line per event for a
terminal or a log (``14:02:11.204 call 3 answered  alice -> bob  PDD 0.21 s``), or one JSON object per
line for a pipe (``--format ndjson``, documented in docs/live.md). Capture text is escaped for the
terminal (``render.safe``); JSON escapes itself.
"""
from __future__ import annotations

import json
from typing import Any, Dict

from sipflow.render.safe import printable
from sipflow.render.tables import fmt_time


def _secs(v) -> str:
    return "-" if v is None else f"{v:.2f} s"


def event_line(e) -> str:
    """One event in one line."""
    d = e.data
    when = fmt_time(e.ts)
    if e.kind == "call":
        who = f"{d['from']} -> {d['to']}"
        line = f"{when} call {d['call']} {e.what:<9} {who}"
        if e.what == "answered":
            line += f"  PDD {_secs(d['pdd'])}"
        elif e.what == "ended":
            line += f"  {d['outcome'].replace('_', ' ')}" + (f" {d['final_status']}" if d["final_status"] and
                                                            d["outcome"] != "answered" else "")
            line += f", {_secs(d['duration'])}" if d["duration"] is not None else ""
            if d["streams"]:
                line += f", {d['streams']} streams, lost {d['lost']}" + (f", MOS {d['mos']:.2f}" if d["mos"] else "")
        elif "text" in d and e.what not in ("started", "ringing"):
            line += f"  ({d['text']})"
        return printable(line)
    if e.kind == "registration":
        return printable(f"{when} register {e.what:<12} {d['aor']}  {d['final_status']}"
                         + (f", expires {d['expires']}" if d["expires"] is not None else "")
                         + (f", {d['challenges']} challenge{'s' if d['challenges'] != 1 else ''}"
                            if d["challenges"] else ""))
    if e.kind == "anomaly":
        return printable(f"{when} anomaly  {e.what.replace('_', ' ')} (frame {d['frame']}): {d['detail']}")
    return printable(f"{when} malformed frame {d['frame']} {d['src']} -> {d['dst']}: {d['error']}")


def stats_dict(ts: float, counters: Dict[str, int]) -> Dict[str, Any]:
    return {"type": "stats", "ts": ts, **counters}


def stats_line(counters: Dict[str, int]) -> str:
    c = counters
    return (f"packets {c['packets']}, SIP {c['sip_messages']}, RTP {c['rtp_packets']}, calls {c['calls']}, "
            f"malformed {c['malformed']}, dropped by the kernel {c['kernel_dropped']}, "
            f"by the interface {c['interface_dropped']}" + (f", HEP packets {c['hep_packets']}" if c.get("hep_packets")
                                                            else "")
            + (f", media ports {c['media_ports']} (filter set {c['filter_changes']} times)"
               if "filter_changes" in c else ""))


def ndjson(obj: Dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)
