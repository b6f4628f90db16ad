"""Ladder diagrams: the layout (lanes and arrows as data) and the text painter, on real samples, and
`probe call --ladder`, which draws the probe's own call through the analyzer."""
import re

import pytest
from click.testing import CliRunner

import sipflow
from sipflow.cli import main
from sipflow.render.ladder import layout, render_text

from conftest import SAMPLES


def sample(name):
    if not (SAMPLES / name).exists():
        pytest.skip(f"samples/{name} missing")
    return sipflow.analyze(str(SAMPLES / name))


def test_call_through_the_proxy_has_three_lanes_in_order_of_appearance():
    a = sample("call-via-proxy.pcap")
    lad = layout(a.messages)
    # samples/README.md: UAC :5061 -> Kamailio :5060 -> UAS :5070
    assert [lane.rsplit(":", 1)[1] for lane in lad.lanes] == ["5061", "5060", "5070"]
    assert len(lad.arrows) == len(a.messages)
    first, second = lad.arrows[0], lad.arrows[2]
    assert (first.src, first.dst, first.label) == (0, 1, "INVITE (SDP)")
    assert (second.src, second.dst) == (1, 2) and second.label.startswith("INVITE")
    assert [x.frame for x in lad.arrows] == [m.frame for m in a.messages]


def test_text_ladder_has_one_line_per_message_with_time_frame_and_direction():
    a = sample("busy-486.pcap")
    text = render_text(layout(a.messages), 80)
    lines = text.splitlines()
    assert len(lines) == 2 + len(a.messages) and all(len(line) <= 80 for line in lines)   # lanes, bars, arrows
    rows = lines[2:]
    for line, m in zip(rows, a.messages):
        assert re.match(rf"\s*\+\d+\.\d{{6}}\s+#{m.frame}\s", line), line
        assert m.msg.summary().split()[0] in line
        assert ("->|" in line) == (m.msg.method is not None)  # requests go right (caller first), responses left
        assert ("|<-" in line) == (m.msg.method is None)


def test_ladder_command_draws_the_filtered_call():
    files = [SAMPLES / "basic-call-rtp.pcap", SAMPLES / "register-401-200.pcap"]
    if not all(f.exists() for f in files):
        pytest.skip("samples missing")
    r = CliRunner().invoke(main, ["ladder", *map(str, files), "--method", "REGISTER", "--width", "90"])
    assert r.exit_code == 0, r.output
    body = [line for line in r.output.splitlines() if re.match(r"\s*\+\d+\.\d{6}\s+#\d+", line)]
    assert len(body) == 4 and all("REGISTER" in line or "401" in line or "200" in line for line in body)
    assert r.output.startswith("REGISTER alice -> alice (")   # the dialog's title line
    assert "INVITE" not in r.output


def test_probe_call_ladder_draws_its_own_call(tmp_path):
    from test_probe_call import V4, sipp
    with sipp(tmp_path) as (port, proc, messages):
        r = CliRunner().invoke(main, ["probe", "call", f"sip:bob@{V4}:{port}", "--duration", "0.3", "--ladder",
                                      "--timeout", "10"])
    out = r.output
    assert "result: answered" in out
    arrows = [line for line in out.splitlines() if re.match(r"\s*\+\d+\.\d{6}\s+#\d+", line)]
    labels = [re.sub(r"[-<>|]", " ", line).split()[2] for line in arrows]
    assert labels[0] == "INVITE" and "ACK" in labels and "BYE" in labels and labels[-1] == "200"


def test_thousands_of_endpoints_fold_into_one_lane_in_text(tmp_path):
    from pcaptools import sip_text, udp_frame, write_pcap
    from sipflow.render.ladder import MAX_TEXT_LANES
    recs = []
    for i in range(500):   # 500 source ports: a scanner
        msg = sip_text("OPTIONS sip:b@y SIP/2.0", [("Via", f"SIP/2.0/UDP 198.51.100.1:{10000 + i};branch=z9hG4bK{i}"),
                                                    ("From", f"<sip:a@x>;tag={i}"), ("To", "<sip:b@y>"),
                                                    ("Call-ID", f"scan{i}"), ("CSeq", "1 OPTIONS")])
        recs.append((1_700_000_000, i, udp_frame("198.51.100.1", 10000 + i, "203.0.113.5", 5060, msg, i + 1)))
    a = sipflow.analyze(str(write_pcap(tmp_path / "scan.pcap", 1, recs)))
    text = render_text(layout(a.messages), 100)
    lines = text.splitlines()
    assert len(lines) == 2 + 500 and max(len(line) for line in lines) < 20 + 14 * MAX_TEXT_LANES
    assert "more" in lines[0] and lines[-1].count("|") <= MAX_TEXT_LANES


# -- the ladder at 80 columns (issue: text views) -----------------------------------------------------

TRANSFER = SAMPLES / "transfer-hold.pcap"
GOLDEN = SAMPLES.parent / "tests" / "golden"


def ladder_cli(*args):
    r = CliRunner().invoke(main, ["ladder", *map(str, args)])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("extra,golden", [((), "ladder-transfer-hold-80.txt"),
                                          (("--verbose",), "ladder-transfer-hold-verbose.txt")])
def test_golden_ladder_of_a_proxied_call_with_hold_and_transfer(extra, golden):
    """Golden renderings (checked in): the call of samples/transfer-hold.pcap at 80 columns, plain and
    --verbose. Regenerate with `sipflow ladder samples/transfer-hold.pcap --call 1 --width 80 [-v] >
    tests/golden/...` after the sample is rebuilt, and read the diff."""
    if not TRANSFER.exists():
        pytest.skip("samples/transfer-hold.pcap not built")
    out = ladder_cli(TRANSFER, "--call", "1", "--width", "80", *extra)
    assert out == (GOLDEN / golden).read_text(encoding="utf-8")
    assert max(len(line) for line in out.splitlines()) <= 80
    # every label whole somewhere on its line unless the line reaches the edge; notes name the events
    for word in ("hold by the caller (sendonly", "resume by the caller", "transfer to <sip:carol@127.0.0.1:5080>",
                 "transfer result: SIP/2.0 200 OK", "MESSAGE: 'Transferring you to carol now'", "DTMF 4 (INFO"):
        assert word in out


def test_each_call_is_drawn_on_its_own_with_a_title():
    out = ladder_cli(SAMPLES / "busy-486.pcap", SAMPLES / "cancel-487.pcap", SAMPLES / "basic-call-rtp.pcap",
                     "--width", "80")
    titles = [line for line in out.splitlines() if line.startswith("Call ")]
    assert [t.split(",")[1].split("(")[0].strip() for t in titles] == ["answered", "cancelled 487", "busy 486"]
    assert out.count("|--") >= 3 and "\n\nCall 2:" in out


def test_status_draws_the_whole_busy_call_and_time_modes():
    out = ladder_cli(SAMPLES / "busy-486.pcap", SAMPLES / "basic-call-rtp.pcap", "--status", "486", "--time", "abs")
    rows = [line for line in out.splitlines() if re.match(r"\s*\d\d:\d\d:\d\d\.\d{3}\s+#\d+", line)]
    assert len(rows) == 5 and "INVITE" in rows[0] and "486 Busy Here" in out and "ACK" in rows[-1]
    assert re.search(r"^\d{4}-\d\d-\d\d \(UTC\)$", out, re.M)        # the date, once
    delta = ladder_cli(SAMPLES / "busy-486.pcap", "--time", "delta")
    stamps = [float(m) for m in re.findall(r"^\s*([+-]\d+\.\d{6})\s+#", delta, re.M)]
    rel = [float(m) for m in re.findall(r"^\s*([+-]\d+\.\d{6})\s+#", ladder_cli(SAMPLES / "busy-486.pcap"), re.M)]
    assert stamps[0] == 0.0 and stamps[1:] == pytest.approx([b - a for a, b in zip(rel, rel[1:])], abs=2e-6)


def test_aliases_and_host_grouping_name_and_merge_lanes(tmp_path):
    names = tmp_path / "aliases.txt"
    names.write_text("# lab\n127.0.0.1:5060 kamailio\n")
    out = ladder_cli(SAMPLES / "call-via-proxy.pcap", "--aliases", names, "--alias", "127.0.0.1:5061=alice-phone")
    header = out.splitlines()[1]
    assert "alice-phone" in header and "kamailio" in header and "127.0.0.1:5070" in header
    merged = ladder_cli(SAMPLES / "call-via-proxy.pcap", "--group", "host")
    assert merged.splitlines()[1].split() == ["127.0.0.1"] and "(to itself)" in merged
    bad = CliRunner().invoke(main, ["ladder", str(SAMPLES / "busy-486.pcap"), "--alias", "nonsense"])
    assert bad.exit_code == 2 and "--alias" in bad.output


def test_transport_and_retransmissions_are_marked(tmp_path):
    from pcaptools import read_pcap, write_pcap
    tcp = ladder_cli(SAMPLES / "call-tcp.pcap")
    assert "INVITE (SDP) [TCP]" in tcp
    lt, recs = read_pcap(SAMPLES / "busy-486.pcap")
    sec, usec, invite = recs[0]
    again = [recs[0], (sec, usec + 500, invite)] + recs[1:]     # the INVITE sent twice (Timer A)
    text = ladder_cli(write_pcap(tmp_path / "retrans.pcap", lt, again), "--width", "100")
    marked = [line for line in text.splitlines() if "(retransmission)" in line]
    assert len(marked) == 1 and "#2" in marked[0] and "....>" in marked[0]
