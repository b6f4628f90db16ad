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

from typing import Iterable, List

from sipflow.render.ladder import Arrow, Ladder, MediaSpan, rows
from sipflow.render.safe import printable

FORMATS = ("mermaid", "plantuml")


MERMAID_ENTITIES = {"#": "#35;", ";": "#59;"}


def _mermaid_text(text: str) -> str:
    return "".join(MERMAID_ENTITIES.get(c, c) for c in " ".join(printable(text).split()))


def _plantuml_text(text: str) -> str:
    return " ".join(printable(text).split()).replace("\\", "\\\\")


def _is_response(a: Arrow) -> bool:
    return a.kind != "request"


def mermaid(ladders: Iterable[Ladder]) -> str:
    """One ``sequenceDiagram`` per ladder, separated by a blank line (paste each into a
    ```mermaid fence)."""
    out: List[str] = []
    for lad in ladders:
        if out:
            out.append("")
        out.append("sequenceDiagram")
        if lad.title:
            out.append(f"    title {_mermaid_text(lad.title)}")
        for i, name in enumerate(lad.lanes):
            out.append(f"    participant L{i} as {_mermaid_text(name)}")
        for r in rows(lad):
            if isinstance(r, MediaSpan):    # an open-headed (async) arrow
                out.append(f"    L{r.src}-)L{r.dst}: {_mermaid_text(r.kind.upper() + ' ' + r.label)}")
                continue
            arrow = "-->>" if _is_response(r) else "->>"
            label = r.label + (" (retransmission)" if r.retransmission else "")
            out.append(f"    L{r.src}{arrow}L{r.dst}: {_mermaid_text(label)}")
            for note in r.notes:
                lanes = f"L{r.src},L{r.dst}" if r.src != r.dst else f"L{r.src}"
                out.append(f"    Note over {lanes}: {_mermaid_text(note)}")
    return "\n".join(out) if out else "sequenceDiagram"


def plantuml(ladders: Iterable[Ladder]) -> str:
    """One ``@startuml`` ... ``@enduml`` block per ladder."""
    out: List[str] = []
    for lad in ladders:
        if out:
            out.append("")
        out.append("@startuml")
        if lad.title:
            out.append(f"title {_plantuml_text(lad.title)}")
        for i, name in enumerate(lad.lanes):
            quoted = _plantuml_text(name).replace('"', "'")
            out.append(f'participant "{quoted}" as L{i}')
        for r in rows(lad):
            if isinstance(r, MediaSpan):    # a thin-headed arrow
                out.append(f"L{r.src} ->> L{r.dst} : {_plantuml_text(r.kind.upper() + ' ' + r.label)}")
                continue
            arrow = "-->" if _is_response(r) else "->"
            if r.retransmission:
                arrow = arrow[:-1] + "[#888888]>"
            label = r.label + (" (retransmission)" if r.retransmission else "")
            out.append(f"L{r.src} {arrow} L{r.dst} : {_plantuml_text(label)}")
            for note in r.notes:
                lanes = f"L{r.src}, L{r.dst}" if r.src != r.dst else f"L{r.src}"
                out.append(f"note over {lanes} : {_plantuml_text(note)}")
        out.append("@enduml")
    return "\n".join(out)
