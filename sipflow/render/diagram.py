"""Ladders as sequence-diagram text for wikis and tickets: Mermaid and PlantUML.

Owns writing a ``render.ladder`` layout in the two sequence-diagram languages most wikis and issue
trackers render (Mermaid in GitHub/GitLab Markdown, PlantUML in Confluence and many IDEs). Lanes are
declared once as participants (``L0``, ``L1``... aliased to their address, so addresses with colons
and brackets need no quoting rules); requests are solid arrows and responses dashed, as both
languages draw them; a retransmission says so in its label; a call's events are notes over the lanes
of the message that caused them; media streams are open-headed arrows at their first packet. Capture text is
made safe for each language: no line breaks, no control characters, and the characters that would end
a label or start markup replaced (Mermaid's ``;`` and ``#`` become its ``#59;``/``#35;`` entities).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional

from sipflow.render.ladder import Ladder, MediaSpan, rows
from sipflow.render.safe import printable

FORMATS = ("mermaid", "plantuml")


MERMAID_ENTITIES = {"#": "#35;", ";": "#59;"}


def _mermaid_text(text: str) -> str:
    return "".join(MERMAID_ENTITIES.get(c, c) for c in " ".join(printable(text).split()))


def _plantuml_text(text: str) -> str:
    return " ".join(printable(text).split()).replace("\\", "\\\\")


@dataclass(frozen=True)
class _Dialect:
    """How one sequence-diagram language writes each part of a ladder."""
    begin: str
    end: Optional[str]
    title: str                     # formats, filled with the escaped text
    participant: str
    message: str
    note: str
    lane_join: str                 # between the two lanes of a note over both
    arrows: Dict[str, str]         # request, response, media; "+ retransmission" variants where they differ
    text: Callable[[str], str]
    name: Callable[[str], str]     # a participant's name (quoted where the language quotes it)


MERMAID = _Dialect("sequenceDiagram", None, "    title {text}", "    participant L{i} as {name}",
                   "    L{src}{arrow}L{dst}: {text}", "    Note over {lanes}: {text}", ",",
                   {"request": "->>", "response": "-->>", "media": "-)"}, _mermaid_text, _mermaid_text)
PLANTUML = _Dialect("@startuml", "@enduml", "title {text}", 'participant "{name}" as L{i}',
                    "L{src} {arrow} L{dst} : {text}", "note over {lanes} : {text}", ", ",
                    {"request": "->", "response": "-->", "media": "->>", "request retransmission": "-[#888888]>",
                     "response retransmission": "--[#888888]>"},
                    _plantuml_text, lambda name: _plantuml_text(name).replace('"', "'"))


def _write(ladders: Iterable[Ladder], d: _Dialect) -> List[str]:
    """Every ladder in the dialect, a blank line between them: participants, then the rows (messages
    with their notes, media streams as their own arrow) in time order."""
    out: List[str] = []
    for lad in ladders:
        if out:
            out.append("")
        out.append(d.begin)
        if lad.title:
            out.append(d.title.format(text=d.text(lad.title)))
        for i, name in enumerate(lad.lanes):
            out.append(d.participant.format(i=i, name=d.name(name)))
        for r in rows(lad):
            if isinstance(r, MediaSpan):
                out.append(d.message.format(src=r.src, arrow=d.arrows["media"], dst=r.dst,
                                            text=d.text(r.kind.upper() + " " + r.label)))
                continue
            kind = "request" if r.kind == "request" else "response"
            arrow = d.arrows.get(kind + " retransmission", d.arrows[kind]) if r.retransmission else d.arrows[kind]
            label = r.label + (" (retransmission)" if r.retransmission else "")
            out.append(d.message.format(src=r.src, arrow=arrow, dst=r.dst, text=d.text(label)))
            for note in r.notes:
                lanes = f"L{r.src}{d.lane_join}L{r.dst}" if r.src != r.dst else f"L{r.src}"
                out.append(d.note.format(lanes=lanes, text=d.text(note)))
        if d.end:
            out.append(d.end)
    return out


def mermaid(ladders: Iterable[Ladder]) -> str:
    """One ``sequenceDiagram`` per ladder, separated by a blank line (paste each into a
    ```mermaid fence)."""
    return "\n".join(_write(ladders, MERMAID)) or MERMAID.begin


def plantuml(ladders: Iterable[Ladder]) -> str:
    """One ``@startuml`` ... ``@enduml`` block per ladder."""
    return "\n".join(_write(ladders, PLANTUML))
