"""SIP framing on byte streams (RFC 3261 §18.3), on the TCP streams of real captures.

h11's rule (STYLE.md): the same bytes fed whole, one byte at a time, or followed by junk give the same
messages. The streams come from every capture with SIP over TCP, reassembled by sipflow's own decoder.
"""
import pytest

from sipflow.capture.files import open_captures
from sipflow.net import Decoder
from sipflow.sip.framing import StreamFramer
from sipflow.sip.message import parse_message

from conftest import sample_files, shared_files


def tcp_streams(path):
    """In-order payload bytes of each TCP direction, as sipflow's decoder delivers them."""
    dec = Decoder()
    streams = {}
    for ts, fi, frame, lt, buf, off, caplen in open_captures([str(path)])[0]:
        for dg in dec.decode(ts, fi, frame, lt, bytes(buf[off:off + caplen])) + []:
            if dg.transport == "tcp" and dg.payload:
                streams.setdefault((dg.src, dg.sport, dg.dst, dg.dport), bytearray()).extend(dg.payload)
    return {k: bytes(v) for k, v in streams.items()}


def frame_all(chunks):
    f = StreamFramer()
    out = []
    for i, c in enumerate(chunks):
        out += [raw for raw, _ in f.feed(c, i + 1)]
    return out


CAPTURES = [p for p in sample_files() + shared_files() if p.name.startswith(("tcp", "call-tcp")) or "tcp" in p.name]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_same_messages_whole_bytewise_and_with_trailing_junk(path):
    streams = {k: v for k, v in tcp_streams(path).items() if b"SIP/2.0" in v}
    if not streams:
        pytest.skip("no SIP over TCP in this capture")
    for key, data in streams.items():
        whole = frame_all([data])
        assert whole, f"no SIP message framed in {key}"
        for raw in whole:
            parse_message(raw, datagram=False)  # each framed message parses
        assert frame_all([data[i:i + 1] for i in range(len(data))]) == whole
        assert frame_all([data, b"\x00\x17garbage that is not SIP\r\n"]) == whole
        # and in uneven pieces, as TCP segments come
        pieces, i, step = [], 0, 1
        while i < len(data):
            pieces.append(data[i:i + step])
            i += step
            step = step * 3 % 1461 + 1
        assert frame_all(pieces) == whole


def test_two_messages_in_one_segment_and_one_over_three():
    a = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\nCall-ID: 1\r\n"
         b"CSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nContent-Length: 5\r\n\r\nhello")
    b = a.replace(b"CSeq: 1", b"CSeq: 2")
    f = StreamFramer()
    got = f.feed(a + b[:30], 7) + f.feed(b[30:60], 8) + f.feed(b[60:], 9)
    assert [raw for raw, _ in got] == [a, b]
    assert [frames for _, frames in got] == [(7,), (7, 8, 9)]


def test_stream_joined_mid_message_resynchronises():
    msg = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nContent-Length: 0\r\n\r\n")
    f = StreamFramer()
    got = f.feed(b"=0\r\nm=audio 4000 RTP/AVP 0\r\n" + msg, 1)
    assert [raw for raw, _ in got] == [msg] and f.junk_bytes > 0
