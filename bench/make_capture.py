#!/usr/bin/env python3
"""Write a large, realistic SIP/RTP capture (classic pcap) quickly, in pure Python.

    python bench/make_capture.py OUT.pcap --packets 1000000 [--seed 1] [--calls N]
    python bench/make_capture.py OUT.pcap --workload signalling [--calls 40000] [--seed 1]

The file is a classic little-endian pcap (magic a1b2c3d4, microsecond
timestamps, link type 1 = Ethernet) holding Ethernet/IPv4/UDP frames with
valid IPv4 and UDP checksums:

* Many overlapping SIP calls (UDP port 5060) between user agents in
  198.51.100.0/24 (callers) and 203.0.113.0/24 (callees): answered calls
  (INVITE with SDP offer PCMU/PCMA + telephone-event, 100, 180, 200 with SDP
  answer, ACK, ..., BYE from either side, 200), rejected calls (486, 404,
  then ACK), cancelled calls (CANCEL, 200, 487, ACK), a few INVITE and 200 OK
  retransmissions.
* REGISTER flows to a registrar (203.0.113.2): REGISTER, 401 with a digest
  challenge, REGISTER with a correct MD5 Authorization, 200 (a few 403).
* G.711 RTP both ways for each answered call on the ports from the SDP:
  20 ms packets (160-byte payload), random SSRC, random initial sequence
  number (many streams wrap past 65535) and timestamp, about 0.5 % loss
  (skipped sequence numbers, some in bursts), a few ms of arrival jitter,
  occasional reordering, RFC 4733 DTMF events in some calls, RTCP compound
  packets (SR with a reception report + SDES CNAME, a final BYE in most
  streams) on RTP port + 1.
* Packets are written in timestamp order.

The packet count is exact: the plan is trimmed so that exactly --packets
frames are written.  With --truth FILE a JSON file with the generated ground
truth (calls, streams, injected loss) is written as well.

--workload signalling writes a SIP-only capture instead, shaped like
`tcpdump -i any port 5060` on a busy PBX/SBC: exactly --calls calls (default
40000) with the same call mix, messages and retransmissions as above, starting
every 0.05 s on average (about 1,300 calls up at once), REGISTER flows (401
challenge, digest Authorization, 200 with Contact;expires) from --users
devices (default 10000) at 20 flows/s until the last call has ended, and no
RTP or RTCP.  40000 calls give 438,582 SIP messages, 219 MB (seed 1).
"""

import argparse
import hashlib
import json
import math
import os
import random
import struct
import time
from bisect import bisect_left

USEC = 1_000_000
MSEC = 1_000
PTIME = 20 * MSEC                 # RTP packetisation time, microseconds
SAMPLES = 160                     # 8 kHz * 20 ms
EPOCH = 1710234000                # 2024-03-12 09:00:00 UTC, capture start
NTP_OFFSET = 2208988800
WINDOW = 500 * MSEC               # writer time window
DOMAIN = "example.com"
REGISTRAR_IP = "203.0.113.2"
SIP_PORT = 5060
SIGNALLING_CALLS = 40_000         # default size of the signalling-only workload

PCAP_GLOBAL = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
REC = struct.Struct("<IIII")
# Ethernet + IPv4 + UDP + RTP header for the hot path (all network order):
#   eth+ip[0:4] | ip id | ip[6:10] | ip csum | ip addrs + udp[0:6] | udp csum |
#   rtp[0:2] | seq | timestamp | ssrc + payload
RTP_FRAME = struct.Struct(">18sH4sH14sH2sHI164s")

USER_AGENTS = [
    "Linphone/5.2.0 (belle-sip/5.2.0)",
    "Zoiper rv2.10.19.4",
    "Grandstream GXP2170 1.0.11.23",
    "Yealink SIP-T46S 66.86.0.15",
    "PolycomVVX-VVX_411-UA/6.4.3.5018",
    "MicroSIP/3.21.3",
    "Cisco-CP8845/14.2.1",
    "Asterisk PBX 20.5.0",
]
FIRST_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi",
               "Ivan", "Judy", "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil",
               "Trent", "Victor", "Walter", "Yolanda"]


# --------------------------------------------------------------------------
# Low level helpers

def ip_bytes(ip):
    return bytes(int(x) for x in ip.split("."))


def mac_for(ipb):
    return b"\x02\x00" + ipb          # locally administered, derived from the IP


def csum_words(data):
    """Sum of the 16-bit big-endian words of data (not folded, not inverted)."""
    if len(data) & 1:
        data += b"\x00"
    return sum(struct.unpack(">%dH" % (len(data) // 2), data))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp_frame(src, sport, dst, dport, payload, ipid, ttl):
    """Complete Ethernet/IPv4/UDP frame with valid checksums (slow path)."""
    srcb, dstb = ip_bytes(src), ip_bytes(dst)
    ulen = 8 + len(payload)
    tlen = 20 + ulen
    ipid &= 0xFFFF
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, tlen, ipid, 0x4000, ttl, 17, 0, srcb, dstb)
    ipcs = ~fold(csum_words(hdr)) & 0xFFFF
    hdr = hdr[:10] + struct.pack(">H", ipcs) + hdr[12:]
    pseudo = srcb + dstb + struct.pack(">BBH", 0, 17, ulen)
    uh = struct.pack(">HHHH", sport, dport, ulen, 0)
    ucs = (~fold(csum_words(pseudo + uh + payload)) & 0xFFFF) or 0xFFFF
    uh = uh[:6] + struct.pack(">H", ucs)
    return mac_for(dstb) + mac_for(srcb) + b"\x08\x00" + hdr + uh + payload


def hexid(rng, n):
    return "%0*x" % (n, rng.getrandbits(4 * n))


def md5hex(s):
    return hashlib.md5(s.encode()).hexdigest()


def ulaw_encode(sample):
    """16-bit linear PCM to G.711 mu-law."""
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, CLIP) + BIAS
    exp = 7
    mask = 0x4000
    while exp > 0 and not sample & mask:
        exp -= 1
        mask >>= 1
    mant = (sample >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def alaw_encode(sample):
    """16-bit linear PCM to G.711 A-law."""
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1
    sample = min(sample, 32767) >> 3
    if sample < 32:
        val = sample >> 1
    else:
        seg = 1
        while seg < 7 and sample >= (64 << (seg - 1)):
            seg += 1
        val = (seg << 4) | ((sample >> seg) & 0x0F)
    return (val | sign) ^ 0x55


def make_payloads(rng, encode, count=64):
    """Speech-like 20 ms G.711 frames: a few harmonics with a slow envelope plus noise."""
    frames = []
    for k in range(count):
        amp = 300 + 5000 * (0.5 + 0.5 * math.sin(k * 0.37)) ** 2
        f0 = rng.uniform(90, 220)
        out = bytearray(SAMPLES)
        for j in range(SAMPLES):
            t = (k * SAMPLES + j) / 8000.0
            v = amp * (math.sin(2 * math.pi * f0 * t) + 0.5 * math.sin(4 * math.pi * f0 * t + 1.0)
                       + 0.25 * math.sin(6 * math.pi * f0 * t + 2.0)) + rng.gauss(0, 60)
            out[j] = encode(int(max(-32768, min(32767, v))))
        frames.append(bytes(out))
    return frames


# --------------------------------------------------------------------------
# Plan objects

LOST = object()


class Stream:
    """One RTP stream (one direction of an answered call)."""

    def __init__(self, rng, call, src, sport, dst, dport, pt, start, cname):
        self.call = call
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.pt = pt
        self.start = start
        self.cname = cname
        self.ssrc = rng.getrandbits(32)
        if rng.random() < 0.05:                      # make sure some wrap early
            self.seq0 = rng.randint(64500, 65535)
        else:
            self.seq0 = rng.getrandbits(16)
        self.ts0 = rng.getrandbits(32)
        self.id0 = rng.getrandbits(16)
        r = rng.random()
        if r < 0.70:
            self.jitter = rng.randint(300, 3000)
        elif r < 0.95:
            self.jitter = rng.randint(3000, 8000)
        else:
            self.jitter = rng.randint(8000, 15000)
        self.n = 0
        self.lost = []
        self.rtcp_pos = []
        self.rtcp_bye = rng.random() < 0.6
        self.dtmf = []          # (first index, digit code, packets)
        self.reorder = []
        self.peer = None
        self.next_i = 0

    def init_random(self, rng, n_max, dtmf):
        """Loss, reordering, RTCP and DTMF positions for up to n_max packets."""
        r = rng.random()
        if r < 0.6:
            rate = rng.uniform(0.0, 0.003)
        elif r < 0.9:
            rate = rng.uniform(0.003, 0.01)
        else:
            rate = rng.uniform(0.01, 0.025)
        target = int(round(n_max * rate))
        lost = set()
        if n_max > 20:
            while len(lost) < target:
                pos = rng.randint(1, n_max - 2)
                b = rng.random()
                burst = 1 if b < 0.85 else (2 if b < 0.95 else rng.randint(3, 6))
                for k in range(pos, min(pos + burst, n_max - 1)):
                    lost.add(k)
        self.lost = sorted(lost)
        busy = set(lost)
        busy.add(0)
        if dtmf and n_max > 600:
            i = rng.randint(100, 250)
            for _ in range(rng.randint(1, 4)):
                length = rng.randint(5, 8)
                self.dtmf.append((i, rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 11]), length))
                busy.update(range(i, i + length + 2))
                i += length + 2 + rng.randint(10, 40)
        nre = sum(1 for _ in range(max(1, n_max // 200)) if rng.random() < 0.2)
        for _ in range(nre):
            i = rng.randint(1, max(1, n_max - 3))
            if i not in busy and i + 1 not in busy:
                self.reorder.append(i)
                busy.add(i)
        p = rng.randint(100, 300)
        pos = []
        while p < n_max:
            pos.append(p)
            p += rng.randint(250, 500)              # 5-10 s between SRs
        self.rtcp_pos = pos

    def count(self, n=None):
        n = self.n if n is None else n
        return n - bisect_left(self.lost, n) + bisect_left(self.rtcp_pos, n) + (1 if self.rtcp_bye else 0)

    def finish(self, payloads):
        """Precompute the hot-path constants once n is final."""
        srcb, dstb = ip_bytes(self.src), ip_bytes(self.dst)
        self.srcb, self.dstb = srcb, dstb
        ttl = 64
        self.ttl = ttl
        eth = mac_for(dstb) + mac_for(srcb) + b"\x08\x00"
        self.pre = eth + b"\x45\x00" + struct.pack(">H", 200)
        self.mid = struct.pack(">HBB", 0x4000, ttl, 17)
        self.ipbase = fold(0x4500 + 200 + 0x4000 + ((ttl << 8) | 17) + csum_words(srcb + dstb))
        self.addrs = srcb + dstb + struct.pack(">HHH", self.sport, self.dport, 180)
        self.b01 = bytes([0x80, self.pt])
        ssrcb = struct.pack(">I", self.ssrc)
        self.tails = [ssrcb + p for p in payloads]
        ubase = (csum_words(srcb + dstb) + 17 + 180 + self.sport + self.dport + 180
                 + ((0x80 << 8) | self.pt) + (self.ssrc >> 16) + (self.ssrc & 0xFFFF))
        self.ubk = [fold(ubase + csum_words(p)) for p in payloads]
        self.poff = self.ssrc & 63
        sp = {}
        n = self.n
        for i in self.reorder:
            if i < n:
                sp[i] = ("R", PTIME + self.jitter + 1000 + (self.ssrc + i) % 19000)
        for first, code, length in self.dtmf:
            for k in range(length + 2):
                i = first + k
                if i < n:
                    end = k >= length - 1
                    dur = SAMPLES * min(k + 1, length)
                    sp[i] = ("D", first, code, end, dur, k == 0)
        sp[0] = ("M",)
        for i in self.lost:
            if i < n:
                sp[i] = LOST
        self.special = sp
        self.next_i = 0

    def special_packet(self, i, sp, rnd):
        seq = (self.seq0 + i) & 0xFFFF
        arr = self.start + i * PTIME + int(rnd() * self.jitter)
        pt, marker = self.pt, 0
        ts = (self.ts0 + SAMPLES * i) & 0xFFFFFFFF
        payload = self.tails[(i + self.poff) & 63][4:]
        if sp[0] == "M":
            marker = 1
        elif sp[0] == "R":
            arr += sp[1]
        elif sp[0] == "D":
            _, first, code, end, dur, mark = sp
            pt, marker = 101, 1 if mark else 0
            ts = (self.ts0 + SAMPLES * first) & 0xFFFFFFFF
            payload = struct.pack(">BBH", code, (0x80 if end else 0) | 10, dur)
        rtp = struct.pack(">BBHII", 0x80, (marker << 7) | pt, seq, ts, self.ssrc) + payload
        return (arr, udp_frame(self.src, self.sport, self.dst, self.dport, rtp,
                               self.id0 + i, self.ttl))


class Call:
    pass


# --------------------------------------------------------------------------
# Planner

class Planner:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        rng = self.rng
        # media=False (signalling workload): no RTP streams are planned for answered calls
        self.media = getattr(args, "workload", "rtp") != "signalling"
        self.callers = ["198.51.100.%d" % i for i in range(10, 251)]
        self.callees = ["203.0.113.%d" % i for i in range(10, 251)]
        self.next_port = {}
        self.ua_of = {}
        self.calls = []
        self.regs = []
        self.users = {}
        # registered users: by default 2000-2999 on the caller side, 3000-3999 on the callee
        # side; the signalling workload has --users in all (20000.. and 30000..)
        per_side = getattr(args, "users", 2000) // 2
        self.per_side = per_side
        self.caller_base, self.callee_base = (2000, 3000) if per_side <= 1000 else (20000, 30000)
        for u in range(self.caller_base, self.caller_base + per_side):
            self.users[str(u)] = self.callers[u % len(self.callers)]
        for u in range(self.callee_base, self.callee_base + per_side):
            self.users[str(u)] = self.callees[u % len(self.callees)]
        self.user_names = {u: "%s %s" % (rng.choice(FIRST_NAMES), u) for u in self.users}
        self.reg_state = {}
        self.reg_t = 0.05 * USEC
        self.call_t = 0.1 * USEC

    # -- helpers
    def ua(self, ip):
        if ip not in self.ua_of:
            self.ua_of[ip] = self.rng.choice(USER_AGENTS)
        return self.ua_of[ip]

    def media_port(self, ip):
        p = self.next_port.get(ip)
        if p is None:
            p = 10000 + 2 * self.rng.randint(0, 5000)
        nxt = p + 2
        if nxt >= 60000:
            nxt = 10000
        self.next_port[ip] = nxt
        return p

    # -- calls
    def new_call(self, mean_talk):
        rng = self.rng
        c = Call()
        c.t0 = int(self.call_t)
        self.call_t += rng.expovariate(1.0 / self.args.interarrival) * USEC
        r = rng.random()
        if r < 0.80:
            c.kind = "answered"
        elif r < 0.87:
            c.kind = "busy"
        elif r < 0.92:
            c.kind = "notfound"
        else:
            c.kind = "cancelled"
        c.caller = str(rng.randint(self.caller_base, self.caller_base + self.per_side - 1))
        c.callee = str(rng.randint(self.callee_base, self.callee_base + self.per_side - 1))
        c.aip, c.bip = self.users[c.caller], self.users[c.callee]
        c.call_id = "%s@%s" % (hexid(rng, 24), c.aip)
        c.ftag, c.ttag = hexid(rng, 10), hexid(rng, 10)
        c.branch = "z9hG4bK" + hexid(rng, 16)
        c.cseq = rng.randint(1, 30000)
        c.bcseq = rng.randint(1, 30000)
        c.offer = [0, 8, 101] if rng.random() < 0.7 else [8, 0, 101]
        c.pt = c.offer[0]
        c.aport, c.bport = self.media_port(c.aip), self.media_port(c.bip)
        c.sess_a, c.sess_b = rng.randint(10 ** 8, 10 ** 10), rng.randint(10 ** 8, 10 ** 10)
        c.invite_retx = rng.random() < 0.03
        c.ok_retx = c.kind == "answered" and rng.random() < 0.02
        c.d100 = rng.randint(3, 30) * MSEC
        c.d180 = rng.randint(30, 300) * MSEC
        c.ring = rng.randint(1000, 9000) * MSEC
        c.rtt = rng.randint(10, 80) * MSEC
        c.bye_by_caller = rng.random() < 0.55
        c.dtmf = rng.random() < 0.15
        t = c.t0 + (500 * MSEC if c.invite_retx else 0)
        c.t100 = t + c.d100
        c.streams = []
        if c.kind == "answered":
            c.t180 = c.t100 + c.d180
            c.t200 = c.t180 + c.ring
            c.tack = c.t200 + (500 * MSEC if c.ok_retx else 0) + c.rtt
            if self.media:
                c.a = Stream(rng, c, c.aip, c.aport, c.bip, c.bport, c.pt, c.tack + 5 * MSEC,
                             "%s@%s" % (c.caller, c.aip))
                c.b = Stream(rng, c, c.bip, c.bport, c.aip, c.aport, c.pt,
                             c.t200 + rng.randint(5, 25) * MSEC, "%s@%s" % (c.callee, c.bip))
                c.a.peer, c.b.peer = c.b, c.a
                c.streams = [c.a, c.b]
            lo, hi = self.args.min_talk, self.args.max_talk
            if mean_talk is not None:
                lo, hi = 0.3 * mean_talk, 1.7 * mean_talk
            c.talk = int(rng.uniform(lo, hi) * USEC)
            self.layout(c, c.talk)
            if self.media:
                c.a.init_random(rng, c.a.n, c.dtmf)
                c.b.init_random(rng, c.b.n, False)
            c.nsip = 7 + c.invite_retx + c.ok_retx
        elif c.kind in ("busy", "notfound"):
            c.tfinal = c.t100 + rng.randint(20, 600) * MSEC
            c.tack = c.tfinal + c.rtt
            c.end = c.tack
            c.nsip = 4 + c.invite_retx
        else:
            c.t180 = c.t100 + c.d180
            c.tcancel = c.t180 + rng.randint(2000, 20000) * MSEC
            c.end = c.tcancel + 2 * c.rtt
            c.nsip = 7 + c.invite_retx
        return c

    @staticmethod
    def layout(c, talk):
        """Place BYE and stream ends for a talk time (microseconds)."""
        c.talk = talk
        c.tbye = c.tack + talk
        half = c.rtt // 2
        if c.bye_by_caller:
            stop_a, stop_b = c.tbye, c.tbye + half
        else:
            stop_a, stop_b = c.tbye + half, c.tbye
        if c.streams:
            for s, stop in ((c.a, stop_a), (c.b, stop_b)):
                s.n = max(1, -(-(stop - s.start) // PTIME))
        c.t200bye = c.tbye + c.rtt
        c.end = c.t200bye

    @staticmethod
    def call_count(c):
        return c.nsip + sum(s.count() for s in c.streams)

    # -- registrations
    def new_reg(self):
        rng = self.rng
        t = int(self.reg_t)
        self.reg_t += rng.expovariate(self.args.reg_rate) * USEC
        if rng.random() < 0.3:          # a set of chatty devices re-registers often
            user = str(rng.choice((self.caller_base, self.callee_base)) + rng.randint(0, 99))
        elif self.caller_base == 2000 and self.per_side == 1000:
            user = str(rng.randint(2000, 3999))
        else:
            k = rng.randint(0, 2 * self.per_side - 1)
            user = str((self.caller_base + k) if k < self.per_side
                       else (self.callee_base + k - self.per_side))
        st = self.reg_state.get(user)
        if st is None:
            st = self.reg_state[user] = {"call_id": "%s@%s" % (hexid(rng, 20), self.users[user]),
                                         "tag": hexid(rng, 8), "cseq": rng.randint(1, 5000)}
        r = {"t": t, "user": user, "ip": self.users[user], "st": st,
             "cseq": st["cseq"], "fail": rng.random() < 0.02,
             "d1": rng.randint(2, 20) * MSEC, "d2": rng.randint(5, 60) * MSEC,
             "d3": rng.randint(2, 30) * MSEC, "nonce": hexid(rng, 32),
             "cnonce": hexid(rng, 16), "b1": "z9hG4bK" + hexid(rng, 16),
             "b2": "z9hG4bK" + hexid(rng, 16), "rtag": hexid(rng, 10)}
        st["cseq"] += 2
        if not self.media:
            # signalling workload (20 flows/s): a device does not start a refresh while its
            # previous REGISTER flow is still open, or its CSeq would seem to go backwards
            if r["t"] < st.get("free", 0):
                r["t"] = st["free"] + 20 * MSEC
            st["free"] = r["t"] + r["d1"] + r["d2"] + r["d3"]
        return r

    def plan(self):
        args = self.args
        N = args.packets
        mean_talk = None
        if args.calls:
            # spend the packet budget on about --calls calls
            mean_talk = max(1.0, N / (args.calls * 0.8 * 2 * (USEC / PTIME) * 1.004))
        total_calls = 0
        horizon = 0
        regs = self.regs
        total_regs = 0
        while total_calls + total_regs < N:
            c = self.new_call(mean_talk)
            self.calls.append(c)
            total_calls += self.call_count(c)
            horizon = max(horizon, c.end)
            while self.reg_t < horizon:
                regs.append(self.new_reg())
                total_regs += 4
        # trim talk time of the latest answered calls until total <= N
        surplus = total_calls + total_regs - N
        answered = [c for c in self.calls if c.kind == "answered"]
        group = min(8, len(answered))  # spread the cut over the last few answered calls
        for k, c in enumerate(reversed(answered)):
            if surplus <= 0:
                break
            cur = self.call_count(c)
            share = -(-surplus // (group - k)) if k < group - 1 else surplus
            target = cur - share
            lo, hi = int(self.args.min_trim * USEC), c.talk       # binary search largest talk
            if self.try_talk(c, lo) > target:
                self.layout(c, lo)
                surplus -= cur - self.call_count(c)
                continue
            while hi - lo > MSEC:
                mid = (lo + hi) // 2
                if self.try_talk(c, mid) <= target:
                    lo = mid
                else:
                    hi = mid
            self.layout(c, lo)
            surplus -= cur - self.call_count(c)
        # fine adjustment with the optional RTCP BYE of each stream
        streams = [s for c in reversed(answered) for s in c.streams]
        for s in streams:
            if surplus == 0:
                break
            if surplus < 0 and not s.rtcp_bye:
                s.rtcp_bye = True
                surplus += 1
            elif surplus > 0 and s.rtcp_bye:
                s.rtcp_bye = False
                surplus -= 1
        self.expected = N + surplus

    def plan_signalling(self):
        """SIP only: exactly --calls calls, REGISTER flows until the last call has ended."""
        horizon = 0
        regs = self.regs
        for _ in range(self.args.calls):
            c = self.new_call(None)
            self.calls.append(c)
            horizon = max(horizon, c.end)
            while self.reg_t < horizon:
                regs.append(self.new_reg())
        self.expected = sum(c.nsip for c in self.calls) + 4 * len(regs)

    def try_talk(self, c, talk):
        old = c.talk
        self.layout(c, talk)
        n = self.call_count(c)
        self.layout(c, old)
        return n


# --------------------------------------------------------------------------
# SIP / RTCP message builders (slow path, a few thousand messages)

def sip(start, headers, body=b""):
    head = start + "\r\n" + "\r\n".join(headers) + "\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head.encode() + body


def sdp(user, ip, sess, port, pts):
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}
    lines = ["v=0", "o=%s %d %d IN IP4 %s" % (user, sess, sess, ip), "s=Talk",
             "c=IN IP4 %s" % ip, "t=0 0",
             "m=audio %d RTP/AVP %s" % (port, " ".join(map(str, pts)))]
    for pt in pts:
        lines.append("a=rtpmap:%d %s" % (pt, names[pt]))
    lines += ["a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv", ""]
    return "\r\n".join(lines).encode()


class Builder:
    def __init__(self, planner):
        self.p = planner
        self.rng = random.Random(planner.args.seed + 7)
        self.events = []          # (t, frame)
        self.nsip = 0
        self.requests = {}        # method -> messages (retransmissions included)
        self.responses = {}       # status code -> messages
        self.ipid = {}

    def send(self, t, src, dst, payload, sport=SIP_PORT, dport=SIP_PORT):
        ipid = self.ipid.get(src)
        if ipid is None:
            ipid = self.rng.getrandbits(16)
        self.ipid[src] = ipid + 1
        self.events.append((t, udp_frame(src, sport, dst, dport, payload, ipid, 64)))

    def sipmsg(self, t, src, dst, msg):
        self.nsip += 1
        if msg.startswith(b"SIP/2.0 "):
            key, count = msg[8:11].decode(), self.responses
        else:
            key, count = msg[:msg.index(b" ")].decode(), self.requests
        count[key] = count.get(key, 0) + 1
        self.send(t, src, dst, msg)

    def call(self, c):
        P = self.p
        rng = self.rng
        a, b = c.aip, c.bip
        name = P.user_names[c.caller]
        ruri = "sip:%s@%s:%d" % (c.callee, b, SIP_PORT)
        via = "Via: SIP/2.0/UDP %s:%d;branch=%s" % (a, SIP_PORT, c.branch)
        frm = 'From: "%s" <sip:%s@%s>;tag=%s' % (name, c.caller, DOMAIN, c.ftag)
        to = "To: <sip:%s@%s>" % (c.callee, DOMAIN)
        tot = to + ";tag=" + c.ttag
        cid = "Call-ID: " + c.call_id
        cs = "CSeq: %d INVITE" % c.cseq
        allow = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REFER"
        acontact = "Contact: <sip:%s@%s:%d>" % (c.caller, a, SIP_PORT)
        bcontact = "Contact: <sip:%s@%s:%d>" % (c.callee, b, SIP_PORT)
        invite = sip("INVITE %s SIP/2.0" % ruri,
                     [via, "Max-Forwards: 70", frm, to, cid, cs, acontact, allow,
                      "Supported: replaces, timer", "User-Agent: " + P.ua(a),
                      "Content-Type: application/sdp"],
                     sdp(c.caller, a, c.sess_a, c.aport, c.offer))
        self.sipmsg(c.t0, a, b, invite)
        if c.invite_retx:
            self.sipmsg(c.t0 + 500 * MSEC, a, b, invite)
        self.sipmsg(c.t100, b, a, sip("SIP/2.0 100 Trying", [via, frm, to, cid, cs]))
        server = "Server: " + P.ua(b)
        if c.kind in ("busy", "notfound"):
            status = "486 Busy Here" if c.kind == "busy" else "404 Not Found"
            self.sipmsg(c.tfinal, b, a, sip("SIP/2.0 " + status, [via, frm, tot, cid, cs, server]))
            self.sipmsg(c.tack, a, b, sip("ACK %s SIP/2.0" % ruri,
                                           [via, "Max-Forwards: 70", frm, tot, cid,
                                            "CSeq: %d ACK" % c.cseq]))
            return
        self.sipmsg(c.t180, b, a, sip("SIP/2.0 180 Ringing", [via, frm, tot, cid, cs, bcontact, server]))
        if c.kind == "cancelled":
            ccs = "CSeq: %d CANCEL" % c.cseq
            t = c.tcancel
            self.sipmsg(t, a, b, sip("CANCEL %s SIP/2.0" % ruri,
                                      [via, "Max-Forwards: 70", frm, to, cid, ccs,
                                       "Reason: SIP;cause=487;text=\"Request Terminated\""]))
            self.sipmsg(t + c.rtt // 2, b, a, sip("SIP/2.0 200 OK", [via, frm, tot, cid, ccs, server]))
            self.sipmsg(t + c.rtt // 2 + MSEC, b, a,
                        sip("SIP/2.0 487 Request Terminated", [via, frm, tot, cid, cs, server]))
            self.sipmsg(t + c.rtt + MSEC, a, b, sip("ACK %s SIP/2.0" % ruri,
                                                     [via, "Max-Forwards: 70", frm, tot, cid,
                                                      "CSeq: %d ACK" % c.cseq]))
            return
        ok = sip("SIP/2.0 200 OK", [via, frm, tot, cid, cs, bcontact, allow,
                                    "Supported: replaces, timer", server,
                                    "Content-Type: application/sdp"],
                 sdp(c.callee, b, c.sess_b, c.bport, [c.pt, 101]))
        self.sipmsg(c.t200, b, a, ok)
        if c.ok_retx:
            self.sipmsg(c.t200 + 500 * MSEC, b, a, ok)
        bruri = "sip:%s@%s:%d" % (c.callee, b, SIP_PORT)
        self.sipmsg(c.tack, a, b, sip("ACK %s SIP/2.0" % bruri,
                                       ["Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s" % (a, SIP_PORT, hexid(rng, 16)),
                                        "Max-Forwards: 70", frm, tot, cid, "CSeq: %d ACK" % c.cseq]))
        if c.bye_by_caller:
            bvia = "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s" % (a, SIP_PORT, hexid(rng, 16))
            bcs = "CSeq: %d BYE" % (c.cseq + 1)
            self.sipmsg(c.tbye, a, b, sip("BYE %s SIP/2.0" % bruri,
                                           [bvia, "Max-Forwards: 70", frm, tot, cid, bcs,
                                            "User-Agent: " + P.ua(a)]))
            self.sipmsg(c.t200bye, b, a, sip("SIP/2.0 200 OK", [bvia, frm, tot, cid, bcs, server]))
        else:
            bvia = "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s" % (b, SIP_PORT, hexid(rng, 16))
            bfrm = "From: <sip:%s@%s>;tag=%s" % (c.callee, DOMAIN, c.ttag)
            bto = 'To: "%s" <sip:%s@%s>;tag=%s' % (name, c.caller, DOMAIN, c.ftag)
            bcs = "CSeq: %d BYE" % c.bcseq
            self.sipmsg(c.tbye, b, a, sip("BYE sip:%s@%s:%d SIP/2.0" % (c.caller, a, SIP_PORT),
                                           [bvia, "Max-Forwards: 70", bfrm, bto, cid, bcs,
                                            "User-Agent: " + P.ua(b)]))
            self.sipmsg(c.t200bye, a, b, sip("SIP/2.0 200 OK", [bvia, bfrm, bto, cid, bcs,
                                                                "Server: " + P.ua(a)]))

    def register(self, r):
        P = self.p
        user, ip, st = r["user"], r["ip"], r["st"]
        realm = DOMAIN
        uri = "sip:" + DOMAIN
        frm = "From: <sip:%s@%s>;tag=%s" % (user, DOMAIN, st["tag"])
        to = "To: <sip:%s@%s>" % (user, DOMAIN)
        tot = to + ";tag=" + r["rtag"]
        cid = "Call-ID: " + st["call_id"]
        contact = "Contact: <sip:%s@%s:%d>" % (user, ip, SIP_PORT)
        ua = "User-Agent: " + P.ua(ip)
        v1 = "Via: SIP/2.0/UDP %s:%d;branch=%s" % (ip, SIP_PORT, r["b1"])
        v2 = "Via: SIP/2.0/UDP %s:%d;branch=%s" % (ip, SIP_PORT, r["b2"])
        cs1 = "CSeq: %d REGISTER" % r["cseq"]
        cs2 = "CSeq: %d REGISTER" % (r["cseq"] + 1)
        t = r["t"]
        self.sipmsg(t, ip, REGISTRAR_IP, sip("REGISTER %s SIP/2.0" % uri,
                                              [v1, "Max-Forwards: 70", frm, to, cid, cs1, contact,
                                               "Expires: 600", ua]))
        t += r["d1"]
        nonce = r["nonce"]
        self.sipmsg(t, REGISTRAR_IP, ip, sip("SIP/2.0 401 Unauthorized",
                                              [v1, frm, tot, cid, cs1,
                                               'WWW-Authenticate: Digest realm="%s", nonce="%s", '
                                               'algorithm=MD5, qop="auth"' % (realm, nonce),
                                               "Server: Kamailio (5.7.2 (x86_64/linux))"]))
        t += r["d2"]
        password = "wrong" if r["fail"] else "secret" + user
        ha1 = md5hex("%s:%s:%s" % (user, realm, password))
        ha2 = md5hex("REGISTER:" + uri)
        resp = md5hex("%s:%s:00000001:%s:auth:%s" % (ha1, nonce, r["cnonce"], ha2))
        auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", '
                'response="%s", algorithm=MD5, cnonce="%s", qop=auth, nc=00000001'
                % (user, realm, nonce, uri, resp, r["cnonce"]))
        self.sipmsg(t, ip, REGISTRAR_IP, sip("REGISTER %s SIP/2.0" % uri,
                                              [v2, "Max-Forwards: 70", frm, to, cid, cs2, contact,
                                               auth, "Expires: 600", ua]))
        t += r["d3"]
        if r["fail"]:
            final = sip("SIP/2.0 403 Forbidden", [v2, frm, tot, cid, cs2,
                                                  "Server: Kamailio (5.7.2 (x86_64/linux))"])
        else:
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(EPOCH + t // USEC))
            final = sip("SIP/2.0 200 OK", [v2, frm, tot, cid, cs2, contact + ";expires=600",
                                           "Date: " + date,
                                           "Server: Kamailio (5.7.2 (x86_64/linux))"])
        self.sipmsg(t, REGISTRAR_IP, ip, final)

    # -- RTCP
    @staticmethod
    def ntp(t):
        us = EPOCH * USEC + t
        sec, frac = divmod(us, USEC)
        return sec + NTP_OFFSET, (frac << 32) // USEC

    def rtcp(self, s):
        peer = s.peer
        sr_times = []
        prev_q = prev_lost = 0
        positions = [p for p in s.rtcp_pos if p < s.n]
        out = []
        for idx, p in enumerate(positions + ([s.n - 1] if s.rtcp_bye else [])):
            bye = s.rtcp_bye and idx == len(positions)
            t = s.start + p * PTIME + (10 if bye else 7) * MSEC
            hi, lo = self.ntp(t)
            sr_times.append((t, ((hi & 0xFFFF) << 16) | (lo >> 16)))
            block = b""
            if peer.start < t:
                q = min(peer.n, (t - peer.start) // PTIME + 1)
                lost = bisect_left(peer.lost, q)
                exp_int, lost_int = q - prev_q, lost - prev_lost
                frac = min(255, (lost_int * 256) // exp_int) if exp_int > 0 and lost_int > 0 else 0
                prev_q, prev_lost = q, lost
                jit = peer.jitter * 8 // 3000
                lsr = dlsr = 0
                for pt_, mid in reversed(getattr(peer, "sr_times", [])):
                    if pt_ < t:
                        lsr, dlsr = mid, ((t - pt_) * 65536) // USEC
                        break
                block = struct.pack(">IIIIII", peer.ssrc, (frac << 24) | (lost & 0xFFFFFF),
                                    peer.seq0 + q - 1, jit, lsr, dlsr)
            rc = 1 if block else 0
            sr = struct.pack(">BBHIIIIII", 0x80 | rc, 200, 6 + 6 * rc, s.ssrc, hi, lo,
                             (s.ts0 + SAMPLES * p) & 0xFFFFFFFF, p + 1, SAMPLES * (p + 1)) + block
            cname = s.cname.encode()
            chunk = struct.pack(">IBB", s.ssrc, 1, len(cname)) + cname + b"\x00"
            chunk += b"\x00" * (-len(chunk) % 4)
            sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
            pkt = sr + sdes
            if bye:
                pkt += struct.pack(">BBHI", 0x81, 203, 1, s.ssrc)
            out.append((t, pkt))
        s.sr_times = sr_times
        return out

    def build(self):
        P = self.p
        for c in P.calls:
            self.call(c)
        for r in P.regs:
            self.register(r)
        streams = [s for c in P.calls for s in c.streams]
        # SR contents reference the peer's earlier SRs: compute all SR times first
        for s in streams:
            self.rtcp(s)
        nrtcp = 0
        for s in streams:
            for t, pkt in self.rtcp(s):
                self.send(t, s.src, s.dst, pkt, s.sport + 1, s.dport + 1)
                nrtcp += 1
        self.events.sort()
        self.nrtcp = nrtcp
        return streams


# --------------------------------------------------------------------------
# Writer

def emit(s, t_end, items, rnd, pack):
    """Append (arrival, frame) for packets of s whose send time is < t_end."""
    i0 = s.next_i
    hi = -(-(t_end - s.start) // PTIME)
    if hi > s.n:
        hi = s.n
    if hi <= i0:
        return
    s.next_i = hi
    start, J = s.start, s.jitter
    seq0, ts0, id0 = s.seq0, s.ts0, s.id0
    ipbase, ubk, tails, off = s.ipbase, s.ubk, s.tails, s.poff
    pre, mid, addrs, b01 = s.pre, s.mid, s.addrs, s.b01
    sp_get = s.special.get
    append = items.append
    for i in range(i0, hi):
        sp = sp_get(i)
        if sp is not None:
            if sp is not LOST:
                append(s.special_packet(i, sp, rnd))
            continue
        seq = (seq0 + i) & 0xFFFF
        ts = (ts0 + 160 * i) & 0xFFFFFFFF
        ipid = (id0 + i) & 0xFFFF
        c = ipbase + ipid
        c = (c & 0xFFFF) + (c >> 16)
        k = (i + off) & 63
        u = ubk[k] + seq + (ts >> 16) + (ts & 0xFFFF)
        u = (u & 0xFFFF) + (u >> 16)
        u = (u & 0xFFFF) + (u >> 16)
        append((start + i * PTIME + int(rnd() * J),
                pack(pre, ipid, mid, ~c & 0xFFFF, addrs, (~u & 0xFFFF) or 0xFFFF,
                     b01, seq, ts, tails[k])))


def write(path, streams, events, limit, rng):
    rnd = rng.random
    pack = RTP_FRAME.pack
    recpack = REC.pack
    streams = sorted(streams, key=lambda s: s.start)
    si = 0
    ei = 0
    active = []
    pending = []
    written = 0
    t = 0
    base = EPOCH * USEC
    ne, ns = len(events), len(streams)
    first = last = None
    with open(path, "wb", buffering=0) as f:
        f.write(PCAP_GLOBAL)
        while True:
            t_end = t + WINDOW
            while si < ns and streams[si].start < t_end:
                active.append(streams[si])
                si += 1
            items = pending
            for s in active:
                emit(s, t_end, items, rnd, pack)
            if active:
                active = [s for s in active if s.next_i < s.n]
            while ei < ne and events[ei][0] < t_end:
                items.append(events[ei])
                ei += 1
            items.sort()
            cut = bisect_left(items, (t_end,))
            out = []
            add = out.append
            for k in range(cut):
                arr, frame = items[k]
                sec, us = divmod(base + arr, USEC)
                ln = len(frame)
                add(recpack(sec, us, ln, ln))
                add(frame)
            if written + cut > limit:
                out = out[:2 * (limit - written)]
                cut = limit - written
            if cut:
                if first is None:
                    first = items[0][0]
                last = items[cut - 1][0]
            written += cut
            f.write(b"".join(out))
            pending = items[cut:]
            t = t_end
            if written >= limit or (si >= ns and ei >= ne and not active and not pending):
                break
    return written, (last - first if written else 0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output pcap file")
    ap.add_argument("--workload", choices=("rtp", "signalling"), default="rtp",
                    help="rtp: SIP calls with their RTP/RTCP, exactly --packets frames (default); "
                         "signalling: SIP only, exactly --calls calls plus registrations")
    ap.add_argument("--packets", type=int, default=None,
                    help="rtp: exact number of packets (default 1000000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--calls", type=int, default=None,
                    help="rtp: approximate number of calls (default: derived from --packets, "
                         "talk time 20-120 s); signalling: exact number of calls (default %d)"
                    % SIGNALLING_CALLS)
    ap.add_argument("--interarrival", type=float, default=None,
                    help="mean seconds between call starts (default 0.25; signalling 0.05)")
    ap.add_argument("--reg-rate", type=float, default=None,
                    help="REGISTER flows per second (default 1; signalling 20)")
    ap.add_argument("--users", type=int, default=None,
                    help="registered users, half callers, half callees (default 2000 = "
                         "2000-2999 and 3000-3999; signalling 10000 = 20000-24999 and 30000-34999)")
    ap.add_argument("--min-talk", type=float, default=20.0, help=argparse.SUPPRESS)
    ap.add_argument("--max-talk", type=float, default=120.0, help=argparse.SUPPRESS)
    ap.add_argument("--min-trim", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--truth", metavar="JSON", help="also write the generated ground truth here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    signalling = args.workload == "signalling"
    if signalling:
        if args.packets is not None:
            ap.error("--packets is for the rtp workload; size the signalling workload with --calls")
        args.calls = SIGNALLING_CALLS if args.calls is None else args.calls
        if args.calls < 1:
            ap.error("--calls must be positive")
        defaults = (0.05, 20.0, 10000)
    else:
        args.packets = 1_000_000 if args.packets is None else args.packets
        args.calls = args.calls or 0
        if args.packets < 1:
            ap.error("--packets must be positive")
        defaults = (0.25, 1.0, 2000)
    for name, value in zip(("interarrival", "reg_rate", "users"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.users < 200 or args.users % 2 or (not signalling and args.users != 2000):
        ap.error("--users must be even and >= 200 (and is fixed at 2000 for the rtp workload)")

    t_start = time.perf_counter()
    planner = Planner(args)
    if signalling:
        planner.plan_signalling()
    else:
        planner.plan()
        prng = random.Random(args.seed + 11)
        pcmu = make_payloads(prng, ulaw_encode)
        pcma = make_payloads(prng, alaw_encode)
    builder = Builder(planner)
    streams = builder.build()
    for s in streams:
        s.finish(pcmu if s.pt == 0 else pcma)
    t_plan = time.perf_counter() - t_start
    limit = len(builder.events) if signalling else args.packets
    written, span = write(args.out, streams, builder.events, limit, random.Random(args.seed + 3))
    elapsed = time.perf_counter() - t_start
    size = os.path.getsize(args.out)

    kinds = {}
    for c in planner.calls:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    nlost = sum(bisect_left(s.lost, s.n) for s in streams)
    nsent = sum(s.n for s in streams)
    nrtp = nsent - nlost
    wraps = sum(1 for s in streams if s.seq0 + s.n - 1 > 0xFFFF)
    # concurrency at the busiest moment
    ev = sorted([(c.t0, 1) for c in planner.calls] + [(c.end, -1) for c in planner.calls])
    cur = peak = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    summary = {
        "file": args.out,
        "packets": written,
        "planned_packets": planner.expected,
        "bytes": size,
        "seconds": round(elapsed, 2),
        "sip_messages": builder.nsip,
        "calls": len(planner.calls),
        "calls_by_outcome": kinds,
        "peak_concurrent_calls": peak,
        "register_flows": len(planner.regs),
        "register_call_ids": len({r["st"]["call_id"] for r in planner.regs}),
        "rtp_streams": len(streams),
        "rtp_packets": nrtp,
        "rtp_lost_injected": nlost,
        "rtp_loss_percent": round(100.0 * nlost / nsent, 3) if nsent else 0.0,
        "rtp_reordered": sum(1 for s in streams for i in s.reorder
                             if s.special.get(i) is not LOST and i in s.special
                             and s.special[i][0] == "R"),
        "streams_wrapping_seq": wraps,
        "rtcp_packets": builder.nrtcp,
        "sip_retransmissions": sum(int(c.invite_retx) + int(c.ok_retx) for c in planner.calls),
        "capture_seconds": round(span / USEC, 1),
        "seed": args.seed,
    }
    if signalling:
        summary["workload"] = "signalling"
        summary["register_failed"] = sum(1 for r in planner.regs if r["fail"])
        summary["sip_requests"] = dict(sorted(builder.requests.items()))
        summary["sip_responses"] = dict(sorted(builder.responses.items()))
        summary["users"] = args.users
        summary["interarrival"] = args.interarrival
        summary["reg_rate"] = args.reg_rate
    if args.truth:
        truth = dict(summary)
        truth["call_list"] = [{
            "call_id": c.call_id, "outcome": c.kind, "caller": c.caller, "callee": c.callee,
            "caller_ip": c.aip, "callee_ip": c.bip, "start": round(c.t0 / USEC, 6),
            "end": round(c.end / USEC, 6), "codec": ("PCMU" if c.pt == 0 else "PCMA"),
            "invite_retransmitted": bool(c.invite_retx)} for c in planner.calls]
        truth["stream_list"] = [{
            "ssrc": "0x%08x" % s.ssrc, "call_id": s.call.call_id,
            "src": "%s:%d" % (s.src, s.sport), "dst": "%s:%d" % (s.dst, s.dport),
            "payload_type": s.pt, "first_seq": s.seq0, "packets_sent": s.n,
            "packets_lost": bisect_left(s.lost, s.n),
            "packets": s.n - bisect_left(s.lost, s.n),
            "seq_wraps": (s.seq0 + s.n - 1) >> 16,
            "rtcp_packets": bisect_left(s.rtcp_pos, s.n) + int(s.rtcp_bye),
            "jitter_max_ms": s.jitter / 1000.0,
            "dtmf_events": sum(1 for d in s.dtmf if d[0] < s.n)} for s in streams]
        with open(args.truth, "w") as f:
            json.dump(truth, f, indent=1)
    if not args.quiet:
        print("wrote %s" % args.out)
        print("  packets written   %d%s" % (written, "" if written == limit else
                                             "  (asked for %d)" % limit))
        if planner.expected != written:
            print("  note: --packets is too small for whole calls; the capture was cut after "
                  "%d of %d planned packets and the numbers below describe the plan"
                  % (written, planner.expected))
        print("  SIP messages      %d (%d REGISTER flows)" % (builder.nsip, len(planner.regs)))
        print("  calls             %d  %s, peak %d concurrent" % (
            len(planner.calls), ", ".join("%s %d" % kv for kv in sorted(kinds.items())), peak))
        if signalling:
            print("  SIP requests      %s" % ", ".join("%s %d" % kv for kv in summary["sip_requests"].items()))
            print("  SIP responses     %s" % ", ".join("%s %d" % kv for kv in summary["sip_responses"].items()))
            print("  retransmissions   %d; registrations %d Call-IDs, %d flows refused (403)" % (
                summary["sip_retransmissions"], summary["register_call_ids"], summary["register_failed"]))
        else:
            print("  RTP streams       %d  (%d RTP packets, %d lost = %.2f %%, %d wrap past 65535)" % (
                len(streams), nrtp, nlost, summary["rtp_loss_percent"], wraps))
            print("  RTCP packets      %d" % builder.nrtcp)
        print("  capture span      %.1f s" % (span / USEC))
        print("  file size         %.1f MB (%d bytes)" % (size / 1e6, size))
        print("  seconds taken     %.2f (plan %.2f, write %.2f)" % (elapsed, t_plan, elapsed - t_plan))
    return summary


if __name__ == "__main__":
    main()
