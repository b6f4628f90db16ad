"""The stream join: which call each RTP stream belongs to, and with which codec.

Owns one rule, written once and run at every snapshot without changing anything it reads: a stream
belongs to the call whose SDP announced its destination (or, with symmetric RTP, its source) nearest
before the stream started; when only the port matches (a NAT rewrote the address) it belongs to the call
that was up at that port then, flagged ``nat``. The codec and its clock come from that SDP. Streams
nobody announced are kept only when they behave like media. Leaves the statistics to ``media.stats``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from sipflow.analysis.dialogs import Call, MediaOffer
from sipflow.media.stats import RtpStream
from sipflow.sip.sdp import Codec

MIN_HEURISTIC_PACKETS = 10   # an RTP-looking flow nobody announced must have this many packets to be listed
LEAD = 1.0                   # seconds a stream may start before the SDP that announced it is seen


@dataclass(frozen=True)
class Join:
    """Where one stream belongs: its call (None: unannounced), codec (None: not in any SDP), NAT flag."""
    stream: RtpStream
    call: Optional[Call]
    codec: Optional[Codec]
    nat: bool


def join_streams(calls: Sequence[Call], streams: Iterable[RtpStream]) -> List[Join]:
    """The join of every stream worth listing, in order of first packet."""
    by_endpoint: Dict[tuple, list] = {}
    by_port: Dict[int, list] = {}
    for call in calls:
        for offer in call.media:
            by_endpoint.setdefault((offer.ip, offer.port), []).append((offer, call))
            by_port.setdefault(offer.port, []).append((offer, call))

    def pick(cands, t):
        before = [c for c in cands if c[0].ts <= t + LEAD]
        return max(before, key=lambda c: c[0].ts) if before else min(cands, key=lambda c: c[0].ts)

    out = []
    for st in streams:
        if not st.packets:
            continue
        nat = False
        match = None
        cands = by_endpoint.get((st.dst, st.dport))
        if cands:
            match = pick(cands, st.first_ts)
        else:
            cands = by_endpoint.get((st.src, st.sport))
            if cands:
                match = pick(cands, st.first_ts)
                # symmetric RTP: the sender is where its SDP says; is the receiver where its SDP says?
                nat = not any(o.ip == st.dst and o.port == st.dport for o in match[1].media)
            else:
                cands = [c for c in by_port.get(st.dport, []) if c[1].start - LEAD <= st.first_ts
                         and (c[1].bye is None or st.first_ts <= c[1].bye.ts)]
                if cands:
                    match = pick(cands, st.first_ts)
                    nat = True
        if match is None:
            if plausible(st):
                out.append(Join(st, None, None, False))
            continue
        offer, call = match
        out.append(Join(st, call, _codec(offer, call.media, st.pt), nat))
    out.sort(key=lambda j: (j.stream.first_ts, j.stream.src, j.stream.sport))
    return out


def _codec(offer: MediaOffer, media: Sequence[MediaOffer], pt: int) -> Optional[Codec]:
    codec = offer.codecs.get(pt)
    if codec is None:
        for o in media:
            codec = o.codecs.get(pt)
            if codec:
                break
    return codec


def plausible(st: RtpStream) -> bool:
    """An RTP-looking flow nobody announced: keep it only if it behaves like media."""
    if st.packets < MIN_HEURISTIC_PACKETS:
        return False
    return st.expected <= 2 * st.packets and st.out_of_order * 10 <= st.packets
