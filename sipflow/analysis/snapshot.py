"""Snapshots: the analyzer's accumulators at one moment, copied into immutable records.

Owns the copy from what keeps changing (``analysis.dialogs``' calls, transactions and registrations,
``media.stats``' streams) to what never changes (``analysis.records``). Reads its inputs and writes
nothing back: a snapshot can be taken mid-capture, as often as wanted, and an earlier one stays as it
was. The judgments that depend on the moment (a call still in progress, an ACK still missing) are made
for the snapshot's end time.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sipflow.analysis.dialogs import Anomaly, Call, Registration, Transaction
from sipflow.analysis.join import Join
from sipflow.analysis.records import (CallRecord, DialogRecord, RegistrationRecord, StreamRecord, Timings,
                                      TransactionRecord)
from sipflow.media.stats import RtpStream
from sipflow.sip.sdp import STATIC_PT


def stream_record(j: Join, rtcp: Dict[int, int]) -> StreamRecord:
    """A stream's figures, with the clock its SDP gives (the jitter is converted with it)."""
    st = j.stream
    rate, guessed = st.rate, st.clock_rate_guessed
    if j.codec is not None:
        name = j.codec.name
        if j.codec.clock_rate:
            guessed = guessed and j.codec.clock_rate != st.rate
            rate = j.codec.clock_rate
    else:
        name = STATIC_PT.get(st.pt, (f"PT{st.pt}",))[0]
    ms = 1000.0 / rate
    return StreamRecord(
        src=st.src, sport=st.sport, dst=st.dst, dport=st.dport, ssrc=st.ssrc, pt=st.pt, codec=name, rate=rate,
        clock_rate_guessed=guessed, packets=st.packets, expected=st.expected, lost=st.lost,
        duplicates=st.duplicates, out_of_order=st.out_of_order, seq_wraps=st.seq_wraps, max_delta=st.max_delta,
        jitter=st.jitter_ts * ms, jitter_mean=st.jsum_ts * ms / st.jitter_n if st.jitter_n else 0.0,
        jitter_max=st.jmax_ts * ms, jitter_n=st.jitter_n, first_ts=st.first_ts, last_ts=st.last_ts,
        first_frame=st.first_frame, file=st.file, marker_packets=st.marker_packets,
        other_pts=MappingProxyType(dict(st.other_pts)),
        rtcp_packets=rtcp.get(st.ssrc, 0), call_id=j.call.call_id if j.call is not None else None, nat=j.nat)


def transaction_record(tx: Transaction, memo: Dict[int, TransactionRecord]) -> TransactionRecord:
    done = memo.get(id(tx))
    if done is None:
        cancel = transaction_record(tx.cancel, memo) if tx.cancel is not None else None
        done = memo[id(tx)] = TransactionRecord(
            method=tx.method, request=tx.request, responses=tuple(tx.responses), state=tx.state, final=tx.final,
            first_response=tx.first_response, first_18x=tx.first_18x, ack=tx.ack, cancel=cancel,
            retransmissions=tx.retransmissions)
    return done


def call_record(call: Call, end: float, judged: Sequence[Anomaly], streams: Tuple[StreamRecord, ...],
                memo: Dict[int, TransactionRecord]) -> CallRecord:
    return CallRecord(
        call_id=call.call_id, from_uri=call.from_uri, to_uri=call.to_uri, from_user=call.from_user,
        to_user=call.to_user, start=call.start, saw_initial=call.saw_initial, caller=call.caller,
        outcome=call.outcome(end), final_status=call.final_status, state=call.state, reason=call.reason,
        ended_by=call.ended_by, timing=Timings(**call.timings()), hops=call.hops,
        dialogs=MappingProxyType({k: DialogRecord(d.from_tag, d.to_tag, d.state, d.created, d.on_hold)
                                  for k, d in call.dialogs.items()}),
        events=tuple(call.events), invites=tuple(transaction_record(t, memo) for t in call.invites),
        reinvites=tuple(transaction_record(t, memo) for t in call.reinvites), cancel=call.cancel, bye=call.bye,
        ack_2xx=call.ack_2xx, media=tuple(call.media), holds=tuple(call.holds),
        anomalies=tuple(call.anomalies) + tuple(judged), streams=streams)


def registration_record(r: Registration) -> RegistrationRecord:
    return RegistrationRecord(
        aor=r.aor, call_id=r.call_id, contact=r.contact, outcome=r.outcome(), final_status=r.final_status,
        expires_requested=r.expires_requested, expires_granted=r.expires_granted, challenges=r.challenges,
        refreshes=r.refreshes, requests=r.requests, start=r.start, end=r.end, unregister=r.unregister,
        events=tuple(r.events))


def freeze(calls: Sequence[Call], registrations: Iterable[Registration], joins: Sequence[Join],
           judged: Sequence[Anomaly], rtcp: Dict[int, int], end: float
           ) -> Tuple[List[CallRecord], List[RegistrationRecord], List[StreamRecord]]:
    """Calls, registrations and streams as records (streams in the order of ``joins``)."""
    streams = [stream_record(j, rtcp) for j in joins]
    by_call: Dict[int, List[StreamRecord]] = {}
    for j, rec in zip(joins, streams):
        if j.call is not None:
            by_call.setdefault(id(j.call), []).append(rec)
    judged_by_call: Dict[Optional[str], List[Anomaly]] = {}
    for a in judged:
        judged_by_call.setdefault(a.call_id, []).append(a)
    memo: Dict[int, TransactionRecord] = {}
    call_records = [call_record(c, end, judged_by_call.get(c.call_id, ()), tuple(by_call.get(id(c), ())), memo)
                    for c in calls]
    return call_records, [registration_record(r) for r in registrations], streams


def streams_end(streams: Iterable[RtpStream]) -> float:
    return max((st.last_ts for st in streams if st.packets), default=0.0)
