#!/usr/bin/env python3
"""Floor for a pure-Python SIP analysis: the least any Python analyser must do per SIP message.

    python bench/sip_floor.py FILE [--no-json]

For each record of a classic pcap (Ethernet, IPv4 without options, UDP: what bench/make_capture.py
writes) it cuts out the UDP payload, finds the end of the SIP header, reads the headers an analysis
needs (Call-ID, CSeq, Via, From, To, Contact, Expires, Content-Type, Content-Length, compact forms
too) with one compiled regular expression (C code: the fastest way Python has to find them), groups
the messages by Call-ID, and writes one small JSON line per message (frame, time, start line,
Call-ID, CSeq) to /dev/null with the json module's C encoder. It tracks no transaction, dialog or
registration, builds no record a view could read, and checks nothing.

So its time is a lower bound for `sipflow analyze --format json` written in Python: bench/run.py
times it beside tshark when given --stdlib-baseline, which says whether a speed target is reachable
without compiled code.
"""

import json
import re
import struct
import sys
import time

HEADERS = re.compile(rb"\r\n(Call-ID|i|CSeq|Via|v|From|f|To|t|Contact|m|Expires|Content-Type|c|"
                     rb"Content-Length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
ETH_IP_UDP = 14 + 20 + 8
CHUNK = 8 << 20


def run(path, with_json=True):
    """Return the number of SIP messages read."""
    encode = json.JSONEncoder(separators=(",", ":")).encode
    record = struct.Struct("<IIII").unpack_from
    find = HEADERS.findall
    calls = {}
    frame = count = 0
    with open(path, "rb", buffering=0) as f, open("/dev/null", "w") as out:
        write = out.write
        if f.read(24)[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            raise SystemExit("%s: not a little-endian classic pcap" % path)
        data = b""
        while True:   # read in chunks (as a capture reader must: stdin, gzip), records cut at the edges
            more = f.read(CHUNK)
            if not more:
                break
            data += more
            off, end = 0, len(data)
            while off + 16 <= end:
                sec, frac, caplen, _ = record(data, off)
                if off + 16 + caplen > end:
                    break
                payload = data[off + 16 + ETH_IP_UDP:off + 16 + caplen]
                off += 16 + caplen
                frame += 1
                head_end = payload.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                fields = dict(find(payload, 0, head_end))
                call_id = fields.get(b"Call-ID") or fields.get(b"i") or b""
                seen = calls.get(call_id)
                if seen is None:
                    seen = calls[call_id] = []
                seen.append(frame)
                count += 1
                if with_json:
                    first = payload[:payload.find(b"\r\n")]
                    write(encode({"frame": frame, "ts": sec + frac * 1e-6,
                                  "line": first.decode("utf-8", "replace"),
                                  "call_id": call_id.decode("utf-8", "replace"),
                                  "cseq": (fields.get(b"CSeq") or b"").decode("utf-8", "replace")}))
                    write("\n")
            data = data[off:]
    return count


def main(argv):
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__.split("\n\n")[1])
    t0 = time.perf_counter()
    n = run(argv[0], "--no-json" not in argv)
    dt = time.perf_counter() - t0
    print("%d SIP messages in %.2f s: %.2f us per message" % (n, dt, dt / max(n, 1) * 1e6))


if __name__ == "__main__":
    main(sys.argv[1:])
