"""Snapshots: the analyzer's accumulators at one moment, copied into immutable records.

Owns ``take``, an ``Analysis`` of the analyzer at one moment (its records, judgments and counters), and
the copy from what keeps changing (``analysis.dialogs``' calls, transactions and registrations,
``media.stats``' streams) to what never changes (``analysis.records``). Reads its inputs and writes
nothing back (but for flushing the streams' pending packets, and the final result's ``release``): a
snapshot can be taken mid-capture, as often as wanted, and an earlier one stays as it was. The
judgments that depend on the moment (a call still in progress, an ACK still missing) are made for the
snapshot's end time.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sipflow.analysis.dialogs import Anomaly, Call, Transaction
from sipflow.analysis.registrations import Registration
from sipflow.analysis.offers import InfoDtmf, MediaOffer
from sipflow.analysis.join import (Join, codec_for, gap_anomalies, join_faxes, join_streams, media_gaps,
                                   one_way)
from sipflow.analysis.model import Analysis
from sipflow.analysis.records import (CallRecord, DialogMap, DialogRecord, DtmfRecord, FaxRecord, RegistrationRecord,
                                      RtcpRecord, StreamRecord, T38Offer, Timings, TransactionRecord, VideoRecord)
from sipflow.media.emodel import judge
from sipflow.media.rtcp import RtcpBook
from sipflow.media.udptl import FaxFlow
from sipflow.media.stats import CLOCK_ASSUMED, CLOCK_MEASURED, CLOCK_SDP, RtpStream
from sipflow.net import fmt_endpoint
from sipflow.sip.dtmf import event_name
from sipflow.sip.sdp import STATIC_PT

TELEPHONE_EVENT = "telephone-event"


def stream_record(j: Join, book: RtcpBook, gaps: Sequence[Tuple[float, float]] = ()) -> StreamRecord:
    """A stream's figures, converted to milliseconds with the clock they were computed with. The clock
    is guessed when it was measured or assumed and no SDP confirms it, or when the SDP that set the
    stream up (seen after it started) names another rate than the one the figures used."""
    st = j.stream
    rate, source = st.rate, st.clock_source
    sdp_rate = j.codec.clock_rate if j.codec is not None else 0
    if sdp_rate and sdp_rate == rate and source in (CLOCK_MEASURED, CLOCK_ASSUMED):
        source = CLOCK_SDP
    guessed = source in (CLOCK_MEASURED, CLOCK_ASSUMED) or bool(sdp_rate and sdp_rate != rate)
    pt = st.carried_pt
    name = j.codec.name if j.codec is not None else STATIC_PT.get(pt, (f"PT{pt}",))[0]
    ms = 1000.0 / rate
    events_only = st.events_only or name.lower() == TELEPHONE_EVENT
    kind = j.offer.kind if j.offer is not None else None
    control = rtcp_record(j, book, ms)
    rtt = control.rtt if control is not None else None
    quality, note = judge(name, kind, st.expected, st.lost, st.loss_events,
                          rtt / 2.0 if rtt is not None else None, st.late_adaptive)
    return StreamRecord(
        src=st.src, sport=st.sport, dst=st.dst, dport=st.dport, ssrc=st.ssrc, pt=pt, codec=name, rate=rate,
        clock_rate_guessed=guessed, clock_source=source, sdp_clock_rate=sdp_rate or None, packets=st.packets,
        expected=st.expected, lost=st.lost,
        duplicates=st.duplicates, out_of_order=st.out_of_order, seq_wraps=st.seq_wraps, max_delta=st.max_delta,
        jitter=None if events_only else st.jitter_ts * ms,
        jitter_mean=None if events_only else (st.jsum_ts * ms / st.jitter_n if st.jitter_n else 0.0),
        jitter_max=None if events_only else st.jmax_ts * ms, jitter_n=0 if events_only else st.jitter_n,
        first_ts=st.first_ts, last_ts=st.last_ts,
        first_frame=st.first_frame, file=st.file, marker_packets=st.marker_packets,
        other_pts=MappingProxyType(dict(st.other_pts)),
        rtcp_packets=control.packets if control is not None else 0,
        call_id=j.call.call_id if j.call is not None else None, nat=j.nat,
        media=kind, loss_events=st.loss_events, late_fixed=st.late_fixed, late_adaptive=st.late_adaptive,
        quality=quality, quality_note=note,
        setup_frame=j.offer.frame if j.offer is not None else None, dtmf=stream_dtmf(j), rtcp=control,
        media_gaps=tuple(gaps), video=video_record(st))


def video_record(st: RtpStream) -> Optional[VideoRecord]:
    v = st.video
    if v is None or not v.frames:
        return None
    return VideoRecord(v.codec, v.frames, v.frame_rate, v.key_frames, v.first_key_frame, v.first_key_ts,
                       v.damaged_frames)


def rtcp_record(j: Join, book: RtcpBook, ms: float) -> Optional[RtcpRecord]:
    """What RTCP said about a stream: its sender's log (source address and SSRC) and its receiver's
    reports (destination address, about that SSRC); ``ms``: milliseconds per RTP timestamp unit. Over
    SRTP (the SDP says SAVP, or the sender's RTCP could not be read) only the packets are counted."""
    st = j.stream
    sent = book.sender_for(st.src, st.sport, st.ssrc)
    heard = book.reports_for(st.dst, st.dport, st.ssrc)
    if sent is None and heard is None:
        return None
    encrypted = (sent is not None and sent.encrypted) or (j.offer is not None and "SAVP" in j.offer.proto.upper())
    packets, first, kinds, cname, bye_frame, reason, info = 0, None, {}, None, None, None, None
    if sent is not None:
        packets, first, kinds, cname = sent.packets, sent.first_frame, dict(sent.kinds), sent.cname
        bye_frame, reason = sent.bye_frame, sent.bye_reason
        info = None if encrypted else sent.last_sender
    reports, reporter, last, rtt_n, frac_max, jit_max, xr = 0, None, None, 0, None, None, None
    if heard is not None:
        reports, reporter = heard.reports, heard.reporter
        if not encrypted:
            last, rtt_n, xr = heard.last, heard.rtt_n, heard.voip
            frac_max, jit_max = heard.max_fraction * 100.0 / 256.0, heard.max_jitter * ms
    return RtcpRecord(
        packets=packets, first_frame=first, kinds=MappingProxyType(kinds), cname=cname,
        sender_packets=info.packets if info is not None else None,
        sender_octets=info.octets if info is not None else None,
        bye_frame=bye_frame, bye_reason=reason, encrypted=encrypted, reports=reports, reporter_ssrc=reporter,
        fraction_lost=last.fraction_lost * 100.0 / 256.0 if last is not None else None,
        fraction_lost_max=frac_max if last is not None else None,
        cumulative_lost=last.cumulative_lost if last is not None else None,
        jitter=last.jitter * ms if last is not None else None, jitter_max=jit_max if last is not None else None,
        rtt=heard.rtt_sum / rtt_n * 1000.0 if rtt_n else None, rtt_min=heard.rtt_min * 1000.0 if rtt_n else None,
        rtt_max=heard.rtt_max * 1000.0 if rtt_n else None, rtt_n=rtt_n, xr=xr)


def stream_dtmf(j: Join) -> Tuple[DtmfRecord, ...]:
    """A stream's RFC 4733 key presses. A payload type the SDP gives to another codec is not DTMF; one
    no SDP names (an unannounced stream) is listed, unconfirmed."""
    st = j.stream
    if st.events is None:
        return ()
    out = []
    src, dst = fmt_endpoint(st.src, st.sport), fmt_endpoint(st.dst, st.dport)
    for p in st.events.presses:
        codec = codec_for(j.offer, j.call.media, p.pt) if j.call is not None and j.offer is not None else None
        if codec is not None and codec.name.lower() != TELEPHONE_EVENT:
            continue
        rate = codec.clock_rate if codec is not None and codec.clock_rate else 8000
        out.append(DtmfRecord(event_name(p.code), "rfc4733", p.start, p.frame, p.file, src, dst,
                              p.duration * 1000.0 / rate, p.end_frame, p.ended, p.volume, p.packets, p.pt,
                              codec is not None))
    return tuple(out)


def info_dtmf(d: InfoDtmf) -> DtmfRecord:
    return DtmfRecord(d.key, "info", d.ts, d.frame, d.file, d.src, d.dst,
                      float(d.duration_ms) if d.duration_ms is not None else None, None, None, None, 1, None, True)


def transaction_record(tx: Transaction, memo: Dict[int, TransactionRecord]) -> TransactionRecord:
    done = memo.get(id(tx))
    if done is None:
        cancel = transaction_record(tx.cancel, memo) if tx.cancel is not None else None
        done = memo[id(tx)] = TransactionRecord(
            method=tx.method, request=tx.request, responses=tuple(tx.responses), state=tx.state, final=tx.final,
            first_response=tx.first_response, first_18x=tx.first_18x, ack=tx.ack, cancel=cancel,
            retransmissions=tx.retransmissions)
    return done


def fax_record(flow: FaxFlow, offer: MediaOffer) -> FaxRecord:
    return FaxRecord(flow.src, flow.sport, flow.dst, flow.dport, flow.packets, flow.expected, flow.lost,
                     flow.duplicates, flow.late, flow.malformed, flow.first_ts, flow.last_ts, flow.first_frame,
                     flow.file, tuple(flow.signals), offer.frame)


def t38_offers(call: Call) -> Tuple[T38Offer, ...]:
    """The INVITEs and re-INVITEs whose SDP offered T.38 (``m=image ... udptl``), with their final
    answer: a 2xx moves the media to UDPTL; a rejection (488, typically) leaves it where it was."""
    requests = {t.request.frame: t for t in (*call.invites, *call.reinvites)}
    out: Dict[int, T38Offer] = {}
    for o in call.media:
        tx = requests.get(o.frame)
        if o.proto.lower() != "udptl" or tx is None or o.frame in out:   # (an SDP in a response is an answer)
            continue
        status = tx.final.status if tx.final is not None else None
        out[o.frame] = T38Offer(o.frame, o.ts, status, status is not None and 200 <= status < 300)
    return tuple(out.values())


def call_record(call: Call, end: float, judged: Sequence[Anomaly], streams: Tuple[StreamRecord, ...],
                faxes: Tuple[FaxRecord, ...] = ()) -> CallRecord:
    memo: Dict[int, TransactionRecord] = {}   # a transaction seen twice (a CANCEL's INVITE) is one record
    return CallRecord(
        call_id=call.call_id, from_uri=call.from_uri, to_uri=call.to_uri, from_value=call.from_value,
        to_value=call.to_value, from_user=call.from_user,
        to_user=call.to_user, start=call.start, saw_initial=call.saw_initial, caller=call.caller,
        outcome=call.outcome(end), final_status=call.final_status, state=call.state, reason=call.reason,
        ended_by=call.ended_by, timing=Timings(**call.timings()), hops=call.hops,
        dialogs=DialogMap(tuple(DialogRecord(d.from_tag, d.to_tag, d.state, d.created, d.on_hold)
                                for d in call.all_dialogs())),
        events=tuple(call.events), invites=tuple(transaction_record(t, memo) for t in call.invites),
        reinvites=tuple(transaction_record(t, memo) for t in call.reinvites), cancel=call.cancel, bye=call.bye,
        ack_2xx=call.ack_2xx, media=tuple(call.media), holds=tuple(call.holds),
        anomalies=tuple(call.anomalies) + tuple(judged), streams=streams,
        dtmf=tuple(sorted([info_dtmf(d) for d in call.dtmf] + [d for s in streams for d in s.dtmf],
                          key=lambda d: (d.ts, d.frame))),
        t38=t38_offers(call), faxes=faxes, caller_agent=call.caller_agent, callee_agent=call.callee_agent)


def registration_record(r: Registration) -> RegistrationRecord:
    return RegistrationRecord(
        aor=r.aor, call_id=r.call_id, contact=r.contact, outcome=r.outcome(), final_status=r.final_status,
        expires_requested=r.expires_requested, expires_granted=r.expires_granted, challenges=r.challenges,
        refreshes=r.refreshes, requests=r.requests, start=r.start, end=r.end, unregister=r.unregister,
        events=tuple(r.events))


def freeze(calls: List[Call], registrations: Iterable[Registration], joins: Sequence[Join],
           judged: Sequence[Anomaly], book: RtcpBook, end: float,
           gaps: Optional[Dict[int, List[Tuple[float, float]]]] = None,
           faxes: Sequence[Tuple[FaxFlow, Call, MediaOffer]] = (), release: bool = False
           ) -> Tuple[List[CallRecord], List[RegistrationRecord], List[StreamRecord]]:
    """Calls, registrations and streams as records (streams in the order of ``joins``). ``release``:
    the input has ended and this is the last look, so each call lets go of its messages and
    transactions once its record is made (``Call.forget``), and ``calls`` lets go of the call: the
    records take the memory the calls free instead of adding to it (measured on 440k messages: the end
    adds 28 MB instead of 50, peak RSS 18 MB less)."""
    streams = [stream_record(j, book, (gaps or {}).get(id(j.stream), ())) for j in joins]
    by_call: Dict[int, List[StreamRecord]] = {}
    for j, rec in zip(joins, streams):
        if j.call is not None:
            by_call.setdefault(id(j.call), []).append(rec)
    judged_by_call: Dict[Optional[str], List[Anomaly]] = {}
    for a in judged:
        judged_by_call.setdefault(a.call_id, []).append(a)
    fax_by_call: Dict[int, List[FaxRecord]] = {}
    for flow, call, offer in faxes:
        fax_by_call.setdefault(id(call), []).append(fax_record(flow, offer))
    call_records = []
    for i, c in enumerate(calls):
        call_records.append(call_record(c, end, judged_by_call.get(c.call_id, ()), tuple(by_call.get(id(c), ())),
                                        tuple(fax_by_call.get(id(c), ()))))
        if release:
            c.forget()
            calls[i] = None   # the last reference (the tracker let go of its calls): the shell goes too
    return call_records, [registration_record(r) for r in registrations], streams


def streams_end(streams: Iterable[RtpStream]) -> float:
    return max((st.last_ts for st in streams if st.packets), default=0.0)


def take(an, release: bool = False) -> Analysis:
    """An ``Analysis`` of everything an ``analysis.analyzer.Analyzer`` holds now: its calls, streams and
    registrations frozen (``freeze``), the judgments of the moment made, and its counters as the stats.
    ``release``: the input has ended and this is the final analysis; the calls are emptied as they are
    frozen, and the analyzer's tracker lets go of everything it kept for matching later messages (the
    analyzer keeps the result and gives it for every later look)."""
    for st in an.by_ssrc.values():
        if len(st.pending) > 1:
            st.flush()
    end = max(an.end_ts, an.tracker.end_ts, streams_end(an.by_ssrc.values()))
    calls = sorted(an.tracker.calls.values(), key=lambda c: c.start)
    judged = an.tracker.end_judgments(end)
    joins = join_streams(calls, an.by_ssrc.values())
    gaps = media_gaps(joins)
    judged = judged + one_way(calls, joins) + gap_anomalies(joins, gaps)
    if release:
        an.tracker.release()
    call_records, registrations, streams = freeze(calls, an.tracker.registrations.values(), joins, judged,
                                                  an.rtcp, end, gaps, join_faxes(calls, an.faxes.values()),
                                                  release)
    files = [{"path": f.name, "format": f.format, "frames": f.frames, "truncated": f.truncated,
              "linktypes": list(f.linktypes)} for f in an.files]
    warnings = [f.warning for f in an.files if f.warning]
    if an.pdu_repeats:
        shown = ", ".join(map(str, an.pdu_repeats[:10])) + (" ..." if len(an.pdu_repeats) > 10 else "")
        warnings.append(f"tshark exported the same SIP message twice in frame(s) {shown}: a segment there "
                        "carried several messages and tshark's export misses all but the first (the native "
                        "engine reads them all)")
    malformed = sorted(an.malformed, key=lambda m: (m.ts, m.file, m.frame))
    anomalies = list(an.tracker.anomalies) + judged
    stats = {
        "frames": an.frames,
        "sip_messages": len(an.events),
        "retransmissions": an.tracker.retransmissions,
        "rtp_packets": sum(st.packets for st in an.by_ssrc.values()) + an.retired_packets,
        "rtcp_packets": an.rtcp_packets,
        "udptl_packets": an.udptl_packets,
        "malformed": len(malformed),
        "anomalies": len(anomalies),
        "keepalives": an.keepalives,
        "undecoded": an.undecoded,
        "calls": len(call_records),
        "registrations": len(registrations),
        "streams": len(streams),
        "tcp_sip_junk_bytes": sum(fr.junk_bytes for fr in an.framers.values()),
        "tcp_sip_oversized": sum(fr.oversized for fr in an.framers.values()),
    }
    if an.sip_only_from_pdu:
        stats["sip_left_to_tshark"] = an.sip_left_to_tshark
    if an.pdu_repeats:
        stats["tshark_pdu_repeats"] = len(an.pdu_repeats)
    stats.update({f"net_{k}": v for k, v in sorted(an.decoder.counters.items())})
    bindings = {aor: dict(table) for aor, table in an.tracker.bindings.items()}
    methods = {m: dict(row) for m, row in an.tracker.methods.items()}
    messages = tuple(e for e in an.events if not e.dropped) if an.dropped else tuple(an.events)
    if release:
        an.events = []                 # the result's tuple has them all
        an.tracker.registrations.clear()
    summarised = an.tracker.summarised.freeze()
    stats["sip_messages"] = an.sip_count
    stats["calls"] += len(summarised)
    stats.update(an.tracker.counters)
    if an.options.bounded or an.options.idle_timeout is not None:
        stats.update({"messages_kept": len(messages), "calls_summarised": len(summarised),
                      "streams_retired": an.retired_streams, "store_compactions": an.store.compactions,
                      "media_book_pruned": an.tracker.media_book.pruned})
        stats["streams"] += an.retired_streams
    return Analysis(files, messages, tuple(call_records), tuple(registrations), bindings, tuple(streams),
                    tuple(malformed), tuple(anomalies), methods, stats, end, tuple(warnings), summarised)
