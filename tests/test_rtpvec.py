"""The NumPy hot path gives the same figures as the pure-Python reference (RtpStream.flush).

On random streams (loss, wraps, duplicates, late packets, DTMF events, marker bits, timestamp wraps,
any split into blocks) and on every bundled sample, analysed both ways."""
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")

import sys  # noqa: E402

import sipflow  # noqa: E402
from sipflow.media.stats import CLOCK_PROBE, RtpStream  # noqa: E402
from sipflow.media.vec import fold  # noqa: E402

from conftest import sample_files  # noqa: E402

INT_FIELDS = ("packets", "expected", "lost", "duplicates", "out_of_order", "seq_wraps", "marker_packets", "jitter_n",
              "pt", "loss_events", "late_fixed", "late_adaptive")
FLOAT_FIELDS = ("jitter", "jitter_max", "jitter_mean", "max_delta", "first_ts", "last_ts")


def figures(s):
    return {k: getattr(s, k) for k in INT_FIELDS + FLOAT_FIELDS}


def same(a, b):
    for k in INT_FIELDS:
        assert a[k] == b[k], (k, a[k], b[k])
    for k in FLOAT_FIELDS:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), (k, a[k], b[k])


def random_stream(rnd, n, main=0, step=160, period=0.02):
    """Audio by default (PCMU, 20 ms); ``main=96, step=3000, period=1 / 30`` is a 90 kHz video-like stream."""
    seq, ts, t = rnd.randrange(65536), rnd.randrange(2 ** 32), 1_700_000_000.0
    out = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.03:  # lost
            seq, ts, t = (seq + 1) & 0xFFFF, (ts + step) & 0xFFFFFFFF, t + period
        pt = main
        if r > 0.99 and out:
            out.append(out[-1])  # duplicate
            continue
        if 0.97 < r <= 0.98:
            pt = 101  # DTMF event
        if 0.96 < r <= 0.97:
            pt = main | 0x80  # marker
        if 0.95 < r <= 0.96 and len(out) > 2:
            out.append((out[-2][0], out[-2][1], t + 0.001, main))  # late packet
            continue
        if 0.94 < r <= 0.945:   # a pause of over a second (an outage unless a talkspurt ends it)
            t += 1.0 + rnd.random()
        t += period + rnd.uniform(-0.003, 0.003)
        spike = rnd.choice((0.03, 0.07, 0.2)) if 0.93 < r <= 0.94 and len(out) > 30 else 0.0   # held up
        out.append((seq, ts, t + spike, pt))
        seq, ts = (seq + 1) & 0xFFFF, (ts + step) & 0xFFFFFFFF
    return out


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32), n_streams=st.integers(1, 5), n=st.integers(1, 400),
       blocks=st.integers(1, 6), video=st.booleans())
@example(seed=653, n_streams=1, n=24, blocks=1, video=True)   # late packets in the clock probe (found here)
def test_fold_equals_flush(seed, n_streams, n, blocks, video):
    """Also for a dynamic payload type no SDP names (video at 90 kHz): both paths wait for the packets
    that measure the clock and then agree."""
    rnd = random.Random(seed)
    shape = dict(main=96, step=3000, period=1 / 30) if video else {}
    pt = shape.get("main", 0)
    packets = [random_stream(rnd, rnd.randint(1, n), **shape) for _ in range(n_streams)]
    ref = [RtpStream("a", 1, "b", 2, 9, pt, 1) for _ in packets]
    vec = [RtpStream("a", 1, "b", 2, 9, pt, 1) for _ in packets]
    for s, pk in zip(ref, packets):
        for p in pk:
            s.add(*p)
        s.flush()
    # the vector path sees the packets cut into blocks, all streams interleaved per block
    cuts = [sorted(rnd.sample(range(len(pk) + 1), min(blocks - 1, len(pk) + 1))) for pk in packets]
    for b in range(blocks):
        groups, starts, cols = [], [], [[], [], [], []]
        for g, pk in enumerate(packets):
            bounds = [0] + cuts[g] + [len(pk)]
            part = pk[bounds[b]:bounds[b + 1]] if b + 1 < len(bounds) else []
            if not part:
                continue
            groups.append(vec[g])
            starts.append(len(cols[0]))
            for c, values in zip(cols, zip(*part)):
                c.extend(values)
        if groups:
            fold(groups, np.array(starts), np.array(cols[0]), np.array(cols[1], dtype=np.uint32),
                 np.array(cols[2]), np.array(cols[3]))
    for r, v, pk in zip(ref, vec, packets):
        v.flush()
        same(figures(v), figures(r))
        assert [t for o in v.outages for t in o] == pytest.approx([t for o in r.outages for t in o])
        assert v.outages_more == r.outages_more
        assert v.rate == r.rate and v.clock_source == r.clock_source
        probe = [p[2] for p in pk[:CLOCK_PROBE] if p[3] & 0x7F == 96]
        steady = sum(b - a for a, b in zip(probe, probe[1:]) if 0 <= b - a <= 0.25)   # pauses left out
        if video and steady > 0.3:   # enough to measure: the clock is found, not assumed
            assert r.rate == 90000 and r.clock_source == "measured"


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_samples_read_the_same_with_and_without_numpy(path, monkeypatch):
    fast = sipflow.analyze(str(path))
    monkeypatch.setattr(sys.modules["sipflow.analysis.analyzer"], "_numpy_available", lambda: False)
    slow = sipflow.analyze(str(path))
    assert [m.frame for m in fast.messages] == [m.frame for m in slow.messages]
    assert fast.stats == slow.stats
    key = lambda s: (s.src, s.sport, s.dst, s.dport, s.ssrc)  # noqa: E731
    assert sorted(map(key, fast.streams)) == sorted(map(key, slow.streams))
    for a, b in zip(sorted(fast.streams, key=key), sorted(slow.streams, key=key)):
        same(figures(a), figures(b))


def test_pcapng_with_mixed_interfaces_reads_the_same_with_and_without_numpy(tmp_path, monkeypatch):
    """pcapng runs of EPBs go to the array path, other blocks one by one: same figures either way."""
    from conftest import SAMPLES
    from pcaptools import SHAPES, read_pcap, write_pcapng
    lt, recs = read_pcap(SAMPLES / "basic-call-rtp.pcap")
    # runs of 7 frames alternate between an Ethernet interface (µs) and an SLL2 one (ns)
    ng = [((i // 7) % 2, s, u, f if (i // 7) % 2 == 0 else SHAPES["sll2"][1](f)) for i, (s, u, f) in enumerate(recs)]
    path = write_pcapng(tmp_path / "mixed.pcapng", [(1, 6), (276, 9)], ng, simple_first=True)
    fast = sipflow.analyze(str(path))
    monkeypatch.setattr(sys.modules["sipflow.analysis.analyzer"], "_numpy_available", lambda: False)
    slow = sipflow.analyze(str(path))
    assert [(m.frame, m.ts) for m in fast.messages] == [(m.frame, m.ts) for m in slow.messages]
    assert fast.stats == slow.stats and len(fast.streams) == 2
    key = lambda s: (s.src, s.sport, s.dst, s.dport, s.ssrc)  # noqa: E731
    for a, b in zip(sorted(fast.streams, key=key), sorted(slow.streams, key=key)):
        same(figures(a), figures(b))


def test_many_short_streams_beside_a_long_one_cost_what_their_packets_cost():
    """One block with 20 000 two-packet streams and one of 2 000 packets: the per-group running sums must
    not be a 20 001 x 2 000 matrix (320 MB); the same figures as the reference, in a few MB."""
    import tracemalloc
    n_short, n_long = 20_000, 2_000
    streams = [RtpStream("a", 1, "b", 2, i, 0, 1) for i in range(n_short + 1)]
    refs = [RtpStream("a", 1, "b", 2, i, 0, 1) for i in range(n_short + 1)]
    seq, rts, arr, b1, starts = [], [], [], [], []
    for g in range(n_short + 1):
        starts.append(len(seq))
        n = n_long if g == n_short else 2
        for i in range(n):
            p = (i, i * 160, 1_700_000_000.0 + i * 0.02 + (g % 7) * 1e-4, 0)
            seq.append(p[0]), rts.append(p[1]), arr.append(p[2]), b1.append(p[3])
            refs[g].add(*p)
    for r in refs:
        r.flush()
    tracemalloc.start()
    fold(streams, np.array(starts), np.array(seq), np.array(rts, dtype=np.uint32), np.array(arr), np.array(b1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60 << 20, f"{peak / 1e6:.0f} MB"
    for g in (0, 1, n_short // 2, n_short):
        same(figures(streams[g]), figures(refs[g]))
