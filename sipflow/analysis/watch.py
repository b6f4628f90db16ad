"""What changed between two snapshots, as events: what a live view prints as it happens.

Owns turning successive ``Analysis`` snapshots of a running analyzer into events: a call started,
rang, was answered, put on hold or resumed, transferred, ended (with its summary), a registration's
result, a new anomaly or malformed message. ``Watcher.update(snapshot)`` returns the events since the
previous snapshot, in time order; it remembers only what it needs to tell new from old (each live
call's last state, the count of its timeline events, each registration's last outcome), and forgets
calls and registrations the snapshot no longer holds, so its memory follows the analyzer's bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from sipflow.analysis.kinds import CallState
from sipflow.analysis.timeline import timeline

# timeline kinds told as call events (the others stay in the call's summary)
TOLD = ("ringing", "answered", "hold", "resume", "transfer", "hangup")
ENDED = (CallState.ENDED, CallState.FAILED)


@dataclass(frozen=True)
class Event:
    ts: float                       # capture time of what happened
    kind: str                       # call | registration | anomaly | malformed
    what: str                       # started | ringing | answered | hold | resume | transfer | ended | ...
    data: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {"type": self.kind, "event": self.what, "ts": self.ts, **self.data}


def call_summary(a, c) -> Dict[str, Any]:
    """A call in a few fields: who, outcome, timings, media quality."""
    t = c.timing
    mos = [s.quality.mos for s in c.streams if s.quality is not None]
    return {"call": a.number(c), "call_id": c.call_id, "from": c.from_user or c.from_uri,
            "to": c.to_user or c.to_uri, "outcome": c.outcome.value, "final_status": c.final_status,
            "pdd": t.pdd, "duration": t.duration, "streams": len(c.streams),
            "lost": sum(max(s.lost, 0) for s in c.streams),
            "mos": round(min(mos), 2) if mos else None, "ended_by": c.ended_by}


class Watcher:
    def __init__(self) -> None:
        self._calls: Dict[str, Tuple[int, bool]] = {}     # Call-ID -> (timeline events told, ended)
        self._regs: Dict[Tuple[str, str], Tuple[str, Optional[int], int]] = {}   # (aor, Call-ID) -> state
        self._anomalies = 0
        self._malformed = 0

    def update(self, a) -> List[Event]:
        out: List[Event] = []
        seen = set()
        for c in a.calls:
            seen.add(c.call_id)
            told, ended = self._calls.get(c.call_id, (-1, False))
            if ended:
                continue
            summary = call_summary(a, c)
            if told < 0:
                out.append(Event(c.start, "call", "started", summary))
                told = 0
            events = [ev for ev in timeline(c) if ev.kind in TOLD and ev.kind != "hangup"]
            for ev in events[told:]:
                out.append(Event(ev.ts, "call", ev.kind, {**summary, "text": ev.text}))
            told = len(events)
            now_ended = c.state in ENDED
            if now_ended:
                last = max((e.ts for e in c.events), default=c.start)
                out.append(Event(last, "call", "ended", summary))
            self._calls[c.call_id] = (told, now_ended)
        for gone in [k for k in self._calls if k not in seen]:    # summarised or aged out by the analyzer
            del self._calls[gone]
        regs = set()
        for r in a.registrations:
            key = (r.aor, r.call_id)
            regs.add(key)
            state = (r.outcome.value, r.final_status, r.requests)
            if self._regs.get(key) != state and r.final_status is not None:
                out.append(Event(r.end, "registration", r.outcome.value,
                                 {"aor": r.aor, "call_id": r.call_id, "final_status": r.final_status,
                                  "expires": r.expires_granted, "challenges": r.challenges,
                                  "contact": r.contact}))
            self._regs[key] = state
        for gone in [k for k in self._regs if k not in regs]:
            del self._regs[gone]
        for x in a.anomalies[self._anomalies:]:
            out.append(Event(a.end_ts, "anomaly", x.kind.value, {"frame": x.frame, "call_id": x.call_id,
                                                                 "detail": x.detail}))
        self._anomalies = len(a.anomalies)
        for m in a.malformed[self._malformed:]:
            out.append(Event(m.ts, "malformed", "malformed", {"frame": m.frame, "src": m.src, "dst": m.dst,
                                                             "error": m.error}))
        self._malformed = len(a.malformed)
        out.sort(key=lambda e: e.ts)
        return out
