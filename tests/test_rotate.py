"""`sipflow live -w FILE --rotate SIZE|TIME --keep-files N` (capture.writer.RotatingWriter): a real
capture's frames written through it come out as whole, valid files of the asked size or span, in
order, the oldest removed beyond N; and the options refuse what they cannot mean."""
import os

import pytest
from click.testing import CliRunner

from sipflow.capture.files import CaptureFile
from sipflow.capture.writer import PCAP, RotatingWriter, parse_rotation
from sipflow.cli import main

from conftest import SAMPLES

SAMPLE = SAMPLES / "transfer-hold.pcap"


def frames(path):
    return [(round(ts * 1e6), bytes(buf[off:off + n])) for ts, _, _, _, buf, off, n in CaptureFile(str(path))]


def write_all(tmp_path, **kw):
    original = frames(SAMPLE)
    f = CaptureFile(str(SAMPLE))
    w = RotatingWriter(str(tmp_path / "live.pcap"), PCAP, f.linktypes[0] if f.linktypes else 1, **kw)
    for ts, data in original:
        w.write(ts * 1000, 1, data)
    w.close()
    return original, w


def test_size_rotation_makes_valid_files_that_hold_everything_in_order(tmp_path):
    original, w = write_all(tmp_path, max_bytes=8000)
    assert len(w.paths) > 3 and w.frames == len(original)
    assert [os.path.basename(p) for p in w.paths] == [f"live-{n:04d}.pcap" for n in range(1, len(w.paths) + 1)]
    got = []
    for p in w.paths:
        f = CaptureFile(p)
        part = frames(p)
        assert not f.truncated and part
        assert os.path.getsize(p) <= 8000 + max(len(d) for _, d in part) + 24   # one frame past the size at most
        got += part
    assert got == original


def test_keep_files_leaves_only_the_latest(tmp_path):
    original, w = write_all(tmp_path, max_bytes=8000, keep=2)
    assert len(w.paths) == 2 and sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in w.paths]
    tail = frames(w.paths[0]) + frames(w.paths[1])
    assert tail == original[-len(tail):]


def test_time_rotation_cuts_by_capture_time(tmp_path):
    original, w = write_all(tmp_path, max_seconds=1.0)
    spans = []
    for p in w.paths:
        part = frames(p)
        spans.append((part[0][0], part[-1][0]))
        assert part[-1][0] - part[0][0] < 1_000_000
    assert len(w.paths) >= 4        # the sample spans more than four seconds
    assert all(b[0] - a[0] >= 1_000_000 for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("text,want", [("100MB", (100_000_000, None)), ("512KiB", (524_288, None)),
                                       ("1h", (None, 3600.0)), ("90s", (None, 90.0)), ("2d", (None, 172800.0))])
def test_rotation_values(text, want):
    assert parse_rotation(text) == want


@pytest.mark.parametrize("args,words", [
    (["-i", "lo", "-w", "x.pcap", "--rotate", "fast"], "--rotate"),
    (["-i", "lo", "--rotate", "1h"], "give -w FILE too"),
    (["-i", "lo", "-w", "x.pcap", "--keep-files", "3"], "give --rotate too"),
    (["-i", "lo", "-w", "x.pcap", "--rotate", "0MB"], "--rotate"),
])
def test_rotation_options_are_checked(args, words):
    r = CliRunner().invoke(main, ["live", *args])
    assert r.exit_code == 2 and words in r.output
