#!/usr/bin/env python3
"""Floor for pure-Python pcap reading: walk the records of a classic pcap with struct.

    python bench/pcap_walk.py FILE

Reads the file in large chunks and unpacks each 16-byte record header, touching
nothing else.  Prints the number of records and captured bytes.  Any real
analyser written in Python does at least this much work per packet.
"""

import struct
import sys

CHUNK = 1 << 20


def walk(path):
    """Return (records, captured bytes) of a classic pcap file."""
    with open(path, "rb", buffering=0) as f:
        head = f.read(24)
        if len(head) < 24:
            raise ValueError("%s: not a pcap file (too short)" % path)
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            rec = struct.Struct("<IIII")
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            rec = struct.Struct(">IIII")
        else:
            raise ValueError("%s: not a classic pcap file (magic %s)" % (path, magic.hex()))
        unpack_from = rec.unpack_from
        read = f.read
        buf = read(CHUNK)
        size = len(buf)
        off = 0
        n = 0
        total = 0
        while True:
            if off + 16 > size:
                more = read(CHUNK)
                if not more:
                    break
                buf = buf[off:] + more
                size = len(buf)
                off = 0
                continue
            incl = unpack_from(buf, off)[2]
            end = off + 16 + incl
            if end > size:
                more = read(max(CHUNK, incl + 16))
                if not more:
                    break                      # truncated last record
                buf = buf[off:] + more
                size = len(buf)
                off = 0
                continue
            n += 1
            total += incl
            off = end
    return n, total


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    n, total = walk(argv[0])
    print("%d records, %d captured bytes" % (n, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
