"""What the SDPs of calls announced, and the DTMF keys their INFO requests carried.

Owns the values the tracker records about a call's media (``MediaOffer``: where a party said it
receives, with which codecs, in which direction; ``InfoDtmf``: a key sent in an INFO) and ``MediaBook``,
the latest offer at each media address, which the analyzer asks for the clock of a stream as it starts.
Reading SDP and INFO bodies is ``sip.sdp``'s and ``sip.dtmf``'s; deciding when they count is the
tracker's (``analysis.dialogs``); joining streams to offers is ``analysis.join``'s.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Tuple

from sipflow.sip.sdp import Codec

MAX_ENDPOINTS = 1 << 16    # media addresses whose latest SDP is remembered for the clock of new streams

_CODEC_MAPS: Dict[tuple, Mapping[int, Codec]] = {}


def codec_map(codecs: Tuple[Codec, ...]) -> Mapping[int, Codec]:
    """payload type -> codec for an m= line; one shared read-only map per distinct codec list."""
    m = _CODEC_MAPS.get(codecs)
    if m is None:
        m = MappingProxyType({c.pt: c for c in codecs})
        if len(_CODEC_MAPS) < 4096:   # bounded: hostile SDP must not grow memory
            _CODEC_MAPS[codecs] = m
    return m


@dataclass(frozen=True)
class MediaOffer:
    """Where a party said it wants to receive media (c= and m= of an SDP body)."""
    __slots__ = ("ip", "port", "ts", "frame", "codecs", "direction", "sender_ip", "kind", "proto", "file", "call_id")
    ip: str
    port: int
    ts: float
    frame: int
    codecs: Mapping[int, Codec]    # payload type -> codec
    direction: str
    sender_ip: str
    kind: str                      # audio, video, image (T.38) ...
    proto: str                     # RTP/AVP, RTP/SAVPF, udptl ...
    file: int
    call_id: str                   # the call whose SDP it was


@dataclass(frozen=True)
class InfoDtmf:
    """A DTMF key sent in a SIP INFO (``sip.dtmf``)."""
    __slots__ = ("key", "duration_ms", "ts", "frame", "file", "src", "dst", "cseq", "from_tag")
    key: str
    duration_ms: Optional[int]
    ts: float
    frame: int
    file: int
    src: str
    dst: str
    cseq: Optional[int]
    from_tag: Optional[str]


class MediaBook:
    """The latest SDP at each media address. Bounded: past ``limit`` addresses (MAX_ENDPOINTS, or less
    for an analysis that keeps a bounded number of calls) the oldest half is forgotten (a stream there
    then gets its clock measured instead)."""
    __slots__ = ("endpoints", "limit", "pruned")

    def __init__(self, limit: int = MAX_ENDPOINTS) -> None:
        self.endpoints: Dict[Tuple[str, int], MediaOffer] = {}
        self.limit = limit
        self.pruned = 0           # times the book was full and forgot its oldest half

    def announce(self, offer: MediaOffer) -> None:
        eps = self.endpoints
        key = (offer.ip, offer.port)
        eps.pop(key, None)
        eps[key] = offer
        if len(eps) > self.limit:
            self.pruned += 1
            for k in list(itertools.islice(eps, self.limit // 2)):
                del eps[k]

    def offer_at(self, ip: str, port: int) -> Optional[MediaOffer]:
        """The latest SDP that announced this media address (None: none, or long forgotten)."""
        return self.endpoints.get((ip, port))
