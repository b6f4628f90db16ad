"""RTP statistics for many streams at once, with NumPy: the measured hot path.

Owns one thing: folding a block of RTP packets, already grouped by stream, into the streams' figures
with array operations, by exactly the rules of ``RtpStream.flush`` (which stays the reference: tests
compare the two on random streams). A stream's packets in a block are folded here only when they are
"clean": every packet is the next one or a few ahead (loss), and of the stream's payload type (with or
without the marker bit). Anything else in that block (a duplicate, a late packet, a DTMF event, comfort
noise, a new stream whose clock is still to be measured) sends that stream's packets through
``RtpStream.flush`` instead, so no rule is written twice.

The jitter estimate J_i = J_(i-1) + (|D_i| - J_(i-1)) / 16 is a first-order filter; with a = 15/16 its
closed form J_k = a^k (J_0 + 1/16 * sum_(j<=k) a^-j |D_j|) sums positive terms only (no cancellation),
and is evaluated in rounds of ROUND packets per stream so that a^-k stays far from overflow.
"""
from __future__ import annotations

from typing import List

import numpy as np

from sipflow.media.stats import (ADAPTIVE_JB_MIN, FIXED_JB, JB_DECAY, JB_DRIFT, JB_HEADROOM, MAX_DROPOUT, OUTAGE,
                                 RtpStream)

ROUND = 2048
_A = 15.0 / 16.0
_POW_A = _A ** np.arange(0, ROUND + 1, dtype=np.float64)          # a^k
_POW_INV_A = (1.0 / _A) ** np.arange(0, ROUND + 1, dtype=np.float64)  # a^-k


def _group_cumsum(np, g, k, vals, ng: int):
    """Running sums of ``vals`` within each group (entries grouped, ``k`` = 1, 2, ... inside a group).

    Each group gets a row of its own, so its sum starts from zero (one running sum over all groups would
    lose the small terms of one group next to the large totals of another). Groups go in buckets of
    similar length (next power of two), so the rows hold at most about twice the entries: a block of
    40 000 two-packet streams beside one long stream costs what its packets cost, not 40 000 x 2048."""
    out = np.empty(len(vals))
    groups, counts = np.unique(g, return_counts=True)
    widths = 1 << np.ceil(np.log2(counts)).astype(np.int64)
    row_of = np.full(ng, -1, dtype=np.int64)
    for width in np.unique(widths).tolist():
        members = groups[widths == width]
        row_of[:] = -1
        row_of[members] = np.arange(len(members))
        sel = np.flatnonzero(row_of[g] >= 0)
        rows = np.zeros((len(members), width))
        ri, ci = row_of[g[sel]], k[sel] - 1
        rows[ri, ci] = vals[sel]
        out[sel] = np.cumsum(rows, axis=1)[ri, ci]
    return out


def fold(streams: List[RtpStream], starts: np.ndarray, seq: np.ndarray, rts: np.ndarray, arrival: np.ndarray,
         b1: np.ndarray) -> None:
    """Fold packets into their streams. The arrays hold packets grouped by stream, in capture order within
    each group; group g (stream ``streams[g]``) is ``[starts[g], starts[g + 1])`` (the last runs to the end)."""
    n = len(seq)
    if not n:
        return
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], n)
    first = starts.copy()
    consumed = []
    # Streams seen for the first time take their first packet as the reference (as flush() does).
    for g, st in enumerate(streams):
        if st.waiting:  # its clock is still to be measured: its packets queue up (see RtpStream.flush)
            continue
        if st.packets == 0 and len(st.pending) < 2:
            i = int(first[g])
            a = float(arrival[i])
            st.base_seq = int(seq[i])
            st.expect = st.base_seq + 1
            st.first_ts = st.last_arrival = st.last_ts = st.last_any = a
            st.first_transit = st.last_transit = a * st.rate - float(rts[i])
            st.packets = 1
            first[g] += 1
            consumed.append(i)
        elif len(st.pending) > 1:  # packets queued by the slow path come first
            st.flush()
    keep = first < ends
    if not keep.all():
        streams = [st for st, k in zip(streams, keep) if k]
        first, ends = first[keep], ends[keep]
    if not streams:
        return
    lengths = ends - first
    # Per-group carried state.
    prev_seq0 = np.array([(st.expect - 1) & 0xFFFF for st in streams], dtype=np.int64)
    main_pt = np.array([st.pt for st in streams], dtype=np.int64)
    # Gather the packets group by group into one contiguous array (dropping consumed first packets).
    # Groups cover [0, n) end to end; only the first packets of new streams were taken out.
    kept = np.ones(n, dtype=bool)
    kept[consumed] = False
    idx = np.flatnonzero(kept) if consumed else np.arange(n)
    S = seq[idx].astype(np.int64)
    T = rts[idx].astype(np.float64)
    R = arrival[idx]
    B = b1[idx].astype(np.int64)
    g_of = np.repeat(np.arange(len(streams)), lengths)
    gstart = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Is every packet the next one or a few ahead, and of the main payload type?
    prev = np.empty_like(S)
    prev[1:] = S[:-1]
    prev[gstart] = prev_seq0
    delta = (S - prev) & 0xFFFF
    ok = (delta >= 1) & (delta < MAX_DROPOUT) & ((B == main_pt[g_of]) | (B == (main_pt[g_of] | 0x80)))
    clean = np.logical_and.reduceat(ok, gstart) & ~np.array([st.waiting for st in streams], dtype=bool)
    if not clean.all():
        for g in np.nonzero(~clean)[0].tolist():
            st = streams[g]
            lo, hi = int(gstart[g]), int(gstart[g] + lengths[g])
            p = st.pending
            for values in zip(S[lo:hi].tolist(), rts[idx[lo:hi]].tolist(), R[lo:hi].tolist(), B[lo:hi].tolist()):
                p += values
            st.flush(wait=True)
        sel = clean[g_of]
        streams = [st for st, c in zip(streams, clean) if c]
        if not streams:
            return
        lengths = lengths[clean]
        S, T, R, B, prev, delta = S[sel], T[sel], R[sel], B[sel], prev[sel], delta[sel]
        main_pt = main_pt[clean]
        g_of = np.repeat(np.arange(len(streams)), lengths)
        gstart = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    ng = len(streams)
    gend = gstart + lengths
    rate = np.array([float(st.rate) for st in streams])
    marker = B != main_pt[g_of]
    transit = R * rate[g_of] - T
    prev_t = np.empty_like(transit)
    prev_t[1:] = transit[:-1]
    prev_t[gstart] = [st.last_transit for st in streams]
    d = np.abs(transit - prev_t)
    d = np.where(d > 2147483648.0, 4294967296.0 - d, d)  # the RTP timestamp wrapped
    prev_a = np.empty_like(R)
    prev_a[1:] = R[:-1]
    prev_a[gstart] = [st.last_arrival for st in streams]
    gap = R - prev_a
    # Outages: measured from the last packet of any type (clean groups hold only the main type, so
    # that is the previous packet, or the stream's ``last_any`` for the first one).
    prev_a[gstart] = [st.last_any for st in streams]
    for i in np.flatnonzero((R - prev_a >= OUTAGE) & ~marker).tolist():
        streams[int(g_of[i])].outage(float(prev_a[i]), float(R[i]))
    wraps = np.add.reduceat((S < prev).astype(np.int64), gstart)
    gaps = np.add.reduceat((delta > 1).astype(np.int64), gstart)
    # The jitter filter, in rounds of ROUND packets per group.
    J = np.empty_like(d)
    j0 = np.array([st.jitter_ts for st in streams])
    pos = np.arange(len(S)) - gstart[g_of]
    rounds = int((lengths.max() + ROUND - 1) // ROUND)
    for r in range(rounds):
        m = (pos >= r * ROUND) & (pos < (r + 1) * ROUND) if rounds > 1 else slice(None)
        k = pos[m] - r * ROUND + 1
        gm = g_of[m]
        jr = _POW_A[k] * (j0[gm] + _group_cumsum(np, gm, k, _POW_INV_A[k] * d[m] * 0.0625, ng))
        J[m] = jr
        lasts = np.flatnonzero(np.r_[gm[1:] != gm[:-1], True])
        j0[gm[lasts]] = jr[lasts]
    # Jitter buffers (RtpStream.flush has the rule): the delay over a playout base that is the running
    # minimum of u, per stream (its own slice), carried from the blocks before.
    t0 = np.array([st.first_transit for st in streams])[g_of]
    a0 = np.array([st.first_ts for st in streams])[g_of]
    u = np.mod(transit - t0 + 2147483648.0, 4294967296.0) - 2147483648.0 - (JB_DRIFT * rate)[g_of] * (R - a0)
    umin = np.empty_like(u)
    for g, st in enumerate(streams):
        lo, hi = int(gstart[g]), int(gend[g])
        np.minimum.accumulate(u[lo:hi], out=umin[lo:hi])
        np.minimum(umin[lo:hi], st.jb_umin, out=umin[lo:hi])
    # (a packet that lowers the base is never late: its delay is 0 against its own minimum)
    prev_min = np.empty_like(u)
    prev_min[1:] = umin[:-1]
    prev_min[gstart] = [st.jb_umin for st in streams]
    delay = u - prev_min
    over = delay > (ADAPTIVE_JB_MIN * rate)[g_of]
    late_f = np.add.reduceat((over & (delay > (FIXED_JB * rate)[g_of])).astype(np.int64), gstart)
    late_a = np.zeros(ng, dtype=np.int64)
    peaks = [st.jb_peak for st in streams]
    oi = np.flatnonzero(over)
    if len(oi):   # rare packets: the adaptive buffer's running maximum, group by group
        v = np.log(delay[oi]) + (R[oi] - a0[oi]) * (1.0 / JB_DECAY)
        og = g_of[oi]
        cuts = np.flatnonzero(np.r_[True, og[1:] != og[:-1]])
        for lo, hi in zip(cuts.tolist(), np.r_[cuts[1:], len(oi)].tolist()):
            g = int(og[lo])
            run = np.maximum.accumulate(np.r_[peaks[g], v[lo:hi]])
            late_a[g] = int(np.count_nonzero(v[lo:hi] > run[:-1] + JB_HEADROOM))
            peaks[g] = float(run[-1])
    live = ~marker
    jsum = np.add.reduceat(np.where(live, J, 0.0), gstart)
    jmax = np.maximum.reduceat(np.where(live, J, -1.0), gstart)
    jn = np.add.reduceat(live.astype(np.int64), gstart)
    gmax = np.maximum.reduceat(np.where(live, gap, -1.0), gstart)
    last = gend - 1
    for g, st in enumerate(streams):
        li = int(last[g])
        st.packets += int(lengths[g])
        st.expect = int(S[li]) + 1
        st.cycles += 65536 * int(wraps[g])
        st.loss_events += int(gaps[g])
        st.last_arrival = st.last_ts = st.last_any = float(R[li])
        st.last_transit = float(transit[li])
        st.jitter_ts = float(J[li])
        st.jb_umin = float(umin[li])
        st.jb_peak = peaks[g]
        st.late_fixed += int(late_f[g])
        st.late_adaptive += int(late_a[g])
        st.jsum_ts += float(jsum[g])
        st.jitter_n += int(jn[g])
        st.marker_packets += int(lengths[g] - jn[g])
        if jmax[g] > st.jmax_ts:
            st.jmax_ts = float(jmax[g])
        if gmax[g] > st.max_delta:
            st.max_delta = float(gmax[g])
