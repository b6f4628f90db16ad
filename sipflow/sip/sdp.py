"""SDP (RFC 4566/8866) session descriptions, as far as call analysis needs them.

Owns parsing an SDP body (also when it sits in a multipart/mixed SIP body) into a ``Session`` with its
media descriptions: connection address (c=, session or media level, IPv4/IPv6), port, payload types with
rtpmap/fmtp, direction (sendrecv/sendonly/recvonly/inactive, RFC 3264 §5.1), and a=rtcp (RFC 3605).
Leaves RTP itself to ``media`` and offer/answer bookkeeping to ``analysis.dialogs``. Never raises on bad SDP: lines
it cannot read are listed in ``problems``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from sipflow.sip.message import to_int

# Static payload types (RFC 3551 §6): codec name and clock rate, used when there is no rtpmap.
STATIC_PT = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 5: ("DVI4", 8000), 6: ("DVI4", 16000),
    7: ("LPC", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000), 10: ("L16", 44100), 11: ("L16", 44100),
    12: ("QCELP", 8000), 13: ("CN", 8000), 14: ("MPA", 90000), 15: ("G728", 8000), 16: ("DVI4", 11025),
    17: ("DVI4", 22050), 18: ("G729", 8000), 25: ("CelB", 90000), 26: ("JPEG", 90000), 28: ("nv", 90000),
    31: ("H261", 90000), 32: ("MPV", 90000), 33: ("MP2T", 90000), 34: ("H263", 90000),
}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_CLOCK_RATE = 10 ** 7   # no RTP clock runs faster (90 kHz video; 10 MHz is generous)


@dataclass(frozen=True)
class Codec:
    pt: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: Optional[str] = None


_CODECS: Dict[tuple, Codec] = {}


def _codec(*fields) -> Codec:
    """One shared (frozen) Codec per distinct description: SDP bodies repeat a handful of them."""
    c = _CODECS.get(fields)
    if c is None:
        c = Codec(*fields)
        if len(_CODECS) < 4096:   # bounded: hostile SDP must not grow memory
            _CODECS[fields] = c
    return c


@dataclass(frozen=True)
class Media:
    """One m= section."""
    kind: str                    # audio | video | image | application ...
    port: int
    proto: str                   # RTP/AVP, RTP/SAVP, udptl ...
    address: Optional[str]       # c= address in effect for this media (media level over session level)
    codecs: Tuple[Codec, ...]
    direction: str               # sendrecv | sendonly | recvonly | inactive
    rtcp_port: Optional[int]
    rtcp_address: Optional[str]

    @property
    def on_hold(self) -> bool:
        """RFC 3264 §8.4 hold: sendonly/inactive, or the old RFC 2543 style c=0.0.0.0."""
        return self.direction in ("sendonly", "inactive") or self.address in ("0.0.0.0", "::")

    def codec(self, pt: int) -> Optional[Codec]:
        for c in self.codecs:
            if c.pt == pt:
                return c
        return None


@dataclass(frozen=True)
class Session:
    origin: Optional[str]
    address: Optional[str]       # session-level c=
    direction: str
    media: Tuple[Media, ...]
    problems: Tuple[str, ...] = ()


class _MediaBuilder:
    """Accumulates one m= section while its attribute lines are read."""

    def __init__(self, kind: str, port: int, proto: str, fmts: List[str]) -> None:
        self.kind, self.port, self.proto, self.fmts = kind, port, proto, fmts
        self.address: Optional[str] = None
        self.rtpmap: Dict[int, Tuple[str, int, int]] = {}
        self.fmtp: Dict[int, str] = {}
        self.direction: Optional[str] = None
        self.rtcp_port: Optional[int] = None
        self.rtcp_address: Optional[str] = None

    def build(self, session_addr: Optional[str], session_dir: str) -> Media:
        codecs = []
        for f in self.fmts:
            if not (f.isascii() and f.isdigit()):
                continue
            pt = int(f)
            if pt in self.rtpmap:
                name, rate, ch = self.rtpmap[pt]
            elif pt in STATIC_PT:
                (name, rate), ch = STATIC_PT[pt], 1
            else:
                name, rate, ch = f"PT{pt}", 8000, 1
            codecs.append(_codec(pt, name, rate, ch, self.fmtp.get(pt)))
        return Media(self.kind, self.port, self.proto, self.address or session_addr, tuple(codecs),
                     self.direction or session_dir, self.rtcp_port, self.rtcp_address)


def _a_rtpmap(m: _MediaBuilder, value: str) -> None:
    pt, _, enc = value.partition(" ")
    parts = enc.strip().split("/")
    rate = to_int(parts[1]) if len(parts) > 1 else 8000
    ch = to_int(parts[2]) if len(parts) > 2 else 1
    if rate is None or not 1 <= rate <= MAX_CLOCK_RATE or ch is None or not 1 <= ch <= 255:
        raise ValueError(enc)   # recorded as a line sipflow cannot read
    m.rtpmap[int(pt)] = (parts[0], rate, ch)


def _a_fmtp(m: _MediaBuilder, value: str) -> None:
    pt, _, params = value.partition(" ")
    m.fmtp[int(pt)] = params.strip()


def _a_rtcp(m: _MediaBuilder, value: str) -> None:
    parts = value.split()
    m.rtcp_port = int(parts[0])
    if len(parts) >= 4:
        m.rtcp_address = parts[3]


# a= attribute handlers at media level (a dict reads better than an elif chain).
_MEDIA_ATTRS: Dict[str, Callable[[_MediaBuilder, str], None]] = {
    "rtpmap": _a_rtpmap, "fmtp": _a_fmtp, "rtcp": _a_rtcp,
}


def parse_sdp(body: bytes) -> Session:
    text = body.decode("utf-8", "replace")
    origin = session_addr = None
    session_dir = "sendrecv"
    media: List[_MediaBuilder] = []
    problems: List[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if len(line) < 2 or line[1] != "=":
            if line:
                problems.append(f"line {n}: not type=value: {line[:40]!r}")
            continue
        kind, value = line[0], line[2:]
        cur = media[-1] if media else None
        try:
            if kind == "o":
                origin = value
            elif kind == "c":
                parts = value.split()
                addr = parts[2].split("/")[0] if len(parts) >= 3 else None
                if cur is None:
                    session_addr = addr
                else:
                    cur.address = addr
            elif kind == "m":
                parts = value.split()
                port = int(parts[1].split("/")[0])
                media.append(_MediaBuilder(parts[0], port, parts[2] if len(parts) > 2 else "", parts[3:]))
            elif kind == "a":
                name, _, val = value.partition(":")
                if name in DIRECTIONS:
                    if cur is None:
                        session_dir = name
                    else:
                        cur.direction = name
                elif cur is not None and name in _MEDIA_ATTRS:
                    _MEDIA_ATTRS[name](cur, val)
        except (ValueError, IndexError):
            problems.append(f"line {n}: cannot read {line[:40]!r}")
    return Session(origin, session_addr, session_dir, tuple(m.build(session_addr, session_dir) for m in media),
                   tuple(problems))


def sdp_of(content_type: str, body: bytes) -> Optional[Session]:
    """The SDP in a SIP body: the body itself (application/sdp) or the SDP part of multipart/mixed."""
    if not body:
        return None
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/sdp":
        return parse_sdp(body)
    if ctype.startswith("multipart/"):
        boundary = None
        for p in content_type.split(";")[1:]:
            k, _, v = p.strip().partition("=")
            if k.lower() == "boundary":
                boundary = v.strip().strip('"')
        if not boundary:
            return None
        for part in body.split(b"--" + boundary.encode()):
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                head, sep, content = part.partition(b"\n\n")
            if b"application/sdp" in head.lower():
                return parse_sdp(content.rstrip(b"\r\n"))
    return None
