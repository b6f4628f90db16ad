"""Capture containers and link layers: every shape of the same real packets reads the same.

The base is a bundled sample made by SIPp on loopback; the variants rewrite its framing (pcap in
nanoseconds, big-endian, pcapng with mixed interfaces, gzip, stdin, Linux cooked v1/v2, raw IP, BSD
loopback, 802.1Q, QinQ). Truncated and broken files must give a clear message or a warning, never a
traceback.
"""
import subprocess
import sys

import pytest

import sipflow
from sipflow.errors import CaptureError

from conftest import SAMPLES
from pcaptools import SHAPES, read_pcap, write_pcap, write_pcapng

BASE = SAMPLES / "basic-call-rtp.pcap"


def fingerprint(a):
    msgs = [(m.frame, round(m.ts, 6), m.source, m.destination, m.msg.method, m.msg.status, m.msg.call_id,
             m.msg.cseq) for m in a.messages]
    streams = sorted((s.src, s.sport, s.dst, s.dport, s.ssrc, s.packets, s.lost) for s in a.streams)
    return msgs, streams


@pytest.fixture(scope="module")
def base():
    if not BASE.exists():
        pytest.skip("samples/basic-call-rtp.pcap missing")
    a = sipflow.analyze(str(BASE))
    assert a.messages and a.streams, "the base sample must hold SIP and RTP"
    return read_pcap(BASE), fingerprint(a)


@pytest.mark.parametrize("variant", ["nano", "big_endian", "gzip"])
def test_pcap_variants_read_the_same(tmp_path, base, variant):
    (lt, recs), expected = base
    kw = {"nano": dict(nano=True), "big_endian": dict(big_endian=True), "gzip": dict(gz=True)}[variant]
    path = write_pcap(tmp_path / f"v.pcap{'.gz' if variant == 'gzip' else ''}", lt, recs, **kw)
    assert fingerprint(sipflow.analyze(str(path))) == expected


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_link_layers_read_the_same(tmp_path, base, shape):
    (lt, recs), expected = base
    new_lt, fn = SHAPES[shape]
    path = write_pcap(tmp_path / f"{shape}.pcap", new_lt, [(s, u, fn(f)) for s, u, f in recs])
    assert fingerprint(sipflow.analyze(str(path))) == expected


def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path, base):
    (lt, recs), expected = base
    # Odd frames on an Ethernet interface (microseconds), even ones on a SLL2 interface (nanoseconds).
    ng = [(i % 2, s, u, f if i % 2 == 0 else SHAPES["sll2"][1](f)) for i, (s, u, f) in enumerate(recs)]
    ng = [(0 if i % 2 == 0 else 1, s, u, f) for i, (_, s, u, f) in enumerate(ng)]
    path = write_pcapng(tmp_path / "mixed.pcapng", [(1, 6), (276, 9)], ng)
    a = sipflow.analyze(str(path))
    assert a.files[0]["format"] == "pcapng" and a.files[0]["linktypes"] == [1, 276]
    assert fingerprint(a) == expected


def test_pcapng_simple_packet_block_is_counted_as_a_frame(tmp_path, base):
    (lt, recs), expected = base
    path = write_pcapng(tmp_path / "spb.pcapng", [(1, 6)], [(0, s, u, f) for s, u, f in recs], simple_first=True)
    a = sipflow.analyze(str(path))
    # frame 1 has no timestamp in a Simple Packet Block; every frame number stays where it was
    got = fingerprint(a)[0]
    assert [m[0] for m in got] == [m[0] for m in expected[0]]
    assert got[1:] == expected[0][1:]


def test_truncated_capture_keeps_everything_before_the_cut(tmp_path, base):
    (lt, recs), expected = base
    full = write_pcap(tmp_path / "full.pcap", lt, recs).read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(full[:len(full) * 2 // 3 + 7])
    a = sipflow.analyze(str(cut))
    assert a.files[0]["truncated"] and a.warnings and "cut short" in a.warnings[0]
    frames = a.files[0]["frames"]
    assert 0 < frames < len(recs)
    assert fingerprint(a)[0] == [m for m in expected[0] if m[0] <= frames]


def test_truncated_gzip_keeps_everything_before_the_cut(tmp_path, base):
    (lt, recs), expected = base
    blob = write_pcap(tmp_path / "g.pcap.gz", lt, recs, gz=True).read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(blob[:len(blob) // 2])
    a = sipflow.analyze(str(cut))
    assert a.files[0]["truncated"] and a.warnings
    assert fingerprint(a)[0] == [m for m in expected[0] if m[0] <= a.files[0]["frames"]]


def test_stdin_is_read_with_dash():
    if not BASE.exists():
        pytest.skip("sample missing")
    out = subprocess.run([sys.executable, "-m", "sipflow", "calls", "-", "--format", "csv"], stdin=BASE.open("rb"),
                         capture_output=True, check=True)
    direct = subprocess.run([sys.executable, "-m", "sipflow", "calls", str(BASE), "--format", "csv"],
                            capture_output=True, check=True)
    assert out.stdout == direct.stdout and out.stdout.count(b"\n") >= 2


def test_two_files_are_merged_by_time(tmp_path, base):
    (lt, recs), expected = base
    a_path = write_pcap(tmp_path / "a.pcap", lt, recs[0::2])
    b_path = write_pcap(tmp_path / "b.pcap", lt, recs[1::2])
    a = sipflow.analyze([str(a_path), str(b_path)])
    assert [round(m.ts, 6) for m in a.messages] == [m[1] for m in expected[0]]
    assert {m.file for m in a.messages} == {0, 1}
    assert sorted((s.src, s.sport, s.dst, s.dport, s.ssrc, s.packets, s.lost) for s in a.streams) == expected[1]


@pytest.mark.parametrize("content,needle", [
    (b"", "empty file"),
    (b"hello world, not a capture", "not a pcap or pcapng"),
    (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + b"\0" * 8 + b"\xff\xff\x00\x00" + b"\x99\x00\x00\x00", "link type 153"),
])
def test_unreadable_input_is_one_clear_error(tmp_path, content, needle):
    p = tmp_path / "bad.pcap"
    p.write_bytes(content)
    with pytest.raises(CaptureError, match=needle):
        sipflow.analyze(str(p))
    r = subprocess.run([sys.executable, "-m", "sipflow", "calls", str(p)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(p) in r.stderr and needle in r.stderr


def test_missing_file_names_the_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sipflow", "summary", str(tmp_path / "nope.pcap")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "nope.pcap: no such file" in r.stderr


def test_truncated_pcapng_keeps_everything_before_the_cut(tmp_path, base):
    (lt, recs), expected = base
    full = write_pcapng(tmp_path / "full.pcapng", [(1, 6)], [(0, s, u, f) for s, u, f in recs]).read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(full[:len(full) // 2 + 5])
    a = sipflow.analyze(str(cut))
    assert a.files[0]["truncated"] and "cut short" in a.warnings[0]
    frames = a.files[0]["frames"]
    assert 0 < frames < len(recs)
    assert fingerprint(a)[0] == [m for m in expected[0] if m[0] <= frames]


# -- one record API: batches and single records, checked against another reader (scapy) --------------

@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_batches_and_records_match_scapys_reading_of_every_frame(tmp_path, fmt):
    import shutil
    import subprocess

    from scapy.utils import RawPcapNgReader, RawPcapReader

    from sipflow.capture import open_captures
    path = SAMPLES / "call-via-proxy.pcap"
    if fmt == "pcapng":
        if not shutil.which("editcap"):
            pytest.skip("editcap (wireshark-common) is not installed")
        out = tmp_path / "x.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", str(path), str(out)], check=True, timeout=60)
        path = out
    reader = RawPcapNgReader if fmt == "pcapng" else RawPcapReader
    with reader(str(path)) as r:
        theirs = [bytes(data) for data, _meta in r]
    (f,) = open_captures([str(path)])
    ours = []
    for batch in f.batches():
        ours += [(frame, bytes(batch.buf[off:off + n])) for _, frame, off, n in batch.records()]
    assert [frame for frame, _ in ours] == list(range(1, len(theirs) + 1))
    assert [data for _, data in ours] == theirs
    (g,) = open_captures([str(path)])
    assert [(frame, bytes(buf[off:off + n])) for _, _, frame, _, buf, off, n in g] == ours


def test_a_file_that_turns_into_zeros_stops_early_with_a_warning(tmp_path):
    """A gzip bomb: a valid header and two real frames, then 200 MB of zeros (200 KB compressed). The
    zeros are no records: reading stops after a few thousand of them, with a warning, not minutes later."""
    import gzip
    lt, recs = read_pcap(BASE)
    good = write_pcap(tmp_path / "good.pcap", lt, recs[:2]).read_bytes()
    bomb = tmp_path / "bomb.pcap.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        f.write(good)
        chunk = bytes(1 << 20)
        for _ in range(200):
            f.write(chunk)
    assert bomb.stat().st_size < 2 << 20
    a = sipflow.analyze(str(bomb))
    assert a.stats["frames"] < 2 + 5000 and len(a.messages) == 2
    assert a.warnings and "only zeros" in a.warnings[0] and a.files[0]["truncated"]
