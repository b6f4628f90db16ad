"""Bad input never gives a traceback: real frames with random damage go through the whole analysis.

Mutation fuzzing (hypothesis): frames of real samples (UDP, TCP, WebSocket, fragments) with bytes
flipped, cut or inserted; every record must be accounted for and the result must serialise."""
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sipflow

from conftest import SAMPLES
from pcaptools import read_pcap, write_pcap

SOURCES = ["basic-call-rtp.pcap", "websocket.pcap", "tcp-segmented.pcap", "udp-fragmented.pcap",
           "call-ipv6.pcap", "options-message-subscribe.pcap"]


@pytest.fixture(scope="module")
def frames():
    out = []
    for name in SOURCES:
        if (SAMPLES / name).exists():
            lt, recs = read_pcap(SAMPLES / name)
            out += [r for r in recs if len(r[2]) < 4000]
    if not out:
        pytest.skip("samples missing")
    return out


def mutate(frame: bytes, rnd: random.Random) -> bytes:
    b = bytearray(frame)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.random()
        pos = rnd.randrange(len(b)) if b else 0
        if op < 0.6 and b:
            b[pos] = rnd.randrange(256)
        elif op < 0.8:
            del b[pos:pos + rnd.randint(1, 40)]
        else:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 20)))
    return bytes(b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_damaged_frames_never_raise(tmp_path_factory, frames, seed):
    rnd = random.Random(seed)
    picked = rnd.sample(frames, min(len(frames), 60))
    recs = [(s, u, mutate(f, rnd) if rnd.random() < 0.7 else f) for s, u, f in picked]
    recs.sort(key=lambda r: (r[0], r[1]))
    path = write_pcap(tmp_path_factory.mktemp("fuzz") / "f.pcap", 1, recs)
    a = sipflow.analyze(str(path))
    assert a.stats["frames"] == len(recs)
    json.dumps(a.to_dict())  # every figure is serialisable, nothing half-built
    from sipflow.render import tables as report
    report.summary_text(a), report.calls_text(a), report.analysis_csv(a)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3000))
def test_random_bytes_as_a_capture_file_give_a_clear_error_or_a_result(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rnd") / "r.pcap"
    # half the time, a valid header in front of random records
    path.write_bytes((b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + b"\0" * 8 + b"\xff\xff\x00\x00\x01\x00\x00\x00" + data)
                     if data[:1] and data[0] % 2 else data)
    try:
        a = sipflow.analyze(str(path))
    except sipflow.CaptureError as e:
        assert str(path) in str(e)
        return
    json.dumps(a.to_dict())
