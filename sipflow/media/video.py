"""Video streams: frames, frame rate and key frames, from the RTP payload headers of VP8, VP9 and H.264.

Owns the few payload bits that say where a picture starts and whether it is a key frame (RFC 7741 for
VP8, RFC 9628 for VP9, RFC 6184 for H.264), and ``VideoLog``, a video stream's frame figures: pictures
(one RTP timestamp each, RFC 3550 §5.1), key frames and where the first one came, pictures that lost a
packet (a gap in the sequence numbers inside or just before the picture), and the frame rate. Only the
first bytes of each packet's payload are read; the analyzer hands them over for streams whose SDP
names one of these codecs. Everything else about the stream (loss, jitter) is ``media.stats``'s.
"""
from __future__ import annotations

from typing import Optional

CODECS = ("VP8", "VP9", "H264")
HEAD = 24          # payload bytes read per packet: enough for the longest descriptor below


def _vp8(p: bytes) -> Optional[bool]:
    """RFC 7741 §4.2-4.3: the payload descriptor, then (first partition of a picture only, S=1 and
    PartID 0) the VP8 payload header, whose P bit is 0 on a key frame."""
    if not p:
        return None
    b0, at = p[0], 1
    if not b0 & 0x10 or b0 & 0x0F:       # not the start of partition 0: not a picture's first packet
        return None
    if b0 & 0x80:                         # X: an extension byte, then what it announces
        if len(p) < 2:
            return None
        x, at = p[1], 2
        if x & 0x80:                      # I: PictureID, 7 or 15 bits
            at += 2 if len(p) > at and p[at] & 0x80 else 1
        if x & 0x40:                      # L: TL0PICIDX
            at += 1
        if x & 0x30:                      # T or K: TID/Y/KEYIDX
            at += 1
    return not p[at] & 0x01 if len(p) > at else None


def _vp9(p: bytes) -> Optional[bool]:
    """RFC 9628 §4.2: B (start of a frame) and P (inter-picture predicted); a frame that starts and is
    not predicted is a key frame (for a spatial layer above the base, D is what tells; the base is read)."""
    if not p or not p[0] & 0x08:
        return None
    return not p[0] & 0x40


def _h264(p: bytes) -> Optional[bool]:
    """RFC 6184 §5.2-5.8: the NAL unit type. An IDR slice (5), or SPS/PPS (7, 8) that precede one, is a
    key frame; STAP-A (24) is read by its first unit; FU-A (28) only on its start fragment."""
    if not p:
        return None
    kind = p[0] & 0x1F
    if kind == 24 and len(p) >= 4:        # STAP-A: 16-bit size, then the first NAL unit
        kind = p[3] & 0x1F
    elif kind == 28:                      # FU-A: the FU header's start bit and type
        if len(p) < 2 or not p[1] & 0x80:
            return None
        kind = p[1] & 0x1F
    if kind in (5, 7, 8):
        return True
    if 1 <= kind <= 4:
        return False
    return None


_KEY = {"VP8": _vp8, "VP9": _vp9, "H264": _h264}


def key_frame(codec: str, payload: bytes) -> Optional[bool]:
    """True: this packet starts a key frame; False: it starts another picture; None: it does not start a
    picture (or the codec is not one of ``CODECS``)."""
    reader = _KEY.get(codec.upper())
    return reader(payload) if reader is not None else None


class VideoLog:
    """The pictures of one video stream, as its packets come (arrival order)."""
    __slots__ = ("codec", "frames", "key_frames", "first_key_ts", "first_key_frame", "damaged", "last_rtp_ts",
                 "last_seq", "hurt", "keyed", "first_arrival", "last_arrival")

    def __init__(self, codec: str) -> None:
        self.codec = codec.upper()
        self.frames = 0
        self.key_frames = 0
        self.first_key_ts: Optional[float] = None      # arrival of the first key frame
        self.first_key_frame: Optional[int] = None     # and its capture frame number
        self.damaged = 0           # pictures with a packet missing
        self.last_rtp_ts = -1
        self.last_seq = -1
        self.hurt = False          # the current picture lost a packet
        self.keyed = False         # the current picture was counted as a key frame (SPS, PPS and IDR: once)
        self.first_arrival = self.last_arrival = 0.0

    def add(self, seq: int, rtp_ts: int, arrival: float, frame: int, payload: bytes) -> None:
        gap = self.last_seq >= 0 and seq != (self.last_seq + 1) & 0xFFFF
        if rtp_ts != self.last_rtp_ts:    # a new picture
            if self.frames == 0:
                self.first_arrival = arrival
            elif self.hurt:
                self.damaged += 1
            self.frames += 1
            self.hurt, self.keyed = gap, False
            self.last_rtp_ts = rtp_ts
        elif gap:
            self.hurt = True
        self.last_seq = seq
        self.last_arrival = arrival
        if not self.keyed and key_frame(self.codec, payload):
            self.keyed = True
            if self.first_key_ts is None:
                self.first_key_ts, self.first_key_frame = arrival, frame
            self.key_frames += 1

    @property
    def damaged_frames(self) -> int:
        return self.damaged + (1 if self.hurt else 0)

    @property
    def frame_rate(self) -> Optional[float]:
        """Pictures per second over the stream's time (None: under two pictures)."""
        span = self.last_arrival - self.first_arrival
        return (self.frames - 1) / span if self.frames > 1 and span > 0 else None
