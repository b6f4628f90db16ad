"""The test call's media, sans signalling: G.711 out (a tone, a WAV file, RFC 4733 DTMF events), RTP in
measured as RFC 3550 says (``media.stats.RtpStream``), and the verdict on one-way audio.

Owns ``Media`` (one RTP socket pair on an even port, the send schedule, what came back) and the DTMF
helpers. ``probe.call``'s flow decides when media starts and stops, ``probe.driver`` runs it; the
packets are ``media.rtp``'s.
"""

import random
import socket
import struct
from typing import Dict, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.media.g711 import PACKET_MS, SAMPLES_PER_PACKET, audio_payload, encode, tone_packet
from sipflow.media.rtp import HEADER as RTP_HEADER
from sipflow.media.rtp import is_rtcp, looks_like_rtp, rtp_packet
from sipflow.media.stats import RtpStream
from sipflow.probe.common import uri_host
from sipflow.sip.sdp import parse_sdp

PACKET_S = PACKET_MS / 1000.0
DTMF_PT = 101                 # the telephone-event payload type we offer (RFC 4733)
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
ONE_WAY_MIN_SENT = 10         # a verdict on one-way audio needs at least this many packets sent (200 ms)
ONE_WAY_FRACTION = 0.05       # ... and receiving fewer than this share of what was sent is one-way audio




def dtmf_payload(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    """RFC 4733 §2.3: event, E bit and volume, duration in timestamp units."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def parse_dtmf(text: Optional[str]) -> str:
    digits = (text or "").upper()
    bad = [c for c in digits if c not in DTMF_EVENTS]
    if bad:
        raise ProbeError(f"--dtmf {text!r}: only 0-9, *, # and A-D")
    return digits


class Media:
    """The call's RTP: one UDP socket (an even port, §11 of RFC 3550), a packet every 20 ms to the
    answer's address once answered, and every packet received folded into ``RtpStream`` statistics
    with its arrival time from the same monotonic clock."""

    def __init__(self, ip: str, family: int, recorder=None) -> None:
        self.recorder = recorder      # a PcapRecorder, or None
        self.sock = _even_port_socket(ip, family)
        self.local = self.sock.getsockname()[:2]
        self.remote: Optional[Tuple] = None
        self.pt: Optional[int] = None
        self.codec: Optional[str] = None
        self.event_pt: Optional[int] = None
        self.payload = b""
        self.seq = random.randrange(0x10000)
        self.ts = random.randrange(0x100000000)
        self.ssrc = random.randrange(1, 0x100000000)
        self.sent = 0
        self.started_at: Optional[float] = None
        self.stopped_at: Optional[float] = None
        self.next_send: Optional[float] = None
        self.plan: List[Tuple] = []               # DTMF ticks still to send: (event, end, duration, start ts)
        self.dtmf_sent = ""
        self.dtmf_packets = 0
        self.streams: Dict[Tuple, RtpStream] = {}
        self.stray = 0                            # datagrams that are not RTP version 2
        self.rtcp = 0
        self.problem: Optional[str] = None        # why nothing is sent (no usable codec...)
        self._event_ts = 0
        self.samples: Optional[List[int]] = None  # --audio FILE.wav: sent instead of the tone, looped
        self.audio = b""
        self.audio_packets = 0

    def configure(self, answer_body: bytes) -> None:
        """Read the SDP answer: the far end's address and port, the codec it chose first among ours,
        and its telephone-event payload type."""
        sdp = parse_sdp(answer_body)
        audio = next((m for m in sdp.media if m.kind == "audio"), None)
        if audio is None or audio.port == 0 or not audio.address:
            self.problem = "no audio in the SDP answer"
            return
        codec = next((c for c in audio.codecs if c.name.upper() in ("PCMU", "PCMA")), None)
        if codec is None:
            self.problem = "the answer has neither PCMU nor PCMA: " + ", ".join(c.name for c in audio.codecs)
            return
        event = next((c for c in audio.codecs if c.name.lower() == "telephone-event"), None)
        self.pt, self.codec = codec.pt, codec.name.upper()
        self.event_pt = event.pt if event else None
        self.payload = tone_packet(self.codec)
        if self.samples:
            self.audio = encode(self.samples, self.codec)
        try:
            info = socket.getaddrinfo(audio.address, audio.port, self.sock.family, socket.SOCK_DGRAM,
                                      0, socket.AI_NUMERICHOST)
            self.remote = info[0][4]
        except (socket.gaierror, UnicodeError):
            self.problem = f"the answer's media address {audio.address} is not an IPv" \
                           f"{6 if self.sock.family == socket.AF_INET6 else 4} address"
        if audio.direction in ("recvonly", "inactive") and self.remote is not None:
            self.problem = f"the answer says {audio.direction}"

    def start(self, now: float, dtmf: str) -> None:
        if self.remote is None or self.problem:
            return
        self.started_at = self.next_send = now
        if dtmf and self.event_pt is not None:
            ticks: List[Tuple] = [None] * 10    # 200 ms of tone first
            for d in dtmf:
                ev = DTMF_EVENTS[d]
                ticks += [(ev, False, n * SAMPLES_PER_PACKET, d) for n in range(1, 5)]   # 80 ms growing
                ticks += [(ev, True, 5 * SAMPLES_PER_PACKET, d)] * 3                     # end, three times
                ticks += [None] * 3                                                      # 60 ms of tone
            self.plan = ticks
        elif dtmf:
            self.problem = "telephone-event was not in the answer: DTMF not sent"

    def due(self) -> Optional[float]:
        return self.next_send if self.stopped_at is None else None

    def send_due(self, now: float) -> None:
        if self.next_send is None or self.stopped_at is not None:
            return
        burst = 0
        while self.next_send <= now and burst < 3:
            self._send_one()
            self.next_send += PACKET_S
            burst += 1
        if self.next_send <= now:   # far behind (a stalled process): skip, keeping the timestamps true
            skip = int((now - self.next_send) / PACKET_S) + 1
            self.next_send += skip * PACKET_S
            self.ts += skip * SAMPLES_PER_PACKET

    def _send_one(self) -> None:
        tick = self.plan.pop(0) if self.plan else None
        if tick is not None:
            ev, end, duration, digit = tick
            first = duration == SAMPLES_PER_PACKET and not end
            if first:
                self._event_ts = self.ts
            data = rtp_packet(self.event_pt, self.seq, self._event_ts, self.ssrc, dtmf_payload(ev, end, duration),
                              marker=first)
            if first:
                self.dtmf_sent += digit
            self.dtmf_packets += 1
        else:
            payload = self.payload
            if self.audio:
                payload = audio_payload(self.audio, self.audio_packets)
                self.audio_packets += 1
            data = rtp_packet(self.pt, self.seq, self.ts, self.ssrc, payload, marker=self.sent == 0)
        if self.recorder is not None:
            self.recorder.udp(True, self.local, self.remote, data)
        try:
            self.sock.sendto(data, self.remote)
        except (BlockingIOError, ConnectionRefusedError):
            pass   # a full buffer is a lost packet; an ICMP error is the far end's lost packet
        except OSError:
            pass
        self.sent += 1
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + SAMPLES_PER_PACKET) & 0xFFFFFFFF

    def stop(self, now: float) -> None:
        if self.stopped_at is None and self.started_at is not None:
            self.stopped_at = now
        self.next_send = None

    def receive(self, now: float) -> None:
        while True:
            try:
                data, src = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:     # ICMP errors for what we sent
                continue
            if self.recorder is not None:
                self.recorder.udp(False, self.local, src, data)
            if not looks_like_rtp(data):
                self.stray += 1
                continue
            if is_rtcp(data[1]):   # RTCP (RFC 5761 §4) on the RTP port
                self.rtcp += 1
                continue
            _, _, seq, ts, ssrc = RTP_HEADER.unpack_from(data, 0)
            key = (src[0], src[1], ssrc)
            s = self.streams.get(key)
            if s is None:
                s = self.streams[key] = RtpStream(src[0], src[1], self.local[0], self.local[1], ssrc,
                                                  data[1] & 0x7F, 0)
            s.add(seq, ts, now, data[1])

    def stats(self) -> dict:
        for s in self.streams.values():
            s.flush()
        main = max(self.streams.values(), key=lambda s: s.packets, default=None)
        received = sum(s.packets for s in self.streams.values())
        one_way = None
        if self.sent >= ONE_WAY_MIN_SENT:
            one_way = received < max(1, self.sent * ONE_WAY_FRACTION)
        return {
            "codec": self.codec, "payload_type": self.pt,
            "local": f"{uri_host(self.local[0])}:{self.local[1]}",
            "remote": f"{uri_host(self.remote[0])}:{self.remote[1]}" if self.remote else None,
            "sent": self.sent, "received": received,
            "expected": sum(s.expected for s in self.streams.values()),
            "lost": sum(s.lost for s in self.streams.values()),
            "duplicates": sum(s.duplicates for s in self.streams.values()),
            "out_of_order": sum(s.out_of_order for s in self.streams.values()),
            "jitter_ms": round(main.jitter, 3) if main and main.packets > 1 else None,
            "jitter_max_ms": round(main.jitter_max, 3) if main and main.packets > 1 else None,
            "max_gap_ms": round(main.max_delta * 1000, 3) if main and main.packets > 1 else None,
            "ssrcs": len({k[2] for k in self.streams}), "rtcp": self.rtcp,
            "received_from": f"{uri_host(main.src)}:{main.sport}" if main else None,
            "dtmf_sent": self.dtmf_sent, "dtmf_packets_sent": self.dtmf_packets,
            "dtmf_packets_received": sum(s.other_pts.get(self.event_pt or DTMF_PT, 0) for s in self.streams.values()),
            "one_way_audio": one_way,
            "problem": self.problem,
        }

    def close(self) -> None:
        self.sock.close()


def _even_port_socket(ip: str, family: int) -> socket.socket:
    """A UDP socket on ``ip`` with an even port (RFC 3550 §11: RTP on even, RTCP on the odd one above)."""
    for _ in range(64):
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((ip, 0))
        except OSError as e:
            s.close()
            raise ProbeError(f"cannot open a media socket on {ip}: {e.strerror}") from None
        port = s.getsockname()[1]
        if port % 2 == 0:
            s.setblocking(False)
            return s
        s.close()
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            s.bind((ip, port + 1 if port < 65535 else port - 1))
            s.setblocking(False)
            return s
        except OSError:
            s.close()
    raise ProbeError("no even UDP port free for RTP")
