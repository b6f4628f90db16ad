"""A call's audio as WAV files: each G.711 direction, and both mixed, with lost packets as silence.

Owns the second reading of a capture that only ``sipflow audio`` needs: the analysis says which
streams a call has (source, destination, SSRC, codec); this reads the capture again, keeps the payloads
of those streams only, and places each packet's samples at its RTP timestamp (RFC 3550 §5.1), so a
lost packet leaves 20 ms of silence where it was and a late one still lands in its place. Packets of
another payload type (DTMF events, comfort noise) are silence too. The mixed file lines the directions
up by the arrival time of their first packets. Codecs other than G.711 are listed as not decodable.
Files are 8000 Hz mono 16-bit PCM, written with the standard library's ``wave``.
"""
from __future__ import annotations

import os
import re
import struct
import wave
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from sipflow.analysis.records import CallRecord, StreamRecord
from sipflow.capture.files import open_captures, records
from sipflow.media.g711 import DECODE, SAMPLE_RATE
from sipflow.media.rtp import HEADER as RTP_HEADER, looks_like_rtp
from sipflow.media.events import rtp_payload
from sipflow.net import Decoder

MAX_SECONDS = 4 * 3600     # a track longer than this (a bogus timestamp jump) is cut there


@dataclass(frozen=True)
class Track:
    """One written direction: the stream, its file, and what was placed."""
    stream: StreamRecord
    path: str
    seconds: float
    packets: int           # payloads placed
    silent_packets: int    # packet slots left silent: lost, or of another payload type
    beyond: int            # packets past MAX_SECONDS, dropped


def _name(s: StreamRecord) -> str:
    text = f"{s.src}_{s.sport}-to-{s.dst}_{s.dport}_{s.ssrc:08X}_{s.codec}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)   # IPv6 colons and anything odd: a portable file name


def _payloads(paths: Sequence[str], wanted: Dict[Tuple[str, int, str, int, int], int]
              ) -> Dict[Tuple[str, int, str, int, int], List[Tuple[int, float, bytes]]]:
    """(RTP timestamp, arrival, payload) of every packet of the wanted streams (by src, sport, dst,
    dport, SSRC -> main payload type), in capture order."""
    out: Dict[tuple, List[Tuple[int, float, bytes]]] = {k: [] for k in wanted}
    decoder = Decoder()
    files = open_captures(list(paths))
    try:
        for ts, fi, frame, lt, buf, off, caplen in records(files):
            if lt < 0:
                continue
            for dg in decoder.decode(ts, fi, frame, lt, bytes(buf[off:off + caplen])):
                p = dg.payload
                if dg.transport != "udp" or not p or not looks_like_rtp(p):
                    continue
                _, b1, _, rts, ssrc = RTP_HEADER.unpack_from(p, 0)
                key = (dg.src, dg.sport, dg.dst, dg.dport, ssrc)
                pt = wanted.get(key)
                if pt is None or b1 & 0x7F != pt:
                    continue
                loc = rtp_payload(p, 0, len(p))
                if loc is not None:
                    out[key].append((rts, dg.ts, p[loc[0]:loc[0] + loc[1]]))
    finally:
        for f in files:
            f.close()
    return out


def _place(packets: List[Tuple[int, float, bytes]], codec: str) -> Tuple[array, int, int, int]:
    """Samples of one direction at their RTP timestamps (wraps unwrapped from the first packet);
    returns the samples, packets placed, silent slots and packets beyond ``MAX_SECONDS``."""
    table = DECODE[codec]
    first = packets[0][0]
    limit = MAX_SECONDS * SAMPLE_RATE
    spans, beyond = [], 0
    for rts, _, payload in packets:
        at = (rts - first + 0x80000000) % 0x100000000 - 0x80000000   # signed distance from the first
        spans.append((at, payload))
    base = min(at for at, _ in spans)
    end = 0
    placed = []
    for at, payload in spans:
        at -= base
        if at + len(payload) > limit:
            beyond += 1
            continue
        placed.append((at, payload))
        end = max(end, at + len(payload))
    samples = array("h", bytes(2 * end))
    step = max((len(p) for _, p in placed), default=160) or 160
    for at, payload in placed:
        samples[at:at + len(payload)] = array("h", [table[b] for b in payload])
    slots = end // step if step else 0
    return samples, len(placed), max(slots - len(placed), 0), beyond


def _write(path: str, samples: array) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        data = samples if struct.pack("=h", 1) == struct.pack("<h", 1) else _swapped(samples)
        w.writeframes(data.tobytes())


def _swapped(samples: array) -> array:
    out = array("h", samples)
    out.byteswap()
    return out


def export_call(paths: Sequence[str], call: CallRecord, out_dir: str
                ) -> Tuple[List[Track], Optional[str], List[str]]:
    """Write the call's G.711 directions and their mix under ``out_dir``. Returns the tracks, the mixed
    file (None without two tracks) and one line per stream that was not written, saying why."""
    skipped: List[str] = []
    wanted: Dict[tuple, int] = {}
    streams: Dict[tuple, StreamRecord] = {}
    for s in call.streams:
        codec = (s.codec or "").upper()
        if codec not in DECODE:
            skipped.append(f"{s.src}:{s.sport} -> {s.dst}:{s.dport} ({s.codec or f'PT{s.pt}'}): not G.711, "
                           f"not decodable here")
            continue
        key = (s.src, s.sport, s.dst, s.dport, s.ssrc)
        wanted[key], streams[key] = s.pt, s
    os.makedirs(out_dir, exist_ok=True)
    tracks: List[Track] = []
    mixes: List[Tuple[float, array]] = []
    for key, packets in _payloads(paths, wanted).items():
        s = streams[key]
        if not packets:
            skipped.append(f"{s.src}:{s.sport} -> {s.dst}:{s.dport}: no payload found on a second reading")
            continue
        samples, placed, silent, beyond = _place(packets, s.codec.upper())
        path = os.path.join(out_dir, _name(s) + ".wav")
        _write(path, samples)
        tracks.append(Track(s, path, len(samples) / SAMPLE_RATE, placed, silent, beyond))
        mixes.append((min(t for _, t, _ in packets), samples))
    mixed = None
    if len(mixes) >= 2:
        start = min(t for t, _ in mixes)
        length = max(round((t - start) * SAMPLE_RATE) + len(x) for t, x in mixes)
        total = [0] * length
        for t, x in mixes:
            off = round((t - start) * SAMPLE_RATE)
            for i, v in enumerate(x):
                total[off + i] += v
        mixed = os.path.join(out_dir, "mixed.wav")
        _write(mixed, array("h", [max(-32768, min(32767, v)) for v in total]))
    return tracks, mixed, skipped
