"""``sipflow export``: a call's own frames as a capture, checked against tshark and against sipflow itself.

Every exported file is read back three ways: by tshark (the call's SIP messages, in order, and as many
RTP packets as the analysis counted), by sipflow (the same call with the same streams), and byte by
byte against the original capture (each frame as it was, with its timestamp, in time order).
"""
import shutil
import struct
import subprocess

import pytest
from click.testing import CliRunner

from sipflow.analysis.analyzer import Analyzer
from sipflow.capture.files import CaptureFile, open_captures
from sipflow.capture.writer import PCAP, PCAPNG, CaptureWriter, WriterPool
from sipflow.cli import main

from conftest import SAMPLES
from pcaptools import eth_ip, fragment_ipv4, parse_ip, read_pcap, to_sll, write_pcap, write_pcapng

BASIC = SAMPLES / "basic-call-rtp.pcap"
TRANSFER = SAMPLES / "transfer-hold.pcap"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def analyse(*paths):
    an = Analyzer()
    an.run(open_captures([str(p) for p in paths]))
    return an.result()


def run(*args):
    return CliRunner().invoke(main, ["export", *[str(a) for a in args]])


def export(tmp_path, sample, number, name="call.pcap"):
    out = tmp_path / name
    r = run(sample, "--call", number, "-w", out)
    assert r.exit_code == 0, r.output
    return out


def tshark(path, *args):
    r = subprocess.run(["tshark", "-r", str(path), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines()]


def sip_lines(call):
    """What tshark's sip fields say of each message: Call-ID, CSeq, method or status."""
    return [[call.call_id, f"{e.cseq} {e.cseq_method}", e.method or str(e.status)] for e in call.events]


def records(path):
    """(timestamp in microseconds, bytes) of every frame, read with sipflow's own reader."""
    return [(round(ts * 1e6), bytes(buf[off:off + n])) for ts, _, _, _, buf, off, n in CaptureFile(str(path))]


def same_call(original, exported):
    """The exported call, analysed again, is the original: its messages, streams and fax flows."""
    assert [(e.method, e.status, e.cseq, e.cseq_method, e.ts) for e in exported.events] == \
        [(e.method, e.status, e.cseq, e.cseq_method, e.ts) for e in original.events]

    def media(c):
        return (sorted((s.src, s.sport, s.dst, s.dport, s.ssrc, s.packets, s.lost, s.rtcp_packets) for s in c.streams),
                sorted((f.src, f.sport, f.dst, f.dport, f.packets) for f in c.faxes))
    assert media(exported) == media(original)


CALLS = [(BASIC, 1), (TRANSFER, 1), (TRANSFER, 2)]


@needs_tshark
@pytest.mark.parametrize("sample,number", CALLS, ids=lambda v: getattr(v, "name", str(v)))
def test_tshark_reads_exactly_the_calls_messages_and_rtp(tmp_path, sample, number):
    call = analyse(sample).calls[number - 1]
    out = export(tmp_path, sample, number)
    got = tshark(out, "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID", "-e", "sip.CSeq", "-e", "sip.Method",
                 "-e", "sip.Status-Code")
    assert [[cid, cseq, method or status] for cid, cseq, method, status in got] == sip_lines(call)
    rtp = tshark(out, "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp", "-T", "fields", "-e", "frame.number")
    assert len(rtp) == sum(s.packets for s in call.streams)
    assert len(tshark(out, "-Y", "rtp")) == len(rtp)   # tshark finds the same from the SDP alone


@pytest.mark.parametrize("sample,number", CALLS, ids=lambda v: getattr(v, "name", str(v)))
def test_the_export_analysed_again_is_the_same_call_and_says_what_it_holds(tmp_path, sample, number):
    call = analyse(sample).calls[number - 1]
    out = tmp_path / "call.pcap"
    r = run(sample, "--call-id", call.call_id, "-w", out)
    assert r.exit_code == 0, r.output
    media = sum(s.packets + s.rtcp_packets for s in call.streams)
    assert r.output == f"{out}: {len(call.events)} SIP messages, {media} RTP/RTCP packets\n"
    again = analyse(out)
    assert [c.call_id for c in again.calls] == [call.call_id]
    same_call(call, again.calls[0])


@pytest.mark.parametrize("sample,number", CALLS, ids=lambda v: getattr(v, "name", str(v)))
def test_every_frame_is_the_original_frame_with_its_timestamp_in_time_order(tmp_path, sample, number):
    call = analyse(sample).calls[number - 1]
    out = export(tmp_path, sample, number)
    linktype, original = read_pcap(sample)
    out_linktype, exported = read_pcap(out)       # a little-endian microsecond pcap, as the input
    assert out_linktype == linktype
    assert exported == sorted(exported, key=lambda r: (r[0], r[1]))
    by_time = {}
    for rec in original:
        by_time.setdefault(rec[:2], []).append(rec[2])
    assert all(frame in by_time[(sec, usec)] for sec, usec, frame in exported)
    sip = {f for e in call.events for f in e.frames}
    assert {original[f - 1] for f in sip} <= set(exported)
    media = sum(s.packets + s.rtcp_packets for s in call.streams)
    assert len(exported) == len(sip) + media


@pytest.mark.parametrize("name", ["tcp-segmented.pcap", "udp-fragmented.pcap", "call-tcp.pcap", "fax-t38.pcap",
                                  "call-rtcp.pcap", "call-rtcp-mux.pcap", "call-av-dtmf.pcap", "websocket.pcap"])
def test_every_frame_that_carried_a_message_is_exported(tmp_path, name):
    a = analyse(SAMPLES / name)
    for number, call in enumerate(a.calls, 1):
        out = export(tmp_path, SAMPLES / name, number, f"call{number}.pcap")
        frames = {f for e in call.events for f in e.frames}
        assert len(frames) >= len(call.events)
        _, original = read_pcap(SAMPLES / name)
        _, exported = read_pcap(out)
        assert {original[f - 1] for f in frames} <= set(exported)
        same_call(call, analyse(out).call(call.call_id))
    if name in ("tcp-segmented.pcap", "udp-fragmented.pcap"):
        assert any(len(e.frames) > 1 for e in a.calls[0].events)   # the sample does what its name says


@needs_tshark
def test_split_writes_one_file_per_call_with_only_its_own_call_id(tmp_path):
    a = analyse(TRANSFER)
    folder = tmp_path / "new" / "calls"
    r = run(TRANSFER, "--split", folder)
    assert r.exit_code == 0, r.output
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["0001_1-32763_127.0.0.1.pcap", "0002_1-354_127.0.0.1.pcap"]
    assert r.output.splitlines() == [f"{folder / f.name}: {len(c.events)} SIP messages, "
                                     f"{sum(s.packets + s.rtcp_packets for s in c.streams)} RTP/RTCP packets"
                                     for f, c in zip(files, a.calls)]
    for f, call in zip(files, a.calls):
        ids = {line[0] for line in tshark(f, "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID")}
        assert ids == {call.call_id}
        same_call(call, analyse(f).call(call.call_id))


def test_split_names_are_safe_and_short(tmp_path):
    from sipflow.render.export import split_name
    call = analyse(SAMPLES / "websocket.pcap").calls[1]
    assert split_name(12, call, "pcapng") == "0012_ws-invite-77b9_sipflow.test.pcapng"
    odd = type("Call", (), {"call_id": "../" + "x" * 200 + "/\x00 é"})()
    name = split_name(3, odd, "pcap")
    assert name.startswith("0003_.._") and "/" not in name and len(name) <= 5 + 80 + 5


@needs_tshark
def test_pcapng_input_gives_pcapng_with_the_same_frames_and_times(tmp_path):
    ng = tmp_path / "in.pcapng"
    subprocess.run(["tshark", "-r", str(TRANSFER), "-F", "pcapng", "-w", str(ng)], check=True, capture_output=True,
                   timeout=120)
    call = analyse(ng).calls[0]
    out = export(tmp_path, ng, 1, "call.pcapng")
    assert out.read_bytes()[:4] == struct.pack("<I", 0x0A0D0D0A)
    times = [line[0] for line in tshark(out, "-T", "fields", "-e", "frame.time_epoch")]
    original = dict(tshark(ng, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.number"))
    assert len(times) == len(set(times)) and set(times) <= set(original)
    assert set(records(out)) <= set(records(ng))
    same_call(call, analyse(out).calls[0])


def test_nanosecond_pcap_keeps_its_nanoseconds(tmp_path):
    linktype, recs = read_pcap(BASIC)
    nano = write_pcap(tmp_path / "nano.pcap", linktype, recs, nano=True)
    # write_pcap's nanosecond field is usec * 1000: add 7 ns to every record so the test sees the digits
    data = bytearray(nano.read_bytes())
    pos = 24
    while pos < len(data):
        sec, ns, caplen, _ = struct.unpack_from("<IIII", data, pos)
        struct.pack_into("<I", data, pos + 4, ns + 7)
        pos += 16 + caplen
    nano.write_bytes(bytes(data))
    out = export(tmp_path, nano, 1)
    assert out.read_bytes()[:4] == struct.pack("<I", 0xA1B23C4D)
    got = out.read_bytes()
    pos, stamps = 24, []
    while pos < len(got):
        sec, ns, caplen, _ = struct.unpack_from("<IIII", got, pos)
        stamps.append(ns % 1000)
        pos += 16 + caplen
    assert stamps and set(stamps) == {7}
    assert len(stamps) == len(recs)    # the sample is one call: every frame belongs to it


@needs_tshark
def test_nanosecond_pcapng_keeps_its_clock_and_its_nanoseconds(tmp_path):
    linktype, recs = read_pcap(BASIC)
    ng = write_pcapng(tmp_path / "nano.pcapng", [(linktype, 9)], [(0, s, u, f) for s, u, f in recs])
    data = bytearray(ng.read_bytes())   # add 7 ns to every packet's time (write_pcapng writes whole microseconds)
    pos = 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        if btype == 6:
            tsh, tsl = struct.unpack_from("<II", data, pos + 12)
            ticks = (tsh << 32 | tsl) + 7
            struct.pack_into("<II", data, pos + 12, ticks >> 32, ticks & 0xFFFFFFFF)
        pos += blen
    ng.write_bytes(bytes(data))
    out = export(tmp_path, ng, 1)
    assert out.read_bytes()[:4] == struct.pack("<I", 0x0A0D0D0A)
    fields = ("-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len")
    assert tshark(out, *fields) == tshark(ng, *fields)
    assert all(line[0].endswith("007") for line in tshark(out, *fields))
    assert {line[0] for line in tshark(out, "-T", "fields", "-e", "frame.interface_id")} == {"0"}


@needs_tshark
def test_inputs_with_different_link_types_give_pcapng_with_one_interface_each(tmp_path):
    linktype, recs = read_pcap(TRANSFER)
    sll = write_pcap(tmp_path / "sll.pcap", 113, [(s, u, to_sll(f)) for s, u, f in recs])
    r = run(BASIC, sll, "--split", tmp_path / "calls")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "calls").iterdir())
    assert [f.suffix for f in files] == [".pcapng"] * 3
    for f in files:
        assert {line[0] for line in tshark(f, "-T", "fields", "-e", "frame.interface_id")} == {"0"}
    encaps = {f.name: {line[0] for line in tshark(f, "-T", "fields", "-e", "frame.encap_type")} for f in files}
    assert sorted(map(len, encaps.values())) == [1, 1, 1] and len(set().union(*encaps.values())) == 2


def test_a_fragmented_rtp_packet_brings_all_its_fragments_in_time_order(tmp_path):
    """RTP cut into IP fragments (rewritten from the real call): the first fragment cannot be known as
    RTP until the last one arrives; the export must still hold it, before the other direction's packet
    that came between them."""
    linktype, recs = read_pcap(BASIC)
    rtp_at = [i for i, (_, _, f) in enumerate(recs) if parse_ip(f)["proto"] == 17 and parse_ip(f)["dport"] >= 6000]
    out_recs, cut = [], set()
    i = 0
    while i < len(recs):
        sec, usec, frame = recs[i]
        if i in rtp_at[10:40:10] and i + 1 < len(recs):
            first, last = fragment_ipv4(parse_ip(frame)["ip"], [64])
            nsec, nusec, nframe = recs[i + 1]
            out_recs += [(sec, usec, eth_ip(first)), (nsec, nusec, nframe), (nsec, nusec + 1, eth_ip(last))]
            cut.add(len(out_recs) - 3)
            i += 2
            continue
        out_recs.append((sec, usec, frame))
        i += 1
    assert len(cut) == 3
    src = write_pcap(tmp_path / "frag.pcap", linktype, out_recs)
    out = export(tmp_path, src, 1)
    _, exported = read_pcap(out)
    assert exported == out_recs            # the whole capture is the call: every frame, in order
    same_call(analyse(src).calls[0], analyse(out).calls[0])


def test_writer_pool_reopens_files_in_append_mode_with_one_header(tmp_path):
    _, recs = read_pcap(BASIC)
    writers = [CaptureWriter(str(tmp_path / f"{n}.{fmt}"), fmt, 1) for n, fmt in enumerate([PCAP, PCAPNG, PCAP])]
    pool = WriterPool(writers, limit=1)
    for k, (sec, usec, frame) in enumerate(recs):
        pool.write(k % 3, (sec * 10 ** 6 + usec) * 1000, 1, frame)
    pool.close()
    for n, w in enumerate(writers):
        assert records(w.path) == [(s * 10 ** 6 + u, f) for s, u, f in recs[n::3]]
    empty = CaptureWriter(str(tmp_path / "empty.pcap"), PCAP, 1)
    empty.close()
    assert records(empty.path) == []


# -- the command line ------------------------------------------------------------------------------------

def test_help_has_an_example_with_a_real_call_id():
    out = CliRunner().invoke(main, ["export", "--help"]).output
    assert "Examples:" in out
    assert f"sipflow export samples/basic-call-rtp.pcap --call-id {analyse(BASIC).calls[0].call_id} -w" in out


@pytest.mark.parametrize("args,option,words", [
    ([BASIC, "--call-id", "no-such-call", "-w", "x.pcap"], "--call-id", "no call"),
    ([TRANSFER, "--call-id", "@127.0.0.1", "-w", "x.pcap"], "--call-id", "2 calls match"),
    ([BASIC, "--call", "9", "-w", "x.pcap"], "--call", "there is no call 9"),
    ([BASIC, "--call", "1", "--call-id", "1-21263", "-w", "x.pcap"], "--call", "not both"),
    (["-", "--call", "1", "-w", "x.pcap"], "FILES", "standard input cannot be read twice"),
    ([BASIC, "--call", "1", "-w", "-"], "-w", "give a file name"),
    ([BASIC, "--call", "1", "-w", BASIC], "-w", "one of the captures being read"),
])
def test_usage_errors_name_the_option(tmp_path, monkeypatch, args, option, words):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2 and option in r.output and words in r.output, r.output
    assert not (tmp_path / "x.pcap").exists()


@pytest.mark.parametrize("args,words", [
    ([BASIC, "--call", "1"], "say where to write"),
    ([BASIC, "-w", "x.pcap"], "say which call"),
    ([BASIC, "--split", "d", "-w", "x.pcap"], "not both"),
    ([BASIC, "--split", "d", "--call", "1"], "--split writes every call"),
])
def test_missing_or_conflicting_choices_are_usage_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2 and words in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_a_capture_without_calls_says_so(tmp_path):
    r = run(SAMPLES / "register-401-200.pcap", "--split", tmp_path / "d")
    assert r.exit_code == 1 and "no call in the capture" in r.output


def test_split_of_every_sample_and_shared_capture(tmp_path):
    """No capture we have makes export fail; each call's file, read again, holds that call's messages."""
    from conftest import sample_files, shared_files
    for path in sample_files() + shared_files():
        original = analyse(path)
        if not original.calls:
            continue
        folder = tmp_path / path.name
        r = run(path, "--split", folder, "--no-progress")
        assert r.exit_code == 0, (path.name, r.output)
        files = sorted(folder.iterdir())
        assert len(files) == len(original.calls), path.name
        for call, out in zip(original.calls, files):
            again = [c for c in analyse(out).calls if c.call_id == call.call_id]
            assert len(again) == 1, (path.name, out.name)
            assert len(again[0].events) == len(call.events), (path.name, out.name)
