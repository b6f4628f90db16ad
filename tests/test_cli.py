"""The command line, run for real on the bundled samples: help, formats, filters, layout, documentation."""
import csv
import io
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sipflow.cli import main

from conftest import ROOT, SAMPLES

COMMANDS = sorted(main.commands)


def run(*args, ok=True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, (r.output, r.exception)
    return r


def test_no_arguments_shows_help():
    r = subprocess.run([sys.executable, "-m", "sipflow"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Usage:" in r.stdout and all(c in r.stdout for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    out = run(command, "--help").output
    assert "Example" in out and f"sipflow {command}" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented_in_the_readme(command):
    assert f"sipflow {command}" in (ROOT / "README.md").read_text()


def test_json_document_has_every_field_docs_json_md_promises():
    doc = (ROOT / "docs" / "json.md").read_text()
    d = json.loads(run("analyze", SAMPLES / "basic-call-rtp.pcap", "--format", "json").output)
    block = doc[doc.index("```jsonc"):]
    for section in ("messages", "calls", "registrations", "streams", "files", "stats"):
        assert section in d
    # every "key": in the documented example exists in the matching part of the real document
    with_rtcp = json.loads(run("analyze", SAMPLES / "call-rtcp.pcap", "--format", "json").output)
    sample = {"messages": d["messages"][0], "calls": d["calls"][0], "streams": with_rtcp["streams"][0]}
    for section, obj in sample.items():
        part = block[block.index(f'"{section}": [{{'):]
        part = part[part.index("[{") + 2:]
        # nested lists of objects (which may hold plain lists) are not this object's keys
        part = re.sub(r"\[\{(?:[^\[\]]|\[[^\[\]]*\])*\}\]", "[]", part)
        part = part[:part.index("}]") if "}]" in part else len(part)]
        part = re.sub(r'"kinds": \{[^{}]*\}', '"kinds": 0', part)   # a map by packet type, not fields
        nested = {m.group(1): m.group(2) for m in re.finditer(r'"([a-z_]+)": (\{[^{}]*\})', part)}
        for name, inner in nested.items():   # a nested object: its keys are in the real one
            for key in re.findall(r'"([a-z_]+)":', inner):
                assert key in obj[name], (section, name, key)
        part = re.sub(r"\{[^{}]*\}", "{}", part)
        for key in re.findall(r'"([a-z_]+)":', part):
            if key != section:
                assert key in obj, (section, key)


def test_analyze_json_message_fields_are_well_formed():
    d = json.loads(run("analyze", SAMPLES / "call-ipv6.pcap", "--format", "json").output)
    for m in d["messages"]:
        assert re.fullmatch(r"\[[0-9a-f:]+\]:\d+", m["src"]) and isinstance(m["cseq"], int)
        assert (m["method"] is None) != (m["status"] is None)
    for s in d["streams"]:
        assert re.fullmatch(r"0x[0-9A-F]{8}", s["ssrc"])


def test_calls_text_fits_80_columns_and_lists_every_call():
    r = run("calls", SAMPLES / "basic-call-rtp.pcap", SAMPLES / "busy-486.pcap", SAMPLES / "cancel-487.pcap",
            "--width", "80")
    lines = r.output.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert sum(1 for line in lines if re.match(r"\d+ \d\d:\d\d:\d\d\.\d{3} ", line)) == 3
    assert "busy 486" in r.output and "cancelled 487" in r.output and "answered" in r.output


def test_calls_csv_has_a_row_per_call_with_timings():
    r = run("calls", SAMPLES / "basic-call-rtp.pcap", SAMPLES / "busy-486.pcap", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["outcome"] for row in rows} == {"answered", "busy"}
    answered = next(row for row in rows if row["outcome"] == "answered")
    assert float(answered["pdd"]) > 0 and float(answered["duration"]) > 2


def test_filters_status_user_call_id_method_and_time():
    files = [SAMPLES / "basic-call-rtp.pcap", SAMPLES / "busy-486.pcap", SAMPLES / "register-401-200.pcap"]
    full = json.loads(run("analyze", *files, "--format", "json").output)
    busy = json.loads(run("analyze", *files, "--format", "json", "--status", "4xx").output)
    assert [c["final_status"] for c in busy["calls"]] == [486]
    # the whole busy call, not only its 486: INVITE, 100, 180, 486, ACK
    assert {m["call_id"] for m in busy["messages"]} == {busy["calls"][0]["call_id"]}
    assert [m["method"] or m["status"] for m in busy["messages"]] == ["INVITE", 100, 180, 486, "ACK"]
    cid = full["calls"][0]["call_id"]
    one = json.loads(run("analyze", *files, "--format", "json", "--call-id", cid).output)
    assert {m["call_id"] for m in one["messages"]} == {cid} and len(one["calls"]) == 1
    regs = json.loads(run("analyze", *files, "--format", "json", "--method", "REGISTER").output)
    assert regs["messages"] and {m["cseq_method"] for m in regs["messages"]} == {"REGISTER"} and not regs["calls"]
    start = min(m["ts"] for m in full["messages"])
    late = json.loads(run("analyze", *files, "--format", "json", "--since", str(start + 1e-3)).output)
    # the calls and registrations that started since then, whole
    kept = {c["call_id"] for c in full["calls"] if c["start"] >= start + 1e-3} \
        | {r["call_id"] for r in full["registrations"] if r["start"] >= start + 1e-3}
    assert {c["call_id"] for c in late["calls"]} | {r["call_id"] for r in late["registrations"]} == kept
    assert len(late["messages"]) == sum(1 for m in full["messages"] if m["call_id"] in kept)
    assert 0 < len(late["messages"]) < len(full["messages"])
    nobody = json.loads(run("analyze", *files, "--format", "json", "--user", "no-such-user").output)
    assert not nobody["messages"] and not nobody["calls"]


def test_bad_time_is_a_usage_error():
    r = run("calls", SAMPLES / "busy-486.pcap", "--since", "yesterday-ish", ok=False)
    assert r.exit_code == 2 and "ISO" in r.output


def test_summary_names_problems_with_frames():
    r = run("summary", SAMPLES / "no-answer-408.pcap")
    assert "Responses by method" in r.output and "INVITE" in r.output and "no answer 1" in r.output


def test_output_file(tmp_path):
    out = tmp_path / "calls.json"
    run("calls", SAMPLES / "busy-486.pcap", "--format", "json", "-o", out)
    assert json.loads(out.read_text())[0]["final_status"] == 486


def test_rtp_lists_each_direction_with_its_call_and_filters_by_call():
    rows = list(csv.DictReader(io.StringIO(run("rtp", SAMPLES / "basic-call-rtp.pcap", SAMPLES / "busy-486.pcap",
                                               "--format", "csv").output)))
    # samples/README.md: SIPp plays 125 packets each way, 6000 <-> 6100
    assert sorted((r["src"].rsplit(":", 1)[1], r["dst"].rsplit(":", 1)[1], r["packets"]) for r in rows) == \
        [("6000", "6100", "125"), ("6100", "6000", "125")]
    cid = rows[0]["call_id"]
    assert cid and all(r["call_id"] == cid for r in rows)
    assert len(list(csv.DictReader(io.StringIO(run("rtp", SAMPLES / "basic-call-rtp.pcap", "--format", "csv",
                                                   "--call-id", "no-such-call").output)))) == 0
    text = run("rtp", SAMPLES / "basic-call-rtp.pcap", "--width", "80").output
    assert all(len(line) <= 80 for line in text.splitlines()) and "0x11223344" in text


def test_progress_bar_on_a_terminal_for_big_files(tmp_path):
    """A capture over 16 MB read with standard error on a terminal shows a progress bar there."""
    import os
    import pty
    big = tmp_path / "big.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_capture.py"), str(big), "--packets", "120000"],
                   check=True, capture_output=True, timeout=120)
    assert big.stat().st_size > 16 << 20
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "sipflow", "summary", str(big)], stderr=slave,
                           stdout=subprocess.PIPE, timeout=120)
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert r.returncode == 0 and b"Responses by method" in r.stdout
    assert b"Reading" in err and b"100%" in err
    # and none when standard error is not a terminal
    quiet = subprocess.run([sys.executable, "-m", "sipflow", "summary", str(big)], capture_output=True, timeout=120)
    assert b"Reading" not in quiet.stderr


def test_ndjson_is_the_json_document_one_typed_object_per_line():
    doc = json.loads(run("analyze", SAMPLES / "reinvite-hold.pcap", "--format", "json").output)
    lines = run("analyze", SAMPLES / "reinvite-hold.pcap", "--format", "ndjson").output.splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0] == {"type": "sipflow", "version": doc["sipflow"]}
    by_type = {}
    for r in records:
        by_type.setdefault(r.pop("type"), []).append(r)
    assert by_type["message"] == doc["messages"] and by_type["call"] == doc["calls"]
    assert by_type["stream"] == doc["streams"] and by_type["stats"] == [doc["stats"]]


@pytest.mark.parametrize("option, value", [("--keep-calls", "-1"), ("--keep-calls", "many"),
                                           ("--idle-timeout", "0"), ("--idle-timeout", "soon")])
def test_memory_options_refuse_bad_values_naming_the_option(option, value):
    r = run("summary", SAMPLES / "basic-call-rtp.pcap", option, value, ok=False)
    assert r.exit_code == 2 and option in r.output


def test_a_bug_is_its_own_exit_code_with_one_line_that_asks_for_a_report(monkeypatch):
    from sipflow.render import tables

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(tables, "calls_text", broken)
    r = run("calls", SAMPLES / "basic-call-rtp.pcap", ok=False)
    assert r.exit_code == 70 and "internal error (ZeroDivisionError: boom)" in r.output
    assert "--traceback" in r.output and "Traceback" not in r.output
    r = run("--traceback", "calls", SAMPLES / "basic-call-rtp.pcap", ok=False)
    assert isinstance(r.exception, ZeroDivisionError)
    bad = run("calls", SAMPLES / "no-such-file.pcap", ok=False)
    assert bad.exit_code == 1, "a bad input stays exit 1"


# -- filters you can trust (issue: text views) ---------------------------------------------------------

THREE = [SAMPLES / "call-via-proxy.pcap", SAMPLES / "busy-486.pcap", SAMPLES / "cancel-487.pcap"]


@pytest.mark.parametrize("args,option", [(["--status", "abc"], "--status"), (["--status", "7xx"], "--status"),
                                         (["--method", "FOO"], "--method"), (["--since", "25:61"], "--since"),
                                         (["--call", "0"], "--call")])
def test_a_bad_filter_value_is_a_usage_error_naming_its_option(args, option):
    r = run("calls", *THREE, *args, ok=False)
    assert r.exit_code == 2 and option in r.output


def test_since_after_until_is_refused_before_any_file_is_read(tmp_path):
    r = run("calls", tmp_path / "no-such.pcap", "--since", "2024-05-01T10:00:00", "--until", "2024-05-01T09:00:00",
            ok=False)
    assert r.exit_code == 2 and "--since" in r.output and "later than --until" in r.output


def test_a_valid_filter_that_matches_nothing_says_so():
    r = run("calls", *THREE, "--method", "REFER")
    assert "0 of 3 calls match --method REFER." in r.output and "No calls" not in r.output


def test_method_selects_the_calls_that_have_one_and_the_header_says_so():
    calls = json.loads(run("calls", *THREE, "--format", "json").output)
    answered = [c["call_id"] for c in calls if c["outcome"] == "answered"]
    r = json.loads(run("calls", *THREE, "--method", "bye", "--format", "json").output)
    assert [c["call_id"] for c in r] == answered
    text = run("summary", *THREE, "--status", "486").output
    assert text.startswith("Filter --status 486: 1 of 3 calls")
    table = text[text.index("Responses by method"):text.index("Calls:")]
    assert "486" in table and "200" not in table and "487" not in table


def test_a_call_is_picked_by_its_number_or_any_unique_part_of_its_call_id():
    calls = json.loads(run("calls", *THREE, "--format", "json").output)
    second = calls[1]["call_id"]
    by_number = json.loads(run("calls", *THREE, "--call", "2", "--format", "json").output)
    assert [c["call_id"] for c in by_number] == [second]
    part = second.split("@")[0][-4:]            # a few characters only this Call-ID has
    assert sum(part in c["call_id"] for c in calls) == 1
    by_part = json.loads(run("calls", *THREE, "--call-id", part, "--format", "json").output)
    assert [c["call_id"] for c in by_part] == [second]
    text = run("calls", *THREE, "--call", "2").output
    assert re.search(r"^2 \d\d:\d\d:\d\d\.\d{3} ", text, re.M) and "1 of 3 calls" in text
    too_far = run("calls", *THREE, "--call", "9", ok=False)
    assert too_far.exit_code == 2 and "no call 9" in too_far.output and "3 call(s)" in too_far.output
    several = run("calls", *THREE, "--call-id", "@127.0.0.1", ok=False)
    assert several.exit_code == 2 and "3 calls have" in several.output


def test_a_time_of_day_takes_the_captures_date():
    calls = json.loads(run("calls", *THREE, "--format", "json").output)
    starts = sorted(c["start"] for c in calls)
    cut = starts[1] - 0.0005                       # between the first call and the second
    day = min(starts) // 86400 * 86400
    assert day == cut // 86400 * 86400, "the samples were made on one day"
    tod = cut - day
    hms = f"{int(tod // 3600):02d}:{int(tod % 3600 // 60):02d}:{tod % 60:06.3f}"
    later = json.loads(run("calls", *THREE, "--since", hms, "--format", "json").output)
    assert sorted(c["start"] for c in later) == starts[1:]


def test_dialogs_lists_every_call_id_as_sngrep_does_golden():
    """Golden: `sipflow dialogs` on the OPTIONS/MESSAGE/SUBSCRIBE sample (where `calls` has nothing
    to list). Regenerating the sample changes its times: then rewrite the golden file with
    `sipflow dialogs samples/options-message-subscribe.pcap --width 80 > tests/golden/...`."""
    golden = (ROOT / "tests" / "golden" / "dialogs-options-message-subscribe.txt").read_text()
    out = run("dialogs", SAMPLES / "options-message-subscribe.pcap", "--width", "80").output
    assert out == golden
    assert "0 of" not in run("calls", SAMPLES / "options-message-subscribe.pcap").output
    rows = list(csv.DictReader(io.StringIO(run("dialogs", SAMPLES / "options-message-subscribe.pcap",
                                               "--format", "csv").output)))
    assert [r["method"] for r in rows] == ["OPTIONS", "OPTIONS", "MESSAGE", "SUBSCRIBE"]
    assert rows[3]["methods"] == "SUBSCRIBE NOTIFY" and rows[3]["messages"] == "8"
    only = run("dialogs", SAMPLES / "options-message-subscribe.pcap", "--method", "MESSAGE").output
    assert only.count("MESSAGE") >= 2 and "SUBSCRIBE" not in only.split("\n\n")[0]


def test_a_bad_output_path_is_refused_before_the_capture_is_read(tmp_path):
    missing = tmp_path / "no-such-folder" / "calls.csv"
    r = run("calls", tmp_path / "no-such.pcap", "-o", missing, ok=False)   # the capture is missing too:
    assert r.exit_code == 2 and "--output" in r.output and "mkdir -p" in r.output   # the output is named first
    r = run("calls", SAMPLES / "busy-486.pcap", "-o", tmp_path, ok=False)
    assert r.exit_code == 2 and "is a folder" in r.output


def test_tables_say_their_times_are_utc_and_on_which_date():
    import datetime as dt
    calls = json.loads(run("calls", SAMPLES / "busy-486.pcap", "--format", "json").output)
    day = dt.datetime.fromtimestamp(calls[0]["start"], dt.timezone.utc).strftime("%Y-%m-%d")
    for command in ("calls", "dialogs"):
        assert run(command, SAMPLES / "busy-486.pcap").output.startswith(f"Times UTC, {day}\n")


def test_rtp_fits_80_columns_keeping_ports():
    cap = SAMPLES.parent.parent / "shared" / "captures" / "heplify__sip_ipv4_tcp.pcap"
    if not cap.exists():
        pytest.skip("shared captures absent")
    out = run("rtp", cap, "--width", "80").output
    table = out.split("\n\n")[0].splitlines()
    assert all(len(line) <= 80 for line in table)
    assert all(re.match(r"\S*:\d+ \S*:\d+ 0x[0-9A-F]{8} ", line) for line in table[2:])   # ports whole
    import sipflow
    s = sipflow.analyze(str(cap)).streams[0]
    assert s.source == f"{s.src}:{s.sport}" and s.destination == f"{s.dst}:{s.dport}"
