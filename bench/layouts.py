#!/usr/bin/env python3
"""What a SIP message record costs in Python: as an object (today) or as columns (the layout the
memory target needs).

    PYTHONPATH=. python bench/layouts.py FILE [--messages N]

FILE is a classic pcap of Ethernet/IPv4/UDP SIP (what bench/make_capture.py writes). Every message
is scanned once with sipflow's own scan (sip.scan) and its repeated strings interned, as the
analyzer does; then the same records are kept two ways, each measured alone with tracemalloc:

* objects: one ``SipEvent`` per message (analysis.messages: 15 slots, flow and kind shared as
  tuples, its time a float and its frame-and-place an int), in one list, as the analyzer keeps them;
* columns: no object per message: times, frames and places in ``array`` columns of 8 bytes, flow and
  kind as 4-byte indexes into shared tables, the strings and the CSeq as references in list
  columns, the flags in bytes.

It prints bytes per message for each, the time to build each, and the time of one pass that reads
the 14 fields a JSON message line needs: attribute reads on the objects, ``zip`` over the columns,
and a view object per row whose properties read the columns (what every view that takes records
one by one, and every tracker rule that looks back at an earlier message, would pay).

Nothing here is part of sipflow: it measures the choice between the two layouts (issue 6).
"""

import gc
import sys
import time
import tracemalloc
from array import array

from sipflow.analysis.messages import RawStore, Shared, SipEvent
from sipflow.sip.scan import scan

ETH_IP_UDP = 14 + 20 + 8
_SHARED = ("call_id", "branch", "from_tag", "to_tag", "from_user", "to_user")


def read_messages(path, limit):
    """(ts, frame, src, sport, dst, dport, payload) of the first ``limit`` SIP messages."""
    import struct
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        raise SystemExit("%s: not a little-endian classic pcap" % path)
    micro = data[:4] == b"\xd4\xc3\xb2\xa1"
    rec = struct.Struct("<IIII").unpack_from
    off, frame = 24, 0
    while off + 16 <= len(data) and len(out) < limit:
        sec, frac, caplen, _ = rec(data, off)
        pkt = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        frame += 1
        if len(pkt) <= ETH_IP_UDP or pkt[12:14] != b"\x08\x00" or pkt[23] != 17:
            continue
        src = ".".join(str(b) for b in pkt[26:30])
        dst = ".".join(str(b) for b in pkt[30:34])
        sport, dport = struct.unpack_from("!HH", pkt, 34)
        out.append((sec + frac * (1e-6 if micro else 1e-9), frame, src, sport, dst, dport, pkt[ETH_IP_UDP:]))
    return out


class Columns:
    """The records as columns: nothing per message but the slots of the columns."""

    def __init__(self):
        self.ts, self.frame, self.place = array("d"), array("Q"), array("Q")
        self.flow, self.kind = array("I"), array("I")
        self.flows, self.kinds, self.flow_ix, self.kind_ix = [], [], {}, {}
        self.call_id, self.cseq, self.from_user, self.to_user = [], [], [], []
        self.from_tag, self.to_tag, self.branch = [], [], []
        self.flags = bytearray()

    def add(self, ts, frame, place, flow, kind, h):
        i = self.flow_ix.get(flow)
        if i is None:
            i = self.flow_ix[flow] = len(self.flows)
            self.flows.append(flow)
        j = self.kind_ix.get(kind)
        if j is None:
            j = self.kind_ix[kind] = len(self.kinds)
            self.kinds.append(kind)
        self.ts.append(ts)
        self.frame.append(frame)
        self.place.append(place)
        self.flow.append(i)
        self.kind.append(j)
        self.call_id.append(h.call_id)
        self.cseq.append(h.cseq)
        self.from_user.append(h.from_user)
        self.to_user.append(h.to_user)
        self.from_tag.append(h.from_tag)
        self.to_tag.append(h.to_tag)
        self.branch.append(h.branch)
        self.flags.append(0)


class View:
    """One row of ``Columns`` read through properties (what a record API over columns looks like)."""
    __slots__ = ("c", "i")

    def __init__(self, c, i):
        self.c, self.i = c, i

    ts = property(lambda self: self.c.ts[self.i])
    frame = property(lambda self: self.c.frame[self.i])
    src = property(lambda self: self.c.flows[self.c.flow[self.i]][0])
    sport = property(lambda self: self.c.flows[self.c.flow[self.i]][1])
    dst = property(lambda self: self.c.flows[self.c.flow[self.i]][2])
    dport = property(lambda self: self.c.flows[self.c.flow[self.i]][3])
    transport = property(lambda self: self.c.flows[self.c.flow[self.i]][4])
    method = property(lambda self: self.c.kinds[self.c.kind[self.i]][0])
    status = property(lambda self: self.c.kinds[self.c.kind[self.i]][1])
    call_id = property(lambda self: self.c.call_id[self.i])
    cseq = property(lambda self: self.c.cseq[self.i])
    from_tag = property(lambda self: self.c.from_tag[self.i])
    to_tag = property(lambda self: self.c.to_tag[self.i])
    branch = property(lambda self: self.c.branch[self.i])


FIELDS = ("ts", "frame", "src", "sport", "dst", "dport", "transport", "method", "status", "call_id", "cseq",
          "from_tag", "to_tag", "branch")


def read_objects(events):
    n = 0
    for e in events:
        n += len((e.ts, e.frame, e.src, e.sport, e.dst, e.dport, e.transport, e.method, e.status, e.call_id,
                  e.cseq, e.from_tag, e.to_tag, e.branch))
    return n


def read_columns(c):
    n = 0
    flows, kinds = c.flows, c.kinds
    for ts, fr, fl, k, cid, cseq, ft, tt, br in zip(c.ts, c.frame, c.flow, c.kind, c.call_id, c.cseq, c.from_tag,
                                                   c.to_tag, c.branch):
        f, m = flows[fl], kinds[k]
        n += len((ts, fr, f[0], f[1], f[2], f[3], f[4], m[0], m[1], cid, cseq, ft, tt, br))
    return n


def read_views(c):
    n = 0
    for i in range(len(c.ts)):
        e = View(c, i)
        n += len((e.ts, e.frame, e.src, e.sport, e.dst, e.dport, e.transport, e.method, e.status, e.call_id,
                  e.cseq, e.from_tag, e.to_tag, e.branch))
    return n


def measure(build):
    """(what ``build`` made, bytes it kept, seconds it took). Timed on its own: tracemalloc slows every
    allocation, which would charge the objects layout for what it allocates."""
    t0 = time.perf_counter()
    kept = build()
    dt = time.perf_counter() - t0
    del kept
    tracemalloc.start()
    kept = build()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return kept, size, dt


def timed(fn, arg):
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def main(argv):
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__.split("\n\n")[1])
    gc.disable()   # as the analyzer does while it builds its records
    limit = int(argv[argv.index("--messages") + 1]) if "--messages" in argv else 1 << 62
    msgs = read_messages(argv[0], limit)
    shared, store, ports = Shared(), RawStore(), {}
    rows = []
    for ts, frame, src, sport, dst, dport, payload in msgs:   # what both layouts start from, kept out of the sizes
        h = scan(payload)
        for name in _SHARED:
            v = getattr(h, name)
            if v:
                setattr(h, name, sys.intern(v))
        if h.cseq is not None:
            h.cseq = ports.setdefault(h.cseq, h.cseq)
        flow = shared.flow(sys.intern(src), ports.setdefault(sport, sport), sys.intern(dst),
                           ports.setdefault(dport, dport), "udp", 0, store)
        kind = shared.kind(h.method, h.status, h.reason, h.cseq_method)
        h.body, h.contacts, h.via, h.problems = b"", (), None, ()   # the scan's extras: not kept by either
        rows.append((ts, frame, (frame,), flow, kind, 1 << 30 | len(payload), h))
    del msgs
    n = len(rows)

    def objects():
        out = []
        for ts, frame, frames, flow, kind, place, h in rows:
            e = SipEvent(h, ts, frame, frames, flow, kind, place)
            e.head = None
            out.append(e)
        return out

    def columns():
        c = Columns()
        for ts, frame, frames, flow, kind, place, h in rows:
            c.add(ts, frame, place, flow, kind, h)
        return c

    events, obj_size, obj_dt = measure(objects)
    cols, col_size, col_dt = measure(columns)
    print("%d SIP messages, records kept two ways (bytes per message from tracemalloc; times per message)" % n)
    print("%-8s %10s %12s %14s" % ("layout", "bytes/msg", "build", "read 14 fields"))
    print("%-8s %10.0f %10.2f us %12.2f us" % ("objects", obj_size / n, obj_dt / n * 1e6,
                                              timed(read_objects, events) / n * 1e6))
    print("%-8s %10.0f %10.2f us %12.2f us  (zip over the columns)" % ("columns", col_size / n, col_dt / n * 1e6,
                                                                      timed(read_columns, cols) / n * 1e6))
    print("%-8s %10s %13s %12.2f us  (a view object per row)" % ("", "", "", timed(read_views, cols) / n * 1e6))
    print("columns keep %.0f bytes per message less: %.1f MB on 440,000 messages"
          % ((obj_size - col_size) / n, (obj_size - col_size) / n * 440000 / 1e6))


if __name__ == "__main__":
    main(sys.argv[1:])
