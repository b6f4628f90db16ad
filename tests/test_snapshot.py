"""Snapshots: ``Analyzer.snapshot()`` any time, as often as wanted, each an immutable, consistent
``Analysis`` that later feeding does not change; the last one equals the whole-file analysis."""
import json

import pytest

import sipflow
from sipflow.analysis.analyzer import Analyzer
from sipflow.capture import open_captures, records

from conftest import SAMPLES, sample_files


def _rounded(v):
    # The whole-file path folds RTP on NumPy arrays, the record-by-record path one packet at a time:
    # the same figures, summed in another order (test_rtpvec holds them to 1e-9).
    if isinstance(v, float):
        return float(f"{v:.9g}")
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    return v


def _doc(a):
    return json.dumps(_rounded(a.to_dict()), sort_keys=True, default=str)


def _feed_until(an, recs, stop):
    for ts, fi, frame, lt, buf, off, caplen in recs:
        an.feed(ts, fi, frame, lt, bytes(buf[off:off + caplen]))
        if frame == stop:
            return


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_snapshots_mid_capture_and_after_are_consistent(path):
    files = open_captures([str(path)])
    an = Analyzer()
    an.files.extend(files)
    recs = records(files)
    whole = sipflow.analyze(str(path))
    half = whole.messages[len(whole.messages) // 2].frame
    _feed_until(an, recs, half)
    first = an.snapshot()
    first_doc = _doc(first)
    assert first.messages and first.messages[-1].frame <= half
    assert an.snapshot().to_dict() == first.to_dict(), "a second snapshot with nothing fed is the same"
    _feed_until(an, recs, None)
    an.close()
    last = an.snapshot()
    assert _doc(first) == first_doc, "feeding on must not change an earlier snapshot"
    # The earlier snapshot is a prefix of the later one.
    assert list(last.messages[:len(first.messages)]) == list(first.messages)
    later = {c.call_id: c for c in last.calls}
    for c in first.calls:
        assert list(later[c.call_id].events[:len(c.events)]) == list(c.events)
    assert first.stats["frames"] <= last.stats["frames"]
    # And the last one is what the whole-file analysis says (fast paths and all).
    assert _doc(last) == _doc(whole)
    # result() makes the final analysis once, the calls letting go of their state as they are frozen:
    # it says the same, changes no earlier snapshot, and is what every later look returns.
    last_doc = _doc(last)
    final = an.result()
    assert _doc(final) == last_doc and _doc(last) == last_doc and _doc(first) == first_doc
    assert an.result() is final and an.snapshot() is final


def test_a_call_in_progress_at_a_snapshot_is_in_progress_there_and_answered_later():
    path = SAMPLES / "basic-call-rtp.pcap"
    files = open_captures([str(path)])
    an = Analyzer()
    an.files.extend(files)
    recs = records(files)
    _feed_until(an, recs, 3)                      # INVITE, 100, 180
    ringing = an.snapshot()
    _feed_until(an, recs, None)
    done = an.result()
    assert ringing.calls[0].outcome.value == "in_progress" and ringing.calls[0].state.value == "ringing"
    assert done.calls[0].outcome.value == "answered" and done.calls[0].state.value == "ended"
    assert ringing.calls[0].outcome.value == "in_progress", "the earlier record did not change"
    assert not ringing.streams and done.streams


def test_analysis_and_its_records_cannot_be_changed():
    a = sipflow.analyze(str(SAMPLES / "basic-call-rtp.pcap"))
    with pytest.raises(AttributeError):
        a.calls[0].outcome = None
    with pytest.raises(AttributeError):
        a.streams[0].packets = 0
    with pytest.raises((AttributeError, TypeError)):
        a.calls = ()
    assert isinstance(a.messages, tuple) and isinstance(a.calls, tuple)


def test_feeding_after_the_end_of_input_is_refused():
    path = SAMPLES / "basic-call-rtp.pcap"
    an = Analyzer()
    an.run(open_captures([str(path)]))
    an.result()
    with pytest.raises(RuntimeError, match="closed"):
        an.feed(0.0, 0, 1, 1, b"")
    with pytest.raises(RuntimeError, match="closed"):
        an.run(open_captures([str(path)]))
