"""The stream join: which call each RTP stream belongs to, and with which codec.

Owns one rule, written once and run at every snapshot without changing anything it reads. A stream
(source -> destination, SSRC) belongs to the call whose SDP was in force for it when its first packet
flowed, judged in this order:

1. the call had not ended (its BYE was not before the stream started);
2. the call's SDPs name both ends: the destination (where one party said it receives) and the source
   (symmetric RTP: where the other party said it receives). Two overlapping calls to one callee that
   reuses its media port differ here, by the caller's address;
3. the SDP came before the first packet (or at most ``LEAD`` seconds after it: capture order races);
4. the latest such SDP, so a port reused by consecutive calls goes to the call that set it up last.

When only the port matches (a NAT rewrote the address) the stream belongs to the call that was up at
that port then, flagged ``nat``. The codec comes from the SDP in force at the stream's start (re-INVITEs
change it). Streams nobody announced are kept only when they behave like media (``plausible``).
Leaves the statistics to ``media.stats``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from sipflow.analysis.dialogs import Call
from sipflow.analysis.offers import MediaOffer
from sipflow.analysis.kinds import Anomaly, AnomalyKind
from sipflow.net import fmt_endpoint
from sipflow.media.rtp import NOT_RTP_PORTS
from sipflow.media.stats import OUTAGE, RtpStream
from sipflow.media.udptl import FaxFlow
from sipflow.sip.sdp import Codec

MIN_HEURISTIC_PACKETS = 10   # an RTP-looking flow nobody announced must have this many packets to be listed
LEAD = 1.0                   # seconds a stream may start before the SDP that announced it is seen
MAX_DRIFT = 0.2              # an unannounced flow's RTP timestamps must keep within 20 % of its arrival clock
HOLD_SLACK = 1.0             # seconds around a hold during which a pause is taken as the hold's


@dataclass(frozen=True)
class Join:
    """Where one stream belongs: its call (None: unannounced), the SDP that set it up (None:
    unannounced), its codec (None: not in that SDP), NAT flag."""
    stream: RtpStream
    call: Optional[Call]
    codec: Optional[Codec]
    nat: bool
    offer: Optional[MediaOffer] = None


def _ended(call: Call) -> Optional[float]:
    return call.bye.ts if call.bye is not None else None


def _rank(offer: MediaOffer, call: Call, t: float, both: bool) -> Tuple:
    """Larger is a better match for a stream starting at ``t`` (the order of the module docstring)."""
    end = _ended(call)
    live = end is None or t <= end
    before = offer.ts <= t
    soon = offer.ts <= t + LEAD
    return (live, both, before, soon, offer.ts if soon else -offer.ts)


def join_streams(calls: Sequence[Call], streams: Iterable[RtpStream]) -> List[Join]:
    """The join of every stream worth listing, in order of first packet."""
    by_endpoint: Dict[tuple, List[Tuple[MediaOffer, Call]]] = {}
    by_port: Dict[int, List[Tuple[MediaOffer, Call]]] = {}
    for call in calls:
        for offer in call.media:
            by_endpoint.setdefault((offer.ip, offer.port), []).append((offer, call))
            by_port.setdefault(offer.port, []).append((offer, call))

    out = []
    for st in streams:
        if not st.packets:
            continue
        match = _best(by_endpoint, st)
        if match is None:
            cands = [c for c in by_port.get(st.dport, ()) if c[1].start - LEAD <= st.first_ts
                     and (_ended(c[1]) is None or st.first_ts <= _ended(c[1]))]
            if cands:
                offer, call = max(cands, key=lambda c: _rank(c[0], c[1], st.first_ts, False))
                match = (offer, call, True)
        if match is None:
            if plausible(st):
                out.append(Join(st, None, None, False))
            continue
        offer, call, nat = match
        out.append(Join(st, call, codec_for(offer, call.media, st.carried_pt), nat, offer))
    out.sort(key=lambda j: (j.stream.first_ts, j.stream.src, j.stream.sport))
    return out


def join_faxes(calls: Sequence[Call], flows: Iterable[FaxFlow]) -> List[Tuple[FaxFlow, Call, MediaOffer]]:
    """Each T.38 flow with its call and the ``m=image`` SDP that set it up, by the streams' rule (the
    analyzer takes a packet for UDPTL only where such an SDP is in force, so every flow has one)."""
    by_endpoint: Dict[tuple, List[Tuple[MediaOffer, Call]]] = {}
    for call in calls:
        for offer in call.media:
            if offer.proto.lower() == "udptl":
                by_endpoint.setdefault((offer.ip, offer.port), []).append((offer, call))
    out = []
    for flow in flows:
        match = _best(by_endpoint, flow)
        if match is not None:
            out.append((flow, match[1], match[0]))
    out.sort(key=lambda m: (m[0].first_ts, m[0].src, m[0].sport))
    return out


def _best(by_endpoint, st: Union[RtpStream, FaxFlow]) -> Optional[Tuple[MediaOffer, Call, bool]]:
    """The best (offer, call, nat) for a stream by its destination, then its source (symmetric RTP)."""
    t = st.first_ts
    src_calls = {id(c) for _, c in by_endpoint.get((st.src, st.sport), ())}
    dst_calls = {id(c) for _, c in by_endpoint.get((st.dst, st.dport), ())}
    best, best_rank = None, None
    for offer, call in by_endpoint.get((st.dst, st.dport), ()):
        r = _rank(offer, call, t, id(call) in src_calls)
        if best_rank is None or r > best_rank:
            best, best_rank = (offer, call, False), r
    if best is not None:
        return best
    for offer, call in by_endpoint.get((st.src, st.sport), ()):
        # only the sender is where its SDP says: is the receiver where the call's SDP says?
        r = _rank(offer, call, t, id(call) in dst_calls)
        if best_rank is None or r > best_rank:
            nat = not any(o.ip == st.dst and o.port == st.dport for o in call.media)
            best, best_rank = (offer, call, nat), r
    return best


def codec_for(offer: MediaOffer, media: Sequence[MediaOffer], pt: int) -> Optional[Codec]:
    """A payload type's codec in the SDP that set a stream up, or else in any SDP of its call."""
    codec = offer.codecs.get(pt)
    if codec is None:
        for o in media:
            codec = o.codecs.get(pt)
            if codec:
                break
    return codec


def plausible(st: RtpStream) -> bool:
    """An RTP-looking flow nobody announced: kept only if it behaves like media. Enough packets, off
    the ports of protocols that pass for RTP, sequence numbers that mostly go up one by one (few
    duplicates, late packets or gaps), and RTP timestamps that advance with the arrival clock (the
    payload type's, or the one measured on the stream) within ``MAX_DRIFT``."""
    if st.packets < MIN_HEURISTIC_PACKETS or st.sport in NOT_RTP_PORTS or st.dport in NOT_RTP_PORTS \
            or (st.sport < 1024 and st.dport < 1024):
        return False
    if st.expected > 2 * st.packets or st.lost * 10 < -st.packets or st.out_of_order * 10 > st.packets:
        return False
    drift = st.clock_drift
    return drift is not None and drift <= MAX_DRIFT


def one_way(calls: Sequence[Call], joins: Sequence[Join]) -> List[Anomaly]:
    """Calls whose audio flowed one way: RTP reached one of the audio addresses the call's SDPs
    announced and not another. Judged only where media was captured for the call (a signalling-only
    capture says nothing) and every audio SDP of the call asks for media both ways (a call on hold is
    not judged). Streams joined by port only (NAT) are named, since that is where the audio went."""
    streams: Dict[int, List[RtpStream]] = {}
    for j in joins:
        if j.call is not None and j.stream.packets:
            streams.setdefault(id(j.call), []).append(j.stream)
    out = []
    for call in calls:
        got = streams.get(id(call))
        if not got:
            continue
        audio: Dict[Tuple[str, int], MediaOffer] = {}
        for offer in call.media:
            if offer.kind == "audio":
                audio[(offer.ip, offer.port)] = offer
        if len(audio) < 2 or any(o.direction != "sendrecv" for o in audio.values()):
            continue
        received = {}
        for st in got:
            received[(st.dst, st.dport)] = received.get((st.dst, st.dport), 0) + st.packets
        silent = [o for k, o in audio.items() if not received.get(k)]
        heard = [(k, received[k]) for k in audio if received.get(k)]
        if not silent or not heard:
            continue
        elsewhere = sorted({(st.dst, st.dport) for st in got} - set(audio))
        for o in silent:
            detail = (f"no RTP reached {fmt_endpoint(o.ip, o.port)} (announced in frame {o.frame}) while "
                      + ", ".join(f"{fmt_endpoint(*k)} received {n} packets" for k, n in heard))
            if elsewhere:
                detail += "; RTP went to " + ", ".join(fmt_endpoint(*k) for k in elsewhere) + " instead (NAT?)"
            out.append(Anomaly(AnomalyKind.ONE_WAY_MEDIA, o.frame, call.call_id, detail, o.file))
    return out


def hold_spans(call: Call) -> List[Tuple[float, float]]:
    """When the call was on hold (every audio SDP sendonly, recvonly, inactive or c=0.0.0.0): from the
    SDP that put it on hold to the one that took it off (or the end of the capture), widened by
    ``HOLD_SLACK`` on each side (media stops and resumes around the signalling, not at its instant)."""
    spans, start = [], None
    for ts, _frame, what in call.holds:
        if what == "hold" and start is None:
            start = ts
        elif what == "unhold" and start is not None:
            spans.append((start - HOLD_SLACK, ts + HOLD_SLACK))
            start = None
    if start is not None:
        spans.append((start - HOLD_SLACK, float("inf")))
    return spans


def media_gaps(joins: Sequence[Join]) -> Dict[int, List[Tuple[float, float]]]:
    """Per joined audio stream (by ``id`` of its RtpStream), its pauses of ``OUTAGE`` seconds or more
    that no hold explains and that did not end with a talkspurt (marker bit, silence suppression)."""
    out: Dict[int, List[Tuple[float, float]]] = {}
    for j in joins:
        st = j.stream
        if j.call is None or not st.outages or (j.offer is not None and j.offer.kind != "audio"):
            continue
        spans = hold_spans(j.call)
        gaps = [(a, b) for a, b in st.outages if not any(lo <= b and a <= hi for lo, hi in spans)]
        if gaps:
            out[id(st)] = gaps
    return out


def gap_anomalies(joins: Sequence[Join], gaps: Dict[int, List[Tuple[float, float]]]) -> List[Anomaly]:
    """One ``MEDIA_GAP`` per stream that paused while its call was up and not on hold."""
    out = []
    for j in joins:
        found = gaps.get(id(j.stream))
        if not found:
            continue
        st = j.stream
        longest = max(b - a for a, b in found)
        detail = (f"no RTP from {fmt_endpoint(st.src, st.sport)} to {fmt_endpoint(st.dst, st.dport)} for "
                  f"{longest:.1f} s" + (f" ({len(found)} pauses of {OUTAGE:g} s or more)" if len(found) > 1 else "")
                  + " while the call was up and not on hold")
        out.append(Anomaly(AnomalyKind.MEDIA_GAP, st.first_frame, j.call.call_id, detail, st.file))
    return out
