#!/usr/bin/env python3
"""Regenerate the sipflow sample captures in samples/.

Run it through make_samples.sh, which puts it inside a private network
namespace (unshare -n) where only the loopback interface exists.  Every
packet stays on lo (127.0.0.1 / ::1); every process is started under
`timeout` and is stopped before the script exits.

Real SIP stacks make the traffic: SIPp (UAC/UAS scenarios in scenarios/),
Kamailio (scenarios/kamailio.cfg: registrar, record-routing proxy, WebSocket
server), baresip (two user agents that send RTCP: call-rtcp, call-rtcp-mux)
and two small socket clients written here (two SIP requests in one TCP
segment; SIP over WebSocket).  tcpdump records each capture on lo.

Usage: make_samples.py [--keep-work] [--out DIR] [NAME ...]   (NAME without .pcap)

--out DIR writes the captures to DIR (created if needed) instead of samples/.
"""

import argparse
import base64
import contextlib
import hashlib
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "scenarios")
KAMAILIO_CFG = os.path.join(SCENARIOS, "kamailio.cfg")

# Ports: proxy (Kamailio) 5060 UDP/TCP and 8080 (WebSocket), UAS 5070,
# UAC 5061/5062; RTP 6000 (UAC) and 6100 (UAS), video 6002 and 6102 (call-av-dtmf),
# 6010 for the second caller of port-reuse.
PROXY, WS_PORT, UAS, UAC, UAC2 = 5060, 8080, 5070, 5061, 5062
UAC_RTP, UAS_RTP = 6000, 6100
# transfer-hold: the transferee's (bob's) second user agent, which calls the
# transfer target, and carol, the target (SDP media ports only: no RTP there)
XFER_UA, CAROL = 5071, 5080
XFER_UA_RTP, CAROL_RTP = 6110, 6200
V4, V6 = "127.0.0.1", "::1"

WORK = None          # temporary working directory (set in main)
OUT = HERE           # where the finished captures go (--out; default samples/)
PROCS = []           # every process we started, so that we can stop them
FAILURES = []


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# RTP payload files for SIPp's play_pcap_audio
# --------------------------------------------------------------------------

def lin2alaw(s):
    """ITU-T G.711 A-law encoder for one signed 16-bit sample."""
    mask = 0xD5 if s >= 0 else 0x55
    if s < 0:
        s = -s - 1
    s >>= 3
    if s > 0xFFF:
        s = 0xFFF
    if s < 32:
        aval = s >> 1
    else:
        seg, v = 1, s >> 5
        while v > 1 and seg < 7:
            v >>= 1
            seg += 1
        aval = (seg << 4) | ((s >> seg) & 0x0F)
    return aval ^ mask


def lin2ulaw(s):
    """ITU-T G.711 mu-law encoder for one signed 16-bit sample."""
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if s < 0 else 0
    if s < 0:
        s = -s
    s = min(s, CLIP) + BIAS
    exp, v = 7, 0x4000
    while exp > 0 and not (s & v):
        exp -= 1
        v >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def write_pcap(path, packets):
    """Write a classic pcap (Ethernet/IPv4/UDP, 127.0.0.1 both ways) holding
    `packets`, a list of (time in microseconds, UDP source port, UDP
    destination port, UDP payload) in the order SIPp is to send them."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, (t_us, sport, dport, payload) in enumerate(packets):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0,
                         64, 17, 0, socket.inet_aton(V4), socket.inet_aton(V4)) + udp
        eth = b"\x00" * 12 + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", t_us // 1000000, t_us % 1000000, len(eth), len(eth)) + eth)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def rtp_header(pt, seq, ts, ssrc, marker=False):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc)


def g711_tone(freq, pt, n):
    """160 samples (20 ms) of a sine tone from sample n on, G.711 encoded
    (PT 8: A-law, else mu-law)."""
    enc = lin2alaw if pt == 8 else lin2ulaw
    return bytes(enc(int(8000 * math.sin(2 * math.pi * freq * k / 8000.0)))
                 for k in range(n, n + 160))


def write_rtp_pcap(path, *, freq, pt, ssrc, seq0, ts0, npkts, sport, dport,
                   first_marker=True, sample0=0):
    """Write a pcap (Ethernet/IPv4/UDP/RTP, 20 ms G.711 frames, a sine tone).

    SIPp replays the RTP payloads with the original timing, from the UDP
    source port found here, to the media address taken from the peer's SDP.
    """
    packets = []
    for i in range(npkts):
        rtp = rtp_header(pt, seq0 + i, ts0 + 160 * i, ssrc, marker=(i == 0 and first_marker))
        packets.append((i * 20000, sport, dport, rtp + g711_tone(freq, pt, sample0 + 160 * i)))
    write_pcap(path, packets)


def write_av_pcap(path, *, freq, audio, video, sport, aport, vport, dtmf=(), seconds=2.5,
                  seed=0):
    """Audio AND video for one direction of call-av-dtmf, in ONE pcap that SIPp
    replays with play_pcap_audio.

    Why one pcap: SIPp 3.6.1 has one media thread per call, and each
    play_pcap_audio / play_pcap_video / play_dtmf action cancels the one
    running (call.cpp), so a play_pcap_video would stop the audio. SIPp sends
    every packet of the pcap from its own [media_port] + offset to the peer's
    m=audio port + offset, where offset = the packet's UDP destination port -
    the lowest destination port in the pcap. The audio goes here to `aport`
    (offset 0) and the video to `vport` = aport + 2, so SIPp sends the video
    from [media_port+2] to the peer's audio port + 2: the peer's m=video port,
    since both SDPs put m=video two above m=audio. `sport` is only written
    into the file (the audio source port; the video's is sport + 2).

    audio = (ssrc, seq0, ts0): G.711 A-law, PT 8, 20 ms frames, a sine tone.
    dtmf = ((slot, event), ...): RFC 4733 telephone-events (PT 101, the audio's
    SSRC and sequence numbers) in place of the audio from 20 ms slot `slot`
    on: 7 packets while the 160 ms tone lasts (all with the RTP timestamp of
    the slot the event starts in, duration 160, 320, ... 1120, marker on the
    first), then the end packet (E bit, duration 1280) three times, 20 ms
    apart: 10 slots without audio. Audio timestamps follow the clock.
    video = (ssrc, seq0, ts0): VP8, PT 96, 90 kHz clock, 30 frames/s (RTP
    timestamp +3000 per frame). A frame is 1 to 3 RTP packets (payloads of 120
    to 620 bytes) sent back to back (same timestamp, marker on the last). Each packet
    starts with the 1-byte VP8 payload descriptor (0x10, S bit, on a frame's
    first packet, else 0x00); a frame's first packet then has the 3-byte VP8
    frame tag (lowest bit 0 = key frame: frames 0, 30, 60; 1 = inter frame;
    show_frame set), a key frame also the start code 9d 01 2a and 320x240.
    The rest is filler from random.Random(seed): the file is the same on
    every run.
    """
    rnd = random.Random(seed)
    packets = []
    # audio and RFC 4733 events, one packet per 20 ms slot
    ssrc, seq, ts0 = audio
    events = {}
    for slot, event in dtmf:
        for j in range(10):
            events[slot + j] = (event, slot, j)
    for i in range(int(seconds * 50)):
        t_us = i * 20000
        if i in events:
            event, start, j = events[i]
            end = j >= 7
            duration = 160 * (8 if end else j + 1)
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            rtp = rtp_header(101, seq, ts0 + 160 * start, ssrc, marker=(j == 0))
        else:
            payload = g711_tone(freq, 8, 160 * i)
            rtp = rtp_header(8, seq, ts0 + 160 * i, ssrc, marker=(i == 0))
        packets.append((t_us, sport, aport, rtp + payload))
        seq += 1
    # video
    ssrc, seq, ts0 = video
    for f in range(int(seconds * 30)):
        t_us = f * 1000000 // 30
        key = f % 30 == 0
        n = 3 if key else rnd.choice((1, 1, 2, 2, 3))
        sizes = [rnd.randint(420, 620) if key else rnd.randint(120, 420) for _ in range(n)]
        for k, size in enumerate(sizes):
            if k == 0:
                first_partition = rnd.randint(60, 110)
                tag = (first_partition << 5) | 0x10 | (0 if key else 1)   # show_frame, version 0
                head = b"\x10" + struct.pack("<I", tag)[:3]
                if key:
                    head += b"\x9d\x01\x2a" + struct.pack("<HH", 320, 240)
            else:
                head = b"\x00"
            body = bytes(rnd.getrandbits(8) for _ in range(size - len(head)))
            rtp = rtp_header(96, seq, ts0 + 3000 * f, ssrc, marker=(k == n - 1))
            packets.append((t_us, sport + 2, vport, rtp + head + body))
            seq += 1
    packets.sort(key=lambda p: p[0])            # stable: audio first at equal times
    write_pcap(path, packets)


def make_media_files(d):
    # basic call: 2.5 s of PCMA each way (440 Hz from the caller, 880 Hz back)
    write_rtp_pcap(os.path.join(d, "rtp-uac.pcap"), freq=440, pt=8, ssrc=0x11223344,
                   seq0=1000, ts0=16000, npkts=125, sport=UAC_RTP, dport=UAS_RTP)
    write_rtp_pcap(os.path.join(d, "rtp-uas.pcap"), freq=880, pt=8, ssrc=0x55667788,
                   seq0=5000, ts0=48000, npkts=125, sport=UAS_RTP, dport=UAC_RTP)
    # hold/unhold call: PCMU, 1 s before hold and 1 s after resume, same SSRC
    # and continuing sequence numbers / timestamps across the gap
    for who, freq, ssrc, seq0, ts0, sport, dport in (
            ("uac", 350, 0x0A0B0C0D, 2000, 80000, UAC_RTP, UAS_RTP),
            ("uas", 620, 0x01020304, 7000, 320000, UAS_RTP, UAC_RTP)):
        write_rtp_pcap(os.path.join(d, f"rtp-hold-{who}-1.pcap"), freq=freq, pt=0, ssrc=ssrc,
                       seq0=seq0, ts0=ts0, npkts=50, sport=sport, dport=dport)
        # resumed part starts ~2.2 s after the first one (1.2 s talk, 1 s hold;
        # see uac_reinvite_hold.xml): the RTP timestamp follows the wall clock
        write_rtp_pcap(os.path.join(d, f"rtp-hold-{who}-2.pcap"), freq=freq, pt=0, ssrc=ssrc,
                       seq0=seq0 + 50, ts0=ts0 + 17600, npkts=50, sport=sport,
                       dport=dport, first_marker=True, sample0=160 * 50)
    # call-av-dtmf: audio (PCMA) and video (VP8) each way in one pcap per side;
    # the caller also presses 1, 5 and # (RFC 4733) at 0.4, 0.9 and 1.4 s
    write_av_pcap(os.path.join(d, "rtp-av-uac.pcap"), freq=440,
                  audio=(0x1A0D0001, 3000, 24000), video=(0x71DE0001, 4000, 900000),
                  sport=UAC_RTP, aport=UAS_RTP, vport=UAS_RTP + 2,
                  dtmf=((20, 1), (45, 5), (70, 11)), seed=1)
    write_av_pcap(os.path.join(d, "rtp-av-uas.pcap"), freq=880,
                  audio=(0x1A0D0002, 8000, 56000), video=(0x71DE0002, 9000, 1800000),
                  sport=UAS_RTP, aport=UAC_RTP, vport=UAC_RTP + 2, seed=2)
    # port-reuse: 2 s of PCMA each way for each of the calls A, B and C. The
    # callee uses media port 6100 in all three; the callers 6000 (A and C) and
    # 6010 (B). Every stream has its own SSRC.
    for call, (f_uac, f_uas), uac_port in (("a", (440, 880), UAC_RTP),
                                           ("b", (523, 1046), UAC_RTP + 10),
                                           ("c", (659, 1318), UAC_RTP)):
        tag = {"a": 0xAAAA0000, "b": 0xBBBB0000, "c": 0xCCCC0000}[call]
        n = "abc".index(call)
        write_rtp_pcap(os.path.join(d, f"rtp-reuse-{call}-uac.pcap"), freq=f_uac, pt=8,
                       ssrc=tag | 1, seq0=10000 + 1000 * n, ts0=160000 * (n + 1), npkts=100,
                       sport=uac_port, dport=UAS_RTP)
        write_rtp_pcap(os.path.join(d, f"rtp-reuse-{call}-uas.pcap"), freq=f_uas, pt=8,
                       ssrc=tag | 2, seq0=20000 + 1000 * n, ts0=800000 * (n + 1), npkts=100,
                       sport=UAS_RTP, dport=uac_port)
    # fax-t38: PCMU before the switch to T.38, the fax tones a G.711 fax call
    # carries: CNG (1100 Hz) from the caller, CED (2100 Hz) from the callee.
    # Call F: 1 s each way, then UDPTL. Call R (T.38 refused): 2.5 s each way,
    # through the re-INVITE / 488 and on.
    for call, npkts, uac_port, tag in (("f", 50, UAC_RTP, 0x38AC0000),
                                       ("r", 125, UAC_RTP + 10, 0x38DE0000)):
        write_rtp_pcap(os.path.join(d, f"rtp-fax-{call}-uac.pcap"), freq=1100, pt=0,
                       ssrc=tag | 1, seq0=30000 if call == "f" else 31000,
                       ts0=400000 if call == "f" else 480000, npkts=npkts,
                       sport=uac_port, dport=UAS_RTP)
        write_rtp_pcap(os.path.join(d, f"rtp-fax-{call}-uas.pcap"), freq=2100, pt=0,
                       ssrc=tag | 2, seq0=40000 if call == "f" else 41000,
                       ts0=720000 if call == "f" else 960000, npkts=npkts,
                       sport=UAS_RTP, dport=uac_port)
    write_t38_pcaps(d)
    write_transfer_hold_pcaps(d)
    # call-rtcp, call-rtcp-mux: what the two baresip instances send (aufile)
    write_wav(os.path.join(d, "baresip-alice.wav"), 440, 20)
    write_wav(os.path.join(d, "baresip-bob.wav"), 880, 20)


# transfer-hold: one SSRC per side for the whole call, sequence numbers
# carrying on from one part to the next and RTP timestamps following the wall
# clock of uac_transfer_hold.xml / uas_transfer_hold.xml (the gaps are the
# scenarios' pauses; the SIP exchanges between them take a few ms).
XFER_SSRC_UAC, XFER_SSRC_UAS = 0xA11CE001, 0x0B0B0002
# (file, tone Hz, packets, ms after the side's first packet)
XFER_UAC_PARTS = (("rtp-xfer-uac-talk.pcap", 440, 50, 0),      # after the ACK
                  ("rtp-xfer-uac-moh.pcap", 660, 50, 1100),    # on hold: music on hold
                  ("rtp-xfer-uac-resume.pcap", 440, 25, 2200))  # after the resume
XFER_UAS_PARTS = (("rtp-xfer-uas-early.pcap", 425, 25, 0),     # early media (after the 183)
                  ("rtp-xfer-uas-talk.pcap", 880, 50, 600),    # after the ACK
                  ("rtp-xfer-uas-resume.pcap", 880, 25, 2800))  # after the resume


def write_transfer_hold_pcaps(d):
    for parts, ssrc, seq0, ts0, sport, dport in (
            (XFER_UAC_PARTS, XFER_SSRC_UAC, 12000, 96000, UAC_RTP, UAS_RTP),
            (XFER_UAS_PARTS, XFER_SSRC_UAS, 22000, 640000, UAS_RTP, UAC_RTP)):
        seq = seq0
        for fname, freq, npkts, at_ms in parts:
            write_rtp_pcap(os.path.join(d, fname), freq=freq, pt=0, ssrc=ssrc, seq0=seq,
                           ts0=ts0 + 8 * at_ms, npkts=npkts, sport=sport, dport=dport,
                           first_marker=True, sample0=8 * at_ms)
            seq += npkts


def write_wav(path, freq, seconds):
    """A sine tone as a WAV file (8 kHz, mono, 16-bit), the sound baresip's
    aufile module sends."""
    frames = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * k / 8000.0)))
                      for k in range(8000 * seconds))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)


# --------------------------------------------------------------------------
# T.38 fax over UDPTL (fax-t38)
# --------------------------------------------------------------------------
#
# ITU-T T.38 (version 0, the pre-corrigendum ASN.1 that T38FaxVersion:0
# announces), ASN.1 PER aligned, as fax gateways put it on the wire:
#
#   UDPTLPacket = seq-number (16 bits)
#                 primary-ifp-packet (open type: length determinant + octets)
#                 error-recovery: CHOICE index 0 (secondary-ifp-packets) in one
#                   octet, the count in a length determinant, then each older
#                   IFP as an open type (t38UDPRedundancy)
#   IFPPacket   = 1st octet: data-field present (bit 8), type-of-msg CHOICE
#                   (bit 7: 0 t30-indicator, 1 t30-data), extension bit (6),
#                   the enumeration in bits 5..2
#                 data-field (t30-data only): count of fields (1 octet), then per
#                   field an octet with field-data present (bit 8) and the 3-bit
#                   field-type (bits 7..5), then length-1 (16 bits) + the octets

T38_INDICATOR = {"no-signal": 0, "cng": 1, "ced": 2, "v21-preamble": 3,
                 "v29-9600-training": 7}
T38_DATA_RATE = {"v21": 0, "v29-9600": 4}
T38_FIELD = {"hdlc-data": 0, "hdlc-fcs-OK": 2, "hdlc-fcs-OK-sig-end": 4,
             "t4-non-ecm-data": 6, "t4-non-ecm-sig-end": 7}

# T.30 (V.21 HDLC) frames inside T.38 hdlc-data fields: the first bit on the
# line is the highest bit of each octet (so control 0xC0 non-final, 0xC8 final
# frame). Facsimile control fields as T.30 writes them, with the X bit (highest)
# set by the station that received DIS, i.e. the caller here.
T30_DIS, T30_CSI, T30_CFR, T30_MCF = 0x01, 0x02, 0x21, 0x31
T30_DCS, T30_TSI, T30_EOP, T30_DCN = 0xC1, 0xC2, 0xF4, 0xDF


def ifp_indicator(name):
    return bytes([T38_INDICATOR[name] << 1])


def ifp_data(rate, field, data=b""):
    """A t30-data IFP with one data field (field-data `data`, if any)."""
    ifp = bytes([0x80 | 0x40 | (T38_DATA_RATE[rate] << 1), 1])
    ifp += bytes([(0x80 if data else 0) | (T38_FIELD[field] << 4)])
    if data:
        ifp += struct.pack("!H", len(data) - 1) + data
    return ifp


def per_open_type(octets):
    n = len(octets)
    assert n < 0x4000
    return (bytes([n]) if n < 0x80 else struct.pack("!H", 0x8000 | n)) + octets


def udptl_packet(seq, primary, older):
    """UDPTL datagram: `older` are the previous IFPs, newest first (redundancy)."""
    return (struct.pack("!H", seq) + per_open_type(primary) + b"\x00" + bytes([len(older)])
            + b"".join(per_open_type(o) for o in older))


def t30_frame(fcf, fif=b"", final=True):
    """T.30 HDLC frame without flags and FCS: address, control, FCF, FIF."""
    return bytes([0xFF, 0xC8 if final else 0xC0, fcf]) + fif


def t30_fif(nbytes, *bits):
    """A DIS/DCS information field with T.30's bits `bits` (numbered from 1) set."""
    out = bytearray(nbytes)
    for b in bits:
        out[(b - 1) // 8] |= 0x80 >> ((b - 1) % 8)
    return bytes(out)


def t30_ident(number):
    """CSI / TSI information field: 20 characters, right-aligned, the last one
    sent first (each octet first bit first, as everything here)."""
    return bytes(int(f"{c:08b}"[::-1], 2) for c in number.rjust(20).encode()[::-1])


def t4_white_page(lines):
    """A T.4 (MH) page of all-white 1728-pixel lines: EOL, then each line
    (make-up 1728 + terminating 0) followed by EOL, then RTC (5 more EOLs),
    first bit in the highest bit of each octet."""
    eol, white = "000000000001", "010011011" + "00110101"
    bits = eol + (white + eol) * lines + eol * 5
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def t38_caller_events():
    """(ms, IFP) of the calling (sending) fax: CNG; TSI + DCS at V.21; TCF
    (zeros, transferredTCF) at V.29 9600; after CFR one page; EOP; after MCF,
    DCN. The T.30 timing is compressed into about 2 s."""
    ev = [(0, ifp_indicator("cng")),
          (450, ifp_indicator("v21-preamble")),
          (520, ifp_data("v21", "hdlc-data", t30_frame(T30_TSI, t30_ident("+1 555 0100"),
                                                       final=False))),
          (560, ifp_data("v21", "hdlc-fcs-OK")),
          (600, ifp_data("v21", "hdlc-data", t30_frame(T30_DCS, t30_fif(3, 10, 11, 15, 21, 22, 23)))),
          (640, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
          (680, ifp_indicator("no-signal")),
          (700, ifp_indicator("v29-9600-training"))]
    t = 740
    for i in range(6):                      # TCF
        last = i == 5
        ev.append((t, ifp_data("v29-9600", "t4-non-ecm-sig-end" if last else "t4-non-ecm-data",
                               bytes(72))))
        t += 30
    ev += [(t, ifp_indicator("no-signal")),
           (1220, ifp_indicator("v29-9600-training"))]
    page = t4_white_page(100)
    chunks = [page[i:i + 64] for i in range(0, len(page), 64)]
    t = 1260
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        ev.append((t, ifp_data("v29-9600", "t4-non-ecm-sig-end" if last else "t4-non-ecm-data",
                               chunk)))
        t += 30
    ev += [(t, ifp_indicator("no-signal")),
           (1480, ifp_indicator("v21-preamble")),
           (1540, ifp_data("v21", "hdlc-data", t30_frame(T30_EOP))),
           (1580, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
           (1620, ifp_indicator("no-signal")),
           (1900, ifp_indicator("v21-preamble")),
           (1960, ifp_data("v21", "hdlc-data", t30_frame(T30_DCN))),
           (2000, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
           (2040, ifp_indicator("no-signal"))]
    return ev


def t38_callee_events():
    """(ms, IFP) of the called (receiving) fax: CED; CSI + DIS; CFR; MCF."""
    return [(0, ifp_indicator("ced")),
            (150, ifp_indicator("v21-preamble")),
            (220, ifp_data("v21", "hdlc-data", t30_frame(T30_CSI, t30_ident("+1 555 0199"),
                                                         final=False))),
            (260, ifp_data("v21", "hdlc-fcs-OK")),
            (300, ifp_data("v21", "hdlc-data", t30_frame(T30_DIS, t30_fif(3, 10, 11, 12, 15, 20, 21, 22, 23)))),
            (340, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
            (380, ifp_indicator("no-signal")),
            (1000, ifp_indicator("v21-preamble")),
            (1060, ifp_data("v21", "hdlc-data", t30_frame(T30_CFR))),
            (1100, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
            (1140, ifp_indicator("no-signal")),
            (1700, ifp_indicator("v21-preamble")),
            (1760, ifp_data("v21", "hdlc-data", t30_frame(T30_MCF))),
            (1800, ifp_data("v21", "hdlc-fcs-OK-sig-end")),
            (1840, ifp_indicator("no-signal"))]


T38_REDUNDANCY = 2      # older IFPs carried in each UDPTL packet


def write_t38_pcap(path, events, sport, dport):
    packets, sent = [], []
    for seq, (ms, ifp) in enumerate(events):
        older = sent[::-1][:T38_REDUNDANCY]
        packets.append((ms * 1000, sport, dport, udptl_packet(seq, ifp, older)))
        sent.append(ifp)
    write_pcap(path, packets)
    return len(packets)


def write_t38_pcaps(d):
    """udptl-uac.pcap / udptl-uas.pcap, replayed with play_pcap_image after the
    T.38 re-INVITE of fax-t38 call F (6000 <-> 6100)."""
    write_t38_pcap(os.path.join(d, "udptl-uac.pcap"), t38_caller_events(), UAC_RTP, UAS_RTP)
    write_t38_pcap(os.path.join(d, "udptl-uas.pcap"), t38_callee_events(), UAS_RTP, UAC_RTP)


# --------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------

CURRENT = ""         # name of the capture being made (for log file names)


def start(cmd, name, limit, cwd=None):
    """Start cmd under `timeout limit`; stdout+stderr go to WORK/<capture>-name.log."""
    if CURRENT:
        name = f"{CURRENT}-{name}"
    logf = open(os.path.join(WORK, name + ".log"), "ab")
    full = ["timeout", "-k", "2", str(limit)] + [str(c) for c in cmd]
    p = subprocess.Popen(full, cwd=cwd or WORK, stdin=subprocess.DEVNULL,
                         stdout=logf, stderr=subprocess.STDOUT)
    p.sipflow_name = name
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM, wait=5.0):
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)          # timeout(1) forwards it to its child
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(2)
    if p in PROCS:
        PROCS.remove(p)
    return p.returncode


def finish(p, what, limit=30.0):
    """Wait for a process that ends by itself and record a failure if rc != 0.

    When an earlier process of the same capture failed, do not wait long."""
    if any(f.startswith(what + ":") for f in FAILURES):
        limit = min(limit, 3.0)
    try:
        rc = p.wait(limit)
    except subprocess.TimeoutExpired:
        rc = stop(p)
    if p in PROCS:
        PROCS.remove(p)
    if rc != 0:
        FAILURES.append(f"{what}: {p.sipflow_name} exited with {rc} (see {WORK}/{p.sipflow_name}.log)")
        log(f"   !! {what}: {p.sipflow_name} rc={rc}")
    return rc


def port_bound(port, proto="udp", v6=False):
    """True when something is bound to port (reads /proc, sends no packet)."""
    path = f"/proc/net/{proto}{'6' if v6 else ''}"
    want = f":{port:04X}"
    with open(path) as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1].endswith(want) and (proto == "udp" or cols[3] == "0A"):
                return True
    return False


def wait_port(port, proto="udp", v6=False, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        if port_bound(port, proto, v6):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {proto}{'6' if v6 else ''} port {port}")


def wait_port_free(port, proto="udp", v6=False, limit=10.0):
    end = time.time() + limit
    while time.time() < end and port_bound(port, proto, v6):
        time.sleep(0.05)


def sipp(name, scenario, *args, remote=None, limit=15, m=1):
    """Start SIPp with scenarios/<scenario> (copied into WORK): m calls at most,
    one at a time, failing if not done within `limit` seconds."""
    cmd = ["sipp"]
    if remote:
        cmd.append(remote)
    cmd += ["-sf", os.path.join(WORK, scenario), "-m", m, "-l", 1, "-nostdin",
            "-timeout", f"{limit}s", "-timeout_error", "-trace_err"] + list(args)
    return start(cmd, name, limit + 5)


def uas(scenario, *args, transport="u1", ip=V4, port=UAS, mp=UAS_RTP, m=1, limit=15):
    p = sipp(f"uas-{scenario}", scenario, "-t", transport, "-i", ip, "-p", port,
             "-mi", ip, "-mp", mp, "-s", "bob", *args, m=m, limit=limit)
    wait_port(port, "tcp" if transport.startswith("t") else "udp", ip == V6)
    return p


def uac(scenario, remote, *args, service="bob", transport="u1", ip=V4, port=UAC,
        mp=UAC_RTP, limit=15):
    wait_port_free(port, "tcp" if transport.startswith("t") else "udp", ip == V6)
    return sipp(f"uac-{scenario}", scenario, "-t", transport, "-i", ip, "-p", port,
                "-mi", ip, "-mp", mp, "-s", service, *args, remote=remote, limit=limit)


# --------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------

@contextlib.contextmanager
def capture(name):
    """tcpdump -i lo -U -w <name>.pcap around the block, stopped with SIGINT."""
    tmp = os.path.join(WORK, name + ".pcap")
    logpath = os.path.join(WORK, f"tcpdump-{name}.log")
    logf = open(logpath, "wb")
    p = subprocess.Popen(["timeout", "-k", "2", "90", "tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode",
                          "-Z", "root", "-w", tmp],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    p.sipflow_name = f"tcpdump-{name}"
    PROCS.append(p)
    global CURRENT
    CURRENT = name
    end = time.time() + 10
    while time.time() < end:
        with open(logpath, "rb") as f:
            if b"listening on" in f.read():
                break
        time.sleep(0.05)
    else:
        raise RuntimeError("tcpdump did not start")
    time.sleep(0.2)
    log(f"== {name}.pcap")
    try:
        yield
    finally:
        time.sleep(0.5)
        stop(p, signal.SIGINT)
        CURRENT = ""
        dst = os.path.join(OUT, name + ".pcap")
        if os.path.exists(tmp):
            shutil.copyfile(tmp, dst)
            os.chmod(dst, 0o644)


# --------------------------------------------------------------------------
# Kamailio
# --------------------------------------------------------------------------

class Kamailio:
    def __init__(self):
        self.p = None

    def start(self):
        run = os.path.join(WORK, "kamailio-run")
        os.makedirs(run, exist_ok=True)
        subprocess.run(["kamailio", "-c", "-f", KAMAILIO_CFG], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.p = start(["kamailio", "-f", KAMAILIO_CFG, "-DD", "-E", "-m", "64", "-M", "8",
                        "-w", run, "-Y", run, "-P", os.path.join(run, "kamailio.pid")],
                       "kamailio", 600)
        wait_port(PROXY, "udp")
        wait_port(PROXY, "tcp")
        wait_port(WS_PORT, "tcp")
        time.sleep(0.3)

    def stop(self):
        if self.p is not None:
            stop(self.p, signal.SIGTERM, wait=10)
            self.p = None


# --------------------------------------------------------------------------
# small socket clients
# --------------------------------------------------------------------------

def recv_sip_over_tcp(sock, count, limit=5.0):
    """Read `count` SIP messages (Content-Length framed) from a TCP socket."""
    buf, msgs = b"", []
    end = time.time() + limit
    while len(msgs) < count and time.time() < end:
        sock.settimeout(max(0.1, end - time.time()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        buf += data
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            clen = int(m.group(1)) if m else 0
            if len(rest) < clen:
                break
            msgs.append(head + b"\r\n\r\n" + rest[:clen])
            buf = rest[clen:]
    return msgs


def two_requests_one_segment():
    """Two complete OPTIONS requests to Kamailio over TCP in ONE send()."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((V4, UAC2))
    s.settimeout(5)
    s.connect((V4, PROXY))
    reqs = []
    for i in (1, 2):
        reqs.append(
            f"OPTIONS sip:{V4}:{PROXY};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {V4}:{UAC2};branch=z9hG4bK-sipflow-pipelined-{i};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:keepalive@{V4}:{UAC2}>;tag=pipelined-{i}\r\n"
            f"To: <sip:{V4}:{PROXY}>\r\n"
            f"Call-ID: sipflow-pipelined-{i}@{V4}\r\n"
            f"CSeq: {i} OPTIONS\r\n"
            f"Contact: <sip:keepalive@{V4}:{UAC2};transport=tcp>\r\n"
            f"Accept: application/sdp\r\n"
            f"User-Agent: sipflow-samples pipelining client\r\n"
            f"Content-Length: 0\r\n\r\n")
    s.sendall("".join(reqs).encode())        # one send(), one segment (< MSS)
    replies = recv_sip_over_tcp(s, 2)
    time.sleep(0.2)
    s.close()
    if len(replies) != 2 or not all(r.startswith(b"SIP/2.0 200") for r in replies):
        FAILURES.append(f"tcp-segmented: expected two 200 OK replies, got {replies!r}")


class WSClient:
    """Minimal RFC 6455 client speaking SIP (RFC 7118). Frames are masked."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.buf = b""
        self.mask_n = 0
        key = base64.b64encode(b"sipflow-samples!").decode()
        req = (f"GET / HTTP/1.1\r\n"
               f"Host: {host}:{port}\r\n"
               f"Upgrade: websocket\r\n"
               f"Connection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: sip\r\n"
               f"Origin: http://{host}\r\n"
               f"User-Agent: sipflow-samples ws client\r\n\r\n")
        self.sock.sendall(req.encode())
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise RuntimeError("websocket handshake: connection closed")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if not head.startswith(b"HTTP/1.1 101") or accept.encode() not in head:
            raise RuntimeError(f"websocket handshake failed: {head!r}")

    def _mask(self):
        self.mask_n += 1
        return struct.pack("!I", (0x5F1F0000 + self.mask_n * 0x01010101) & 0xFFFFFFFF)

    def send_frame(self, opcode, payload, fin=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mk = self._mask()
        masked = bytes(c ^ mk[i % 4] for i, c in enumerate(payload))
        self.sock.sendall(hdr + mk + masked)

    def send_text(self, text, split_at=None):
        data = text.encode()
        if split_at is None:
            self.send_frame(0x1, data)
        else:               # fragmented message: text frame FIN=0 + continuation FIN=1
            self.send_frame(0x1, data[:split_at], fin=False)
            time.sleep(0.05)            # two TCP segments, too
            self.send_frame(0x0, data[split_at:], fin=True)

    def _read(self, n, end):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.05, end - time.time()))
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("websocket: connection closed")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, limit=5.0):
        end = time.time() + limit
        b0, b1 = self._read(2, end)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2, end))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, end))[0]
        mk = self._read(4, end) if b1 & 0x80 else None
        data = self._read(n, end)
        if mk:
            data = bytes(c ^ mk[i % 4] for i, c in enumerate(data))
        return b0 & 0x0F, data

    def recv_sip(self, limit=5.0):
        for _ in range(20):
            op, data = self.recv_frame(limit)
            if op in (0x1, 0x2):
                return data.decode(errors="replace")
            if op == 0x8:
                raise RuntimeError("websocket closed by server")
        raise RuntimeError("websocket: no SIP message received")

    def close(self):
        self.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
        with contextlib.suppress(Exception):
            while True:
                op, _ = self.recv_frame(2.0)
                if op == 0x8:
                    break
        self.sock.close()


def digest_authorization(challenge, method, uri, user, password, cnonce):
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    nc = "00000001"
    if "qop" in params:
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
                f'response="{resp}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}')
    resp = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5')


def sip_status(msg):
    m = re.match(r"SIP/2.0 (\d{3})", msg)
    return int(m.group(1)) if m else None


def header(msg, name):
    m = re.search(rf"(?im)^{name}\s*:\s*(.*?)\r?$", msg)
    return m.group(1) if m else None


def websocket_session():
    """REGISTER (401, 200); incoming INVITE answered 486; OPTIONS fragmented over
    two WebSocket frames; outgoing INVITE -> 100, 404, ACK."""
    host = "df7jal23ls0d.invalid"          # RFC 7118 style random .invalid host
    dom = "sipflow.test"
    ws = WSClient(V4, WS_PORT)
    local = ws.sock.getsockname()

    def req(method, ruri, cseq, branch, callid, to, ftag, extra="", body=""):
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        return (f"{method} {ruri} SIP/2.0\r\n"
                f"Via: SIP/2.0/WS {host};branch=z9hG4bK{branch}\r\n"
                f"Max-Forwards: 70\r\n"
                f"To: {to}\r\n"
                f"From: \"Carol\" <sip:carol@{dom}>;tag={ftag}\r\n"
                f"Call-ID: {callid}\r\n"
                f"CSeq: {cseq} {method}\r\n"
                f"{extra}"
                f"User-Agent: sipflow-samples ws client\r\n"
                f"{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}")

    contact = f"Contact: <sip:carol@{host};transport=ws>;expires=600\r\n"
    reg_callid = "ws-register-8c1e3f@sipflow.test"
    r1 = req("REGISTER", f"sip:{dom}", 1, "wsreg1", reg_callid, f"<sip:carol@{dom}>",
             "wsreg", contact + "Supported: path, outbound, gruu\r\n")
    ws.send_text(r1)
    a1 = ws.recv_sip()
    if sip_status(a1) != 401:
        raise RuntimeError(f"ws REGISTER: expected 401, got {a1!r}")
    auth = digest_authorization(header(a1, "WWW-Authenticate"), "REGISTER", f"sip:{dom}",
                                "carol", "secretpw", "0a4f113b")
    r2 = req("REGISTER", f"sip:{dom}", 2, "wsreg2", reg_callid, f"<sip:carol@{dom}>", "wsreg",
             contact + "Supported: path, outbound, gruu\r\n" + f"Authorization: {auth}\r\n")
    ws.send_text(r2)
    a2 = ws.recv_sip()
    if sip_status(a2) != 200:
        raise RuntimeError(f"ws REGISTER with credentials: expected 200, got {a2!r}")

    # incoming call: SIPp (UDP) -> Kamailio -> this client over the WebSocket;
    # the client rings and then answers 486 Busy Here
    caller = uac("uac_invite_fail.xml", R_PROXY, service="carol")
    inv = ws.recv_sip()
    if not inv.startswith("INVITE "):
        raise RuntimeError(f"ws: expected an INVITE from the proxy, got {inv!r}")
    head = inv.split("\r\n\r\n", 1)[0].split("\r\n")
    vias = [ln for ln in head if re.match(r"(?i)(via|v)\s*:", ln)]
    rrs = [ln for ln in head if re.match(r"(?i)record-route\s*:", ln)]

    def answer(code, reason, with_dialog):
        lines = [f"SIP/2.0 {code} {reason}"] + vias
        lines += [f"From: {header(inv, 'From')}",
                  f"To: {header(inv, 'To')};tag=wsbusy9a1",
                  f"Call-ID: {header(inv, 'Call-ID')}",
                  f"CSeq: {header(inv, 'CSeq')}"]
        if with_dialog:
            lines += rrs + [f"Contact: <sip:carol@{host};transport=ws>"]
        lines += ["User-Agent: sipflow-samples ws client", "Content-Length: 0", "", ""]
        return "\r\n".join(lines)

    ws.send_text(answer(180, "Ringing", True))
    time.sleep(0.3)
    ws.send_text(answer(486, "Busy Here", False))
    ack = ws.recv_sip()
    if not ack.startswith("ACK "):
        raise RuntimeError(f"ws: expected the proxy's ACK for 486, got {ack!r}")
    finish(caller, "websocket")

    # OPTIONS split over a text frame (FIN=0) and a continuation frame (FIN=1)
    o = req("OPTIONS", f"sip:{dom}", 1, "wsopt1", "ws-options-5d2a@sipflow.test", f"<sip:{dom}>",
            "wsopt", f"Contact: <sip:carol@{host};transport=ws>\r\nAccept: application/sdp\r\n")
    ws.send_text(o, split_at=len(o) // 2)
    a3 = ws.recv_sip()
    if sip_status(a3) != 200:
        raise RuntimeError(f"ws fragmented OPTIONS: expected 200, got {a3!r}")

    # INVITE to a user who is not registered -> 100 Trying, 404, ACK
    sdp = ("v=0\r\n"
           f"o=- 4611731400430051336 2 IN IP4 {V4}\r\n"
           "s=-\r\n"
           "t=0 0\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n"
           "c=IN IP4 0.0.0.0\r\n"
           "a=rtcp:9 IN IP4 0.0.0.0\r\n"
           "a=ice-ufrag:wsUf\r\n"
           "a=ice-pwd:sipflowwebsocketicepassword\r\n"
           "a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
           "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n"
           "a=setup:actpass\r\n"
           "a=mid:0\r\n"
           "a=sendrecv\r\n"
           "a=rtcp-mux\r\n"
           "a=rtpmap:111 opus/48000/2\r\n"
           "a=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:8 PCMA/8000\r\n"
           f"a=candidate:1 1 udp 2122260223 {V4} 50000 typ host\r\n")
    inv_callid = "ws-invite-77b9@sipflow.test"
    inv = req("INVITE", f"sip:nobody@{dom}", 1, "wsinv1", inv_callid, f"<sip:nobody@{dom}>",
              "wsinv", f"Contact: <sip:carol@{host};transport=ws;ob>\r\n", body=sdp)
    ws.send_text(inv)
    final = None
    for _ in range(5):
        a = ws.recv_sip()
        st = sip_status(a)
        if st and st >= 200:
            final = a
            break
    if final is None or sip_status(final) != 404:
        raise RuntimeError(f"ws INVITE: expected 404, got {final!r}")
    to = header(final, "To")
    ack = (f"ACK sip:nobody@{dom} SIP/2.0\r\n"
           f"Via: SIP/2.0/WS {host};branch=z9hG4bKwsinv1\r\n"
           f"Max-Forwards: 70\r\n"
           f"To: {to}\r\n"
           f"From: \"Carol\" <sip:carol@{dom}>;tag=wsinv\r\n"
           f"Call-ID: {inv_callid}\r\n"
           f"CSeq: 1 ACK\r\n"
           f"Content-Length: 0\r\n\r\n")
    ws.send_text(ack)
    time.sleep(0.3)
    ws.close()
    return local


# --------------------------------------------------------------------------
# the captures
# --------------------------------------------------------------------------

R_UAS = f"{V4}:{UAS}"
R_PROXY = f"{V4}:{PROXY}"
RSA_PROXY = ["-rsa", R_PROXY]


def cap_basic_call_rtp():
    with capture("basic-call-rtp"):
        s = uas("uas_call.xml")
        c = uac("uac_call.xml", R_UAS)
        finish(c, "basic-call-rtp")
        finish(s, "basic-call-rtp")


def cap_register_401_200():
    with capture("register-401-200"):
        c = uac("register.xml", R_PROXY, "-au", "alice", "-ap", "secretpw", service="alice")
        finish(c, "register-401-200")


def cap_unregister():
    with capture("unregister"):
        c = uac("register_unregister.xml", R_PROXY, "-au", "bob", "-ap", "secretpw",
                service="bob")
        finish(c, "unregister")


def cap_register_wrong_password():
    with capture("register-wrong-password"):
        c = uac("register_wrong_password.xml", R_PROXY, "-au", "alice", "-ap", "not-the-password",
                service="alice")
        finish(c, "register-wrong-password")


def cap_call_via_proxy():
    with capture("call-via-proxy"):
        s = uas("uas_call.xml")
        c = uac("uac_call.xml", R_UAS, *RSA_PROXY)
        finish(c, "call-via-proxy")
        finish(s, "call-via-proxy")


def cap_cancel_487():
    with capture("cancel-487"):
        s = uas("uas_ring_cancel.xml")
        c = uac("uac_cancel.xml", R_UAS)
        finish(c, "cancel-487")
        finish(s, "cancel-487")


def cap_busy_486():
    with capture("busy-486"):
        s = uas("uas_busy.xml")
        c = uac("uac_invite_fail.xml", R_UAS)
        finish(c, "busy-486")
        finish(s, "busy-486")


def cap_not_found_404():
    with capture("not-found-404"):
        c = uac("uac_invite_fail.xml", R_PROXY, service="nobody")
        finish(c, "not-found-404")


def cap_no_answer_408():
    with capture("no-answer-408"):
        s = uas("uas_ring_cancel.xml")
        c = uac("uac_invite_fail.xml", R_UAS, *RSA_PROXY, service="noanswer")
        finish(c, "no-answer-408")
        finish(s, "no-answer-408")


def cap_call_tcp():
    with capture("call-tcp"):
        s = uas("uas_call.xml", transport="t1")
        c = uac("uac_call.xml", R_UAS, transport="t1")
        finish(c, "call-tcp")
        finish(s, "call-tcp")


def cap_call_ipv6():
    with capture("call-ipv6"):
        s = uas("uas_call.xml", ip=V6)
        c = uac("uac_call.xml", f"[{V6}]:{UAS}", ip=V6)
        finish(c, "call-ipv6")
        finish(s, "call-ipv6")


def cap_udp_fragmented():
    with capture("udp-fragmented"):
        s = uas("uas_call_nomedia.xml")
        c = uac("uac_call_big.xml", R_UAS)
        finish(c, "udp-fragmented")
        finish(s, "udp-fragmented")


def cap_tcp_segmented():
    with capture("tcp-segmented"):
        s = uas("uas_call_nomedia.xml", transport="t1")
        c = uac("uac_call_big.xml", R_UAS, transport="t1")
        finish(c, "tcp-segmented")
        finish(s, "tcp-segmented")
        two_requests_one_segment()


def cap_reinvite_hold():
    with capture("reinvite-hold"):
        s = uas("uas_reinvite_hold.xml")
        c = uac("uac_reinvite_hold.xml", R_UAS)
        finish(c, "reinvite-hold")
        finish(s, "reinvite-hold")


def cap_options_message_subscribe():
    with capture("options-message-subscribe"):
        s = uas("uas_options_message_subscribe.xml", m=3)
        finish(uac("uac_options.xml", R_UAS), "options-message-subscribe")
        finish(uac("uac_options_proxy.xml", R_PROXY, port=UAC2), "options-message-subscribe")
        finish(uac("uac_message.xml", R_UAS), "options-message-subscribe")
        finish(uac("uac_subscribe.xml", R_UAS), "options-message-subscribe")
        finish(s, "options-message-subscribe")


def cap_call_av_dtmf():
    with capture("call-av-dtmf"):
        s = uas("uas_av_dtmf.xml")
        c = uac("uac_av_dtmf.xml", R_UAS)
        finish(c, "call-av-dtmf")
        finish(s, "call-av-dtmf")


def cap_port_reuse():
    """Three calls to one UAS that answers each with media port 6100: A (UAC
    :5061, RTP 6000), B (:5062, RTP 6010) while A is still up, then C (:5061,
    RTP 6000 again) after both ended."""
    with capture("port-reuse"):
        s = uas("uas_port_reuse.xml", m=3, limit=20)
        a = uac("uac_port_reuse.xml", R_UAS, "-set", "call", "A")
        time.sleep(0.9)         # A's 200 OK comes ~0.4 s after its start (UAS: 180, 300 ms, 200)
        b = uac("uac_port_reuse.xml", R_UAS, "-set", "call", "B", port=UAC2, mp=UAC_RTP + 10)
        finish(a, "port-reuse")
        finish(b, "port-reuse")
        c = uac("uac_port_reuse.xml", R_UAS, "-set", "call", "C")
        finish(c, "port-reuse")
        finish(s, "port-reuse")


def cap_fax_t38():
    """Two calls to one UAS (-m 2), each switched to T.38 by a re-INVITE from
    the caller: F (UAC :5061, RTP 6000) is accepted and carries UDPTL on the
    same ports; R (UAC :5062, RTP 6010) is refused with 488 and keeps its RTP."""
    with capture("fax-t38"):
        s = uas("uas_fax_t38.xml", m=2, limit=20)
        f = uac("uac_fax_t38.xml", R_UAS, "-set", "call", "F")
        finish(f, "fax-t38")
        r = uac("uac_fax_t38.xml", R_UAS, "-set", "call", "R", port=UAC2, mp=UAC_RTP + 10)
        finish(r, "fax-t38")
        finish(s, "fax-t38")


def cap_transfer_hold():
    """alice (UAC :5061) -> Kamailio -> bob (UAS :5070), every message on both
    hops: early media, hold, resume, MESSAGE, INFO, then alice transfers bob to
    carol (REFER). Once bob has accepted the REFER (its <log> line, after the
    200 to its first NOTIFY), bob's second user agent (:5071) calls carol
    (:5080) through Kamailio on a new Call-ID; bob's final NOTIFY follows
    0.8 s after the first one, then alice hangs up."""
    name = "transfer-hold"
    with capture(name):
        target = uas("uas_transfer_target.xml", port=CAROL, mp=CAROL_RTP, limit=20)
        s = uas("uas_transfer_hold.xml", "-trace_logs", "-log_file",
                os.path.join(WORK, f"{name}-refer.log"), limit=20)
        c = uac("uac_transfer_hold.xml", R_UAS, *RSA_PROXY, limit=20)
        if wait_log("refer", "REFER accepted", 15):
            t = uac("uac_transfer_target.xml", f"{V4}:{CAROL}", *RSA_PROXY, service="carol",
                    port=XFER_UA, mp=XFER_UA_RTP)
            finish(t, name)
        else:
            FAILURES.append(f"{name}: bob never accepted the REFER (see {WORK})")
            log(f"   !! {name}: no REFER accepted")
        finish(c, name)
        finish(s, name)
        finish(target, name)


# --------------------------------------------------------------------------
# baresip (call-rtcp, call-rtcp-mux)
# --------------------------------------------------------------------------
#
# Two baresip 1.0 instances, each with its own configuration directory (-f):
# no audio device (no player module at all; the source is aufile reading a
# WAV tone), PCMU only, no registration (regint=0), the callee answers by
# itself (answermode=auto). RTP ports are pinned with rtp_ports (the range
# 6000-6001 gives 6000, RTCP 6001). baresip's RTCP (libre) sends a compound
# SR + SDES (CNAME) every 5 s from the start of the stream and BYE + SDES
# when the stream is closed; SRs carry a report block once RTP has been
# received. The caller hangs up when baresip quits (-t, 12 s after start).

BARESIP_CALL_SECONDS = 12


def baresip_config(name, sip_port, rtp_port, wav, rtcp_mux):
    d = os.path.join(WORK, f"baresip-{name}")
    os.makedirs(d, exist_ok=True)
    user = name                         # alice (caller) or bob (callee)
    with open(os.path.join(d, "config"), "w") as f:
        f.write(f"""# baresip 1.0 configuration written by sipflow's make_samples.py
poll_method		epoll
sip_listen		{V4}:{sip_port}
call_local_timeout	30
call_max_calls		1
audio_source		aufile,{wav}
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
audio_buffer		20-160
rtp_ports		{rtp_port}-{rtp_port + 1}
rtcp_mux		{'yes' if rtcp_mux else 'no'}
jitter_buffer_delay	5-10
rtp_stats		yes
net_interface		{V4}
statmode_default	off
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module_tmp		account.so
module_app		menu.so
""")
    answer = ";answermode=auto" if user == "bob" else ""
    with open(os.path.join(d, "accounts"), "w") as f:
        f.write(f"<sip:{user}@{V4}:{sip_port}>;regint=0;audio_codecs=PCMU{answer}\n")
    return d


def wait_log(name, text, limit):
    """Wait until WORK/<capture>-<name>.log contains text (True) or limit s pass."""
    path = os.path.join(WORK, f"{CURRENT}-{name}.log" if CURRENT else f"{name}.log")
    end = time.time() + limit
    while time.time() < end:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            if text.encode() in f.read():
                return True
        time.sleep(0.1)
    return False


def baresip_call(name, rtcp_mux):
    if shutil.which("baresip") is None:
        FAILURES.append(f"{name}: baresip not found (Debian: apt-get install baresip-core)")
        log(f"   !! {name}: baresip not found")
        return
    bob = baresip_config("bob", UAS, UAS_RTP, os.path.join(WORK, "baresip-bob.wav"), rtcp_mux)
    alice = baresip_config("alice", UAC, UAC_RTP, os.path.join(WORK, "baresip-alice.wav"),
                           rtcp_mux)
    with capture(name):
        b = start(["baresip", "-4", "-f", bob], "baresip-bob", BARESIP_CALL_SECONDS + 15)
        wait_port(UAS, "udp")
        a = start(["baresip", "-4", "-f", alice, "-t", BARESIP_CALL_SECONDS,
                   "-e", f"/dial sip:bob@{V4}:{UAS}"], "baresip-alice", BARESIP_CALL_SECONDS + 10)
        finish(a, name, limit=BARESIP_CALL_SECONDS + 10)
        if not wait_log("baresip-bob", "terminated", 5):
            FAILURES.append(f"{name}: the callee's call did not end (see {WORK}/{name}-baresip-bob.log)")
        rc = stop(b)                    # SIGTERM: baresip stops its UA and exits
        if rc != 0:
            FAILURES.append(f"{name}: baresip-bob exited with {rc}")


def cap_call_rtcp():
    baresip_call("call-rtcp", rtcp_mux=False)


def cap_call_rtcp_mux():
    baresip_call("call-rtcp-mux", rtcp_mux=True)


def cap_websocket():
    with capture("websocket"):
        try:
            websocket_session()
        except Exception as e:                      # noqa: BLE001
            FAILURES.append(f"websocket: {e}")
            log(f"   !! websocket: {e}")


CAPTURES = [
    ("basic-call-rtp", cap_basic_call_rtp),
    ("register-401-200", cap_register_401_200),
    ("unregister", cap_unregister),
    ("register-wrong-password", cap_register_wrong_password),
    ("call-via-proxy", cap_call_via_proxy),
    ("cancel-487", cap_cancel_487),
    ("busy-486", cap_busy_486),
    ("not-found-404", cap_not_found_404),
    ("no-answer-408", cap_no_answer_408),
    ("call-tcp", cap_call_tcp),
    ("call-ipv6", cap_call_ipv6),
    ("udp-fragmented", cap_udp_fragmented),
    ("tcp-segmented", cap_tcp_segmented),
    ("reinvite-hold", cap_reinvite_hold),
    ("options-message-subscribe", cap_options_message_subscribe),
    ("websocket", cap_websocket),
    ("call-av-dtmf", cap_call_av_dtmf),
    ("port-reuse", cap_port_reuse),
    ("fax-t38", cap_fax_t38),
    ("transfer-hold", cap_transfer_hold),
    ("call-rtcp", cap_call_rtcp),
    ("call-rtcp-mux", cap_call_rtcp_mux),
]

# Expected (SIP messages as tshark counts them, Call-IDs, RTP streams)
EXPECTED = {
    "basic-call-rtp": (7, 1, 2),
    "register-401-200": (4, 1, 0),
    "unregister": (8, 1, 0),
    "register-wrong-password": (6, 1, 0),
    "call-via-proxy": (14, 1, 2),
    "cancel-487": (7, 1, 0),
    "busy-486": (5, 1, 0),
    "not-found-404": (4, 1, 0),
    "no-answer-408": (12, 1, 0),
    "call-tcp": (7, 1, 2),
    "call-ipv6": (7, 1, 2),
    "udp-fragmented": (7, 1, 0),
    "tcp-segmented": (11, 3, 0),
    "reinvite-hold": (13, 1, 2),
    "options-message-subscribe": (14, 4, 0),
    "websocket": (19, 4, 0),
    "call-av-dtmf": (11, 1, 4),
    "port-reuse": (21, 3, 6),
    "fax-t38": (20, 2, 4),
    "transfer-hold": (61, 2, 2),
    "call-rtcp": (6, 1, 2),
    "call-rtcp-mux": (6, 1, 2),
}

TSHARK_SIP = ["-o", "ip.defragment:TRUE", "-o", "tcp.desegment_tcp_streams:TRUE",
              "--enable-heuristic", "sip_udp", "--enable-heuristic", "sip_tcp"]


def tshark_summary(path):
    """(sip messages, distinct Call-IDs, rtp streams) for a capture."""
    out = subprocess.run(["tshark", "-r", path, *TSHARK_SIP, "-Y", "sip",
                          "-T", "fields", "-E", "occurrence=a", "-e", "sip.Call-ID",
                          "-e", "sip.Method", "-e", "sip.Status-Code"],
                         capture_output=True, text=True, timeout=60).stdout
    nmsg, callids = 0, set()
    for line in out.splitlines():
        cids, methods, codes = (line.split("\t") + ["", "", ""])[:3]
        nmsg += len([x for x in methods.split(",") if x]) + len([x for x in codes.split(",") if x])
        callids.update(x for x in cids.split(",") if x)
    rtp = subprocess.run(["tshark", "-r", path, "-o", "rtp.heuristic_rtp:TRUE", "-q",
                          "-z", "rtp,streams"], capture_output=True, text=True, timeout=60).stdout
    nrtp = len([ln for ln in rtp.splitlines() if re.search(r"0x[0-9A-Fa-f]{8}", ln)])
    return nmsg, len(callids), nrtp


def tshark_fields(path, display_filter, *fields, prefs=()):
    out = subprocess.run(["tshark", "-r", path, *prefs, "-Y", display_filter, "-T", "fields",
                          "-E", "occurrence=a", *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, timeout=60, check=False).stdout
    return [(line.split("\t") + [""] * len(fields))[:len(fields)] for line in out.splitlines()]


def check_rtcp(path, mux):
    """call-rtcp(-mux): RTCP both ways between the RTCP ports (RTP + 1, or the
    RTP ports with rtcp-mux); per direction at least two SRs, each with an
    SDES CNAME, at least one report block whose LSR names the other side's SR,
    and one BYE."""
    problems = []
    rows = tshark_fields(path, "rtcp && !icmp", "udp.srcport", "udp.dstport", "rtcp.pt",
                         "rtcp.ssrc.lsr", "rtcp.sdes.text")
    off = 0 if mux else 1
    for src, dst in ((UAC_RTP + off, UAS_RTP + off), (UAS_RTP + off, UAC_RTP + off)):
        mine = [r for r in rows if r[0] == str(src) and r[1] == str(dst)]
        srs = [r for r in mine if r[2].split(",")[0] == "200"]
        where = f"RTCP {src} -> {dst}"
        if len(srs) < 2:
            problems.append(f"{where}: {len(srs)} sender reports, expected 2 or more")
        if not all(r[4].startswith("sip:") for r in srs):
            problems.append(f"{where}: a sender report without SDES CNAME")
        if not any(r[3] not in ("", "0") for r in srs):
            problems.append(f"{where}: no report block with LSR")
        if len([r for r in mine if r[2].split(",")[0] == "203"]) != 1:
            problems.append(f"{where}: expected one RTCP BYE")
    if len({(r[0], r[1]) for r in rows}) != 2:
        problems.append(f"RTCP on other ports: {sorted({(r[0], r[1]) for r in rows})}")
    return problems


def check_fax_t38(path):
    """fax-t38: the UDPTL packets of call F, as tshark (following the SDP) decodes them."""
    problems = []
    rows = tshark_fields(path, "t38 && !_ws.malformed", "udp.srcport", "udp.dstport")
    for (src, dst), want in (((UAC_RTP, UAS_RTP), len(t38_caller_events())),
                             ((UAS_RTP, UAC_RTP), len(t38_callee_events()))):
        got = len([r for r in rows if r == [str(src), str(dst)]])
        if got != want:
            problems.append(f"T.38 {src} -> {dst}: {got} packets, expected {want}")
    return problems


def check_transfer_hold(path):
    """transfer-hold: each SIP message of both calls on both hops (once from the
    sender to Kamailio, once from Kamailio on), except the 100s, which are
    hop-by-hop; the RTP of each period; carol's 200 before bob's final NOTIFY."""
    problems = []
    rows = tshark_fields(path, "sip || rtp", "frame.number", "udp.srcport", "udp.dstport",
                         "sip.Call-ID", "sip.CSeq.seq", "sip.CSeq.method", "sip.Method",
                         "sip.Status-Code", "sip.Subscription-State", "rtp.ssrc",
                         prefs=TSHARK_SIP + ["-o", "rtp.heuristic_rtp:TRUE"])
    sip = [r for r in rows if r[3]]
    rtp = [r for r in rows if r[9] and not r[3]]
    hops = {}
    for r in sip:
        if r[7] != "100":
            hops.setdefault((r[3], r[4], r[5], r[6], r[7]), []).append(r[0])
    for key, frames in hops.items():
        if len(frames) != 2:
            problems.append(f"{key}: in frames {frames}, expected on two hops")
    main = sip[0][3] if sip else ""

    def frame_of(pred):
        return next((int(r[0]) for r in sip if pred(r)), None)

    answer = frame_of(lambda r: r[3] == main and r[7] == "200" and r[4] == "1" and r[5] == "INVITE")
    held = frame_of(lambda r: r[3] == main and r[6] == "ACK" and r[4] == "2")
    resume = frame_of(lambda r: r[3] == main and r[6] == "INVITE" and r[4] == "3")
    carol_ok = frame_of(lambda r: r[3] != main and r[7] == "200" and r[5] == "INVITE")
    final_notify = frame_of(lambda r: r[6] == "NOTIFY" and r[8].startswith("terminated"))
    if None in (answer, held, resume, carol_ok, final_notify):
        return problems + ["missing the 200 to the INVITE, the hold ACK, the resume re-INVITE, "
                           "carol's 200 or the final NOTIFY"]
    if carol_ok > final_notify:
        problems.append(f"carol's 200 OK (frame {carol_ok}) after the final NOTIFY ({final_notify})")
    want = {(UAC_RTP, UAS_RTP): (XFER_SSRC_UAC, sum(p[2] for p in XFER_UAC_PARTS), 0, 50),
            (UAS_RTP, UAC_RTP): (XFER_SSRC_UAS, sum(p[2] for p in XFER_UAS_PARTS), 25, 0)}
    for (src, dst), (ssrc, total, early, on_hold) in want.items():
        mine = [r for r in rtp if r[1] == str(src) and r[2] == str(dst)]
        where = f"RTP {src} -> {dst}"
        if {int(r[9], 16) for r in mine} != {ssrc}:
            problems.append(f"{where}: SSRCs {sorted({r[9] for r in mine})}, expected {ssrc:#010x}")
        got = (len(mine), len([r for r in mine if int(r[0]) < answer]),
               len([r for r in mine if held < int(r[0]) < resume]))
        if got != (total, early, on_hold):
            problems.append(f"{where}: (packets, before the 200 OK, on hold) = {got}, expected "
                            f"{(total, early, on_hold)}")
    return problems


# Further checks of some captures: name -> function(path) giving a list of problems
CHECKS = {
    "fax-t38": check_fax_t38,
    "transfer-hold": check_transfer_hold,
    "call-rtcp": lambda p: check_rtcp(p, mux=False),
    "call-rtcp-mux": lambda p: check_rtcp(p, mux=True),
}


def setup_loopback():
    cmds = [["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", "lo", "mtu", "1500"],
            ["ethtool", "-K", "lo", "tso", "off", "gso", "off", "gro", "off"]]
    for c in cmds:
        subprocess.run(c, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open("/proc/sys/net/ipv6/conf/lo/disable_ipv6") as f:
        if f.read().strip() != "0":
            subprocess.run(["sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"], check=True)
    addrs = subprocess.run(["ip", "-6", "addr", "show", "dev", "lo"],
                           capture_output=True, text=True).stdout
    if "::1/128" not in addrs:
        subprocess.run(["ip", "-6", "addr", "add", "::1/128", "dev", "lo"], check=True)


def assert_isolated():
    """Refuse to run unless lo is the only network interface (own netns)."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines() if ln.strip()]
    if names != ["lo"]:
        sys.exit(f"refusing to run: interfaces {names} present; use make_samples.sh "
                 "(it runs this inside `unshare -n`)")


def main():
    global WORK, OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="captures to make (default: all)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work dir")
    ap.add_argument("--out", metavar="DIR", default=HERE,
                    help="write the captures to DIR instead of samples/ (created if needed)")
    args = ap.parse_args()
    OUT = os.path.abspath(args.out)
    if os.path.exists(OUT) and not os.path.isdir(OUT):
        sys.exit(f"--out {args.out!r} is not a directory")
    known = [n for n, _ in CAPTURES]
    for n in args.names:
        if n.removesuffix(".pcap") not in known:
            sys.exit(f"unknown capture {n!r}; known: {', '.join(known)}")
    wanted = {n.removesuffix(".pcap") for n in args.names} or set(known)

    assert_isolated()
    # SIGTERM (from `timeout` or a test harness) unwinds like an error, so the
    # `finally` blocks below stop Kamailio, SIPp and tcpdump. Only the first one:
    # `timeout` forwards the signal again to its process group.
    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(f"make_samples.py: stopped by signal {signum}"
                         + (f"; work dir kept: {WORK}" if WORK else ""))
    signal.signal(signal.SIGTERM, on_sigterm)
    setup_loopback()
    os.makedirs(OUT, exist_ok=True)
    WORK = tempfile.mkdtemp(prefix="sipflow-samples-")
    for f in os.listdir(SCENARIOS):
        if f.endswith(".xml"):
            shutil.copy(os.path.join(SCENARIOS, f), WORK)
    make_media_files(WORK)

    k = Kamailio()
    t0 = time.time()
    try:
        k.start()
        for name, fn in CAPTURES:
            if name in wanted:
                fn()
    finally:
        k.stop()
        for p in list(PROCS):
            stop(p)
    log(f"captures done in {time.time() - t0:.1f} s")

    if shutil.which("tshark"):
        log(f"{'file':34} {'SIP msgs':>8} {'Call-IDs':>8} {'RTP':>4}  bytes")
        for name, _ in CAPTURES:
            if name not in wanted:
                continue
            path = os.path.join(OUT, name + ".pcap")
            if not os.path.exists(path):
                FAILURES.append(f"{name}: no capture written ({path})")
                log(f"{name + '.pcap':34} missing   !! expected {EXPECTED.get(name)}")
                continue
            got = tshark_summary(path)
            exp = EXPECTED.get(name)
            flag = "" if exp is None or exp == got else f"   !! expected {exp}"
            if flag:
                FAILURES.append(f"{name}: got {got}, expected {exp}")
            log(f"{name + '.pcap':34} {got[0]:8} {got[1]:8} {got[2]:4}  {os.path.getsize(path)}{flag}")
            for problem in CHECKS[name](path) if name in CHECKS else ():
                FAILURES.append(f"{name}: {problem}")
                log(f"   !! {name}: {problem}")

    if args.keep_work or FAILURES:
        log(f"work dir kept: {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)
    if FAILURES:
        log("FAILURES:\n  " + "\n  ".join(FAILURES))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
