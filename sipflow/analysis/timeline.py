"""What happened in a call, in plain words and in order: its timeline.

Owns one derived view of a ``CallRecord``: the events an engineer reads a call for, each with its time,
frame and who did it: ringing, early media (a 18x with SDP), answer, hold and resume (every change of
the audio direction an SDP offer asks for: sendonly, inactive, ``c=0.0.0.0``, back to sendrecv), codec
changes, DTMF (RFC 4733 and INFO), MESSAGE text, transfers (REFER with its Refer-To, the 202, and the
NOTIFY sipfrag progress and result), and the hang-up. Through a proxy every message shows once per
hop: an event is taken from its first hop only. The few messages whose headers or bodies are needed
(REFER, NOTIFY, MESSAGE) are parsed here, as the view is made, from the bytes the analysis kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from sipflow.analysis.messages import SipEvent
from sipflow.analysis.offers import MediaOffer
from sipflow.analysis.records import CallRecord
from sipflow.errors import ParseError

MESSAGE_TEXT = 60          # characters of a MESSAGE body shown


@dataclass(frozen=True)
class CallEvent:
    ts: float
    frame: int
    kind: str              # ringing | early_media | answered | hold | resume | codec | dtmf | message |
    #                        transfer | transfer_accepted | transfer_refused | transfer_progress |
    #                        transfer_result | fax | hangup
    by: Optional[str]      # who: "caller" or "callee" (None: not known)
    text: str              # the event in plain words


def _side(call: CallRecord, e: SipEvent) -> Optional[str]:
    """Which party sent a message: the caller's requests carry its From-tag."""
    if call.caller is not None and (e.src, e.sport) == call.caller:
        return "caller"
    first = call.invites[0].request if call.invites else None
    if first is None or e.from_tag is None:
        return None
    if e.method:
        return "caller" if e.from_tag == first.from_tag else "callee"
    return "callee" if e.from_tag == first.from_tag else "caller"   # a response comes from the request's target


def _first_hops(events) -> List[SipEvent]:
    """Each request and response once (its first hop), retransmissions left out."""
    seen: Set[tuple] = set()
    out = []
    for e in events:
        if e.retransmission:
            continue
        key = (e.method, e.status, e.cseq, e.cseq_method, e.from_tag, e.to_tag if e.status else None)
        if key in seen:
            continue
        seen.add(key)
        out.append(e)
    return out


def _direction(offer: MediaOffer) -> str:
    if offer.ip in ("0.0.0.0", "::"):
        return "c=0.0.0.0"
    return offer.direction


def _parsed(e: SipEvent):
    try:
        return e.msg
    except (ParseError, ValueError):
        return None


def _short(text: str, n: int = MESSAGE_TEXT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def timeline(call: CallRecord) -> Tuple[CallEvent, ...]:
    """The call's events in time order (see the module docstring)."""
    out: List[CallEvent] = []
    offers: Dict[int, List[MediaOffer]] = {}
    for o in call.media:
        offers.setdefault(o.frame, []).append(o)
    held_by: Dict[str, str] = {}          # side -> the direction that put the call on hold
    codec_of: Dict[str, str] = {}         # side -> the first audio codec it last offered
    answered = False
    for e in _first_hops(call.events):
        side = _side(call, e)
        audio = [o for o in offers.get(e.frame, ()) if o.kind == "audio"]
        if e.status is not None and e.cseq_method == "INVITE":
            if 180 <= e.status <= 182 and not answered and not any(x.kind == "ringing" for x in out):
                out.append(CallEvent(e.ts, e.frame, "ringing", side, f"ringing ({e.status} {e.reason or ''}".strip()
                                     + ")"))
            if 180 <= e.status < 200 and audio and not answered:
                codecs = "/".join(c.name for c in list(audio[0].codecs.values())[:2])
                out.append(CallEvent(e.ts, e.frame, "early_media", side,
                                     f"early media: {e.status} with SDP ({codecs}) before the answer"))
            if 200 <= e.status < 300 and not answered:
                answered = True
                out.append(CallEvent(e.ts, e.frame, "answered", side, f"answered ({e.status} {e.reason or 'OK'})"))
        if e.method in ("INVITE", "UPDATE") and audio and e.to_tag and side is not None:
            where = _direction(audio[0])
            held = where in ("sendonly", "inactive", "c=0.0.0.0")
            if held and held_by.get(side) != where:
                out.append(CallEvent(e.ts, e.frame, "hold", side, f"hold by the {side} ({where}, re-{e.method})"))
                held_by[side] = where
            elif not held and side in held_by:
                out.append(CallEvent(e.ts, e.frame, "resume", side, f"resume by the {side} ({where})"))
                del held_by[side]
        if audio and side is not None and (e.method in ("INVITE", "UPDATE", "ACK") or e.status is not None):
            codecs = [c.name for c in audio[0].codecs.values() if c.name.upper() not in ("TELEPHONE-EVENT", "CN")]
            if codecs:
                before = codec_of.get(side)
                if before is not None and before != codecs[0]:
                    out.append(CallEvent(e.ts, e.frame, "codec", side,
                                         f"codec {before} -> {codecs[0]} ({e.summary()} from the {side})"))
                codec_of[side] = codecs[0]
        if e.method == "MESSAGE":
            m = _parsed(e)
            text = m.body.decode("utf-8", "replace") if m is not None else ""
            out.append(CallEvent(e.ts, e.frame, "message", side, f"MESSAGE: {_short(text)!r}" if text else "MESSAGE"))
        elif e.method == "REFER":
            m = _parsed(e)
            target = (m.header("Refer-To") or "?") if m is not None else "?"
            out.append(CallEvent(e.ts, e.frame, "transfer", side, f"transfer to {_short(target.strip())} "
                                 f"(REFER from the {side or 'unknown side'})"))
        elif e.status is not None and e.status >= 200 and e.cseq_method == "REFER":
            ok = e.status < 300
            out.append(CallEvent(e.ts, e.frame, "transfer_accepted" if ok else "transfer_refused", side,
                                 f"transfer {'accepted' if ok else 'refused'} ({e.status} {e.reason or ''}".strip()
                                 + ")"))
        elif e.method == "NOTIFY":
            m = _parsed(e)
            if m is not None and (m.header("Event") or "").strip().lower().startswith("refer"):
                frag = m.body.decode("utf-8", "replace").strip().splitlines()
                line = frag[0].strip() if frag else "?"
                final = line.startswith("SIP/2.0 ") and line[8:9].isdigit() and line[8] != "1"
                out.append(CallEvent(e.ts, e.frame, "transfer_result" if final else "transfer_progress", side,
                                     f"transfer {'result' if final else 'progress'}: {_short(line)}"))
        elif e.method == "BYE":
            out.append(CallEvent(e.ts, e.frame, "hangup", side, f"hung up by the {side or 'unknown side'}"))
    for t in call.t38:
        answer = f"{t.status}" if t.status is not None else "no answer"
        out.append(CallEvent(t.ts, t.frame, "fax", None, "switch to T.38 fax offered: "
                             + (f"accepted ({answer}), media now UDPTL" if t.accepted
                                else f"refused ({answer}), media stays as it was")))
    for d in call.dtmf:
        how = "RFC 4733" if d.source == "rfc4733" else "INFO"
        length = f", {d.duration_ms:.0f} ms" if d.duration_ms is not None else ""
        out.append(CallEvent(d.ts, d.frame, "dtmf", None, f"DTMF {d.key} ({how}{length}, {d.src} -> {d.dst})"))
    out.sort(key=lambda ev: (ev.ts, ev.frame))
    return tuple(out)
