"""Renderers over an ``Analysis``: text tables that fit an 80-column terminal, CSV, JSON.

Owns presentation only: which columns, how values are shown (times, durations, addresses), how a
table is laid out. Reads ``Analysis`` objects and their dict form; never sees packets. (HTML reports and
ladders will live beside this, on the same data.)
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
import time
from typing import Any, Dict, List, Optional, Sequence

from sipflow.analysis.model import Analysis, call_dict, stream_dict
from sipflow.analysis.timeline import timeline
from sipflow.media.emodel import MIN_PACKETS
from sipflow.net import fmt_endpoint
from sipflow.render.safe import csv_cell, printable

OUTCOME_LABEL = {
    "answered": "answered", "busy": "busy", "rejected": "rejected", "cancelled": "cancelled",
    "redirected": "redirected", "no_answer": "no answer", "no_response": "no response",
    "in_progress": "in progress", "partial": "partial",
}


# ---------------------------------------------------------------------------------------------------
# Value formatting


def _gmtime(ts: float):
    """UTC broken-down time, or None for a timestamp no calendar holds (a corrupt capture's year
    300 000 000 000): shown as the number instead of an exception."""
    try:
        return time.gmtime(ts)
    except (OverflowError, OSError, ValueError):
        return None


def fmt_time(ts: Optional[float]) -> str:
    """Wall-clock time of a capture timestamp, UTC, to the millisecond."""
    if ts is None:
        return "-"
    t = _gmtime(ts)
    return f"{ts:.0f}?" if t is None else time.strftime("%H:%M:%S", t) + f".{int((ts % 1) * 1000):03d}"


def fmt_datetime(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    t = _gmtime(ts)
    return f"{ts:.0f}?" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{int((ts % 1) * 1000):03d} UTC"


def dates_line(stamps: Sequence[float]) -> str:
    """The date (UTC) the times of a table are on, said once: ``Times UTC, 2026-11-24`` (or a range)."""
    days = sorted({time.strftime("%Y-%m-%d", t) for t in map(_gmtime, stamps) if t is not None})
    if not days:
        return "Times UTC"
    return f"Times UTC, {days[0]}" + (f" to {days[-1]}" if len(days) > 1 else "")


def fmt_secs(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v < 0.01:
        return f"{v * 1000:.1f}ms"
    if v < 1:
        return f"{v * 1000:.0f}ms"
    if v < 60:
        return f"{v:.1f}s"
    m, s = divmod(int(round(v)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def fmt_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _clip(text: str, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[:max(1, width - 1)] + "…"


def render_table(headers: Sequence[str], rows: List[Sequence[Any]], max_width: int = 80,
                 flexible: Dict[int, int] = None, right: Sequence[int] = (), gap: int = 2,
                 keep_end: Sequence[int] = (), first: Sequence[int] = ()) -> str:
    """A plain aligned table. Columns in ``flexible`` (index -> narrowest width) shrink, widest first,
    clipped with …, until the table fits ``max_width``; columns in ``keep_end`` lose their start, not
    their end (an address keeps its port); columns in ``first`` shrink to their floor before any other."""
    cells = [[str(h) for h in headers]] + [["" if c is None else printable(str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    total = sum(widths) + gap * (len(widths) - 1)
    floors = dict(flexible or {})
    while total > max_width:
        shrinkable = [i for i, floor in floors.items() if widths[i] > max(floor, len(headers[i]))]
        if not shrinkable:
            break
        shrinkable = [i for i in shrinkable if i in first] or shrinkable
        i = max(shrinkable, key=lambda k: widths[k] - floors[k])
        widths[i] -= 1
        total -= 1
    lines = []
    for n, r in enumerate(cells):
        parts = []
        for i, c in enumerate(r):
            c = _clip(c, widths[i]) if i not in keep_end or len(c) <= widths[i] else "…" + c[len(c) - widths[i] + 1:]
            parts.append(c.rjust(widths[i]) if i in right and n else c.ljust(widths[i]))
        lines.append((" " * gap).join(parts).rstrip())
        if n == 0:
            lines.append((" " * gap).join("-" * w for w in widths))
    return "\n".join(lines)


def _csv_row(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: csv_cell(v) for k, v in d.items()}


# ---------------------------------------------------------------------------------------------------
# calls


def _party(uri: str) -> str:
    """sip:alice@example.com -> alice@example.com (what people read in a call list)."""
    for scheme in ("sips:", "sip:", "tel:"):
        if uri.startswith(scheme):
            return uri[len(scheme):]
    return uri


def party_text(uri: str, display: Optional[str]) -> str:
    """The address first, then the display name quoted beside it: ``alice@example.com "Alice"``. A
    display name is text anyone can write (``"<sip:ceo@bank>"``), so it never stands in the address's
    place, and a narrow column cuts it before the address."""
    text = _party(uri)
    if display:
        text += ' "' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _media_summary(a: Analysis, call) -> str:
    """One entry per direction, caller to callee first: ``→PCMA ←PCMA``; video after a ``+``
    (``→PCMA+VP8``), the worst loss when there is any (``→PCMA 3%``), ``←none`` for a direction with no
    packets while the other has some, ``T.38`` for a fax. ``-`` when the capture holds no media."""
    if not call.streams and not call.faxes:
        return "-"
    # where the caller said it receives: the SDPs of the messages it sent (its own hop)
    sent = {e.frame for e in call.events if (e.src, e.sport) == call.caller}
    caller_side = {(o.ip, o.port) for o in call.media if o.frame in sent}
    sides: Dict[str, Dict[str, float]] = {"→": {}, "←": {}}
    for s in call.streams:
        side = sides["←" if (s.dst, s.dport) in caller_side else "→"]
        name = str(s.codec or f"PT{s.pt}")
        loss = s.lost / s.expected if s.expected > 0 and s.lost > 0 else 0.0
        side[name] = max(side.get(name, 0.0), loss)
    for f in call.faxes:
        side = sides["←" if (f.dst, f.dport) in caller_side else "→"]
        side["T.38"] = max(side.get("T.38", 0.0), f.lost / f.expected if f.expected and f.lost else 0.0)
    parts = []
    for arrow, side in sides.items():
        if not side:
            parts.append(arrow + "none")
            continue
        worst = max(side.values())
        parts.append(arrow + "+".join(side) + (f" {worst * 100:.0f}%" if worst >= 0.005 else
                                               " <1%" if worst > 0 else ""))
    return " ".join(parts)


def call_rows(a: Analysis, with_timeline: bool = False) -> List[Dict[str, Any]]:
    index = {id(s): i for i, s in enumerate(a.streams)}
    rows = []
    for c in a.calls:
        d = call_dict(c, a.end_ts, index, with_timeline)
        d["media"] = _media_summary(a, c)
        rows.append(d)
    return rows


def timeline_lines(a: Analysis, width: int = 80) -> List[str]:
    """Each call's events in plain words (``analysis.timeline``), under a line naming the call."""
    lines: List[str] = []
    for c in a.calls:
        events = timeline(c)
        parties = f"{party_text(c.from_uri, c.from_display)} -> {party_text(c.to_uri, c.to_display)}"
        lines.append(f"Call {a.number(c)} ({printable(c.call_id)}), {printable(parties)}:")
        if not events:
            lines.append("  (nothing but its messages)")
        for ev in events:
            lines += textwrap.wrap(f"{fmt_time(ev.ts)} #{ev.frame:<5} {printable(ev.text)}", width,
                                   initial_indent="  ", subsequent_indent=" " * 22, break_on_hyphens=False)
    return lines


def calls_text(a: Analysis, width: int = 80, events: bool = False, wide: bool = False) -> str:
    if not a.calls:
        if a.scope is not None:
            return f"0 of {a.scope.calls_total} calls match {a.scope.description}."
        others = len({e.call_id for e in a.messages})
        return "\n".join(textwrap.wrap("No calls (no INVITE) in the capture." + (
            f" `sipflow dialogs` lists its {others} other dialog(s) (REGISTER, OPTIONS, MESSAGE, SUBSCRIBE...)."
            if others else ""), width))
    data = call_rows(a)
    numbers = [a.number(c) for c in a.calls]

    def table(party) -> str:
        rows = []
        for n, d in zip(numbers, data):
            outcome = OUTCOME_LABEL.get(d["outcome"], d["outcome"])
            if d["final_status"] is not None and d["outcome"] != "answered":
                outcome += f" {d['final_status']}"
            rows.append([n, fmt_time(d["start"]), d["call_id"], party(d["from"], d["from_display"]),
                         party(d["to"], d["to_display"]), outcome,
                         fmt_secs(d["pdd"]), fmt_secs(d["duration"]), d["media"], d["messages"]]
                        + ([d["caller_agent"] or "-", d["callee_agent"] or "-", d["caller_media"] or "-",
                            d["callee_media"] or "-"] if wide else []))
        headers = ["#", "Start", "Call-ID", "From", "To", "Outcome", "PDD", "Dur", "Media", "Msg"]
        if wide:
            headers += ["Caller agent", "Callee agent", "Caller SDP", "Callee SDP"]
        return render_table(headers, rows, width, flexible={2: 6, 3: 5, 4: 5, 8: media_floor}, right=(0, 6, 7, 9),
                            gap=1)

    media_floor = min(max(len(d["media"]) for d in data), 23)   # the media column is read whole when it can be

    text = table(party_text if wide else lambda uri, display: _party(uri))
    if not wide and (max(len(line) for line in text.splitlines()) > width or "…" in text):
        # Not enough room for user@host: the user part is what people scan for.
        text = table(lambda uri, display: _party(uri).split("@")[0] or _party(uri))
    text = dates_line([d["start"] for d in data]) + "\n" + text
    tail = (a.scope.line() if a.scope is not None else f"{len(data)} call(s)")
    if events:
        text += "\n\nWhat happened (frame numbers for Wireshark's frame.number == N):\n" + "\n".join(
            timeline_lines(a, width))
    return text + "\n\n" + "\n".join(textwrap.wrap(
        f"{tail}. One call: --call N (the # column) or --call-id with any part of its Call-ID; "
        f"sipflow analyze FILE --call N --format text shows all of it.", width))


CALL_CSV_FIELDS = ["call_id", "start", "from", "to", "from_display", "to_display", "outcome", "final_status", "reason",
                   "ended_by", "time_to_first_response", "pdd", "challenge", "time_to_answer", "setup_time", "duration",
                   "hops", "dialogs", "messages", "media", "holds", "caller_agent", "callee_agent", "caller_media",
                   "callee_media"]


def calls_csv(a: Analysis) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CALL_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for d in call_rows(a):
        d["holds"] = sum(1 for h in d["holds"] if h["what"] == "hold")   # times the call was put on hold
        w.writerow(_csv_row(d))
    return out.getvalue()


def calls_json(a: Analysis) -> str:
    return json.dumps(call_rows(a, with_timeline=True), indent=2)


# ---------------------------------------------------------------------------------------------------
# dialogs


def dialog_rows(a: Analysis) -> List[Dict[str, Any]]:
    return [{"call_id": d.call_id, "method": d.method, "start": d.start, "from": d.from_user, "to": d.to_user,
             "src": d.src, "dst": d.dst, "outcome": d.outcome, "messages": d.messages,
             "retransmissions": d.retransmissions, "methods": " ".join(d.methods)} for d in a.dialogs()]


def dialogs_text(a: Analysis, width: int = 80) -> str:
    data = dialog_rows(a)
    if not data:
        if a.scope is not None:
            return f"No SIP message matches {a.scope.description}."
        return "No SIP messages in the capture."
    rows = [[n, fmt_time(d["start"]), d["method"], d["call_id"] or "-", d["from"] or "-", d["to"] or "-",
             d["outcome"], d["messages"]] for n, d in enumerate(data, 1)]
    table = dates_line([d["start"] for d in data]) + "\n" + render_table(
        ["#", "Start", "Method", "Call-ID", "From", "To", "Outcome", "Msg"], rows, width,
        flexible={3: 8, 4: 6, 5: 6, 6: 12}, right=(0, 7), gap=1)
    kinds: Dict[str, int] = {}
    for d in data:
        kinds[d["method"]] = kinds.get(d["method"], 0) + 1
    tail = f"{len(data)} dialog(s): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
    if a.scope is not None:
        tail = a.scope.line() + ". " + tail
    return table + "\n\n" + "\n".join(textwrap.wrap(tail + ". Calls in detail: sipflow calls.", width))


DIALOG_CSV_FIELDS = ["call_id", "method", "start", "from", "to", "src", "dst", "outcome", "messages",
                     "retransmissions", "methods"]


def dialogs_csv(a: Analysis) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=DIALOG_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for d in dialog_rows(a):
        w.writerow(_csv_row(d))
    return out.getvalue()


def dialogs_json(a: Analysis) -> str:
    return json.dumps(dialog_rows(a), indent=2)


# ---------------------------------------------------------------------------------------------------
# summary


def summary_dict(a: Analysis) -> dict:
    outcomes = a.call_outcomes()
    regs: Dict[str, int] = {}
    for r in a.registrations:
        regs[r.outcome.value] = regs.get(r.outcome.value, 0) + 1
    return {
        "files": a.files,
        "methods": a.methods,
        "call_outcomes": outcomes,
        "registration_outcomes": regs,
        "kpis": a.kpis(),
        "malformed": [{"frame": m.frame, "file": m.file, "error": m.error} for m in a.malformed],
        "anomalies": [{"kind": x.kind.value, "frame": x.frame, "file": x.file, "call_id": x.call_id, "detail": x.detail}
                      for x in a.anomalies],
        "stats": a.stats,
        "warnings": a.warnings,
    }


def _codes_table(methods: Dict[str, Dict[str, int]], width: int) -> str:
    codes = sorted({k for row in methods.values() for k in row if k != "requests"},
                   key=lambda k: (len(k), k))
    rows = []
    for m in sorted(methods, key=lambda m: (-methods[m].get("requests", 0), m)):
        row = methods[m]
        classes = {f"{n}xx": sum(v for k, v in row.items() if k != "requests" and k.startswith(str(n)))
                   for n in range(1, 7)}
        rows.append([m, row.get("requests", 0)] + [row.get(c, "") for c in codes]
                    + ["/".join(str(classes[f"{n}xx"]) for n in range(1, 7))])
    headers = ["Method", "Req"] + codes + ["1/2/3/4/5/6xx"]
    text = render_table(headers, rows, 10_000)
    if max(len(line) for line in text.splitlines()) <= width:
        return text
    # Too many distinct codes for the terminal: one line per method and code instead of a matrix.
    rows = []
    for m in sorted(methods):
        row = methods[m]
        rows.append([m, row.get("requests", 0), ", ".join(f"{k}×{v}" for k, v in sorted(row.items())
                                                          if k != "requests")])
    return render_table(["Method", "Req", "Responses (code×count)"], rows, width, flexible={2: 20})


def summary_text(a: Analysis, width: int = 80) -> str:
    s = summary_dict(a)
    out = [a.scope.line(), ""] if a.scope is not None else []
    for f in a.files:
        out.append(f"{f['path']}: {f['format']}, {f['frames']} frames" + (" (TRUNCATED)" if f["truncated"] else ""))
    st = a.stats
    out.append(f"SIP messages {st['sip_messages']} (retransmissions {st['retransmissions']}), "
               f"RTP packets {st['rtp_packets']}, RTCP {st['rtcp_packets']}, streams {st['streams']}")
    out.append("")
    out.append("Responses by method")
    out.append(_codes_table(a.methods, width) if a.methods else "  (no SIP)")
    if st["retransmissions"]:
        out.append(f"(retransmitted copies are not counted above: {st['retransmissions']} of them)")
    out.append("")
    if s["call_outcomes"]:
        out.append("Calls: " + ", ".join(f"{OUTCOME_LABEL.get(k, k)} {v}" for k, v in
                                         sorted(s["call_outcomes"].items(), key=lambda kv: -kv[1])))
        if len(a.summarised):
            out.append(f"  ({len(a.summarised)} of them summarised by --keep-calls: counted here, not listed)")
        k = s["kpis"]
        out.append(f"  ASR {fmt_pct(k['asr'])}   NER {fmt_pct(k['ner'])}   SER {fmt_pct(k['ser'])}   "
                   f"(over {k['completed_attempts']} finished attempts)")
        rows = []
        for name in ("pdd", "time_to_answer", "setup_time", "duration"):
            d = k[name]
            if d:
                rows.append([name.replace("_", " "), d["n"], fmt_secs(d["mean"]), fmt_secs(d["p50"]),
                             fmt_secs(d["p95"]), fmt_secs(d["max"])])
        if rows:
            out.append(render_table(["Timing", "n", "mean", "p50", "p95", "max"], rows, width, right=(1, 2, 3, 4, 5)))
    else:
        out.append("Calls: none")
    if s["registration_outcomes"]:
        out.append("Registrations: " + ", ".join(f"{k} {v}" for k, v in sorted(s["registration_outcomes"].items())))
    out.append("")
    out.append(f"Malformed: {len(a.malformed)}" + (
        " (frames " + ", ".join(str(m.frame) for m in a.malformed[:20]) + (" …" if len(a.malformed) > 20 else "")
        + ")" if a.malformed else ""))
    kinds: Dict[str, List[int]] = {}
    for x in a.anomalies:
        kinds.setdefault(x.kind, []).append(x.frame)
    out.append(f"Anomalies: {len(a.anomalies)}")
    for kind, frames in sorted(kinds.items()):
        out.append(f"  {kind.replace('_', ' ')}: {len(frames)} (frames {', '.join(map(str, frames[:10]))}"
                   + (" …" if len(frames) > 10 else "") + ")")
    for w in a.warnings:
        out.append(f"warning: {w}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------
# analyze (everything) and streams


def analysis_json(a: Analysis) -> str:
    """The docs/json.md document as one string (``render.jsonout`` streams it to a file instead)."""
    from sipflow.render.jsonout import write_json
    out = io.StringIO()
    write_json(a, out)
    return out.getvalue()


def fax_lines(a: Analysis, width: int = 80) -> List[str]:
    """T.38: each switch to fax offered and its answer, then each UDPTL flow with its figures."""
    lines = []
    for c in a.calls:
        for t in c.t38:
            answer = f"{t.status}" if t.status is not None else "no final answer"
            what = "accepted: the media moved to UDPTL" if t.accepted else "refused: the media stayed as it was"
            lines += textwrap.wrap(f"Call {printable(c.call_id)}: T.38 offered in frame {t.frame}, {answer}, {what}",
                                   width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
        for f in c.faxes:
            loss = f", {f.lost} lost" if f.lost else ""
            lines += textwrap.wrap(f"{fmt_endpoint(f.src, f.sport)} -> {fmt_endpoint(f.dst, f.dport)}: {f.packets} "
                                   f"UDPTL packets{loss}, {f.last_ts - f.first_ts:.1f} s; "
                                   + ", ".join(f.signals), width, initial_indent="  ", subsequent_indent="    ",
                                   break_on_hyphens=False)
    return lines


def streams_text(a: Analysis, width: int = 80) -> str:
    fax = fax_lines(a, width)
    if not a.streams:
        return "No RTP streams." + ("\n\nT.38 fax (UDPTL, not RTP):\n" + "\n".join(fax) if fax else "")
    rows = []
    for s in a.streams:
        d = stream_dict(s)
        loss = f"{d['lost']} ({d['lost'] / d['expected'] * 100:.1f}%)" if d["expected"] > 0 and d["lost"] > 0 \
            else str(d["lost"])
        rows.append([d["src"], d["dst"], d["ssrc"], d["codec"] + ("?" if d["clock_rate_guessed"] else ""),
                     d["packets"], loss, "-" if d["jitter_mean_ms"] is None
                     else f"{d['jitter_mean_ms']:.1f}/{d['jitter_max_ms']:.1f}",
                     f"{d['max_delta_ms']:.0f}", f"{s.quality.mos:.1f}" if s.quality else "-",
                     (d["call_id"] or "-") + (" (NAT)" if d["nat"] else "")])
    # Endpoints and SSRC are what people filter Wireshark with: the Call-ID column shrinks first, then the
    # endpoints lose the start of their address, never their port.
    table = render_table(["Source", "Destination", "SSRC", "Codec", "Pkts", "Lost", "Jit ms", "MaxΔ", "MOS",
                          "Call"], rows, width, flexible={0: 12, 1: 12, 9: 5}, right=(4, 5, 6, 7, 8), gap=1,
                         keep_end=(0, 1), first=(9,))
    notes = ["Jit ms: mean/max of the RFC 3550 jitter. MaxΔ: largest gap between packets, ms. Call: its "
             "Call-ID (a wider --width or --format csv shows the whole of it).",
             "MOS: ITU-T G.107 E-model from the codec, the loss and its bursts (packets an adaptive jitter "
             "buffer would discard as late count as lost), with half the RTCP round trip as delay where RTCP "
             "measured one (--format json shows every term). -: not rated (video, DTMF, wideband or unknown "
             f"codec, under {MIN_PACKETS} packets)."]
    late = [s for s in a.streams if s.late_fixed or s.late_adaptive]
    if late:
        notes.append("Late (jitter buffers simulated: fixed 60 ms / adaptive): " + ", ".join(
            f"{fmt_endpoint(s.src, s.sport)} -> {fmt_endpoint(s.dst, s.dport)} {s.late_fixed}/{s.late_adaptive}"
            for s in late) + ".")
    notes += _clock_notes(a.streams)
    if any(s.jitter_mean is None for s in a.streams):
        notes.append("Jit -: a stream of DTMF events (RFC 4733): its packets share timestamps, jitter means "
                     "nothing.")
    dtmf = dtmf_lines(a.streams, width)
    if dtmf:
        notes += ["", "DTMF (RFC 4733 events in the streams above):"] + dtmf
    paused = [line for s in a.streams if s.media_gaps
              for line in textwrap.wrap(f"{fmt_endpoint(s.src, s.sport)} -> {fmt_endpoint(s.dst, s.dport)}: "
                                        + ", ".join(f"{b - t:.1f} s from {fmt_time(t)}" for t, b in s.media_gaps),
                                        width, initial_indent="  ", subsequent_indent="    ")]
    if paused:
        notes += ["", "Pauses (audio stopped 1 s or more while its call was up and not on hold):"] + paused
    pictures = [line for s in a.streams if s.video is not None
                for line in textwrap.wrap(
                    f"{fmt_endpoint(s.src, s.sport)} -> {fmt_endpoint(s.dst, s.dport)}: {s.video.codec} "
                    f"{s.video.frames} frames"
                    + (f", {s.video.frame_rate:.1f} fps" if s.video.frame_rate is not None else "")
                    + f", {s.video.key_frames} key frame{'s' if s.video.key_frames != 1 else ''}"
                    + (f" (first in frame {s.video.first_key_frame})" if s.video.first_key_frame is not None
                       else " (none: the picture cannot start)")
                    + f", {s.video.damaged_frames} with a packet lost", width, initial_indent="  ",
                    subsequent_indent="    ")]
    if pictures:
        notes += ["", "Video (pictures by RTP timestamp; key frames from the payload headers):"] + pictures
    if fax:
        notes += ["", "T.38 fax (UDPTL, not RTP):"] + fax
    control = rtcp_lines(a.streams, width)
    if control:
        notes += ["", "RTCP (what each stream's receiver reported; RTT from LSR/DLSR, seen from the capture "
                  "point):"] + control
    if any(s.nat for s in a.streams):
        notes.append("(NAT): joined to its call although its address differs from the SDP.")
    wrapped = [line for note in notes
               for line in (textwrap.wrap(note, width, subsequent_indent="  ") if note and not note.startswith(" ")
                            else [note])]
    return table + "\n\n" + "\n".join(wrapped)


def dtmf_lines(streams, width: int = 80) -> List[str]:
    """One line per stream that carried key presses: its endpoints and the keys, with duration."""
    lines = []
    for s in streams:
        if not s.dtmf:
            continue
        keys = " ".join(f"{printable(d.key)}({d.duration_ms:.0f} ms{'' if d.ended else ', no end'})"
                        for d in s.dtmf)
        unconfirmed = "" if all(d.confirmed for d in s.dtmf) else " (no SDP names the payload type)"
        lines += textwrap.wrap(f"{fmt_endpoint(s.src, s.sport)} -> {fmt_endpoint(s.dst, s.dport)}: {keys}{unconfirmed}",
                               width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    return lines


def rtcp_lines(streams, width: int = 80) -> List[str]:
    """One entry per stream with RTCP: the receiver's view of loss and jitter, the round trip, and what
    the sender said of itself."""
    lines = []
    for s in streams:
        r = s.rtcp
        if r is None:
            continue
        parts = []
        if r.encrypted:
            parts.append(f"{r.packets} SRTCP packets (encrypted: no figures)")
        elif r.reports:
            parts.append(f"{r.reports} report{'s' if r.reports != 1 else ''}: lost {r.fraction_lost:.1f}% "
                         f"(max {r.fraction_lost_max:.1f}%, cumulative {r.cumulative_lost}), jitter "
                         f"{r.jitter:.1f} ms (max {r.jitter_max:.1f})")
            if r.rtt is not None:
                parts.append(f"RTT {r.rtt:.1f} ms (min {r.rtt_min:.1f}, max {r.rtt_max:.1f}, {r.rtt_n} "
                             f"sample{'s' if r.rtt_n != 1 else ''})")
        else:
            parts.append("no receiver report")
        if r.xr is not None:
            x = r.xr
            parts.append(f"XR: loss {x.loss_rate * 100:.1f}%, discarded {x.discard_rate * 100:.1f}%"
                         + (f", MOS-CQ {x.mos_cq:.1f}" if x.mos_cq is not None else "")
                         + (f", R {x.r_factor}" if x.r_factor is not None else ""))
        if r.sender_packets is not None:
            parts.append(f"sender says {r.sender_packets} packets sent")
        if r.cname:
            parts.append(f"CNAME {printable(r.cname)}")
        if r.bye_frame is not None:
            parts.append(f"BYE in frame {r.bye_frame}" + (f" ({printable(r.bye_reason)})" if r.bye_reason else ""))
        lines += textwrap.wrap(f"{fmt_endpoint(s.src, s.sport)} -> {fmt_endpoint(s.dst, s.dport)}: "
                               + "; ".join(parts), width, initial_indent="  ", subsequent_indent="    ",
                               break_on_hyphens=False)
    return lines


def _clock_notes(streams) -> List[str]:
    """Why a codec carries a "?": how the clock its jitter used was found, one line per reason."""
    notes = []
    late = sorted({(s.sdp_clock_rate, s.rate) for s in streams if s.sdp_clock_rate and s.sdp_clock_rate != s.rate})
    for sdp, used in late:
        notes.append(f"Codec?: the SDP seen after the stream started says {sdp} Hz; jitter used {used} Hz.")
    measured = sorted({s.rate for s in streams if s.clock_rate_guessed and s.clock_source == "measured"
                       and not s.sdp_clock_rate})
    if measured:
        rates = ", ".join(f"{r} Hz" for r in measured)
        notes.append(f"Codec?: no SDP named the clock; measured from the RTP timestamps ({rates}).")
    if any(s.clock_source == "assumed" and not s.sdp_clock_rate for s in streams):
        notes.append("Codec?: no SDP named the clock and the stream is too short to measure it; 8 kHz assumed.")
    return notes


STREAM_CSV_FIELDS = ["src", "dst", "ssrc", "payload_type", "codec", "media", "clock_rate", "clock_source",
                     "packets", "expected", "lost",
                     "duplicates", "out_of_order", "seq_wraps", "max_delta_ms", "jitter_mean_ms", "jitter_max_ms",
                     "start", "end", "call_id", "setup_frame", "nat", "rtcp_packets", "first_frame",
                     "rtcp_fraction_lost_pct", "rtcp_cumulative_lost", "rtcp_jitter_ms", "rtcp_rtt_ms", "mos"]


def streams_csv(a: Analysis) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=STREAM_CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for s in a.streams:
        d = stream_dict(s)
        r = d["rtcp"] or {}
        d.update(rtcp_fraction_lost_pct=r.get("fraction_lost_pct"), rtcp_cumulative_lost=r.get("cumulative_lost"),
                 rtcp_jitter_ms=r.get("jitter_ms"), rtcp_rtt_ms=r.get("rtt_ms"),
                 mos=round(s.quality.mos, 2) if s.quality is not None else None)
        w.writerow(_csv_row(d))
    return out.getvalue()


def streams_json(a: Analysis) -> str:
    return json.dumps([stream_dict(s) for s in a.streams], indent=2)


def analysis_text(a: Analysis, width: int = 80) -> str:
    parts = [summary_text(a, width), "", "Calls", calls_text(a, width, events=True), "", "RTP streams",
             streams_text(a, width)]
    if a.registrations:
        rows = [[r.aor, r.outcome.value, r.final_status or "-",
                 r.expires_granted if r.expires_granted is not None else "-", r.challenges, r.refreshes]
                for r in a.registrations]
        parts += ["", "Registrations",
                  render_table(["AOR", "Outcome", "Final", "Expires", "401/7", "Refr"], rows, width, flexible={0: 16})]
    return "\n".join(parts)


def analysis_csv(a: Analysis) -> str:
    """The message list as CSV (one row per SIP message), the table people paste into a ticket."""
    out = io.StringIO()
    fields = ["frame", "file", "ts", "src", "dst", "transport", "method", "status", "reason", "call_id", "cseq",
              "cseq_method", "from_user", "to_user", "retransmission"]
    w = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for m in a.to_dict()["messages"]:
        w.writerow(_csv_row(m))
    return out.getvalue()
