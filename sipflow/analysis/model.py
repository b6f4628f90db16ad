"""What an analysis found, as data: the ``Analysis`` object, filters, KPIs and the JSON form.

Owns the result model that every renderer reads (tables, CSV, JSON, and later ladders and HTML) and
its canonical dict form, the document described in docs/json.md. Holds no packet logic: ``analysis.analyzer``
builds an ``Analysis``; this module only describes, filters and serialises one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from sipflow.analysis.kinds import Anomaly, Outcome
from sipflow.analysis.messages import SipEvent
from sipflow.analysis.records import CallRecord, DtmfRecord, FaxRecord, RegistrationRecord, StreamRecord
from sipflow.analysis.timeline import timeline
from sipflow.analysis.totals import SummarisedCalls
from sipflow.net import fmt_endpoint

__all__ = ["Analysis", "DialogRow", "Filter", "Malformed", "Scope", "message_dict", "call_dict", "registration_dict",
           "stream_dict"]


@dataclass(frozen=True)
class Malformed:
    """Bytes that looked like SIP but could not be read (or were read with damage)."""
    frame: int
    file: int
    ts: float
    src: str
    dst: str
    error: str


@dataclass
class Filter:
    """What the user asked to see. Empty fields match everything."""
    call_id: Optional[str] = None
    user: Optional[str] = None
    method: Optional[str] = None
    status: Optional[str] = None     # "486", "4xx"
    since: Optional[float] = None
    until: Optional[float] = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.call_id, self.user, self.method, self.status, self.since,
                                           self.until))

    def status_ok(self, status: Optional[int]) -> bool:
        if self.status is None:
            return True
        if status is None:
            return False
        want = self.status.lower()
        return str(status) == want or (want.endswith("xx") and str(status)[0] == want[0])

    def time_ok(self, ts: float) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts <= self.until)

    def describe(self) -> str:
        """The filter as the command line gives it (times in ISO 8601, UTC)."""
        import datetime as dt

        def iso(ts: float) -> str:
            return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "Z"
        parts = [f"--{name.replace('_', '-')} {value}" for name, value in
                 (("call_id", self.call_id), ("user", self.user), ("method", self.method), ("status", self.status))
                 if value is not None]
        parts += [f"--{name} {iso(value)}" for name, value in (("since", self.since), ("until", self.until))
                  if value is not None]
        return " ".join(parts)

    def call_ok(self, c: CallRecord) -> bool:
        """A call matches: its Call-ID, a party, its start time, its final status, and (``method``) a
        message of that method in it (``--method BYE``: the calls that have a BYE)."""
        if self.call_id is not None and c.call_id != self.call_id:
            return False
        if self.user is not None and not any(u and self.user.lower() in u.lower() for u in (c.from_user, c.to_user)):
            return False
        if self.method is not None:
            want = self.method.upper()
            if not any((e.method or e.cseq_method or "").upper() == want for e in c.events):
                return False
        return self.time_ok(c.start) and self.status_ok(c.final_status)


@dataclass(frozen=True)
class DialogRow:
    """One Call-ID's messages in a line (``Analysis.dialogs``)."""
    call_id: Optional[str]
    method: str                 # the first request's
    start: float
    from_user: Optional[str]
    to_user: Optional[str]
    src: str                    # where the first request came from, ip:port
    dst: str
    outcome: str
    messages: int
    retransmissions: int
    methods: Tuple[str, ...]    # every request method in it, in order of first sight


@dataclass(frozen=True)
class Scope:
    """What a filtered view kept of the whole: the filter as given, and counts to say so."""
    description: str       # "--method BYE --status 4xx"
    calls: int
    calls_total: int
    messages: int
    messages_total: int
    summarised: bool       # some calls were summarised (--keep-calls): a filter cannot see them

    def line(self) -> str:
        return (f"Filter {self.description}: {self.calls} of {self.calls_total} calls, {self.messages} of "
                f"{self.messages_total} SIP messages" + (" (summarised calls left out)" if self.summarised else ""))


@dataclass(frozen=True)
class Analysis:
    """Everything sipflow learned from the captures, as of one moment (``Analyzer.snapshot``): immutable
    records in tuples. ``to_dict()`` gives the documented JSON form."""
    files: List[dict]
    messages: Tuple[SipEvent, ...]
    calls: Tuple[CallRecord, ...]
    registrations: Tuple[RegistrationRecord, ...]
    bindings: Dict[str, Dict[str, float]]
    streams: Tuple[StreamRecord, ...]
    malformed: Tuple[Malformed, ...]
    anomalies: Tuple[Anomaly, ...]
    methods: Dict[str, Dict[str, int]]
    stats: Dict[str, int]
    end_ts: float = 0.0
    warnings: Tuple[str, ...] = ()
    # Calls summarised out of memory (AnalyzerOptions.keep_calls): not in ``calls``, in every total.
    summarised: SummarisedCalls = field(default_factory=SummarisedCalls.empty)
    # A filtered view: the filter as given and how much of the whole it kept (None: not filtered).
    scope: Optional["Scope"] = None
    # Call-ID -> the call's number in the whole analysis (calls by start, from 1), kept by filtered views
    numbers: Optional[Dict[str, int]] = None

    def number(self, call: CallRecord) -> int:
        """The call's number in the calls table of the whole capture (what ``--call N`` takes)."""
        return (self.numbers or self._numbering)[call.call_id]

    @cached_property
    def _numbering(self) -> Dict[str, int]:
        return {c.call_id: i + 1 for i, c in enumerate(self.calls)}

    def call_rows(self) -> Iterator[Tuple[Outcome, Optional[int], bool, Dict[str, Optional[float]]]]:
        """(outcome, final status, INVITE seen, timings) of every call, held or summarised."""
        for c in self.calls:
            yield c.outcome, c.final_status, c.saw_initial, c.timings()
        yield from self.summarised.rows()

    def call_outcomes(self) -> Dict[str, int]:
        """Calls by outcome, held and summarised."""
        out: Dict[str, int] = {}
        for outcome, _, _, _ in self.call_rows():
            out[outcome.value] = out.get(outcome.value, 0) + 1
        return out

    @property
    def problems(self) -> List[Union[Malformed, Anomaly]]:
        return [*self.malformed, *self.anomalies]

    def call(self, call_id: str) -> Optional[CallRecord]:
        for c in self.calls:
            if c.call_id == call_id:
                return c
        return None

    # -- every dialog ---------------------------------------------------------------------------------

    def dialogs(self) -> List["DialogRow"]:
        """Every Call-ID's messages as one row, as sngrep's call list shows them: INVITE calls, REGISTER
        flows, OPTIONS pings, MESSAGEs, SUBSCRIBE/NOTIFY dialogs. The method is the first request's;
        the outcome is the call's or the registration's, or else the first request's final answer."""
        groups: Dict[Optional[str], List[SipEvent]] = {}
        for e in self.messages:
            groups.setdefault(e.call_id, []).append(e)
        calls = {c.call_id: c for c in self.calls}
        regs = {r.call_id: r for r in self.registrations}
        rows = []
        for call_id, events in groups.items():
            first = next((e for e in events if e.method and e.method != "ACK"), events[0])
            method = first.method or first.cseq_method or "?"
            if call_id in calls:
                outcome = calls[call_id].outcome.value.replace("_", " ")
                status = calls[call_id].final_status
                if status is not None and outcome != "answered":
                    outcome += f" {status}"
            elif call_id in regs:
                outcome = regs[call_id].outcome.value.replace("_", " ")
            else:
                final = next((e for e in events if e.status is not None and e.status >= 200
                              and e.cseq == first.cseq and e.cseq_method == first.cseq_method), None)
                outcome = f"{final.status} {final.reason or ''}".strip() if final is not None else "no final response"
            methods = list(dict.fromkeys((e.method or e.cseq_method or "?") for e in events if e.method))
            rows.append(DialogRow(call_id, method, first.ts, first.from_user, first.to_user, first.source,
                                  first.destination, outcome, len(events),
                                  sum(1 for e in events if e.retransmission), tuple(methods)))
        rows.sort(key=lambda r: r.start)
        return rows

    # -- filtering ------------------------------------------------------------------------------------

    def filtered(self, f: Filter) -> "Analysis":
        """A view with only what matches ``f`` (messages, calls, registrations and their streams)."""
        if not f:
            return self

        def user_ok(from_user, to_user) -> bool:
            return f.user is None or any(u and f.user.lower() in u.lower() for u in (from_user, to_user))

        def msg_ok(e: SipEvent) -> bool:
            if f.call_id is not None and e.call_id != f.call_id:
                return False
            if f.method is not None and (e.method or e.cseq_method or "").upper() != f.method.upper():
                return False
            if f.status is not None and not f.status_ok(e.status):
                return False
            return user_ok(e.from_user, e.to_user) and f.time_ok(e.ts)

        calls = tuple(c for c in self.calls if f.call_ok(c))
        regs = tuple(r for r in self.registrations
                if (f.call_id is None or r.call_id == f.call_id)
                and user_ok(r.aor.split(":", 1)[-1].split("@")[0], None) and f.time_ok(r.start)
                and (f.method is None or f.method.upper() == "REGISTER") and f.status_ok(r.final_status))
        keep_ids = {c.call_id for c in calls}
        streams = tuple(s for s in self.streams if s.call_id in keep_ids
                        or (s.call_id is None and f.call_id is None and f.user is None and f.time_ok(s.first_ts)))
        # Messages: the whole of every call and registration kept (a busy call is its INVITE, 100, 180, 486
        # and ACK, not only its 486), and, outside calls and registrations, the messages that match.
        kept = {c.call_id for c in calls} | {r.call_id for r in regs}
        grouped = {c.call_id for c in self.calls} | {r.call_id for r in self.registrations}
        messages = tuple(e for e in self.messages
                         if (e.call_id in kept if e.call_id in grouped else msg_ok(e)))
        methods: Dict[str, Dict[str, int]] = {}
        for e in messages:   # the response table of what is shown, counted as the tracker counts
            if e.retransmission:
                continue
            row = methods.setdefault(e.method or e.cseq_method or "?", {})
            what = "requests" if e.method else str(e.status)
            row[what] = row.get(what, 0) + 1
        stats = dict(self.stats, sip_messages=len(messages), retransmissions=sum(e.retransmission for e in messages),
                     rtp_packets=sum(s.packets for s in streams), streams=len(streams), calls=len(calls),
                     registrations=len(regs))
        scope = Scope(f.describe(), len(calls), len(self.calls) + len(self.summarised), len(messages),
                      self.stats.get("sip_messages", len(self.messages)), bool(len(self.summarised)))
        return Analysis(self.files, messages, calls, regs, self.bindings,
                        streams, tuple(m for m in self.malformed if f.time_ok(m.ts)),
                        tuple(a for a in self.anomalies if f.call_id is None or a.call_id == f.call_id),
                        methods, stats, self.end_ts, self.warnings, scope=scope,
                        numbers=self.numbers or {c.call_id: i + 1 for i, c in enumerate(self.calls)})

    # -- KPIs -----------------------------------------------------------------------------------------

    def kpis(self) -> dict:
        """ASR, NER, SER and the timing distributions, over calls with a known start (not partial)."""
        rows = [(o, status, t) for o, status, initial, t in self.call_rows() if initial]
        outs = [o for o, _, _ in rows]
        done = [o for o in outs if o is not Outcome.IN_PROGRESS]
        answered = outs.count(Outcome.ANSWERED)
        # NER (ITU-T E.425): calls that reached the far user or were rejected by them (busy, no answer,
        # user rejects) over all attempts; network failures (5xx, no response) count against it.
        user_side = sum(1 for o, status, _ in rows if o is not Outcome.IN_PROGRESS
                        and (o in _USER_SIDE or (status is not None and status in (403, 404, 484, 603))))
        # SER (RFC 6076 §4.7): INVITEs answered 200, or redirected, over INVITEs minus 3xx.
        redirected = outs.count(Outcome.REDIRECTED)
        ser_base = len(done) - redirected

        def dist(values):
            vals = sorted(v for v in values if v is not None)
            if not vals:
                return None
            pick = lambda q: vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))]
            return {"n": len(vals), "mean": sum(vals) / len(vals), "p50": pick(0.5), "p95": pick(0.95),
                    "max": vals[-1]}

        timings = [t for _, _, t in rows]
        return {
            "calls": len(outs),
            "completed_attempts": len(done),
            "answered": answered,
            "asr": answered / len(done) if done else None,
            "ner": user_side / len(done) if done else None,
            "ser": answered / ser_base if ser_base > 0 else None,
            "pdd": dist(t["pdd"] for t in timings),
            "setup_time": dist(t["setup_time"] for t in timings),
            "time_to_answer": dist(t["time_to_answer"] for t in timings),
            "duration": dist(t["duration"] for t in timings),
            "retransmissions": self.stats.get("retransmissions", 0),
        }

    # -- the JSON document ----------------------------------------------------------------------------

    def sections(self) -> Iterator[Tuple[str, Any, bool]]:
        """The JSON document's top-level members in order, as (key, value, is_list). List members are
        generators, so a writer can stream a document of a million messages without building it."""
        from sipflow import __version__
        stream_index = {id(s): i for i, s in enumerate(self.streams)}
        end = self.end_ts
        yield "sipflow", __version__, False
        yield "files", self.files, False
        yield "messages", (message_dict(e) for e in self.messages), True
        yield "calls", (call_dict(c, end, stream_index) for c in self.calls), True
        yield "registrations", (registration_dict(r) for r in self.registrations), True
        yield "bindings", ({"aor": aor, "contact": contact, "expires_at": exp, "active": exp > end}
                           for aor, table in self.bindings.items() for contact, exp in table.items()), True
        yield "other", ({"method": m, "requests": row.get("requests", 0),
                         "responses": {k: v for k, v in sorted(row.items()) if k != "requests"}}
                        for m, row in sorted(self.methods.items()) if m not in ("INVITE", "REGISTER")), True
        yield "streams", (stream_dict(s) for s in self.streams), True
        yield "malformed", ({"frame": m.frame, "file": m.file, "ts": m.ts, "src": m.src, "dst": m.dst,
                             "error": m.error} for m in self.malformed), True
        yield "anomalies", ({"kind": a.kind.value, "frame": a.frame, "file": a.file, "call_id": a.call_id,
                             "detail": a.detail} for a in self.anomalies), True
        yield "kpis", self.kpis(), False
        yield "stats", self.stats, False
        yield "warnings", self.warnings, False

    def to_dict(self) -> dict:
        """The whole document as one dict (docs/json.md)."""
        return {key: list(value) if is_list else value for key, value, is_list in self.sections()}


_USER_SIDE = frozenset((Outcome.ANSWERED, Outcome.BUSY, Outcome.NO_ANSWER, Outcome.CANCELLED, Outcome.REDIRECTED))


def message_dict(e: SipEvent) -> dict:
    return {
        "frame": e.frame, "frames": list(e.frames), "file": e.file, "ts": e.ts,
        "src": e.source, "dst": e.destination, "transport": e.transport,
        "method": e.method, "status": e.status, "reason": e.reason,
        "call_id": e.call_id, "cseq": e.cseq, "cseq_method": e.cseq_method,
        "from_user": e.from_user, "to_user": e.to_user, "from_tag": e.from_tag, "to_tag": e.to_tag,
        "branch": e.branch, "retransmission": e.retransmission,
    }


def call_dict(c: CallRecord, end_ts: float, stream_index: Dict[int, int], with_timeline: bool = True) -> dict:
    """A call as the JSON document has it; ``with_timeline=False`` leaves out the one member that reads
    messages again (tables that do not show it)."""
    d = {
        "call_id": c.call_id, "from": c.from_uri, "to": c.to_uri, "from_display": c.from_display,
        "to_display": c.to_display, "start": c.start,
        "outcome": c.outcome.value, "final_status": c.final_status,
        "state": c.state.value, "reason": c.reason, "ended_by": c.ended_by,
    }
    d.update(c.timings())
    d.update({
        "hops": c.hops, "dialogs": len(c.dialogs), "messages": len(c.events),
        "caller_agent": c.caller_agent, "callee_agent": c.callee_agent,
        "caller_media": media_address(c, True), "callee_media": media_address(c, False),
        "holds": [{"ts": ts, "frame": fr, "what": what} for ts, fr, what in c.holds],
        "streams": [stream_index[id(s)] for s in c.streams if id(s) in stream_index],
        "dtmf": [dtmf_dict(d) for d in c.dtmf],
        "t38": [{"frame": t.frame, "ts": t.ts, "status": t.status, "accepted": t.accepted} for t in c.t38],
        "timeline": [{"ts": ev.ts, "frame": ev.frame, "kind": ev.kind, "by": ev.by, "text": ev.text}
                     for ev in timeline(c)] if with_timeline else None,
        "fax": [fax_dict(f) for f in c.faxes],
        "anomalies": [{"kind": a.kind.value, "frame": a.frame, "detail": a.detail} for a in c.anomalies],
    })
    return d


def media_address(c: CallRecord, caller: bool) -> Optional[str]:
    """Where a side said it receives audio (ip:port): the first audio SDP of the messages it sent (a
    request with the caller's From-tag, or a response to the other side's request), on any hop."""
    if not c.invites:
        return None
    tag = c.invites[0].request.from_tag
    sent = {e.frame for e in c.events if ((e.from_tag == tag) == bool(e.method)) == caller}
    for o in c.media:
        if o.frame in sent and o.kind == "audio":
            return fmt_endpoint(o.ip, o.port)
    return None


def registration_dict(r: RegistrationRecord) -> dict:
    return {"aor": r.aor, "call_id": r.call_id, "contact": r.contact, "outcome": r.outcome.value,
            "final_status": r.final_status, "expires_requested": r.expires_requested,
            "expires_granted": r.expires_granted, "challenges": r.challenges, "refreshes": r.refreshes,
            "requests": r.requests, "start": r.start, "end": r.end}


def fax_dict(f: FaxRecord) -> dict:
    return {"src": fmt_endpoint(f.src, f.sport), "dst": fmt_endpoint(f.dst, f.dport), "packets": f.packets,
            "expected": f.expected, "lost": f.lost, "duplicates": f.duplicates, "late": f.late,
            "malformed": f.malformed, "start": f.first_ts, "end": f.last_ts, "first_frame": f.first_frame,
            "file": f.file, "signals": list(f.signals), "setup_frame": f.setup_frame}


def dtmf_dict(d: DtmfRecord) -> dict:
    return {"key": d.key, "source": d.source, "ts": d.ts, "frame": d.frame, "file": d.file, "src": d.src,
            "dst": d.dst, "duration_ms": d.duration_ms, "end_frame": d.end_frame, "ended": d.ended, "volume": d.volume,
            "packets": d.packets, "payload_type": d.payload_type, "confirmed": d.confirmed}


def quality_dict(s: StreamRecord) -> Optional[dict]:
    q = s.quality
    if q is None:
        return None
    return {"model": "ITU-T G.107 E-model (narrowband)", "r": round(q.r, 2), "mos": round(q.mos, 2),
            "ro": round(q.ro, 2), "is": round(q.is_, 2), "id": round(q.id_, 2), "idd": round(q.idd, 2),
            "ie": q.ie, "bpl": q.bpl, "ppl": round(q.ppl, 3), "burst_r": round(q.burst_r, 3),
            "ie_eff": round(q.ie_eff, 2), "delay_ms": q.delay_ms}


def rtcp_dict(s: StreamRecord) -> Optional[dict]:
    r = s.rtcp
    if r is None:
        return None
    xr = None
    if r.xr is not None:
        v = r.xr
        xr = {"loss_rate": round(v.loss_rate, 4), "discard_rate": round(v.discard_rate, 4),
              "burst_density": round(v.burst_density, 4), "gap_density": round(v.gap_density, 4),
              "burst_duration_ms": v.burst_duration_ms, "gap_duration_ms": v.gap_duration_ms,
              "round_trip_ms": v.round_trip_ms, "end_system_delay_ms": v.end_system_delay_ms,
              "signal_level": v.signal_level, "noise_level": v.noise_level, "rerl": v.rerl, "gmin": v.gmin,
              "r_factor": v.r_factor, "ext_r_factor": v.ext_r_factor, "mos_lq": v.mos_lq, "mos_cq": v.mos_cq,
              "jb_nominal_ms": v.jb_nominal_ms, "jb_max_ms": v.jb_max_ms, "jb_abs_max_ms": v.jb_abs_max_ms}
    return {"packets": r.packets, "first_frame": r.first_frame, "kinds": dict(r.kinds), "cname": r.cname,
            "sender_packets": r.sender_packets, "sender_octets": r.sender_octets, "bye_frame": r.bye_frame,
            "bye_reason": r.bye_reason, "encrypted": r.encrypted, "reports": r.reports,
            "reporter_ssrc": f"0x{r.reporter_ssrc:08X}" if r.reporter_ssrc is not None else None,
            "fraction_lost_pct": r.fraction_lost, "fraction_lost_max_pct": r.fraction_lost_max,
            "cumulative_lost": r.cumulative_lost, "jitter_ms": r.jitter, "jitter_max_ms": r.jitter_max,
            "rtt_ms": r.rtt, "rtt_min_ms": r.rtt_min, "rtt_max_ms": r.rtt_max, "rtt_samples": r.rtt_n, "xr": xr}


def stream_dict(s: StreamRecord) -> dict:
    return {
        "src": fmt_endpoint(s.src, s.sport), "dst": fmt_endpoint(s.dst, s.dport), "ssrc": f"0x{s.ssrc:08X}",
        "payload_type": s.pt, "codec": s.codec, "media": s.media, "clock_rate": s.rate,
        "clock_rate_guessed": s.clock_rate_guessed, "clock_source": s.clock_source,
        "sdp_clock_rate": s.sdp_clock_rate, "packets": s.packets,
        "expected": s.expected, "lost": s.lost, "duplicates": s.duplicates, "out_of_order": s.out_of_order,
        "seq_wraps": s.seq_wraps, "max_delta_ms": s.max_delta * 1000.0, "jitter_mean_ms": s.jitter_mean,
        "jitter_max_ms": s.jitter_max, "start": s.first_ts, "end": s.last_ts, "call_id": s.call_id,
        "setup_frame": s.setup_frame, "nat": s.nat, "rtcp_packets": s.rtcp_packets, "first_frame": s.first_frame,
        "file": s.file, "dtmf": [dtmf_dict(d) for d in s.dtmf], "loss_events": s.loss_events,
        "late_fixed_jb": s.late_fixed, "late_adaptive_jb": s.late_adaptive,
        "quality": quality_dict(s), "quality_note": s.quality_note, "rtcp": rtcp_dict(s),
        "media_gaps": [{"start": a, "end": b, "seconds": round(b - a, 3)} for a, b in s.media_gaps],
        "video": None if s.video is None else {
            "codec": s.video.codec, "frames": s.video.frames, "frame_rate": s.video.frame_rate,
            "key_frames": s.video.key_frames, "first_key_frame": s.video.first_key_frame,
            "damaged_frames": s.video.damaged_frames},
    }


# ---------------------------------------------------------------------------------------------------
# The analyzer
