"""Capture text is hostile: whatever a SIP message carries (escape sequences, bare CR, vertical tabs,
C1 controls, invalid UTF-8, spreadsheet formulas), every command and format writes it safely: no control
byte but newline (and tab) in text and CSV, CSV that reads back with the same fields and formulas
neutralised, JSON that parses."""
import csv
import io
import json
import re

import pytest
from click.testing import CliRunner

from sipflow.cli import main
from sipflow.render.safe import csv_cell, printable

from pcaptools import udp_frame, write_pcap

A, B = "198.51.100.10", "203.0.113.20"   # documentation addresses: data inside the file only
EVIL_NAME = "\x1b[2J\x1b]0;owned\x07\u0085"          # clear screen, set the window title, a C1 control
FORMULA_USER = "=cmd|' /C calc'!A0"


def _message(first, cseq, method, branch, ttag=None, extra=()):
    lines = [first, f"Via: SIP/2.0/UDP {A}:5060;branch={branch}",
             f'From: "{EVIL_NAME}" <sip:{FORMULA_USER}@x>;tag=f1',
             "To: <sip:@SUM(1+1)@y>" + (f";tag={ttag}" if ttag else ""),
             "Call-ID: +hostile\x0bcall@x", f"CSeq: {cseq} {method}", "User-Agent: ua\rsneaky", *extra,
             "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"\xff\xfe"


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    msgs = [_message("INVITE sip:bob@y SIP/2.0", 1, "INVITE", "z9hG4bK1"),
            _message("SIP/2.0 486 Busy\x1b[31m Here\x9b", 1, "INVITE", "z9hG4bK1", "t1"),
            _message("ACK sip:bob@y SIP/2.0", 1, "ACK", "z9hG4bK1", "t1"),
            _message("REGISTER sip:y SIP/2.0", 2, "REGISTER", "z9hG4bK2", extra=("Contact: <sip:-2+3@x>",))]
    recs = [(1_700_000_000 + i, 0, udp_frame(A if i % 2 == 0 else B, 5060, B if i % 2 == 0 else A, 5060, m, i + 1))
            for i, m in enumerate(msgs)]
    return str(write_pcap(tmp_path_factory.mktemp("hostile") / "hostile.pcap", 1, recs))


COMMANDS = [("calls", "text"), ("calls", "csv"), ("calls", "json"), ("summary", "text"), ("summary", "json"),
            ("analyze", "text"), ("analyze", "csv"), ("analyze", "json"), ("analyze", "ndjson"), ("rtp", "text"),
            ("rtp", "csv"), ("rtp", "json"), ("ladder", "text"), ("ladder", "mermaid"), ("ladder", "plantuml")]
_BAD_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.mark.parametrize("command, fmt", COMMANDS, ids=lambda v: v)
def test_every_command_and_format_writes_hostile_text_safely(capture, tmp_path, command, fmt):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, [command, capture, "--format", fmt, "-o", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    data = out.read_bytes()
    text = data.decode("utf-8")          # valid UTF-8 whatever the capture held
    assert not _BAD_TEXT.search(text), repr(_BAD_TEXT.search(text).group(0))
    if fmt == "json":
        json.loads(text)
    elif fmt == "ndjson":
        assert all(json.loads(line) for line in text.splitlines())
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) >= 1 and all(len(row) == len(rows[0]) for row in rows)
        for row in rows[1:]:
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@"):
                    assert cell == "-" or float(cell) is not None  # only a number (or "-") may


def test_the_terminal_never_sees_raw_escapes_but_sees_that_they_were_there(capture):
    r = CliRunner().invoke(main, ["ladder", capture, "--width", "200"])   # shows the reason phrase
    assert r.exit_code == 0 and "\x1b" not in r.output
    assert "486 Busy\\x1b[31m Here\\x9b" in r.output


def test_the_rules_themselves():
    assert printable("a\x1b[2Jb\rc\td\ne") == "a\\x1b[2Jb\\x0dc\\x09d\\x0ae"
    assert printable("a\x1b\tb\nc", lines=True) == "a\\x1b\tb\nc"
    assert printable("caf\u00e9 \u0085") == "caf\u00e9 \\x85"
    assert csv_cell("=1+1") == "'=1+1" and csv_cell("@SUM(A1)") == "'@SUM(A1)" and csv_cell("-x") == "'-x"
    assert csv_cell(-3) == -3 and csv_cell(None) is None and csv_cell("alice") == "alice"
    assert csv_cell("-") == "-" and csv_cell("-12.5") == "-12.5", "placeholders and numbers stay readable"


def test_an_address_inside_a_display_name_is_text_not_the_caller(tmp_path):
    from pcaptools import sip_text
    spoof = sip_text("INVITE sip:bob@y SIP/2.0", [
        ("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bK9"),
        ("From", '"<sip:ceo@bank.example>" <sip:attacker@evil.example>;tag=f9'),
        ("To", '"a \\" quote <sip:x@y>" <sip:bob@y>'), ("Call-ID", "spoof@x"), ("CSeq", "1 INVITE")])
    path = write_pcap(tmp_path / "spoof.pcap", 1, [(1_700_000_000, 0, udp_frame(A, 5060, B, 5060, spoof))])
    import sipflow
    a = sipflow.analyze(str(path))
    c = a.calls[0]
    assert (c.from_uri, c.from_user, c.to_user) == ("sip:attacker@evil.example", "attacker", "bob")
    assert a.messages[0].msg.from_.display == "<sip:ceo@bank.example>" and a.messages[0].from_tag == "f9"
    r = CliRunner().invoke(main, ["calls", str(path), "--width", "120"])
    assert "attacker@evil.example" in r.output and "ceo@bank" not in r.output
    # The display names are shown, quoted, beside the address: never in its place
    assert (c.from_display, c.to_display) == ("<sip:ceo@bank.example>", 'a " quote <sip:x@y>')
    wide = CliRunner().invoke(main, ["calls", str(path), "--wide", "--width", "200"]).output
    assert 'attacker@evil.example "<sip:ceo@bank.example>"' in wide and 'bob@y "a \\" quote <sip:x@y>"' in wide
    text = CliRunner().invoke(main, ["analyze", str(path), "--format", "text"]).output
    assert 'attacker@evil.example "<sip:ceo@bank.example>" -> bob@y' in text
    doc = json.loads(CliRunner().invoke(main, ["analyze", str(path), "--format", "json"]).output)
    call = doc["calls"][0]
    assert (call["from"], call["from_display"]) == ("sip:attacker@evil.example", "<sip:ceo@bank.example>")
    rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(main, ["calls", str(path), "--format", "csv"]).output)))
    assert (rows[0]["from"], rows[0]["from_display"], rows[0]["to_display"]) == (
        "sip:attacker@evil.example", "<sip:ceo@bank.example>", 'a " quote <sip:x@y>')
