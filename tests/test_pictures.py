"""Ladder pictures (SVG, PNG, PDF through matplotlib) and sequence-diagram text (Mermaid, PlantUML),
checked by structure, never by pixels: the SVG's text labels and their order, image sizes that grow
with the call, PDF pages, and the Mermaid/PlantUML read back by a small parser of the grammar we emit."""
import re
import struct
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

import sipflow
from sipflow.cli import main
from sipflow.render.diagram import mermaid, plantuml
from sipflow.render.ladder import Arrow, Ladder, layouts, merge
from sipflow.render.picture import PAGE_ROWS, save

from conftest import SAMPLES, sample_files, shared_files

SVG = "{http://www.w3.org/2000/svg}"


def sample(name):
    if not (SAMPLES / name).exists():
        pytest.skip(f"samples/{name} missing")
    return sipflow.analyze(str(SAMPLES / name))


def svg_texts(path):
    root = ET.parse(path).getroot()
    return ["".join(t.itertext()) for t in root.iter(SVG + "text")]


def test_svg_has_the_lanes_then_every_arrow_label_in_order(tmp_path):
    a = sample("transfer-hold.pcap")
    lad = layouts(a, media=True)[0]
    save([lad], str(tmp_path / "c.svg"))
    texts = svg_texts(tmp_path / "c.svg")
    assert texts[0] == lad.title
    for lane in lad.lanes:
        assert lane in texts
    # every arrow's label appears, in the arrows' order
    labels = [t for t in texts if any(t == x.label for x in lad.arrows)]
    assert labels == [x.label for x in lad.arrows]
    # each arrow has its time and frame beside it
    frames = [int(m.group(1)) for t in texts for m in [re.search(r"#(\d+)$", t)] if m]
    assert [f for f in frames if f in {x.frame for x in lad.arrows}] == [x.frame for x in lad.arrows]
    # the call's events and its media streams are in the picture
    assert any(t.startswith("◆ hold by the caller") for t in texts)
    assert sum(t.startswith("AUDIO PCMU") for t in texts) == len(a.calls[0].streams) > 0


def test_media_span_runs_between_the_lanes_that_announced_its_ends():
    a = sample("call-via-proxy.pcap")
    lad = layouts(a, media=True)[0]
    assert lad.spans, "the sample has RTP"
    call = a.calls[0]
    for span, stream in zip(lad.spans, call.streams):
        assert (span.first, span.last) == (stream.first_ts, stream.last_ts)
        # the UAC and UAS (lanes 0 and 2) exchange the RTP, never the proxy in the middle (lane 1)
        assert {span.src, span.dst} == {0, 2}


def test_png_is_written_and_grows_with_the_number_of_messages(tmp_path):
    a = sample("transfer-hold.pcap")
    long_call, short_call = layouts(a, media=True)
    assert len(long_call.arrows) > len(short_call.arrows)
    sizes = []
    for name, lad in (("long", long_call), ("short", short_call)):
        path = tmp_path / f"{name}.png"
        save([lad], str(path))
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        sizes.append(struct.unpack(">II", data[16:24]))   # IHDR width, height
    assert sizes[0][1] > sizes[1][1] * 2


def test_pdf_puts_a_long_call_on_pages(tmp_path):
    a = sample("transfer-hold.pcap")
    lad = layouts(a, media=True)[0]
    rows = len(lad.arrows) + len(lad.spans)
    assert rows > PAGE_ROWS
    save([lad], str(tmp_path / "c.pdf"))
    data = (tmp_path / "c.pdf").read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert pages == -(-rows // PAGE_ROWS)


def test_forty_lanes_are_all_drawn(tmp_path):
    arrows = tuple(Arrow(i, i + 1, f"MSG{i}", 100.0 + i, i + 1, 0, False, "c1") for i in range(40))
    lad = Ladder(tuple(f"192.0.2.{i}:5060" for i in range(41)), arrows, 100.0, "forty hops")
    save([lad], str(tmp_path / "wide.svg"))
    texts = svg_texts(tmp_path / "wide.svg")
    assert sum(t.startswith("192.0.2.") for t in texts) == 41
    assert sum(t.startswith("MSG") for t in texts) == 40


def test_merged_legs_keep_their_call_ids_and_time_order(tmp_path):
    a = sample("transfer-hold.pcap")
    both = merge(layouts(a))
    assert both.legs == tuple(c.call_id for c in a.calls)
    assert [x.ts for x in both.arrows] == sorted(x.ts for x in both.arrows)
    assert len(both.arrows) == len(a.messages)
    save([both], str(tmp_path / "legs.svg"))
    texts = svg_texts(tmp_path / "legs.svg")
    assert [t for t in texts if t.startswith("leg ")] == [f"leg {i + 1}: Call-ID {c}" for i, c in
                                                          enumerate(both.legs)]


def test_dollar_signs_and_markup_in_capture_text_are_drawn_as_text(tmp_path):
    arrows = (Arrow(0, 1, "INVITE $x$ <b>&amp;", 1.0, 1, 0, False, "c"),)
    lad = Ladder(("192.0.2.1:5060", "192.0.2.2:5060"), arrows, 1.0, "A $\\frac{1}{2}$ title\x1b[2J")
    save([lad], str(tmp_path / "d.svg"))
    texts = svg_texts(tmp_path / "d.svg")
    assert "INVITE $x$ <b>&amp;" in texts
    assert "A $\\frac{1}{2}$ title\\x1b[2J" in texts


# --- Mermaid and PlantUML, read back by a parser of the grammar we emit -----------------------------

_ENTITY = re.compile(r"#(\d+);")


def parse_mermaid(text):
    """The sequence diagrams in ``text``: (title, {alias: name}, [(kind, src, dst, text)]).
    Raises on any line outside the grammar, an undeclared participant, or a raw ';'."""
    diagrams = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        assert lines[0] == "sequenceDiagram", lines[0]
        title, parts, rows = None, {}, []
        for line in lines[1:]:
            assert ";" not in _ENTITY.sub("", line), line
            m = re.fullmatch(r"    title (.+)", line)
            if m:
                title = m.group(1)
                continue
            m = re.fullmatch(r"    participant (L\d+) as (\S.*)", line)
            if m:
                parts[m.group(1)] = _ENTITY.sub(lambda e: chr(int(e.group(1))), m.group(2))
                continue
            m = re.fullmatch(r"    (L\d+)(->>|-->>|-\))(L\d+): (.*)", line)
            if m:
                assert m.group(1) in parts and m.group(3) in parts, line
                rows.append((m.group(2), m.group(1), m.group(3),
                             _ENTITY.sub(lambda e: chr(int(e.group(1))), m.group(4))))
                continue
            m = re.fullmatch(r"    Note over (L\d+)(?:,(L\d+))?: (.*)", line)
            assert m, f"not in the grammar: {line!r}"
            assert all(p in parts for p in m.groups()[:2] if p)
            rows.append(("note", m.group(1), m.group(2), _ENTITY.sub(lambda e: chr(int(e.group(1))), m.group(3))))
        diagrams.append((title, parts, rows))
    return diagrams


@pytest.mark.parametrize("name", ["transfer-hold.pcap", "call-av-dtmf.pcap", "call-via-proxy.pcap"])
def test_mermaid_reads_back_as_the_ladder(name):
    a = sample(name)
    lads = layouts(a, media=True)
    diagrams = parse_mermaid(mermaid(lads))
    assert len(diagrams) == len(lads)
    for lad, (title, parts, rows) in zip(lads, diagrams):
        assert parts == {f"L{i}": lane for i, lane in enumerate(lad.lanes)}
        arrows = [r for r in rows if r[0] in ("->>", "-->>")]
        assert [(f"L{x.src}", f"L{x.dst}", x.label) for x in lad.arrows] == [r[1:] for r in arrows]
        assert [r[0] == "->>" for r in arrows] == [x.kind == "request" for x in lad.arrows]
        assert len([r for r in rows if r[0] == "-)"]) == len(lad.spans)
        assert [r[3] for r in rows if r[0] == "note"] == [n for x in lad.arrows for n in x.notes]


def test_mermaid_and_plantuml_neutralise_hostile_labels():
    arrows = (Arrow(0, 1, "INVITE;x#y\nZ\x1b[2J", 1.0, 1, 0, False, "c"),
              Arrow(1, 0, "SIP/2.0 200 \"OK\" @enduml", 1.1, 2, 0, False, "c"))
    lad = Ladder(('192.0.2.1:5060;"x"', "192.0.2.2:5060"), arrows, 1.0, "t")
    (_, parts, rows), = parse_mermaid(mermaid([lad]))
    assert rows[0][3] == "INVITE;x#y\\x0aZ\\x1b[2J" and parts["L0"] == '192.0.2.1:5060;"x"'
    text = plantuml([lad])
    lines = text.splitlines()
    assert lines[0] == "@startuml" and lines[-1] == "@enduml"
    assert [line for line in lines if line.startswith("@")] == ["@startuml", "@enduml"]   # none from a label
    assert 'participant "192.0.2.1:5060;\'x\'" as L0' in lines
    assert "L0 -> L1 : INVITE;x#y\\\\x0aZ\\\\x1b[2J" in lines   # a backslash doubled: PlantUML's escape
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)


def test_plantuml_has_one_block_per_ladder_with_every_arrow():
    a = sample("transfer-hold.pcap")
    lads = layouts(a, media=True)
    text = plantuml(lads)
    blocks = text.split("\n\n")
    assert len(blocks) == len(lads)
    for lad, block in zip(lads, blocks):
        arrows = [line for line in block.splitlines() if re.fullmatch(r"L\d+ (->|-->|-\[#888888\]>|--\[#888888\]>) "
                                                                      r"L\d+ : .*", line)]
        assert len(arrows) == len(lad.arrows)
        assert len([line for line in block.splitlines() if " ->> " in line]) == len(lad.spans)


# --- the command ---------------------------------------------------------------------------------

def test_ladder_command_writes_each_picture_format(tmp_path):
    path = str(SAMPLES / "busy-486.pcap")
    for ext in ("svg", "png", "pdf"):
        out = tmp_path / f"busy.{ext}"
        r = CliRunner().invoke(main, ["ladder", path, "-o", str(out), "--no-progress"])
        assert r.exit_code == 0, r.output
        assert out.stat().st_size > 5_000 and "1 ladder" in r.output
    assert "486 Busy Here" in svg_texts(tmp_path / "busy.svg")


def test_ladder_command_refuses_a_picture_in_a_text_format_and_says_so(tmp_path):
    r = CliRunner().invoke(main, ["ladder", str(SAMPLES / "busy-486.pcap"), "--format", "mermaid",
                                  "-o", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "--format mermaid" in r.output


def test_ladder_command_mermaid_to_a_file(tmp_path):
    out = tmp_path / "c.mmd"
    r = CliRunner().invoke(main, ["ladder", str(SAMPLES / "cancel-487.pcap"), "--format", "mermaid", "-o", str(out),
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    (title, parts, rows), = parse_mermaid(out.read_text().rstrip("\n"))
    assert any(r[3].startswith("487") for r in rows) and any(r[3] == "CANCEL" for r in rows)


def test_pictures_and_diagrams_of_every_sample_and_shared_capture(tmp_path):
    """No capture we have makes the painters fail (at most 40 Call-IDs of each are drawn)."""
    for path in sample_files() + shared_files():
        a = sipflow.analyze(str(path))
        lads = layouts(a, media=True)[:40]
        if not lads:
            continue
        parse_mermaid(mermaid(lads))
        plantuml(lads)
        save(lads[:5], str(tmp_path / "x.svg"))
        assert svg_texts(tmp_path / "x.svg")[0] == lads[0].title
