"""Real packets in shapes the bundled samples do not have.

Every test takes the packets a real SIP stack sent (samples/*.pcap, made by SIPp/Kamailio, Ethernet
link type), changes only their framing, and checks the SIP messages sipflow reports, field by field:
frame, ts, src, dst, transport, method/status, Call-ID, CSeq (number and method).

The expected list is derived from the unmodified sample: each message of the sample is expected at the
frame of the rewritten capture that completes it (last IP fragment / TCP segment / SCTP chunk to
arrive), with that frame's time. The sample is read by tshark when it is installed (sipflow otherwise),
and wherever tshark can dissect the shape, tshark's reading of the rewritten capture must give the same
list; sipflow's must too. HEP has no dissector in tshark 4.0: there the original sample is the only
reference.

Shapes: IPv4 and IPv6 fragments out of order, duplicated and interleaved; TCP segments reordered,
retransmitted, overlapping, without handshake, cut into 1-byte segments; GRE (transparent Ethernet
bridging, IP with key/sequence/checksum), ERSPAN I/II/III, VXLAN, IP-in-IP, 4in6, 6in4 and 6in6 around
whole frames (RTP streams compared too); HEP v2/v3; SCTP DATA chunks (single, fragmented, bundled);
wrong IP/UDP/TCP checksums everywhere.

Outer addresses are documentation ranges (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32); the packets
only ever exist in files under pytest's tmp_path.

tshark 4.0 quirks met here (see the tests that work around them):
* TCP segments out of order are only reassembled with ``-o tcp.reassemble_out_of_order:TRUE``; without
  it tshark 4.0 silently loses the INVITE whose segments were reordered (it reports nothing for it).
  With it, a segment that arrives after later bytes is labelled "[TCP Retransmission]" but dissected.
* SCTP fragments (B/E flags) whose TSNs arrive in decreasing order are not reassembled with the default
  relative TSNs (``sctp.relative_tsns``: the first TSN seen becomes 0, the earlier one 4294967295); with
  ``-o sctp.relative_tsns:FALSE`` tshark reassembles them, so the SCTP tests use that.
* SIP over SCTP on ports other than 5060 is found by tshark's sctp->sip heuristic (on by default).
"""
from __future__ import annotations

import difflib
import functools
import struct
from collections import defaultdict

import pytest

import sipflow

import pcaptools as pt
from conftest import SAMPLES

try:
    import tshark_oracle as oracle
except ImportError:  # tests/ made a package
    from tests import tshark_oracle as oracle

HAVE_TSHARK = oracle.tshark_available()
needs_tshark = pytest.mark.skipif(not HAVE_TSHARK, reason="tshark is not installed")

FIELDS = ("frame", "ts", "src", "dst", "transport", "method", "status", "call_id", "cseq", "cseq_method")

TCP_OOO = ("-o", "tcp.reassemble_out_of_order:TRUE")
SCTP_ABS_TSN = ("-o", "sctp.relative_tsns:FALSE")

# Outer (tunnel / HEP) addresses: documentation ranges only.
OUT4_SRC, OUT4_DST = "192.0.2.1", "198.51.100.1"
OUT6_SRC, OUT6_DST = "2001:db8::1", "2001:db8::2"
HEP_AGENT4, HEP_SERVER4 = "192.0.2.10", "198.51.100.20"
HEP_AGENT6, HEP_SERVER6 = "2001:db8::10", "2001:db8::20"


# --------------------------------------------------------------------------- samples and readers

@functools.lru_cache(maxsize=None)
def sample(name):
    """The sample's frames as (timestamp in integer microseconds, Ethernet frame)."""
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"samples/{name} missing")
    lt, recs = pt.read_pcap(path)
    assert lt == 1, f"{name}: expected Ethernet link type"
    return tuple((s * 10 ** 6 + u, f) for s, u, f in recs)


def sipflow_messages(path):
    return sipflow.analyze(str(path)).to_dict()["messages"]


def sipflow_doc(path):
    return sipflow.analyze(str(path)).to_dict()


@functools.lru_cache(maxsize=None)
def _original(name, reader):
    msgs = oracle.sip_messages(SAMPLES / name) if reader == "tshark" else sipflow_messages(SAMPLES / name)
    by_frame = defaultdict(list)
    for m in msgs:
        by_frame[m["frame"]].append({k: m[k] for k in FIELDS})
    return dict(by_frame)


def original(name, reader=None):
    """{frame: [message, ...]} of the unmodified sample, as tshark reads it when it is installed (the
    oracle), else as sipflow does. ``reader`` forces one."""
    sample(name)
    reader = reader or ("tshark" if HAVE_TSHARK else "sipflow")
    return {f: [dict(m) for m in ms] for f, ms in _original(name, reader).items()}


# --------------------------------------------------------------------------- comparing

def _row(m):
    return tuple(round(float(m[k]), 6) if k == "ts" and m.get(k) is not None else m.get(k) for k in FIELDS)


def _fmt(r):
    d = dict(zip(FIELDS, r))
    what = d["method"] if d["method"] is not None else d["status"]
    return (f"frame {d['frame']} ts={d['ts']:.6f} {d['src']} -> {d['dst']} {d['transport']} {what} "
            f"call_id={d['call_id']!r} CSeq={d['cseq']} {d['cseq_method']}")


def assert_same_messages(got, expected, got_name, expected_name):
    """Full, ordered comparison of two message lists on FIELDS (ts to the microsecond), with a report
    that names frame, field, expected and got."""
    g, e = [_row(m) for m in got], [_row(m) for m in expected]
    if g == e:
        return
    lines = [f"{got_name} ({len(g)} messages) differs from {expected_name} ({len(e)} messages):"]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=e, b=g, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for a, b in zip(e[i1:i2], g[j1:j2]):
                diffs = [f"{k}: expected {x!r}, got {y!r}" for k, x, y in zip(FIELDS, a, b) if x != y]
                lines.append(f"  frame {a[0]}: " + "; ".join(diffs))
            continue
        for a in e[i1:i2]:
            lines.append(f"  missing in {got_name}: {_fmt(a)}")
        for b in g[j1:j2]:
            lines.append(f"  extra in {got_name}:   {_fmt(b)}")
    pytest.fail("\n".join(lines), pytrace=False)


def check_messages(path, expected, tshark_args=(), tshark_reads_it=True):
    """tshark (when it can dissect the shape and is installed) and sipflow must both report exactly
    ``expected``. The oracle is checked first: it validates the rewriting and the derivation."""
    assert expected, "a shape test must expect at least one message"
    if tshark_reads_it and HAVE_TSHARK:
        assert_same_messages(oracle.sip_messages(path, tshark_args), expected, "tshark",
                             "the messages derived from the original sample")
    assert_same_messages(sipflow_messages(path), expected, "sipflow",
                         "tshark" if tshark_reads_it and HAVE_TSHARK else "the original sample")


def _stream_key(s):
    ssrc = s["ssrc"] if isinstance(s["ssrc"], int) else int(str(s["ssrc"]), 16)
    return s["src"], s["dst"], ssrc


def _close(a, b):
    return a is not None and b is not None and (abs(a - b) <= 0.1 or abs(a - b) <= 0.05 * abs(b))


def check_streams(path, original_path):
    """RTP streams: tshark on the rewritten capture finds what it finds in the original (inner
    addresses), and sipflow agrees with it on packets, loss and jitter (0.1 ms or 5 %)."""
    got = {_stream_key(s): s for s in sipflow_doc(path)["streams"]}
    if HAVE_TSHARK:
        expected = oracle.rtp_streams(path)
        base = oracle.rtp_streams(original_path)
        rows = lambda ss: sorted((_stream_key(s), s["packets"], s["lost"]) for s in ss)  # noqa: E731
        assert rows(expected) == rows(base), "tshark: streams of the rewritten capture differ from the original"
    else:
        expected = [dict(s, jitter_known=True) for s in sipflow_doc(original_path)["streams"]]
    assert expected, "the sample must hold RTP"
    problems = []
    for e in expected:
        s = got.pop(_stream_key(e), None)
        if s is None:
            problems.append(f"missing stream {_stream_key(e)}")
            continue
        for k in ("packets", "lost"):
            if s[k] != e[k]:
                problems.append(f"{_stream_key(e)} {k}: expected {e[k]}, got {s[k]}")
        if e["jitter_known"]:
            for k in ("jitter_max_ms", "jitter_mean_ms"):
                if not _close(s[k], e[k]):
                    problems.append(f"{_stream_key(e)} {k}: expected {e[k]}, got {s[k]}")
    problems += [f"extra stream {k}" for k in got]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- building captures

class Rewrite:
    """A capture under construction, with the messages each frame is expected to complete."""

    def __init__(self):
        self.records = []
        self.expected = []

    def add(self, us, frame, completes=(), **override):
        self.records.append((us // 10 ** 6, us % 10 ** 6, frame))
        n = len(self.records)
        for m in completes:
            self.expected.append(dict(m, frame=n, ts=us / 1e6, **override))
        return n

    def add_original(self, name, index, us=None, frame=None, **override):
        """Frame ``index`` (0-based) of sample ``name``, with the messages it carries there."""
        t, f = sample(name)[index]
        return self.add(t if us is None else us, f if frame is None else frame,
                        original(name).get(index + 1, ()), **override)

    def write(self, path, linktype=1):
        return pt.write_pcap(path, linktype, self.records)


def first_complete(ranges, end):
    """Index of the first of ``ranges`` ((start, stop) byte ranges in arrival order) after which
    [0, end) is covered; None if never."""
    have = []
    for i, (a, b) in enumerate(ranges):
        have.append((a, b))
        reach = 0
        for x, y in sorted(have):
            if x > reach:
                break
            reach = max(reach, y)
        if reach >= end:
            return i
    return None


# =========================================================================== 1. IPv4 fragments

FRAG4 = "udp-fragmented.pcap"   # frames 1-3: the three fragments of a big INVITE (completed by frame 3)


def _ipv4_fragments():
    recs = sample(FRAG4)
    frags = [recs[i][1] for i in range(3)]
    ranges = []
    for f in frags:
        d = pt.parse_ip(f)
        off = (d["frag"] & 0x1FFF) * 8
        ranges.append((off, off + len(d["l4"])))
    assert pt.parse_ip(frags[0])["frag"] & 0x2000 and not pt.parse_ip(frags[2])["frag"] & 0x2000
    return frags, ranges, ranges[2][1]


@pytest.mark.parametrize("order", [
    (2, 1, 0), (2, 0, 1), (1, 2, 0), (0, 2, 1),
    (0, 1, 1, 2), (2, 1, 1, 0), (0, 0, 1, 2), (0, 1, 2, 2), (0, 1, 2, 0),
], ids=lambda o: "-".join(str(i + 1) for i in o))
def test_ipv4_fragments_in_any_order(tmp_path, order):
    """The INVITE's three fragments reordered / one duplicated (also after the datagram is complete,
    when the copy must yield nothing). tshark 4.0 reassembles all of these and reports the INVITE on the
    frame that completes it, as does sipflow."""
    frags, ranges, total = _ipv4_fragments()
    recs = sample(FRAG4)
    done = first_complete([ranges[i] for i in order], total)
    invite = original(FRAG4)[3]
    cap = Rewrite()
    for pos, i in enumerate(order):
        cap.add(recs[0][0] + pos, frags[i], invite if pos == done else ())
    for idx in range(3, len(recs)):
        cap.add_original(FRAG4, idx)
    check_messages(cap.write(tmp_path / "frag4.pcap"), cap.expected)


def test_ipv4_fragments_interleaved_with_other_packets(tmp_path):
    """Fragments of two datagrams (the INVITE, and the same INVITE sent again with another IP ID)
    interleaved with each other, with RTP and with a SIP message of another call."""
    frags_a, ranges, total = _ipv4_fragments()
    d0 = pt.parse_ip(frags_a[0])
    udp_datagram = b"".join(pt.parse_ip(f)["l4"] for f in frags_a)
    whole = pt.ipv4(d0["src"], d0["dst"], 17, udp_datagram, ident=(d0["ident"] + 1) & 0xFFFF, frag=0)
    frags_b = [pt.eth_ip(p) for p in pt.fragment_ipv4(whole, [r[1] - r[0] for r in ranges[:2]])]
    assert [len(f) for f in frags_b] == [len(f) for f in frags_a]
    recs = sample(FRAG4)
    invite = original(FRAG4)[3]
    other = "basic-call-rtp.pcap"
    rtp1, rtp2 = sample(other)[5][1], sample(other)[6][1]
    seq = [("a", 2), ("x", rtp1), ("b", 0), ("a", 0), ("y", 1), ("b", 2), ("a", 1), ("x", rtp2), ("b", 1)]
    cap = Rewrite()
    t0 = recs[0][0]
    for pos, (kind, v) in enumerate(seq):
        if kind == "a":
            cap.add(t0 + pos, frags_a[v], invite if v == 1 else ())
        elif kind == "b":
            cap.add(t0 + pos, frags_b[v], invite if v == 1 else ())
        elif kind == "x":
            cap.add(t0 + pos, v)
        else:
            cap.add_original(other, v, us=t0 + pos)
    for idx in range(3, len(recs)):
        cap.add_original(FRAG4, idx)
    assert [m["frame"] for m in cap.expected[:3]] == [5, 7, 9]
    check_messages(cap.write(tmp_path / "frag4-interleaved.pcap"), cap.expected)


# =========================================================================== 2. IPv6 fragments

V6 = "call-ipv6.pcap"   # frame 1: the INVITE (599 bytes of UDP), not fragmented in the sample


def _hop_by_hop(frag6: bytes) -> bytes:
    """Put an 8-byte Hop-by-Hop Options header (PadN) in front of the Fragment header."""
    src, dst = pt.parse_ip(pt.eth_ip(frag6))["src"], pt.parse_ip(pt.eth_ip(frag6))["dst"]
    return pt.ipv6(src, dst, 0, bytes([44, 0, 1, 4, 0, 0, 0, 0]) + frag6[40:])


@pytest.mark.parametrize("order,hbh", [
    ((0, 1, 2), False), ((2, 1, 0), False), ((1, 2, 0), False), ((2, 0, 1), False),
    ((2, 0, 0, 1), False), ((0, 1, 2, 1), False), ((2, 1, 0), True),
], ids=lambda v: "-".join(str(i + 1) for i in v) if isinstance(v, tuple) else ("hop-by-hop" if v else "plain"))
def test_ipv6_fragments_in_any_order(tmp_path, order, hbh):
    """The IPv6 INVITE cut into three fragments (Fragment header, offsets multiple of 8), sent in any
    order, one duplicated, or behind a Hop-by-Hop header."""
    recs = sample(V6)
    ip6 = pt.parse_ip(recs[0][1])["ip"]
    frags = pt.fragment_ipv6(ip6, [200, 200], ident=0xC0FFEE)
    assert len(frags) == 3
    if hbh:
        frags = [_hop_by_hop(f) for f in frags]
    ranges, pos_ = [], 0
    for f in frags:
        n = len(f) - 40 - 8 - (8 if hbh else 0)
        ranges.append((pos_, pos_ + n))
        pos_ += n
    done = first_complete([ranges[i] for i in order], pos_)
    invite = original(V6)[1]
    cap = Rewrite()
    for pos, i in enumerate(order):
        cap.add(recs[0][0] + pos, pt.eth_ip(frags[i]), invite if pos == done else ())
    for idx in range(1, len(recs)):
        cap.add_original(V6, idx)
    check_messages(cap.write(tmp_path / "frag6.pcap"), cap.expected)


def test_ipv6_atomic_fragment(tmp_path):
    """A Fragment header with offset 0 and M=0 (RFC 6946 atomic fragment) on the INVITE."""
    recs = sample(V6)
    (atomic,) = pt.fragment_ipv6(pt.parse_ip(recs[0][1])["ip"], [], ident=7)
    cap = Rewrite()
    cap.add(recs[0][0], pt.eth_ip(atomic), original(V6)[1])
    for idx in range(1, len(recs)):
        cap.add_original(V6, idx)
    check_messages(cap.write(tmp_path / "atomic6.pcap"), cap.expected)


# =========================================================================== 3. TCP

TCPS = "tcp-segmented.pcap"
# frames 1-3 handshake (5061->5070), 4-6 the INVITE in 3 segments, ... 24-26 second handshake
# (5062->5060), 27 one segment with two pipelined OPTIONS.
INVITE_SEGS = (3, 4, 5)       # 0-based indexes
OPTIONS_SEG = 26


def _tcp_template(index):
    t, f = sample(TCPS)[index]
    return t, pt.parse_ip(f)


def _tcp_piece(d, base_seq, data, start, stop, ident):
    """A segment like ``d`` (addresses, ports, ack, flags, options) carrying data[start:stop]."""
    seg = pt.tcp(d["src"], d["dst"], d["sport"], d["dport"], base_seq + start, d["ack"], d["flags"],
                 data[start:stop], window=d["window"], options=d["options"])
    return pt.eth_ip(pt.ipv4(d["src"], d["dst"], 6, seg, ident=ident & 0xFFFF))


def _tcp_capture(block, drop=()):
    """tcp-segmented.pcap with its INVITE segments replaced by ``block``: items are 0-2 (the original
    segment, verbatim) or (start, stop) (a segment rebuilt to carry those bytes of the INVITE)."""
    recs = sample(TCPS)
    segs = [pt.parse_ip(recs[i][1]) for i in INVITE_SEGS]
    base = segs[0]["seq"]
    data = b"".join(s["payload"] for s in segs)
    seg_ranges = [(s["seq"] - base, s["seq"] - base + len(s["payload"])) for s in segs]
    ranges = [seg_ranges[b] if isinstance(b, int) else b for b in block]
    done = first_complete(ranges, len(data))
    invite = original(TCPS)[INVITE_SEGS[-1] + 1]
    cap = Rewrite()
    for idx in range(INVITE_SEGS[0]):
        if idx not in drop:
            cap.add_original(TCPS, idx)
    t0 = recs[INVITE_SEGS[0]][0]
    for pos, b in enumerate(block):
        if isinstance(b, int):
            frame = recs[INVITE_SEGS[b]][1]
        else:
            frame = _tcp_piece(segs[0], base, data, b[0], b[1], segs[0]["ident"] + 100 + pos)
        cap.add(t0 + pos, frame, invite if pos == done else ())
    assert recs[INVITE_SEGS[-1] + 1][0] > t0 + len(block)
    for idx in range(INVITE_SEGS[-1] + 1, len(recs)):
        if idx not in drop:
            cap.add_original(TCPS, idx)
    return cap


@pytest.mark.parametrize("block", [
    (2, 1, 0), (1, 0, 2), (0, 2, 1), (2, 0, 1),
], ids=lambda b: "-".join(str(i + 1) for i in b))
def test_tcp_segments_out_of_order(tmp_path, block):
    """The INVITE's three segments reordered: reported once, on the segment that fills the last hole.
    tshark needs tcp.reassemble_out_of_order (without it tshark 4.0 drops the INVITE altogether)."""
    cap = _tcp_capture(block)
    check_messages(cap.write(tmp_path / "tcp-ooo.pcap"), cap.expected, TCP_OOO)


@pytest.mark.parametrize("block", [
    (0, 1, 1, 2), (0, 0, 1, 2), (0, 1, 2, 2), (1, 0, 1, 2), (2, 0, 2, 1),
    (0, 1, (2000, 3000), 2), (0, (1000, 3448)), (2, (2000, 3000), 0, 1), (0, (0, 2000), 1, 2),
], ids=lambda b: "-".join(str(i + 1) if isinstance(i, int) else f"{i[0]}:{i[1]}" for i in b))
def test_tcp_retransmitted_and_overlapping_segments(tmp_path, block):
    """A segment sent twice (before or after the message is complete), and retransmissions cut
    differently from the original segments (partly overlapping what was already received)."""
    cap = _tcp_capture(block)
    check_messages(cap.write(tmp_path / "tcp-retrans.pcap"), cap.expected, TCP_OOO)


@pytest.mark.parametrize("drop,what", [
    ((0, 1, 2), "first handshake"),
    ((0, 1, 2, 23, 24, 25), "both handshakes"),
    ((0, 1, 2, 3), "first handshake and the INVITE's first segment"),
], ids=["no-handshake", "no-handshakes", "starts-inside-invite"])
def test_tcp_capture_starts_mid_connection(tmp_path, drop, what):
    """The capture starts after the handshake (no SYN seen), as heplify's sip_ipv4_tcp_fragmented
    does; when it starts inside the INVITE, that INVITE is lost but everything after it is found."""
    block = (1, 2) if 3 in drop else (0, 1, 2)
    cap = _tcp_capture(block, drop=drop)
    assert any(m["method"] == "INVITE" for m in cap.expected) == (3 not in drop)
    check_messages(cap.write(tmp_path / "tcp-mid.pcap"), cap.expected)


def _sip_message_ends(data: bytes):
    """End offsets of the SIP messages packed in ``data`` (framed by Content-Length)."""
    ends, pos = [], 0
    while pos < len(data):
        head_end = data.index(b"\r\n\r\n", pos) + 4
        length = 0
        for line in data[pos:head_end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value)
        pos = head_end + length
        ends.append(pos)
    return ends


@pytest.mark.parametrize("sizes,reverse", [((1,), False), ((1, 2, 3), False), ((1,), True), ((7,), True)],
                         ids=["1-byte", "1-2-3-bytes", "1-byte-reversed", "7-bytes-reversed"])
def test_tcp_two_messages_in_tiny_segments(tmp_path, sizes, reverse):
    """The segment holding two pipelined OPTIONS cut into tiny segments: each OPTIONS is reported on
    the segment that completes it (in reverse order, both on the last one, which holds the first byte)."""
    recs = sample(TCPS)
    t0, d = _tcp_template(OPTIONS_SEG)
    data = d["payload"]
    ends = _sip_message_ends(data)
    options = original(TCPS)[OPTIONS_SEG + 1]
    assert len(ends) == len(options) == 2 and ends[-1] == len(data)
    pieces, pos, k = [], 0, 0
    while pos < len(data):
        n = sizes[k % len(sizes)]
        pieces.append((pos, min(pos + n, len(data))))
        pos += n
        k += 1
    if reverse:
        pieces.reverse()
    done = [first_complete(pieces, e) for e in ends]
    cap = Rewrite()
    for idx in range(OPTIONS_SEG):
        cap.add_original(TCPS, idx)
    for i, (a, b) in enumerate(pieces):
        cap.add(t0 + i, _tcp_piece(d, d["seq"], data, a, b, d["ident"] + i),
                [m for m, j in zip(options, done) if j == i])
    shift = len(pieces)
    for idx in range(OPTIONS_SEG + 1, len(recs)):
        cap.add_original(TCPS, idx, us=recs[idx][0] + shift)
    check_messages(cap.write(tmp_path / "tcp-tiny.pcap"), cap.expected, TCP_OOO)


# =========================================================================== 4. tunnels

BASIC = "basic-call-rtp.pcap"


def _o4(proto, payload, i):
    return pt.eth_ip(pt.ipv4(OUT4_SRC, OUT4_DST, proto, payload, ident=i & 0xFFFF))


def _o6(proto, payload, i):
    return pt.eth_ip(pt.ipv6(OUT6_SRC, OUT6_DST, proto, payload))


TUNNELS = {
    # name: (sample, wrap(ethernet frame, index) -> outer Ethernet frame)
    "gre-transparent-ethernet": (BASIC, lambda f, i: _o4(47, pt.gre(0x6558, f), i)),
    "gre-ip-key-seq": (BASIC, lambda f, i: _o4(47, pt.gre(0x0800, f[14:], key=0x2A, seq=i), i)),
    "gre-ip-checksum": (BASIC, lambda f, i: _o4(47, pt.gre(0x0800, f[14:], checksum=True), i)),
    "erspan-type1": (BASIC, lambda f, i: _o4(47, pt.gre(0x88BE, f), i)),
    "erspan-type2": (BASIC, lambda f, i: _o4(47, pt.gre(0x88BE, pt.erspan2(7, f, index=i), seq=i), i)),
    "erspan-type3": (BASIC, lambda f, i: _o4(47, pt.gre(0x22EB, pt.erspan3(7, f, timestamp=i), seq=i), i)),
    "erspan-type3-subheader": (BASIC, lambda f, i: _o4(47, pt.gre(0x22EB, pt.erspan3(
        7, f, timestamp=i, subheader=struct.pack("!II", 3 << 26, i)), seq=i), i)),
    "vxlan": (BASIC, lambda f, i: _o4(17, pt.udp(OUT4_SRC, OUT4_DST, 49152, 4789, pt.vxlan(5001, f)), i)),
    "ip-in-ip": (BASIC, lambda f, i: _o4(4, f[14:], i)),
    "ipv4-in-ipv6": (BASIC, lambda f, i: _o6(4, f[14:], i)),
    "gre-over-ipv6": (BASIC, lambda f, i: _o6(47, pt.gre(0x6558, f), i)),
    "ipv6-in-ipv4": (V6, lambda f, i: _o4(41, f[14:], i)),
    "ipv6-in-ipv6": (V6, lambda f, i: _o6(41, f[14:], i)),
    "vxlan-ipv6-inside": (V6, lambda f, i: _o4(17, pt.udp(OUT4_SRC, OUT4_DST, 49152, 4789, pt.vxlan(5001, f)), i)),
    "gre-ipv6-inside": (V6, lambda f, i: _o4(47, pt.gre(0x86DD, f[14:]), i)),
}


def _tunnel(tmp_path, name):
    src, wrap = TUNNELS[name]
    cap = Rewrite()
    for i, (t, f) in enumerate(sample(src)):
        cap.add_original(src, i, frame=wrap(f, i))
    return src, cap.write(tmp_path / f"{name}.pcap"), cap.expected


@pytest.mark.parametrize("name", sorted(TUNNELS))
def test_tunnel_sip_messages(tmp_path, name):
    """Whole sample frames inside a tunnel: same messages, inner addresses, same frames and times."""
    _src, path, expected = _tunnel(tmp_path, name)
    check_messages(path, expected)


@pytest.mark.parametrize("name", sorted(TUNNELS))
def test_tunnel_rtp_streams(tmp_path, name):
    """The RTP inside the tunnel: the same streams (inner addresses), packets, loss and jitter."""
    src, path, _ = _tunnel(tmp_path, name)
    check_streams(path, SAMPLES / src)


# =========================================================================== 5. HEP

HEP = {
    # name: (sample, HEP version, outer IPv6?)
    "v3": (BASIC, 3, False),
    "v2": (BASIC, 2, False),
    "v3-ipv6-inside": (V6, 3, False),
    "v2-ipv6-inside": (V6, 2, False),
    "v3-over-ipv6": (BASIC, 3, True),
}


@pytest.mark.parametrize("name", sorted(HEP))
def test_hep_carries_each_sip_message(tmp_path, name):
    """Each SIP message of the sample sent by a capture agent as HEP (UDP 9060), at the original time:
    every message reported with the inner addresses and transport "hep", and the same method/status,
    Call-ID and CSeq as in the original sample (tshark 4.0 cannot dissect HEP)."""
    src, version, outer6 = HEP[name]
    msgs = original(src, reader="sipflow")
    agent, server = (HEP_AGENT6, HEP_SERVER6) if outer6 else (HEP_AGENT4, HEP_SERVER4)
    cap = Rewrite()
    for i, (t, f) in enumerate(sample(src)):
        if i + 1 not in msgs:
            continue
        d = pt.parse_ip(f)
        enc = pt.hep3 if version == 3 else pt.hep2
        hep = enc(d["src"], d["dst"], d["sport"], d["dport"], t // 10 ** 6, t % 10 ** 6, d["payload"],
                  capture_id=2001)
        dgram = pt.udp(agent, server, 47000, 9060, hep)
        outer = pt.ipv6(agent, server, 17, dgram) if outer6 else pt.ipv4(agent, server, 17, dgram, ident=i)
        cap.add(t, pt.eth_ip(outer), msgs[i + 1], transport="hep")
    assert len(cap.expected) == sum(len(v) for v in msgs.values()) >= 7
    path = cap.write(tmp_path / f"hep-{name}.pcap")
    check_messages(path, cap.expected, tshark_reads_it=False)
    got = sipflow_messages(path)
    assert all(m["frames"] == [m["frame"]] for m in got)


# =========================================================================== 6. SCTP

class _Association:
    """TSNs and stream sequence numbers per direction of one SCTP association."""

    def __init__(self):
        self.tsn, self.ssn = {}, {}

    def data(self, d, payload, begin=True, end=True):
        k = (d["src"], d["sport"])
        tsn = self.tsn.get(k, 1000)
        self.tsn[k] = tsn + 1
        ssn = self.ssn.get(k, 0)
        if end:
            self.ssn[k] = ssn + 1
        return pt.sctp_data_chunk(tsn, 0, ssn, payload, begin, end)


def _sctp_packet(d, chunks):
    return pt.eth_ip(pt.ipv4(d["src"], d["dst"], 132, pt.sctp(d["sport"], d["dport"], 0x5EED, chunks),
                             ident=d["ident"]))


def _sack(tsn):
    return struct.pack("!BBHIIHH", 3, 0, 16, tsn, 65535, 0, 0)


SCTP_SHAPES = ["one-message-per-chunk", "split-over-two-packets", "split-over-three-packets",
               "split-in-one-packet", "two-messages-in-one-packet", "sack-bundled-with-data",
               "split-over-two-packets-reversed", "split-over-three-packets-reversed"]


def _sctp_capture(shape):
    """basic-call-rtp.pcap with each SIP message in SCTP DATA chunks (RTP frames left as they are)."""
    msgs = original(BASIC)
    recs = sample(BASIC)
    assoc = _Association()
    cap = Rewrite()
    i = 0
    while i < len(recs):
        t, f = recs[i]
        if i + 1 not in msgs:
            cap.add_original(BASIC, i)
            i += 1
            continue
        d = pt.parse_ip(f)
        p = d["payload"]
        m = msgs[i + 1]
        if i == 0 and shape.startswith("split-over"):
            n = 2 if "two" in shape else 3
            cuts = [len(p) * k // n for k in range(n + 1)]
            pkts = [_sctp_packet(d, [assoc.data(d, p[a:b], a == 0, b == len(p))]) for a, b in zip(cuts, cuts[1:])]
            if shape.endswith("reversed"):
                pkts.reverse()
            for k, pkt in enumerate(pkts):
                cap.add(t - len(pkts) + 1 + k, pkt, m if k == n - 1 else (), transport="sctp")
        elif i == 0 and shape == "split-in-one-packet":
            h = len(p) // 2
            cap.add(t, _sctp_packet(d, [assoc.data(d, p[:h], True, False), assoc.data(d, p[h:], False, True)]),
                    m, transport="sctp")
        elif i == 1 and shape == "two-messages-in-one-packet":   # 100 Trying and 180 Ringing together
            d2 = pt.parse_ip(recs[2][1])
            cap.add(recs[2][0], _sctp_packet(d, [assoc.data(d, p), assoc.data(d2, d2["payload"])]),
                    m + msgs[3], transport="sctp")
            i += 2
            continue
        elif shape == "sack-bundled-with-data":
            cap.add(t, _sctp_packet(d, [_sack(1000 + i), assoc.data(d, p)]), m, transport="sctp")
        else:
            cap.add(t, _sctp_packet(d, [assoc.data(d, p)]), m, transport="sctp")
        i += 1
    return cap


@pytest.mark.parametrize("shape", SCTP_SHAPES)
def test_sctp_data_chunks(tmp_path, shape):
    """SIP over SCTP: one message per DATA chunk; one message in two or three fragments (B/E flags) in
    separate packets or the same one; two DATA chunks in one packet; a SACK bundled before DATA;
    fragments arriving in reverse TSN order. tshark (SIP heuristic over SCTP, absolute TSNs) agrees."""
    cap = _sctp_capture(shape)
    check_messages(cap.write(tmp_path / f"sctp-{shape}.pcap"), cap.expected, SCTP_ABS_TSN)


# =========================================================================== 7. wrong checksums

def _break_checksums(frame: bytes) -> bytes:
    """The same frame with a wrong IPv4 header checksum and a wrong UDP/TCP checksum (on the first
    fragment of a fragmented datagram too), each verified to be wrong."""
    f = bytearray(frame)
    d = pt.parse_ip(frame)
    if d["version"] == 4:
        ihl = (f[14] & 15) * 4
        hdr = bytes(f[14:14 + 12]) + b"\0\0" + bytes(f[14 + 14:14 + ihl])
        struct.pack_into("!H", f, 24, pt.inet_checksum(hdr) ^ 0x5A5A)
        l4 = 14 + ihl
    else:
        l4 = 54
    first_part = not d["frag"] & 0x1FFF
    if first_part and d["proto"] in (6, 17):
        at = l4 + (6 if d["proto"] == 17 else 16)
        seg = bytes(f[l4:at]) + b"\0\0" + bytes(f[at + 2:14 + len(d["ip"])])
        right = pt.l4_checksum(d["src"], d["dst"], d["proto"], seg) if not d["frag"] & 0x2000 else None
        value = struct.unpack_from("!H", f, at)[0] ^ 0x5A5A
        if value == right or value == 0:
            value ^= 0x0101
        struct.pack_into("!H", f, at, value)
    out = bytes(f)
    if d["version"] == 4:
        assert pt.inet_checksum(out[14:14 + (out[14] & 15) * 4]) != 0, "IPv4 checksum still right"
    return out


@pytest.mark.parametrize("name", [BASIC, V6, TCPS, FRAG4])
def test_wrong_checksums_drop_nothing(tmp_path, name):
    """Every IPv4 header checksum and every UDP/TCP checksum wrong: the same messages and streams as
    the original (checksums are not verified: on loopback and with offload they are often wrong)."""
    cap = Rewrite()
    for i, (t, f) in enumerate(sample(name)):
        cap.add_original(name, i, frame=_break_checksums(f))
    path = cap.write(tmp_path / f"badsum-{name}")
    base = sipflow_doc(SAMPLES / name)
    got = sipflow_doc(path)
    assert_same_messages(got["messages"], base["messages"], "sipflow on the broken checksums",
                         "sipflow on the original")
    assert_same_messages(got["messages"], cap.expected, "sipflow on the broken checksums", "the original sample")
    rows = lambda ss: sorted((s["src"], s["dst"], s["ssrc"], s["packets"], s["lost"],  # noqa: E731
                              round(s["jitter_max_ms"], 6)) for s in ss)
    assert rows(got["streams"]) == rows(base["streams"])


# =========================================================================== frames of reassembled messages

def _tshark_parts(path, args):
    """{frame: set of frames} from tshark's reassembly lists (ip.fragment, ipv6.fragment, tcp.segment,
    sctp.fragment) on every frame with SIP, plus the frame itself."""
    fields = ("frame.number", "ip.fragment", "ipv6.fragment", "tcp.segment", "sctp.fragment")
    cmd = ["-r", str(path), *oracle.BASE_OPTIONS, *args, "-Y", "sip", "-T", "fields",
           "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    out = {}
    for line in oracle._run(cmd).splitlines():
        cols = line.split("\t")
        frame = int(cols[0])
        out[frame] = {frame} | {int(x) for c in cols[1:] for x in c.split(",") if x}
    return out


FRAMES_CASES = {
    "ipv4-fragments-reversed": lambda tmp: _frames_frag4(tmp, (2, 1, 0)),
    "ipv4-fragment-duplicated": lambda tmp: _frames_frag4(tmp, (0, 1, 1, 2)),
    "tcp-segments-reversed": lambda tmp: (_tcp_capture((2, 1, 0)), TCP_OOO),
    "tcp-segment-retransmitted": lambda tmp: (_tcp_capture((0, 1, 1, 2)), TCP_OOO),
    "sctp-split-over-two-packets": lambda tmp: (_sctp_capture("split-over-two-packets"), SCTP_ABS_TSN),
    "sctp-split-over-three-packets": lambda tmp: (_sctp_capture("split-over-three-packets"), SCTP_ABS_TSN),
}


def _frames_frag4(tmp, order):
    frags, _, _ = _ipv4_fragments()
    recs = sample(FRAG4)
    cap = Rewrite()
    for pos, i in enumerate(order):
        cap.add(recs[0][0] + pos, frags[i])
    for idx in range(3, len(recs)):
        cap.add_original(FRAG4, idx)
    return cap, ()


# Where sipflow's "frames" deliberately differs from tshark's segment list: {case: (frames left out, why)}.
FRAMES_DIFFERENCES = {
    "tcp-segment-retransmitted": (
        {6}, "a TCP retransmission of bytes sipflow already has is dropped before framing, so its frame is not "
             "listed (docs/json.md: frames whose bytes went into the message); tshark lists the copy too"),
}


@needs_tshark
@pytest.mark.parametrize("case", sorted(FRAMES_CASES))
def test_frames_of_reassembled_messages(tmp_path, case):
    """"frames" (docs/json.md: every frame that carried part of the message) is the set of frames
    tshark lists as fragments/segments of the reassembled message."""
    cap, args = FRAMES_CASES[case](tmp_path)
    path = cap.write(tmp_path / f"frames-{case}.pcap")
    expected = _tshark_parts(path, args)
    if case in FRAMES_DIFFERENCES:
        left_out = FRAMES_DIFFERENCES[case][0]
        expected = {f: v - left_out for f, v in expected.items()}
    got = defaultdict(set)
    for m in sipflow_messages(path):
        got[m["frame"]] |= set(m["frames"])
    assert any(len(v) > 1 for v in expected.values()), "no reassembled message in the case"
    diffs = [f"frame {f}: frames expected {sorted(expected.get(f, ()))} (tshark), got {sorted(got.get(f, ()))}"
             for f in sorted(set(expected) | set(got)) if expected.get(f) != got.get(f)]
    if diffs:
        pytest.fail("\n".join(diffs), pytrace=False)


def _ws(payload: bytes, mask: bytes = b"") -> bytes:
    """One final text WebSocket frame (masked when ``mask`` is given, as a client sends)."""
    n = len(payload)
    head = bytes([0x81]) + (bytes([n | (0x80 if mask else 0)]) if n < 126 else
                            bytes([126 | (0x80 if mask else 0)]) + struct.pack("!H", n))
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return head + mask + body


@pytest.mark.parametrize("cut", [3, 9, 40], ids=lambda c: f"first-segment-{c}-bytes")
def test_websocket_picked_up_mid_connection_with_the_first_frame_cut(tmp_path, cut):
    """A capture that starts after the WebSocket upgrade (a phone registered before the capture began):
    the browser's first frame is masked and cut over two segments. Whatever the cut, both directions
    are read as WebSocket (the first frame need not be whole to be recognised), so the INVITE and its
    answer are both found."""
    from pcaptools import eth_ip, ipv4, sip_text, tcp, write_pcap
    a, b = "198.51.100.10", "203.0.113.20"
    invite = sip_text("INVITE sip:bob@example.invalid SIP/2.0",
                      [("Via", "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws1"), ("From", "<sip:alice@x>;tag=f"),
                       ("To", "<sip:bob@y>"), ("Call-ID", "ws-mid@x"), ("CSeq", "1 INVITE"),
                       ("Contact", "<sip:a@df7jal23ls0d.invalid;transport=ws;ob>")])
    trying = sip_text("SIP/2.0 100 Trying", [("Via", "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws1"),
                                              ("From", "<sip:alice@x>;tag=f"), ("To", "<sip:bob@y>"),
                                              ("Call-ID", "ws-mid@x"), ("CSeq", "1 INVITE")])
    client = _ws(invite, mask=b"\x3a\x91\x07\xc4")
    server = _ws(trying)
    segs = [(a, 40000, b, 7443, 1000, 5000, client[:cut]), (a, 40000, b, 7443, 1000 + cut, 5000, client[cut:]),
            (b, 7443, a, 40000, 5000, 1000 + len(client), server)]
    recs = [(1_700_000_000, i * 1000, eth_ip(ipv4(s, d, 6, tcp(s, d, sp, dp, seq, ack, 0x18, data), ident=i + 1)))
            for i, (s, sp, d, dp, seq, ack, data) in enumerate(segs)]
    path = write_pcap(tmp_path / "ws-mid.pcap", 1, recs)
    got = sipflow.analyze(str(path))
    assert [(e.method or e.status, e.transport) for e in got.messages] == [("INVITE", "ws"), (100, "ws")]
    assert got.messages[0].frames == (1, 2)
