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
    assert len(lines) == 2 + len(a.messages) and all(len(line) <= 80 for line in lines)
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
    body = r.output.splitlines()[2:]
    assert len(body) == 4 and all("REGISTER" in line or "401" in line or "200" in line for line in body)
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
