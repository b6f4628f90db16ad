#!/usr/bin/env python3
"""A mutation-fuzzing campaign over real frames: any number of damaged captures through the whole
analysis and every renderer; anything but a clean ``CaptureError`` is a crash, saved for a regression test.

    python tests/fuzz/campaign.py --inputs 500000 [--seed 1] [--out tests/fuzz/crashes]

Each input is a small classic pcap made of 1-8 frames of the bundled samples (UDP, TCP, WebSocket,
fragments, IPv6, SCTP-free), each frame damaged with probability 0.7 by byte flips, insertions,
deletions, truncation, or a splice of another frame's bytes at a header boundary (link, IP, UDP/TCP,
SIP payload). Every input is analysed, snapshotted, serialised to JSON and rendered as text and CSV.
Prints a line every 10 000 inputs and a summary; exits 1 if anything crashed. The CI test suite runs the
same mutations a bounded number of times (tests/test_robustness.py); this script is for long campaigns.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sipflow  # noqa: E402
from pcaptools import read_pcap, write_pcap  # noqa: E402
from sipflow.render import jsonout, tables  # noqa: E402

SOURCES = ["basic-call-rtp.pcap", "websocket.pcap", "tcp-segmented.pcap", "udp-fragmented.pcap", "call-ipv6.pcap",
           "options-message-subscribe.pcap", "register-401-200.pcap", "reinvite-hold.pcap"]
BOUNDARIES = (0, 12, 14, 23, 26, 34, 36, 42, 54, 60)   # Ethernet, IPv4 fields, UDP/TCP, SIP start


def frames():
    out = []
    for name in SOURCES:
        path = ROOT / "samples" / name
        if path.exists():
            out += [f for _, _, f in read_pcap(path)[1] if len(f) < 4000]
    return out


def mutate(frame: bytes, pool, rnd: random.Random) -> bytes:
    b = bytearray(frame)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.random()
        pos = rnd.randrange(len(b)) if b else 0
        if op < 0.45 and b:
            b[pos] = rnd.randrange(256)
        elif op < 0.6:
            del b[pos:pos + rnd.randint(1, 40)]
        elif op < 0.75:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 20)))
        elif op < 0.85:
            del b[rnd.randrange(len(b) + 1):]                       # truncation
        else:                                                       # splice at a header boundary
            other = rnd.choice(pool)
            cut = rnd.choice(BOUNDARIES)
            b[cut:] = other[cut:cut + rnd.randint(1, 400)]
    return bytes(b)


def run_one(path: str) -> None:
    try:
        a = sipflow.analyze(path)
    except sipflow.CaptureError:
        return
    json.dumps(a.to_dict())
    jsonout.write_ndjson(a, io.StringIO())
    tables.summary_text(a)
    tables.calls_text(a)
    tables.streams_text(a)
    tables.analysis_csv(a)
    tables.calls_csv(a)
    for m in a.messages[:3]:
        m.msg   # the full parse of a stored message


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "crashes"), help="where crashing inputs are saved")
    args = ap.parse_args(argv)
    pool = frames()
    if not pool:
        print("no samples found", file=sys.stderr)
        return 2
    rnd = random.Random(args.seed)
    crashes = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.pcap")
        for n in range(1, args.inputs + 1):
            picked = [rnd.choice(pool) for _ in range(rnd.randint(1, 8))]
            recs = [(1_700_000_000 + i, 0, mutate(f, pool, rnd) if rnd.random() < 0.7 else f)
                    for i, f in enumerate(picked)]
            write_pcap(path, 1, recs)
            try:
                run_one(path)
            except Exception as e:   # noqa: BLE001 - a crash is what this looks for
                where = traceback.extract_tb(e.__traceback__)[-1]
                key = (type(e).__name__, where.filename, where.lineno)
                if key not in crashes:
                    os.makedirs(args.out, exist_ok=True)
                    keep = os.path.join(args.out, f"crash-{len(crashes) + 1}.pcap")
                    Path(keep).write_bytes(Path(path).read_bytes())
                    crashes[key] = (keep, f"{type(e).__name__}: {e}")
            if n % 10000 == 0:
                print(f"{n} inputs, {len(crashes)} distinct crashes, {n / (time.time() - t0):.0f} inputs/s", flush=True)
    print(f"done: {args.inputs} inputs, seed {args.seed}, {len(crashes)} distinct crashes, "
          f"{time.time() - t0:.0f} s")
    for (kind, fn, line), (keep, text) in crashes.items():
        print(f"  {kind} at {fn}:{line}: {text[:120]}  (input {keep})")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
