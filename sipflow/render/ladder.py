"""Ladder (sequence) diagrams of SIP messages: the layout as data, then a text painter.

Owns turning SIP messages (from an ``Analysis``) into lanes and arrows, and painting them for a
terminal. The layout is plain data (``Ladder``: lanes, arrows with their labels, notes and details) so
other painters (SVG/PNG through matplotlib, HTML) can draw the same thing without redoing it. A
capture with several Call-IDs is drawn one Call-ID at a time, each under a title line (``layouts``).
Lanes are endpoints (ip:port), or hosts with ``group_host``, named by aliases when given. Notes are a
call's events (hold, transfer, DTMF...) from ``analysis.timeline``; details (``verbose``) are the key
headers and the SDP of each message. Reads ``SipEvent``s and records; never sees packets.
"""
from __future__ import annotations

import datetime as _dt
import textwrap
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from sipflow.analysis.messages import SipEvent
from sipflow.errors import ParseError
from sipflow.net.addr import fmt_endpoint
from sipflow.render.safe import printable
from sipflow.sip.sdp import sdp_of

# Headers a verbose ladder shows under an arrow (the rest: sipflow show).
KEY_HEADERS = ("From", "To", "Contact", "Refer-To", "Referred-By", "Event", "Subscription-State", "Reason",
               "Warning", "User-Agent", "Server", "Content-Type")
TIME_MODES = ("rel", "abs", "delta")


@dataclass(frozen=True)
class Arrow:
    src: int            # lane index
    dst: int            # lane index
    label: str          # "INVITE (SDP)", "200 OK", "ACK", "200 OK (BYE)" [TCP]
    ts: float
    frame: int
    file: int
    retransmission: bool
    call_id: Optional[str]
    transport: str = "udp"
    notes: Tuple[str, ...] = ()      # what this message did (timeline events): "hold by the caller ..."
    details: Tuple[str, ...] = ()    # verbose: key headers and an SDP summary
    sdp: Tuple[str, ...] = ()        # one line per SDP media (layout(sdp=True)): "audio PCMA 192.0.2.1:4000 sendonly"

    @property
    def kind(self) -> str:
        """What the arrow is, for its colour: request, 1xx, 2xx or error (3xx-6xx)."""
        head = self.label.split(" ", 1)[0]
        if not head.isdigit():
            return "request"
        return {"1": "1xx", "2": "2xx"}.get(head[0], "error")


@dataclass(frozen=True)
class MediaSpan:
    """An RTP (or T.38) stream drawn between two lanes, from its first packet to its last."""
    src: int                  # lane index
    dst: int
    first: float
    last: float
    label: str                # "PCMA 1502 pkts, lost 0.1 %, jitter 1.2 ms, MOS 4.3"
    kind: str                 # audio | video | fax | rtp (the SDP did not say)
    frame: int                # its first packet

    @property
    def ts(self) -> float:
        """When it is drawn: its first packet."""
        return self.first


@dataclass(frozen=True)
class Ladder:
    lanes: Tuple[str, ...]    # endpoints as ip:port (or hosts, or aliases), in order of first appearance
    arrows: Tuple[Arrow, ...]
    start: float              # time of the first arrow (the ladder's zero)
    title: Optional[str] = None
    facts: Tuple[str, ...] = ()       # a call's figures under the title: "PDD 1.20 s", "duration 31.4 s"
    spans: Tuple[MediaSpan, ...] = ()  # the call's media streams (``layouts(media=True)``)
    legs: Tuple[str, ...] = ()        # Call-IDs of a merged ladder (``merge``), in order; empty: one


def _label(e: SipEvent) -> Tuple[str, Optional[str]]:
    """The arrow's text and the message's Call-ID, from the message itself."""
    try:
        m = e.msg
    except (ParseError, ValueError):
        return e.summary(), e.call_id
    label = m.summary()
    if m.content_type == "application/sdp" or (m.body and b"\nm=" in m.body):  # SDP, also in multipart
        label += " (SDP)"
    if m.method is None and m.cseq[1] and m.cseq[1] != "INVITE":
        label += f" ({m.cseq[1]})"
    if e.transport != "udp":
        label += f" [{e.transport.upper()}]"
    return label, m.call_id


def _sdp_lines(m) -> List[str]:
    """One line per SDP media of a message: kind, address, transport, first codecs, direction."""
    sess = sdp_of(m.content_type, m.body) if m.body else None
    out = []
    if sess is not None:
        for media in sess.media:
            codecs = ",".join(c.name for c in media.codecs[:4]) + (",…" if len(media.codecs) > 4 else "")
            out.append(f"{media.kind} {media.address}:{media.port} {media.proto} {codecs} {media.direction}")
    return out


def _details(e: SipEvent) -> Tuple[str, ...]:
    """Key headers, then one line per SDP media: what a reader needs under an arrow."""
    try:
        m = e.msg
    except (ParseError, ValueError):
        return ()
    out = [f"{name}: {' '.join(value.split())}" for name in KEY_HEADERS for value in m.header_values(name)[:1]]
    return tuple(out + ["SDP " + line for line in _sdp_lines(m)])


def _sdp(e: SipEvent) -> Tuple[str, ...]:
    try:
        return tuple(_sdp_lines(e.msg))
    except (ParseError, ValueError):
        return ()


def span_label(s) -> str:
    """A stream in a few words: codec, packets, loss, jitter, MOS."""
    parts = [s.codec or f"PT {s.pt}", f"{s.packets} pkts"]
    if s.expected:
        parts.append(f"lost {100.0 * max(s.lost, 0) / s.expected:.1f} %")
    if s.jitter_mean is not None:
        parts.append(f"jitter {s.jitter_mean:.1f} ms")
    if s.quality is not None:
        parts.append(f"MOS {s.quality.mos:.2f}")
    return ", ".join(parts)


def _lane_of(ep: str, group_host: bool, aliases: Mapping[str, str]) -> str:
    host = ep.rsplit(":", 1)[0]
    if ep in aliases:
        return aliases[ep]
    if host in aliases:
        return aliases[host] if group_host else f"{aliases[host]}:{ep.rsplit(':', 1)[1]}"
    return host.strip("[]") if group_host else ep


def layout(messages: Sequence[SipEvent], aliases: Optional[Mapping[str, str]] = None, group_host: bool = False,
           notes: Optional[Mapping[int, Sequence[str]]] = None, verbose: bool = False,
           title: Optional[str] = None, sdp: bool = False, streams: Sequence = (),
           facts: Sequence[str] = (), announced: Optional[Mapping[Tuple[str, int], int]] = None) -> Ladder:
    """Lanes in the order endpoints first appear (the caller usually first), one arrow per message.
    ``aliases``: endpoint or host -> name; ``group_host``: one lane per host, its ports merged;
    ``notes``: frame -> what happened there (timeline events); ``verbose``: key headers and SDP;
    ``sdp``: each arrow's SDP media in one line each; ``streams``: RTP/T.38 streams (records with
    src, sport, dst, dport, first_ts, last_ts) drawn as spans between two lanes: the lane that sent
    the SDP announcing each end (``announced``: (ip, port) -> frame of that SDP), else the first lane
    of the same host."""
    aliases = aliases or {}
    lanes: List[str] = []
    index: Dict[str, int] = {}
    host_lane: Dict[str, int] = {}        # host -> its first lane (where a media stream is drawn)
    frame_lane: Dict[int, int] = {}       # frame -> the lane that sent it
    arrows = []
    seen_parties = set()

    def lane_index(ep: str) -> int:
        lane = _lane_of(ep, group_host, aliases)
        if lane not in index:
            index[lane] = len(lanes)
            lanes.append(lane)
        host_lane.setdefault(ep.rsplit(":", 1)[0].strip("[]"), index[lane])
        return index[lane]

    for e in messages:
        ends = [lane_index(e.source), lane_index(e.destination)]
        frame_lane.setdefault(e.frame, ends[0])
        label, call_id = _label(e)
        details: Tuple[str, ...] = ()
        if verbose:   # From and To once per pair of tags (they repeat on every message of a dialog)
            parties = (e.from_tag, e.to_tag)
            details = tuple(d for d in _details(e) if parties not in seen_parties
                            or not d.startswith(("From:", "To:")))
            seen_parties.add(parties)
        arrows.append(Arrow(ends[0], ends[1], label, e.ts, e.frame, e.file, e.retransmission, call_id, e.transport,
                            tuple((notes or {}).get(e.frame, ())), details, _sdp(e) if sdp else ()))
    spans = []
    announced = announced or {}
    for st in streams:
        ends = []
        for h, p in ((st.src, st.sport), (st.dst, st.dport)):
            owner = frame_lane.get(announced.get((h, p), -1))
            ends.append(owner if owner is not None else host_lane[h] if h in host_lane
                        else lane_index(fmt_endpoint(h, p)))
        kind = getattr(st, "media", None) or ("fax" if not hasattr(st, "ssrc") else "rtp")
        label = span_label(st) if hasattr(st, "ssrc") else f"T.38 {st.packets} pkts, lost {st.lost}"
        spans.append(MediaSpan(ends[0], ends[1], st.first_ts, st.last_ts, label, kind, st.first_frame))
    return Ladder(tuple(lanes), tuple(arrows), arrows[0].ts if arrows else 0.0, title, tuple(facts), tuple(spans))


def layouts(a, aliases: Optional[Mapping[str, str]] = None, group_host: bool = False, verbose: bool = False,
            media: bool = False, messages: Optional[Iterable[SipEvent]] = None) -> List[Ladder]:
    """One ladder per Call-ID, in order of first message: each call titled with its number, parties
    and outcome, its timeline events as notes; other dialogs titled with their first method.
    ``media``: also each arrow's SDP, each call's streams as spans and its figures (for pictures);
    ``messages``: draw these (some of the analysis's) instead of all of them."""
    from sipflow.analysis.timeline import timeline
    groups: Dict[Optional[str], List[SipEvent]] = {}
    for e in (a.messages if messages is None else messages):
        groups.setdefault(e.call_id, []).append(e)
    calls = {c.call_id: c for c in a.calls}
    out = []
    for call_id, events in groups.items():
        call = calls.get(call_id)
        notes: Dict[int, List[str]] = {}
        facts: List[str] = []
        if call is not None and media:
            t = call.timing
            facts = [f"{k} {v:.2f} s" for k, v in (("PDD", t.pdd), ("setup", t.setup_time), ("duration", t.duration))
                     if v is not None]
            if call.ended_by:
                facts.append(f"ended by the {call.ended_by}")
        if call is not None:
            for ev in timeline(call):
                if ev.kind not in ("ringing", "answered"):
                    notes.setdefault(ev.frame, []).append(ev.text)
            outcome = call.outcome.value.replace("_", " ") + (
                f" {call.final_status}" if call.final_status and call.outcome.value != "answered" else "")
            title = f"Call {a.number(call)}: {call.from_user or '?'} -> {call.to_user or '?'}, {outcome} ({call_id})"
        else:
            first = next((e for e in events if e.method), events[0])
            title = f"{first.method or first.cseq_method or 'SIP'} {first.from_user or '?'} -> " \
                    f"{first.to_user or '?'} ({call_id})"
        streams = (tuple(call.streams) + tuple(call.faxes)) if call is not None and media else ()
        announced: Dict[Tuple[str, int], int] = {}
        for o in (call.media if call is not None and media else ()):
            announced.setdefault((o.ip, o.port), o.frame)
        out.append(layout(events, aliases, group_host, notes, verbose, title, media, streams, facts, announced))
    return out


def rows(ladder: Ladder) -> List[Union[Arrow, MediaSpan]]:
    """What a picture draws row by row: each message, and each media stream at its first packet."""
    out: List[Union[Arrow, MediaSpan]] = list(ladder.arrows)
    for s in ladder.spans:
        at = next((i for i, r in enumerate(out) if r.ts > s.first), len(out))
        out.insert(at, s)
    return out


def merge(ladders: Sequence[Ladder], title: Optional[str] = None) -> Ladder:
    """Several ladders (the legs of one call through a B2BUA, say) as one: lanes joined by name,
    arrows in time order, each leg keeping its Call-ID (``legs``) for the painter to colour."""
    lanes: List[str] = []
    index: Dict[str, int] = {}
    arrows: List[Arrow] = []
    spans: List[MediaSpan] = []
    legs: List[str] = []
    for lad in ladders:
        where = []
        for name in lad.lanes:
            if name not in index:
                index[name] = len(lanes)
                lanes.append(name)
            where.append(index[name])
        for a in lad.arrows:
            arrows.append(replace(a, src=where[a.src], dst=where[a.dst]))
            if a.call_id is not None and a.call_id not in legs:
                legs.append(a.call_id)
        spans += [replace(s, src=where[s.src], dst=where[s.dst]) for s in lad.spans]
    arrows.sort(key=lambda a: (a.ts, a.file, a.frame))
    facts = tuple(f for lad in ladders for f in lad.facts)
    return Ladder(tuple(lanes), tuple(arrows), arrows[0].ts if arrows else 0.0,
                  title or " + ".join(lad.title or "?" for lad in ladders), facts, tuple(spans), tuple(legs))


MAX_TEXT_LANES = 16   # the text painter folds endpoints beyond this into one last lane (pictures do not)
MIN_GAP, MAX_GAP = 12, 24   # characters between two lanes
NOTE_ROOM = 18        # notes go at the right edge when this much room is left there, else under the arrow


def stamp_at(ts: float, prev: Optional[float], start: float, mode: str) -> str:
    """The time column: since ``start`` (rel), wall clock UTC (abs), or since ``prev`` (delta)."""
    if mode == "abs":
        t = _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
        return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    return f"{ts - (prev if mode == 'delta' and prev is not None else start):+.6f}"


def render_text(ladder: Ladder, width: int = 100, time_mode: str = "rel") -> str:
    """One line per message: its time (since the first message, absolute UTC, or since the message
    before), its frame number, and an arrow between the lanes with the label on it; a label longer
    than its arrow continues to the right of it. Retransmissions are dotted. Notes go at the right
    edge, or on their own line when the edge is too narrow; details (verbose) go under the arrow."""
    if not ladder.arrows:
        return "No SIP messages."
    lanes = list(ladder.lanes)
    fold = len(lanes) > MAX_TEXT_LANES   # thousands of source ports would make every line kilobytes long
    if fold:
        lanes = lanes[:MAX_TEXT_LANES - 1] + [f"… {len(lanes) - MAX_TEXT_LANES + 1} more"]
    n = len(lanes)
    stamps, prev = [], None
    for a in ladder.arrows:
        stamps.append(stamp_at(a.ts, prev, ladder.start, time_mode))
        prev = a.ts
    fwidth = max(len(str(a.frame)) for a in ladder.arrows) + 1
    left = max(len(s) for s in stamps) + fwidth + 3
    names = [printable(lane) for lane in lanes]
    want = max(len(x) for x in names) + 5          # a name, room on each side, a label like "INVITE (SDP)"
    gap = max(MIN_GAP, min(MAX_GAP, want, (width - left) // n))
    cols = [left + gap // 2 + i * gap for i in range(n)]
    size = cols[-1] + 2
    edge = max(size + 1, width - 1)        # where the right-edge notes may start and end
    notes_at_edge = width - size >= NOTE_ROOM
    bars = [" "] * size
    for c in cols:
        bars[c] = "|"
    head = [" "] * (size + gap)
    for c, name in zip(cols, names):
        text = name if len(name) < gap - 1 else "…" + name[-(gap - 3):]
        start = max(0, c - len(text) // 2)
        head[start:start + len(text)] = text
    out = []
    if ladder.title:
        out.append(printable(ladder.title))
    if time_mode == "abs":
        out.append(_dt.datetime.fromtimestamp(ladder.start, _dt.timezone.utc).strftime("%Y-%m-%d (UTC)"))
    out += ["".join(head).rstrip(), "".join(bars).rstrip()]
    for a, when in zip(ladder.arrows, stamps):
        row = list(bars)
        label = printable(a.label) + (" (retransmission)" if a.retransmission else "")
        src, dst = (min(a.src, n - 1), min(a.dst, n - 1)) if fold else (a.src, a.dst)
        lo, hi = sorted((cols[src], cols[dst]))
        if src == dst:  # sent to its own address (a proxy looping a request to itself)
            row += [" "] * 2
            text = f" {label} (to itself)"
            row[lo + 1:lo + 1 + len(text)] = text
        else:
            shaft = "." if a.retransmission else "-"
            for x in range(lo + 1, hi):
                row[x] = shaft
            if dst > src:
                row[hi - 1] = ">"
            else:
                row[lo + 1] = "<"
            # the label and a space each side, keeping "->" (or "<-") at the head and a "-" at the tail
            free_lo, free_hi = (lo + 2, hi - 3) if dst > src else (lo + 3, hi - 2)
            room = free_hi - free_lo + 1
            if len(label) + 2 <= room:
                at = free_lo + (room - len(label) - 2) // 2
                row[at:at + len(label) + 2] = " " + label + " "
            else:   # it continues to the right of the arrow, over the lanes there, up to the width
                room = max(width, size) - hi - 2
                if len(label) > room:
                    label = label[:max(1, room - 1)] + "…"
                end = hi + 2 + len(label)
                if end > len(row):
                    row += [" "] * (end - len(row))
                row[hi + 1:end] = " " + label
        row[0:left] = f"{when:>{left - fwidth - 2}} {'#' + str(a.frame):>{fwidth}} "
        line = "".join(row).rstrip()
        notes = [printable(t) for t in a.notes]
        if notes and notes_at_edge and len(line) + 2 + len(notes[0]) <= edge:
            out.append(line + "  " + notes.pop(0))
        else:
            out.append(line)
        for t in notes:   # under the arrow, wrapped at the width
            out += textwrap.wrap(t, max(width, size) - 1, initial_indent=" " * left + "^ ",
                                 subsequent_indent=" " * (left + 2), break_on_hyphens=False)
        for d in a.details:
            d = printable(d)
            room = max(width, size) - left - 3
            out.append(" " * left + "  " + (d if len(d) <= room else d[:room - 1] + "…"))
    return "\n".join(out)


def render_all(ladders: Iterable[Ladder], width: int = 100, time_mode: str = "rel") -> str:
    """Several ladders, one after the other, a blank line between them."""
    parts = [render_text(lad, width, time_mode) for lad in ladders]
    return "\n\n".join(parts) if parts else "No SIP messages."
