"""The JSON writer's message lines are exactly what the json module writes for ``message_dict``.

``render.jsonout.message_lines`` encodes messages itself (shared parts once, the rest through the json
module's C escaper) because messages are most of a big document. Here it is held to the reference,
character for character, on every message of the bundled samples, the shared public captures (when
present) and a capture of hostile text; and the NDJSON message lines parse back to the same objects.
"""
from __future__ import annotations

import io
import json

import pytest

import sipflow
from sipflow.analysis.model import message_dict
from sipflow.render import jsonout
from conftest import sample_files, shared_files
from pcaptools import sip_text, udp_frame, write_pcap

REFERENCE = json.JSONEncoder(separators=(", ", ": ")).encode


def _hostile(tmp_path):
    a, b = "192.0.2.1", "192.0.2.2"
    msgs = []
    invite = "INVITE sip:b\u00e9b@y SIP/2.0"
    shapes = [(invite, None), (invite, None), ("SIP/2.0 486 Busy\x1b[31m \"Here\"\x9b", "t\\1"),
              ("ACK sip:bob@y SIP/2.0", "t\\1")]   # the INVITE twice: a retransmission
    for i, (first, ttag) in enumerate(shapes):
        lines = [first, "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK\"1\u2028",
                 'From: "\u202eevil" <sip:\u00fcser@x>;tag=f"1', "To: <sip:\x7f@y>" + (f";tag={ttag}" if ttag else ""),
                 "Call-ID: +hostile\x0bcall\u00e9@x", f"CSeq: {2 ** 40} {'ACK' if i == 3 else 'INVITE'}",
                 "Content-Length: 0"]
        msgs.append(("\r\n".join(lines) + "\r\n\r\n").encode())
    senders = [a, a, b, a]
    recs = [(1_700_000_000 + i, 123456 * i, udp_frame(senders[i], 5060, b if senders[i] == a else a, 5060, m, i + 1))
            for i, m in enumerate(msgs)]
    return str(write_pcap(tmp_path / "hostile.pcap", 1, recs))


def _check(path):
    a = sipflow.analyze(path)
    assert a.messages, f"{path}: no SIP message"
    got = list(jsonout.message_lines(a.messages))
    want = [REFERENCE(message_dict(e)) for e in a.messages]
    for line, ref in zip(got, want):
        assert line == ref
    assert len(got) == len(want)
    out = io.StringIO()
    jsonout.write_ndjson(a, out)
    records = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [r for r in records if r["type"] == "message"] == [{"type": "message", **message_dict(e)}
                                                              for e in a.messages]
    return a


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_message_lines_are_the_json_modules_text_on_every_sample(path):
    _check(str(path))


@pytest.mark.parametrize("path", shared_files() or [pytest.param(None, marks=pytest.mark.skip("no shared captures"))],
                         ids=lambda p: getattr(p, "name", "none"))
def test_message_lines_are_the_json_modules_text_on_public_captures(path):
    a = sipflow.analyze(str(path))
    if not a.messages:
        pytest.skip("no SIP message in this capture")
    _check(str(path))


def test_message_lines_escape_hostile_text_as_the_json_module_does(tmp_path):
    a = _check(_hostile(tmp_path))
    assert [e.retransmission for e in a.messages] == [False, True, False, False]
    text = "\n".join(jsonout.message_lines(a.messages))
    assert text.isascii() and "\x1b" not in text and "\\u001b" in text
    assert json.loads(text.splitlines()[0])["cseq"] == 2 ** 40


def test_message_lines_write_a_time_given_as_an_int_as_the_json_module_does():
    """``Analyzer.feed`` takes the time from its caller, who may give an int."""
    from sipflow.analysis.analyzer import Analyzer
    an = Analyzer()
    payload = sip_text("OPTIONS sip:x@198.51.100.1 SIP/2.0", [
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKint"), ("From", "<sip:a@x>;tag=1"), ("To", "<sip:x@y>"),
        ("Call-ID", "int-time"), ("CSeq", "1 OPTIONS")])
    an.feed(1_700_000_000, 0, 1, 1, udp_frame("192.0.2.1", 5060, "198.51.100.1", 5060, payload, 1))
    a = an.result()
    assert [json.loads(line)["ts"] for line in jsonout.message_lines(a.messages)] == [1_700_000_000]
    assert list(jsonout.message_lines(a.messages)) == [REFERENCE(message_dict(e)) for e in a.messages]
