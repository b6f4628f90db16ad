"""Summary charts: a capture's figures as pictures (``sipflow summary --chart``, the HTML report).

Owns six panels drawn from an ``Analysis`` with matplotlib's object API (imported here, only when a
chart is asked for): responses per method stacked by class, call outcomes, calls and registrations
over time, post-dial delay and setup-time histograms, and the MOS of the rated streams. A panel with
nothing to show says so instead of drawing empty axes. Capture text (method names) is escaped for
mathtext like the ladder pictures.
"""
from __future__ import annotations

import io
import os
from typing import Dict, List, Optional

from sipflow.render.safe import printable

CLASS_COLOURS = {"1xx": "#9e9e9e", "2xx": "#2e7d32", "3xx": "#1565c0", "4xx": "#ef6c00", "5xx": "#c62828",
                 "6xx": "#6a1b9a"}
OUTCOME_COLOURS = {"answered": "#2e7d32", "busy": "#ef6c00", "rejected": "#c62828", "cancelled": "#8d6e63",
                   "redirected": "#1565c0", "no_answer": "#f9a825", "no_response": "#6a1b9a",
                   "in_progress": "#90a4ae", "partial": "#b0bec5"}
FORMATS = ("png", "svg", "pdf")
MAX_METHODS = 12      # bars in the responses panel (the busiest methods)


def _text(s: str) -> str:
    return printable(s).replace("$", r"\$")


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=9, color="#777777", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _responses(ax, methods: Dict[str, Dict[str, int]]) -> None:
    ax.set_title("Responses per method", fontsize=10)
    names = sorted(methods, key=lambda m: -sum(v for k, v in methods[m].items() if k != "requests"))[:MAX_METHODS]
    names = [m for m in names if any(k != "requests" for k in methods[m])]
    if not names:
        _empty(ax, "no SIP responses")
        return
    bottom = [0] * len(names)
    for cls, colour in CLASS_COLOURS.items():
        values = [sum(v for k, v in methods[m].items() if k != "requests" and k[:1] == cls[0]) for m in names]
        if any(values):
            ax.bar(range(len(names)), values, bottom=bottom, color=colour, label=cls)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(names)), [_text(m) for m in names], rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.set_ylabel("responses", fontsize=8)


def _outcomes(ax, outcomes: Dict[str, int]) -> None:
    ax.set_title("Call outcomes", fontsize=10)
    if not outcomes:
        _empty(ax, "no calls")
        return
    names = sorted(outcomes, key=lambda k: -outcomes[k])
    ax.barh(range(len(names)), [outcomes[k] for k in names], color=[OUTCOME_COLOURS.get(k, "#777777")
                                                                    for k in names])
    ax.set_yticks(range(len(names)), [k.replace("_", " ") for k in names], fontsize=8)
    ax.invert_yaxis()
    for i, k in enumerate(names):
        ax.text(outcomes[k], i, f" {outcomes[k]}", va="center", fontsize=8)
    ax.set_xlabel("calls", fontsize=8)


def _over_time(ax, a) -> None:
    ax.set_title("Calls and registrations over time (UTC)", fontsize=10)
    calls = [c.start for c in a.calls]
    regs = [r.start for r in a.registrations]
    if not calls and not regs:
        _empty(ax, "no calls or registrations")
        return
    import datetime as dt

    from matplotlib.dates import AutoDateFormatter, AutoDateLocator, date2num
    lo, hi = min(calls + regs), max(calls + regs)
    bins = 40
    width = max(hi - lo, 1.0) / bins
    edges = [lo + i * width for i in range(bins + 1)]
    for stamps, label, colour in ((calls, "calls started", "#1565c0"), (regs, "registrations", "#ef6c00")):
        if not stamps:
            continue
        counts = [0] * bins
        for t in stamps:
            counts[min(bins - 1, int((t - lo) / width))] += 1
        xs = [date2num(dt.datetime.fromtimestamp(e, dt.timezone.utc)) for e in edges]
        ax.stairs(counts, xs, label=label, color=colour, linewidth=1.4)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(AutoDateFormatter(locator))
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    ax.set_ylabel(f"per {width:.3g} s", fontsize=8)
    ax.legend(fontsize=7, frameon=False)


def _histogram(ax, values: List[float], title: str, colour: str, unit: str = "s") -> None:
    ax.set_title(title, fontsize=10)
    if not values:
        _empty(ax, "none measured")
        return
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color=colour, edgecolor="white", linewidth=0.5)
    ax.set_xlabel(unit, fontsize=8)
    ax.set_ylabel("calls" if unit == "s" else "streams", fontsize=8)


def summary_figure(a):
    """The six panels in one ``Figure``."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 11), layout="constrained")
    axes = fig.subplots(3, 2)
    _responses(axes[0][0], a.methods)
    _outcomes(axes[0][1], a.call_outcomes())
    _over_time(axes[1][0], a)
    timings = [c.timing for c in a.calls]
    _histogram(axes[1][1], [t.pdd for t in timings if t.pdd is not None], "Post-dial delay (PDD)", "#6a1b9a")
    _histogram(axes[2][0], [t.setup_time for t in timings if t.setup_time is not None], "Setup time (INVITE to ACK)",
               "#1565c0")
    mos = [s.quality.mos for s in a.streams if s.quality is not None]
    _histogram(axes[2][1], mos, "MOS of the rated streams (E-model)", "#2e7d32", unit="MOS")
    for row in axes:
        for ax in row:
            ax.tick_params(labelsize=7)
    return fig


def save_summary(a, path: str, fmt: Optional[str] = None) -> str:
    """Write the charts to ``path`` (PNG, SVG or PDF by ``fmt`` or the extension); returns the format."""
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"a chart is .png, .svg or .pdf, not {fmt!r}")
    from matplotlib import rc_context
    with rc_context({"svg.fonttype": "none"}):
        summary_figure(a).savefig(path, format=fmt, dpi=100)
    return fmt


def summary_svg(a) -> str:
    """The charts as one SVG document (for inlining in the HTML report)."""
    from matplotlib import rc_context
    out = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "sipflow"}):
        summary_figure(a).savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg"):]       # no XML prolog or doctype inside HTML
