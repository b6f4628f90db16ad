"""Ladder (sequence) diagrams of SIP messages: the layout as data, then a text painter.

Owns turning a list of SIP messages (from an ``Analysis``) into lanes and arrows, and painting them for
a terminal. The layout is plain data (``Ladder``) so that other painters (SVG/PNG through matplotlib,
HTML) can draw the same thing later without redoing it. Reads ``SipEvent``s; never sees packets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from sipflow.analysis.messages import SipEvent
from sipflow.render.safe import printable


@dataclass(frozen=True)
class Arrow:
    src: int            # lane index
    dst: int            # lane index
    label: str          # "INVITE (SDP)", "200 OK", "ACK"
    ts: float
    frame: int
    file: int
    retransmission: bool
    call_id: Optional[str]


@dataclass(frozen=True)
class Ladder:
    lanes: Tuple[str, ...]    # endpoints as ip:port, in order of first appearance
    arrows: Tuple[Arrow, ...]
    start: float              # time of the first arrow (the ladder's zero)


def layout(messages: Sequence[SipEvent]) -> Ladder:
    """Lanes in the order endpoints first appear (the caller usually first), one arrow per message."""
    lanes: List[str] = []
    index = {}
    arrows = []
    for e in messages:
        for ep in (e.source, e.destination):
            if ep not in index:
                index[ep] = len(lanes)
                lanes.append(ep)
        m = e.msg
        label = m.summary()
        if m.content_type == "application/sdp" or (m.body and b"\nm=" in m.body):  # SDP, also in multipart
            label += " (SDP)"
        if m.method is None and m.cseq[1] and m.cseq[1] != "INVITE":
            label += f" ({m.cseq[1]})"
        arrows.append(Arrow(index[e.source], index[e.destination], label, e.ts, e.frame, e.file,
                            e.retransmission, m.call_id))
    return Ladder(tuple(lanes), tuple(arrows), arrows[0].ts if arrows else 0.0)


MAX_TEXT_LANES = 16   # the text painter folds endpoints beyond this into one last lane (pictures do not)


def render_text(ladder: Ladder, width: int = 100) -> str:
    """One line per message: time since the first message, frame number, and an arrow between the
    lanes. Lanes share the width left after those columns equally (at least 14 characters each)."""
    if not ladder.arrows:
        return "No SIP messages."
    lanes = list(ladder.lanes)
    fold = len(lanes) > MAX_TEXT_LANES   # thousands of source ports would make every line kilobytes long
    if fold:
        lanes = lanes[:MAX_TEXT_LANES - 1] + [f"… {len(lanes) - MAX_TEXT_LANES + 1} more"]
    n = len(lanes)
    left = 19  # "+12345.678901 #12345 "
    gap = max(14, (width - left) // n)
    cols = [left + gap // 2 + i * gap for i in range(n)]
    size = cols[-1] + gap // 2 + 1
    bars = [" "] * size
    for c in cols:
        bars[c] = "|"
    head = [" "] * size
    for c, lane in zip(cols, lanes):
        lane = printable(lane)
        text = lane if len(lane) < gap else "…" + lane[-(gap - 2):]
        start = max(0, min(size - len(text), c - len(text) // 2))
        head[start:start + len(text)] = text
    out = ["".join(head).rstrip(), "".join(bars).rstrip()]
    for a in ladder.arrows:
        row = list(bars)
        label = printable(a.label) + (" (retransmission)" if a.retransmission else "")
        src, dst = (min(a.src, n - 1), min(a.dst, n - 1)) if fold else (a.src, a.dst)
        lo, hi = sorted((cols[src], cols[dst]))
        if src == dst:  # sent to its own address (a proxy looping a request to itself)
            text = f" {label} (to itself)"
            row[lo + 1:lo + 1 + len(text)] = text
        else:
            for x in range(lo + 1, hi):
                row[x] = "-"
            if dst > src:
                row[hi - 1] = ">"
            else:
                row[lo + 1] = "<"
            room = hi - lo - 5
            if len(label) > room:
                label = label[:max(1, room - 1)] + "…"
            at = lo + 2 + (hi - lo - 3 - len(label)) // 2
            row[at - 1:at + len(label) + 1] = " " + label + " "
        prefix = f"{a.ts - ladder.start:+11.6f} {'#' + str(a.frame):>6} "
        row[0:left] = prefix
        out.append("".join(row).rstrip())
    return "\n".join(out)
