"""Ladder pictures: the ``render.ladder`` layout painted with matplotlib (SVG, PNG, PDF).

Owns drawing a ``Ladder`` as an image; the layout (lanes, arrows, labels, notes, media spans) is
decided by ``render.ladder`` and only painted here, so a picture shows what the text ladder shows.
matplotlib is imported here and nowhere else, through its object API (``Figure``, never ``pyplot``:
no global state, no GUI backend), and only when a picture is asked for.

Geometry is in inches: one axes covers the figure, x grows right, y grows down. Each message is a
row (taller when it carries SDP lines); lanes are columns as wide as their names need (no cap on
their number). Arrows are coloured by class (request, 1xx, 2xx, 3xx-6xx), retransmissions dashed;
a merged ladder (several Call-IDs) marks each row with its leg's colour. Media streams are bands
between their two lanes from the row of their first packet to the row of their last. A PDF puts a
long ladder on several pages, each with the lane names on top; SVG and PNG are one tall image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from sipflow.render.ladder import Arrow, Ladder, MediaSpan, rows, stamp_at
from sipflow.render.safe import printable

FORMATS = ("svg", "png", "pdf")
COLOURS = {"request": "#1f5fbf", "1xx": "#7a7a7a", "2xx": "#1e8a3a", "error": "#c0392b"}
KIND_NAMES = {"request": "request", "1xx": "1xx provisional", "2xx": "2xx success", "error": "3xx-6xx"}
MEDIA_COLOURS = {"audio": "#f0b429", "video": "#8e44ad", "fax": "#16a085", "rtp": "#f0b429"}
LEG_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
NOTE_COLOUR = "#6c3483"

ROW = 0.34            # inches per message row
SDP_LINE = 0.15       # and per SDP line under its arrow
LEFT = 1.9            # the time and frame column
HEAD = 1.25           # title, figures and lane names above the first row
FONT = 7.5
PAGE_ROWS = 45        # rows per PDF page
MAX_PIXELS = 60000    # Agg refuses images of 2**16 pixels or more on a side
MAX_LABEL = 48        # characters of a label before it is cut with "…"


@dataclass(frozen=True)
class _Geometry:
    cols: Tuple[float, ...]     # x of each lane
    notes_x: float              # where event notes start
    width: float                # figure width, inches


def _short(text: str, n: int = MAX_LABEL) -> str:
    """Capture text as a picture shows it: control characters escaped, cut at n, and every ``$``
    escaped so matplotlib never reads it as mathtext."""
    text = printable(text)
    text = text if len(text) <= n else text[:n - 1] + "…"
    return text.replace("$", r"\$")


def _geometry(ladder: Ladder) -> _Geometry:
    names = [_short(x, 40) for x in ladder.lanes] or ["?"]
    labels = [len(_short(a.label)) for a in ladder.arrows if abs(a.src - a.dst) == 1]
    per_char = 0.062                                   # inches per character at FONT points
    gap = max(1.6, min(3.4, per_char * max([len(n) for n in names] + labels + [12]) + 0.4))
    cols = tuple(LEFT + gap / 2 + i * gap for i in range(len(names)))
    loops = [len(_short(a.label)) + 17 for a in ladder.arrows if a.src == a.dst and a.src == len(names) - 1]
    notes_x = cols[-1] + max(gap / 2, 0.35 + per_char * max(loops, default=0))
    longest_note = max((len(printable(t)) + 2 for a in ladder.arrows for t in a.notes), default=0)
    width = notes_x + (min(longest_note, 72) * per_char + 0.3 if longest_note else 0.3)
    title = max(len(printable(ladder.title or "")) * 0.085, len(", ".join(ladder.facts)) * 0.07) + 0.4
    return _Geometry(cols, notes_x, max(width, title, 10.0))


def _row_heights(items: Sequence[Union[Arrow, MediaSpan]]) -> List[float]:
    return [ROW + SDP_LINE * max(len(a.sdp), len(a.notes) - 1, 0) if isinstance(a, Arrow) else ROW
            for a in items]


def _pages(items: Sequence, rows: int) -> List[Tuple[int, int]]:
    n = len(items)
    return [(i, min(n, i + rows)) for i in range(0, n, rows)] or [(0, 0)]


def _draw(ax, ladder: Ladder, geo: _Geometry, items: Sequence[Union[Arrow, MediaSpan]], y0: float,
          time_mode: str, page: Optional[str], prev: Optional[float]) -> float:
    """Paint rows (arrows and media starts) from height y0 down; returns the height used."""
    from matplotlib.patches import FancyArrowPatch, Rectangle

    heights = _row_heights(items)
    title = _short(ladder.title or "SIP messages", 200) + (f"  ({page})" if page else "")
    ax.text(0.15, y0 + 0.3, title, fontsize=FONT + 2.5, fontweight="bold", va="center")
    if ladder.facts:
        ax.text(0.15, y0 + 0.58, _short(", ".join(ladder.facts), 200), fontsize=FONT + 0.5,
                va="center", color="#333333")
    top = y0 + HEAD
    bottom = top + sum(heights) + 0.25
    for x, name in zip(geo.cols, ladder.lanes):
        ax.text(x, top - 0.35, _short(name, 40), fontsize=FONT, ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.3", fc="#eef3fb", ec="#5b7db1", lw=0.8))
        ax.plot([x, x], [top - 0.2, bottom], color="#9aa9c0", lw=0.9, zorder=1)
    leg_of = {leg: LEG_COLOURS[i % len(LEG_COLOURS)] for i, leg in enumerate(ladder.legs)}
    y = top
    mids = []
    for a, h in zip(items, heights):
        mid = y + 0.2
        mids.append(mid)
        y += h
        if isinstance(a, MediaSpan):
            x1, x2 = geo.cols[a.src], geo.cols[a.dst]
            colour = MEDIA_COLOURS.get(a.kind, MEDIA_COLOURS["rtp"])
            ax.text(0.15, mid, f"{stamp_at(a.first, prev, ladder.start, time_mode)}  #{a.frame}",
                    fontsize=FONT - 0.5, va="center", family="monospace", color="#7d5a00")
            if x1 == x2:
                x2 = x1 + 0.6
            ax.add_patch(FancyArrowPatch((x1, mid), (x2, mid), arrowstyle="-|>", mutation_scale=10, color=colour,
                                         lw=3.0, alpha=0.55, shrinkA=0, shrinkB=1, zorder=2))
            ax.text((x1 + x2) / 2, mid - 0.07, f"{a.kind.upper()} {_short(a.label, 64)}", fontsize=FONT - 0.5,
                    ha="center", va="bottom", color="#6e4f00" if a.kind != "video" else "#5b2c6f", zorder=4,
                    bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.85))
            continue
        when = stamp_at(a.ts, prev, ladder.start, time_mode)
        prev = a.ts
        ax.text(0.15, mid, f"{when}  #{a.frame}", fontsize=FONT - 0.5, va="center", family="monospace",
                color="#444444")
        if len(leg_of) > 1 and a.call_id in leg_of:
            ax.add_patch(Rectangle((0.02, mid - 0.1), 0.08, 0.2, color=leg_of[a.call_id], lw=0))
        colour = COLOURS[a.kind]
        style = (0, (4, 3)) if a.retransmission else "solid"
        x1, x2 = geo.cols[a.src], geo.cols[a.dst]
        label = _short(a.label) + (" (retransmission)" if a.retransmission else "")
        if a.src == a.dst:     # sent to its own address: a loop beside the lane
            ax.add_patch(FancyArrowPatch((x1, mid - 0.08), (x1, mid + 0.08), connectionstyle="arc3,rad=-1.6",
                                         arrowstyle="-|>", mutation_scale=8, color=colour, lw=1.1,
                                         linestyle=style, zorder=3))
            ax.text(x1 + 0.25, mid, label, fontsize=FONT, va="center", color=colour)
        else:
            ax.add_patch(FancyArrowPatch((x1, mid), (x2, mid), arrowstyle="-|>", mutation_scale=9,
                                         color=colour, lw=1.2, linestyle=style, shrinkA=0, shrinkB=1, zorder=3))
            ax.text((x1 + x2) / 2, mid - 0.07, label, fontsize=FONT, ha="center", va="bottom", color=colour,
                    bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.85), zorder=4)
        for i, line in enumerate(a.sdp):
            ax.text((x1 + x2) / 2, mid + 0.1 + i * SDP_LINE, _short(line, 60), fontsize=FONT - 1.5, ha="center",
                    va="top", color="#555555", style="italic", zorder=4)
        for i, note in enumerate(a.notes):
            ax.text(geo.notes_x, mid + i * SDP_LINE, "◆ " + _short(note, 70), fontsize=FONT - 0.5, va="center",
                    color=NOTE_COLOUR)
    for i, s in enumerate(items):     # a faint band from a stream's first row down to its last packet's row
        if not isinstance(s, MediaSpan):
            continue
        last = max([mids[j] for j in range(i, len(items)) if items[j].ts <= s.last + 0.0005] + [mids[i]])
        x1, x2 = sorted((geo.cols[s.src], geo.cols[s.dst]))
        x2 = x2 if x2 > x1 else x1 + 0.6
        ax.add_patch(Rectangle((x1, mids[i]), x2 - x1, last - mids[i] + 0.1, lw=0, zorder=0, alpha=0.12,
                               color=MEDIA_COLOURS.get(s.kind, MEDIA_COLOURS["rtp"])))
    return HEAD + sum(heights) + 0.5


def _legend(ax, ladder_list: Sequence[Ladder], y: float) -> None:
    x = 0.15
    for kind, colour in COLOURS.items():
        ax.plot([x, x + 0.35], [y, y], color=colour, lw=1.5)
        ax.text(x + 0.42, y, KIND_NAMES[kind], fontsize=FONT - 0.5, va="center")
        x += 1.45
    ax.plot([x, x + 0.35], [y, y], color="#555555", lw=1.2, linestyle=(0, (4, 3)))
    ax.text(x + 0.42, y, "retransmission", fontsize=FONT - 0.5, va="center")
    x += 1.45
    if any(lad.spans for lad in ladder_list):
        ax.text(x, y, "▮", fontsize=FONT + 2, va="center", color=MEDIA_COLOURS["audio"], alpha=0.6)
        ax.text(x + 0.2, y, "media stream", fontsize=FONT - 0.5, va="center")
    for lad in ladder_list:
        for i, leg in enumerate(lad.legs if len(lad.legs) > 1 else ()):
            y += 0.22
            ax.text(0.15, y, "■", fontsize=FONT + 2, va="center", color=LEG_COLOURS[i % len(LEG_COLOURS)])
            ax.text(0.35, y, f"leg {i + 1}: Call-ID {_short(leg, 80)}", fontsize=FONT - 0.5, va="center")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    return fig, ax


def _legend_height(ladder_list: Sequence[Ladder]) -> float:
    return 0.5 + 0.22 * sum(len(lad.legs) for lad in ladder_list if len(lad.legs) > 1)


def save(ladder_list: Sequence[Ladder], path: str, fmt: Optional[str] = None, time_mode: str = "rel") -> str:
    """Paint the ladders into ``path`` (format from ``fmt`` or the file's extension); returns the format.
    SVG and PNG: every ladder in one image, one under the other. PDF: pages of PAGE_ROWS messages."""
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"a picture is .svg, .png or .pdf, not {fmt!r}")
    ladder_list = [lad for lad in ladder_list if lad.arrows] or list(ladder_list[:1])
    geos = [_geometry(lad) for lad in ladder_list]
    width = max(g.width for g in geos) if geos else 6.0
    if fmt == "pdf":
        from matplotlib.backends.backend_pdf import PdfPages
        with PdfPages(path) as pdf:
            for lad, geo in zip(ladder_list, geos):
                items = rows(lad)
                pages = _pages(items, PAGE_ROWS)
                for n, (lo, hi) in enumerate(pages):
                    used_rows = sum(_row_heights(items[lo:hi]))
                    fig, ax = _figure(width, HEAD + used_rows + 0.5 + _legend_height([lad]))
                    before = next((r.ts for r in reversed(items[:lo]) if isinstance(r, Arrow)), None)
                    used = _draw(ax, lad, geo, items[lo:hi], 0.0, time_mode,
                                 f"page {n + 1} of {len(pages)}" if len(pages) > 1 else None, before)
                    _legend(ax, [lad], used)
                    pdf.savefig(fig)
        return fmt
    all_items = [rows(lad) for lad in ladder_list]
    heights = [HEAD + sum(_row_heights(items)) + 0.5 for items in all_items]
    total = sum(heights) + _legend_height(ladder_list)
    fig, ax = _figure(width, total)
    y = 0.0
    for lad, geo, items in zip(ladder_list, geos, all_items):
        y += _draw(ax, lad, geo, items, y, time_mode, None, None)
    _legend(ax, ladder_list, y)
    dpi = max(20, min(110, int(MAX_PIXELS / max(width, total))))
    from matplotlib import rc_context
    with rc_context({"svg.fonttype": "none"}):     # SVG text stays text: searchable, small, selectable
        fig.savefig(path, format=fmt, dpi=dpi if fmt == "png" else 72)
    return fmt
