"""The HTML report: one self-contained file that tells a capture's whole story (``sipflow report``).

Owns turning an ``Analysis`` into the page's data and writing the page through the jinja2 template
``templates/report.html.j2`` (autoescape on). The page needs nothing but itself: styles and script are
inline, the charts are inline SVG (``render.charts``), and a Content-Security-Policy forbids every
network request, so it opens offline with a double click and a hostile capture cannot make it fetch.

Capture text never becomes markup. Server-side text (overview, registrations, dialogs, malformed
messages) goes through jinja2's autoescape; everything the script draws (the call table, each call's
ladder, the raw messages) travels as JSON inside ``<script type="application/json">`` (jinja2's
``tojson`` escapes ``<``, ``>``, ``&`` and ``'``, so no ``</script>`` can close the block) and is put
into the page with ``textContent`` and SVG text nodes, never ``innerHTML``.

The call table holds every call; ladders and raw messages are embedded for the first ``max_detail``
calls (default 1000), so a capture of 40 000 calls still makes a page a browser opens; the page says
how many calls have no detail and how to get it (filter, or raise ``--max-detail``).
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Dict, List, Optional

from sipflow.analysis.messages import SipEvent
from sipflow.analysis.timeline import timeline
from sipflow.render.ladder import Ladder, layouts
from sipflow.render.safe import printable
from sipflow.render.tables import OUTCOME_LABEL, call_rows, fmt_datetime, fmt_pct, fmt_secs, party_text

MAX_DETAIL = 1000          # calls with their ladder and raw messages in the page
MAX_ROWS = 5000            # rows of the registration, dialog and malformed tables
MAX_MESSAGE = 64 * 1024    # characters of one raw message kept in the page


def default_path(files: List[str]) -> str:
    """reports/NAME.html, NAME from the first capture file."""
    base = os.path.basename(files[0]) if files and files[0] != "-" else "stdin"
    for ext in (".gz", ".pcapng", ".pcap", ".cap"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return os.path.join("reports", (base or "capture") + ".html")


def _raw_text(e: SipEvent) -> str:
    raw = e.raw
    if not raw:
        return "(its bytes were not kept: summarised by --keep-calls)"
    text = printable(raw.decode("utf-8", "replace").replace("\r\n", "\n"), lines=True)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"\n… ({len(text) - MAX_MESSAGE} more characters)"


def _message(e: SipEvent) -> Dict[str, Any]:
    return {"frames": ", ".join(map(str, e.frames)), "file": e.file, "ts": e.ts, "src": e.source,
            "dst": e.destination, "transport": e.transport.upper(), "retransmission": e.retransmission,
            "text": _raw_text(e)}


def _stream(s) -> Dict[str, Any]:
    q = s.quality
    return {"from": s.source, "to": s.destination, "ssrc": f"0x{s.ssrc:08X}", "codec": s.codec or f"PT {s.pt}",
            "media": s.media or "", "packets": s.packets, "lost": s.lost,
            "loss": round(100.0 * max(s.lost, 0) / s.expected, 2) if s.expected else None,
            "jitter_mean": None if s.jitter_mean is None else round(s.jitter_mean, 2),
            "jitter_max": None if s.jitter_max is None else round(s.jitter_max, 2),
            "max_delta": round(s.max_delta * 1000, 1), "late_adaptive": s.late_adaptive,
            "mos": None if q is None else round(q.mos, 2), "r": None if q is None else round(q.r, 1),
            "ie_eff": None if q is None else round(q.ie_eff, 1), "ppl": None if q is None else round(q.ppl, 2),
            "delay": None if q is None or q.delay_ms is None else round(q.delay_ms, 1),
            "note": s.quality_note or "",
            "rtcp": None if s.rtcp is None else {
                "packets": s.rtcp.packets, "fraction_lost": s.rtcp.fraction_lost,
                "jitter": None if s.rtcp.jitter is None else round(s.rtcp.jitter, 2),
                "rtt": None if s.rtcp.rtt is None else round(s.rtcp.rtt, 1)}}


def _ladder(lad: Ladder, message_index: Dict[int, int], call, ids) -> Dict[str, Any]:
    return {
        "title": lad.title, "facts": list(lad.facts), "lanes": list(lad.lanes), "start": lad.start,
        "arrows": [[a.src, a.dst, a.label, a.kind, a.ts, a.frame, a.retransmission,
                    message_index.get(id_, -1), list(a.notes), list(a.sdp)]
                   for a, id_ in zip(lad.arrows, ids)],
        "spans": [[s.src, s.dst, s.first, s.last, s.label, s.kind, s.frame] for s in lad.spans],
        "streams": [_stream(s) for s in call.streams] if call is not None else [],
        "events": [[ev.ts, ev.frame, ev.kind, ev.text] for ev in timeline(call)] if call is not None else [],
        "anomalies": [[x.kind.value, x.frame, x.detail] for x in call.anomalies] if call is not None else [],
    }


def page_data(a, max_detail: int = MAX_DETAIL) -> Dict[str, Any]:
    """What the script draws: the call table, and for the first ``max_detail`` calls their ladders and
    raw messages (messages indexed once, shared by the ladders that show them)."""
    rows = call_rows(a)
    worst: Dict[str, Optional[float]] = {}
    for c in a.calls:
        rated = [s.quality.mos for s in c.streams if s.quality is not None]
        worst[c.call_id] = min(rated) if rated else None
    detailed = {c.call_id for c in a.calls[:max_detail]}
    by_call: Dict[Optional[str], List[SipEvent]] = {}
    for e in a.messages:
        if e.call_id in detailed:
            by_call.setdefault(e.call_id, []).append(e)
    messages: List[Dict[str, Any]] = []
    index: Dict[int, int] = {}
    details: Dict[str, Any] = {}
    calls = {c.call_id: c for c in a.calls}
    chosen = [e for events in by_call.values() for e in events]
    for lad, (call_id, events) in zip(layouts(a, media=True, messages=chosen), by_call.items()):
        for e in events:
            index[id(e)] = len(messages)
            messages.append(_message(e))
        details[call_id] = _ladder(lad, index, calls.get(call_id), [id(e) for e in events])
    table = []
    for c, d in zip(a.calls, rows):
        t = c.timing
        table.append({
            "n": a.number(c), "call_id": c.call_id, "start": c.start, "from": party_text(d["from"], d["from_display"]),
            "to": party_text(d["to"], d["to_display"]),
            "outcome": OUTCOME_LABEL.get(c.outcome.value, c.outcome.value), "status": c.final_status,
            "pdd": t.pdd, "setup": t.setup_time, "duration": t.duration, "media": d.get("media", ""),
            "mos": None if worst[c.call_id] is None else round(worst[c.call_id], 2),
            "anomalies": len(c.anomalies), "messages": len(c.events),
            "agent": c.caller_agent or "", "detail": c.call_id if c.call_id in details else None})
    return {"calls": table, "details": details, "messages": messages, "detailed": len(details),
            "max_detail": max_detail}


def _overview(a) -> Dict[str, Any]:
    st = a.stats
    stamps = [c.start for c in a.calls] + [e.ts for e in a.messages[:1]] + [e.ts for e in a.messages[-1:]]
    k = a.kpis()
    timings = []
    for name, label in (("pdd", "PDD"), ("time_to_answer", "time to answer"), ("setup_time", "setup time"),
                        ("duration", "duration")):
        d = k.get(name)
        if d:
            timings.append({"name": label, "n": d["n"], "mean": fmt_secs(d["mean"]), "p50": fmt_secs(d["p50"]),
                            "p95": fmt_secs(d["p95"]), "max": fmt_secs(d["max"])})
    return {
        "files": a.files, "first": fmt_datetime(min(stamps)) if stamps else "-",
        "last": fmt_datetime(max(stamps)) if stamps else "-",
        "figures": [("frames", sum(f.get("frames", 0) for f in a.files)), ("SIP messages", st["sip_messages"]),
                    ("retransmissions", st["retransmissions"]), ("RTP packets", st["rtp_packets"]),
                    ("RTCP packets", st["rtcp_packets"]), ("RTP streams", st["streams"]),
                    ("calls", k["calls"]), ("registrations", len(a.registrations)),
                    ("malformed", len(a.malformed)), ("anomalies", len(a.anomalies))],
        "kpis": [("ASR", fmt_pct(k["asr"])), ("NER", fmt_pct(k["ner"])), ("SER", fmt_pct(k["ser"])),
                 ("finished attempts", k["completed_attempts"])],
        "timings": timings,
        "outcomes": sorted(((OUTCOME_LABEL.get(o, o), n) for o, n in a.call_outcomes().items()),
                           key=lambda x: -x[1]),
    }


def _registrations(a) -> List[Dict[str, Any]]:
    by_aor: Dict[str, Dict[str, Any]] = {}
    for r in a.registrations:
        row = by_aor.setdefault(r.aor, {"aor": r.aor, "flows": 0, "requests": 0, "challenges": 0, "outcome": "",
                                        "status": None, "expires": None, "contact": "", "last": 0.0})
        row["flows"] += 1
        row["requests"] += r.requests
        row["challenges"] += r.challenges
        if r.end >= row["last"]:
            row.update(outcome=r.outcome.value, status=r.final_status, expires=r.expires_granted,
                       contact=r.contact or "", last=r.end)
    out = sorted(by_aor.values(), key=lambda x: x["aor"])
    for row in out:
        row["last"] = fmt_datetime(row["last"])
    return out


def render(a, files: List[str], max_detail: int = MAX_DETAIL, title: Optional[str] = None) -> str:
    """The whole page as one string."""
    import jinja2

    from sipflow import __version__
    from sipflow.render.charts import summary_svg

    here = os.path.join(os.path.dirname(__file__), "templates")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(here), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True)
    with open(os.path.join(here, "report.js"), encoding="utf-8") as fh:
        script = jinja2.utils.markupsafe.Markup(fh.read())      # our own code, not capture text
    data = page_data(a, max_detail)
    dialogs = [d for d in a.dialogs() if d.method not in ("INVITE", "REGISTER")]
    regs = _registrations(a)
    return env.get_template("report.html.j2").render(
        title=title or "sipflow report: " + ", ".join(os.path.basename(f) for f in files),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), version=__version__,
        overview=_overview(a), charts=jinja2.utils.markupsafe.Markup(summary_svg(a)), data=data,
        registrations=regs[:MAX_ROWS], registrations_more=max(0, len(regs) - MAX_ROWS),
        dialogs=dialogs[:MAX_ROWS], dialogs_more=max(0, len(dialogs) - MAX_ROWS),
        malformed=a.malformed[:MAX_ROWS], malformed_more=max(0, len(a.malformed) - MAX_ROWS),
        anomalies=a.anomalies[:MAX_ROWS], anomalies_more=max(0, len(a.anomalies) - MAX_ROWS),
        fmt_datetime=fmt_datetime, scope=a.scope.line() if a.scope is not None else None,
        warnings=a.warnings, script=script)


def write(a, files: List[str], path: str, max_detail: int = MAX_DETAIL) -> int:
    """Write the page to ``path``; returns its size in bytes."""
    text = render(a, files, max_detail)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return len(text.encode("utf-8"))
