"""The live terminal view of ``sipflow live``: a call table that updates as calls ring, answer and end.

Owns drawing a snapshot for a terminal with rich (imported here only): a header with the counters and
drops, the calls (those in progress first, then the most recent ones that ended) with their state,
parties, post-dial delay, duration and per-direction media (codec, loss, jitter, MOS), and the last
events as a log under it. ``LiveView`` is given the snapshot and the events as they come and redraws a
few times a second through ``rich.live.Live`` (no flicker: rich rewrites the same lines); when it stops,
the last frame stays on the screen. Capture text is escaped for the terminal (``render.safe``) and
handed to rich as plain ``Text``, never as markup.
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional

from sipflow.render.live import event_line
from sipflow.render.safe import printable
from sipflow.render.tables import fmt_time

STATE_STYLE = {"setup": "yellow", "ringing": "yellow", "in_call": "bold green", "ended": "dim",
               "failed": "red", "cancelling": "magenta"}
EVENT_LINES = 6
REFRESH = 4           # redraws per second


def _secs(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}"


def _media(call) -> str:
    """One entry per stream: codec, loss and MOS (``PCMA 0.0% 4.41``)."""
    parts = []
    for s in call.streams[:4]:
        loss = f"{100.0 * max(s.lost, 0) / s.expected:.1f}%" if s.expected else "-"
        mos = f" {s.quality.mos:.2f}" if s.quality is not None else ""
        parts.append(f"{s.codec or s.pt} {loss}{mos}")
    return ", ".join(parts) + (" …" if len(call.streams) > 4 else "")


class LiveView:
    """What the terminal shows; ``update`` with each look, ``start``/``stop`` around the capture."""

    def __init__(self, where: str, rows: Optional[int] = None) -> None:
        from rich.console import Console
        self.console = Console(stderr=False, highlight=False)
        self.where = where
        self.rows = rows
        self.events: Deque[str] = deque(maxlen=EVENT_LINES)
        self.snapshot = None
        self.counters: Dict[str, int] = {}
        self._live = None

    def start(self) -> None:
        from rich.live import Live
        self._live = Live(self._render(), console=self.console, refresh_per_second=REFRESH, transient=False,
                          auto_refresh=True, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def update(self, snapshot, events, counters: Dict[str, int]) -> None:
        self.snapshot = snapshot
        self.counters = counters
        for e in events:
            self.events.append(event_line(e))
        if self._live is not None:
            self._live.update(self._render())

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        c = self.counters
        head = Text(f"sipflow live on {printable(self.where)}", style="bold")
        if c:
            head.append(f"   packets {c['packets']}  SIP {c['sip_messages']}  RTP {c['rtp_packets']}  "
                        f"calls {c['calls']}  malformed {c['malformed']}  ")
            drops = c["kernel_dropped"] + c["interface_dropped"]
            head.append(f"dropped {c['kernel_dropped']}/{c['interface_dropped']}",
                        style="bold red" if drops else "green")
        table = Table(expand=True, show_edge=False, pad_edge=False, header_style="bold")
        for name, justify in (("#", "right"), ("Start", "left"), ("From", "left"), ("To", "left"),
                              ("State", "left"), ("PDD", "right"), ("Dur", "right"), ("Media", "left")):
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
        a = self.snapshot
        if a is not None:
            for call in self._calls(a):
                state = call.state.value
                label = state.replace("_", " ")
                if state in ("ended", "failed"):
                    label = call.outcome.value.replace("_", " ") + (
                        f" {call.final_status}" if call.final_status and call.outcome.value != "answered" else "")
                t = call.timing
                table.add_row(str(a.number(call)), fmt_time(call.start), Text(printable(call.from_user or "?")),
                              Text(printable(call.to_user or "?")), Text(label, style=STATE_STYLE.get(state, "")),
                              _secs(t.pdd), _secs(t.duration), Text(_media(call)))
        log = Text("\n".join(self.events) if self.events else "waiting for SIP…", style="dim")
        return Group(head, table, log)

    def _calls(self, a) -> List:
        """In-progress calls first (newest first), then the most recent ended ones, as many as fit."""
        height = self.rows or self.console.size.height
        room = max(3, height - EVENT_LINES - 5)
        live = [c for c in a.calls if c.state.value not in ("ended", "failed")]
        done = [c for c in a.calls if c.state.value in ("ended", "failed")]
        return (sorted(live, key=lambda c: -c.start) + sorted(done, key=lambda c: -c.start))[:room]
