"""The SIP hot path (sip.scan) against the full parser, and the message store behind the lean records.

The scan must read every message exactly as the full parse does: on every message of the bundled
samples and of the public captures, on real messages rewritten in the ways RFC 3261 allows (compact
forms, odd case, folding, spaces around the colon, LF line ends, lists in one Via), and on arbitrary
bytes, where it must raise the parser's own error or agree.
"""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sipflow
from sipflow.analysis.messages import RawStore
from sipflow.errors import ParseError
from sipflow.sip.message import parse_message
from sipflow.sip.scan import head_of, scan

from conftest import sample_files, shared_files


def _reference(raw: bytes, datagram: bool):
    return head_of(parse_message(raw, datagram)).fields()


def _agree(raw: bytes, datagram: bool = True) -> None:
    try:
        want = _reference(raw, datagram)
    except ParseError:
        with pytest.raises(ParseError):
            scan(raw, datagram)
        return
    got = scan(raw, datagram).fields()
    assert got == want, {k: (got[k], want[k]) for k in got if got[k] != want[k]}


def _messages(path):
    a = sipflow.analyze(str(path))
    return [(e.raw, e.transport != "tcp", e.frame) for e in a.messages]


@pytest.mark.parametrize("path", sample_files() + shared_files(), ids=lambda p: p.name)
def test_scan_agrees_with_the_full_parse_on_every_message_of_real_captures(path):
    msgs = _messages(path)
    assert msgs, "a capture with no SIP message checks nothing"
    for raw, datagram, frame in msgs:
        assert raw, f"frame {frame}: the store lost the message's bytes"
        _agree(raw, datagram)


def test_the_record_keeps_what_the_full_parse_says():
    a = sipflow.analyze(str(sample_files()[0]))
    for e in a.messages:
        m = e.msg
        assert (e.method, e.status, e.reason, e.call_id, (e.cseq, e.cseq_method), e.branch) == \
            (m.method, m.status, m.reason, m.call_id, m.cseq, m.branch)
        assert (e.from_tag, e.to_tag, e.from_user, e.to_user) == \
            (m.from_.tag, m.to.tag, m.from_.uri.user, m.to.uri.user)
        assert e.summary() == m.summary()


# Rewrites RFC 3261 allows (or that real stacks send), each of which one of the two readers could get wrong.
def _compact(raw):
    return raw.replace(b"\r\nVia:", b"\r\nv:").replace(b"\r\nFrom:", b"\r\nf:").replace(b"\r\nTo:", b"\r\nt:") \
        .replace(b"\r\nCall-ID:", b"\r\ni:").replace(b"\r\nContact:", b"\r\nm:").replace(b"\r\nContent-Length:", b"\r\nl:")


def _case(raw):
    return raw.replace(b"\r\nCall-ID:", b"\r\nCALL-id:").replace(b"\r\nCSeq:", b"\r\ncseq:")


def _spaces(raw):
    return raw.replace(b"\r\nFrom:", b"\r\nFrom  :   ").replace(b"\r\nCSeq:", b"\r\nCSeq :")


def _folded(raw):
    return raw.replace(b"\r\nTo:", b"\r\nX-Long: a\r\n  b\r\nTo:", 1)


def _lf_only(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def _via_list(raw):
    return raw.replace(b"\r\nVia: ", b"\r\nVia: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKlist, ", 1)


def _no_call_id(raw):
    lines = raw.split(b"\r\n")
    return b"\r\n".join(ln for ln in lines if not ln.lower().startswith((b"call-id:", b"i:")))


def _bad_line(raw):
    return raw.replace(b"\r\nCSeq:", b"\r\nthis line has no colon\r\nCSeq:", 1)


def _tag_case(raw):
    return raw.replace(b";tag=", b"; TAG = ", 1)


def _long_length(raw):
    return raw.replace(b"Content-Length: 0", b"Content-Length: 5", 1)


REWRITES = [_compact, _case, _spaces, _folded, _lf_only, _via_list, _no_call_id, _bad_line, _tag_case, _long_length]


@pytest.mark.parametrize("rewrite", REWRITES, ids=lambda f: f.__name__.strip("_"))
def test_scan_agrees_on_rewritten_real_messages(rewrite):
    changed = 0
    for path in sample_files():
        for raw, datagram, _ in _messages(path):
            new = rewrite(raw)
            changed += new != raw
            _agree(new, datagram)
    assert changed, "the rewrite changed no message: it tests nothing"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_scan_on_arbitrary_bytes_raises_the_parse_error_or_agrees(data):
    _agree(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_scan_on_mutated_real_messages_agrees(data):
    msgs = _messages(sample_files()[0])
    raw, datagram, _ = msgs[data.draw(st.integers(0, len(msgs) - 1))]
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.sampled_from(b" \t\r\n:;,<>\"=@aZ0\x00\xff"))
    _agree(bytes(buf), datagram)


def test_store_gives_back_every_message_across_the_spill_to_disk():
    store = RawStore(spill_at=1000)
    rnd = random.Random(7)
    kept = [(store.add(b), b) for b in (bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
                                        for _ in range(200))]
    assert store.size > 1000 * 10, "the test must spill several times"
    for place, data in kept:
        assert store.get(place) == data
    store.close()


@pytest.mark.parametrize("header", [b"CSeq: " + b"9" * 5000 + b" INVITE", b"Content-Length: " + b"7" * 5000])
def test_numbers_too_long_for_any_field_are_malformed_not_an_exception(header):
    raw = _messages(sample_files()[0])[0][0]
    name = header.split(b":")[0]
    lines = [ln for ln in raw.split(b"\r\n") if not ln.startswith(name + b":")]
    bad = b"\r\n".join([lines[0], header] + lines[1:])
    _agree(bad)
    head = scan(bad)
    assert head.cseq is None or head.problems
