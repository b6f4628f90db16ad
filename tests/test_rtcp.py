"""RTCP read right: SR/RR report blocks, SDES CNAME, BYE, XR VoIP metrics, round trips from LSR/DLSR,
and every RTCP figure joined to the stream it is about, on every read path.

The packets here are written field by field from RFC 3550 §6.4-6.6 and RFC 3611 §4.7 (not with
sipflow's own code); the capture made by a real stack is checked in test_oracle.py against tshark."""
import csv
import shutil
import io
import struct
import sys

import pytest

import sipflow
from sipflow.media.rtcp import RtcpBook, RtcpError, parse

from pcaptools import eth_ip, ipv4, udp, write_pcap

A, B = "192.0.2.10", "192.0.2.20"
SSRC_A, SSRC_B = 0x0A0A0A0A, 0x0B0B0B0B
NTP_AT_1S = (3_900_000_000 << 32) | 0x4000_0000      # an NTP timestamp: 3.9e9 s and a quarter


def header(pt: int, count: int, body: bytes, padding: int = 0) -> bytes:
    pad = bytes(padding - 1) + bytes([padding]) if padding else b""
    words = (4 + len(body) + len(pad)) // 4 - 1
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, pt, words) + body + pad


def block(ssrc: int, fraction: int, cumulative: int, highest: int, jitter: int, lsr: int, dlsr: int) -> bytes:
    return struct.pack("!IB", ssrc, fraction) + (cumulative & 0xFFFFFF).to_bytes(3, "big") \
        + struct.pack("!IIII", highest, jitter, lsr, dlsr)


def sr(ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int, *blocks: bytes) -> bytes:
    return header(200, len(blocks), struct.pack("!IIIIII", ssrc, ntp >> 32, ntp & 0xFFFFFFFF, rtp_ts, packets,
                                                octets) + b"".join(blocks))


def rr(ssrc: int, *blocks: bytes) -> bytes:
    return header(201, len(blocks), struct.pack("!I", ssrc) + b"".join(blocks))


def sdes(ssrc: int, cname: str) -> bytes:
    items = bytes([1, len(cname)]) + cname.encode() + b"\0"
    items += bytes(-len(items) % 4)
    return header(202, 1, struct.pack("!I", ssrc) + items)


def bye(ssrc: int, reason: str = "") -> bytes:
    body = struct.pack("!I", ssrc)
    if reason:
        body += bytes([len(reason)]) + reason.encode()
        body += bytes(-len(body) % 4)
    return header(203, 1, body)


def xr_voip(sender: int, source: int, loss: int, discard: int, mos_cq: int, r: int) -> bytes:
    metrics = struct.pack("!IBBBBHHHHbbBBBBBBBxHHH", source, loss, discard, 10, 2, 120, 5000, 80, 40, -20, -60, 127,
                          16, r, 127, 41, mos_cq, 0, 60, 120, 200)
    return header(207, 0, struct.pack("!I", sender) + struct.pack("!BBH", 7, 0, 8) + metrics)


# -- the wire format ---------------------------------------------------------------------------------

def test_a_compound_sr_sdes_bye_reads_field_by_field():
    data = sr(SSRC_A, NTP_AT_1S, 8000, 50, 8000, block(SSRC_B, 64, 7, 0x1_0042, 123, 0xAABBCCDD, 0x8000)) \
        + sdes(SSRC_A, "alice@192.0.2.10") + bye(SSRC_A, "hang up")
    first, second, third = parse(data)
    assert (first.kind, first.ssrc, first.sender.packets, first.sender.octets, first.sender.rtp_ts) == \
        ("SR", SSRC_A, 50, 8000, 8000)
    assert first.sender.lsr_key == (NTP_AT_1S >> 16) & 0xFFFFFFFF
    (b,) = first.blocks
    assert (b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_seq, b.jitter, b.lsr, b.dlsr) == \
        (SSRC_B, 64, 7, 0x1_0042, 123, 0xAABBCCDD, 0x8000)
    assert (second.kind, second.ssrc, second.cname) == ("SDES", SSRC_A, "alice@192.0.2.10")
    assert (third.kind, third.ssrc, third.reason) == ("BYE", SSRC_A, "hang up")


def test_cumulative_loss_is_signed_and_padding_is_removed():
    """RFC 3550 §6.4.1: the cumulative number lost is a signed 24-bit value (duplicates make it negative);
    padding (P bit) on the last packet is counted by its last byte."""
    (p,) = parse(rr(SSRC_B, block(SSRC_A, 0, -2, 10, 0, 0, 0)))
    assert p.blocks[0].cumulative_lost == -2
    padded = header(201, 1, struct.pack("!I", SSRC_B) + block(SSRC_A, 1, 1, 10, 0, 0, 0), padding=4)
    (q,) = parse(padded)
    assert q.blocks[0].fraction_lost == 1


def test_xr_voip_metrics_block_reads_in_its_units():
    (p,) = parse(xr_voip(SSRC_B, SSRC_A, loss=13, discard=26, mos_cq=38, r=80))
    (v,) = p.voip
    assert p.kind == "XR" and v.ssrc == SSRC_A
    assert v.loss_rate == pytest.approx(13 / 256) and v.discard_rate == pytest.approx(26 / 256)
    assert (v.mos_cq, v.mos_lq, v.r_factor, v.ext_r_factor, v.rerl) == (3.8, 4.1, 80, None, None)
    assert (v.signal_level, v.noise_level, v.round_trip_ms, v.jb_nominal_ms, v.jb_abs_max_ms) == (-20, -60, 80, 60, 200)


@pytest.mark.parametrize("data,why", [
    (b"\x80\xc8", "shorter"),
    (b"\x40\xc9\x00\x01" + bytes(4), "version 1"),
    (b"\x80\xc9\x00\x08" + bytes(8), "says 36 bytes, 12 remain"),   # the length runs past the end
    (header(201, 2, struct.pack("!I", SSRC_B) + block(SSRC_A, 0, 0, 0, 0, 0, 0)), "report blocks do not fit"),
    (header(200, 0, bytes(12)), "sender information"),
])
def test_damaged_rtcp_raises_a_clear_error(data, why):
    with pytest.raises(RtcpError, match=why):
        parse(data)


def test_bytes_after_a_valid_chain_are_left_alone():
    """SRTCP appends an index and an authentication tag: what follows the last packet is not RTCP."""
    (p,) = parse(rr(SSRC_B, block(SSRC_A, 0, 0, 5, 0, 0, 0)) + bytes.fromhex("80000001") + bytes(10))
    assert p.kind == "RR" and len(p.blocks) == 1


def test_the_book_measures_round_trips_from_lsr_and_dlsr():
    book = RtcpBook()
    lsr = (NTP_AT_1S >> 16) & 0xFFFFFFFF
    assert book.add(1.0, 10, A, 6001, sr(SSRC_A, NTP_AT_1S, 0, 10, 1600)) is None
    # B held A's SR for 0.25 s and its report reached the capture point 0.33 s after the SR: RTT 80 ms
    assert book.add(1.33, 20, B, 6101, rr(SSRC_B, block(SSRC_A, 0, 0, 9, 40, lsr, 0x4000))) is None
    log = book.reports_for(B, 6100, SSRC_A)
    assert log.rtt_n == 1 and log.rtt_min == pytest.approx(0.08)
    assert book.sender_for(A, 6000, SSRC_A).sr_count == 1
    assert book.add(2.0, 30, B, 6101, b"\x80\xc9\x00\x09") is not None and book.malformed == 1


# -- through the analyzer ----------------------------------------------------------------------------

def rtp(seq: int, ts: int, ssrc: int, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + bytes(160)


def capture(tmp_path, mux: bool = False):
    """Two PCMU streams of 150 packets (3 s) A:6000 <-> B:6100; RTCP on 6001/6101 (or, mux, on the RTP
    ports): SR from A at 1.0 s, RR from B at 1.33 s (fraction 64/256, cumulative 3, jitter 80 = 10 ms,
    DLSR 0.25 s: RTT 80 ms), then SR+SDES from B and an XR from A about B's stream, BYE from both."""
    ra, rb = (6000, 6100) if mux else (6001, 6101)
    lsr = (NTP_AT_1S >> 16) & 0xFFFFFFFF
    packets = []
    for i in range(150):
        t = 0.02 * i
        packets.append((t, A, 6000, B, 6100, rtp(i, i * 160, SSRC_A)))
        packets.append((t + 0.001, B, 6100, A, 6000, rtp(i, 5000 + i * 160, SSRC_B)))
    packets += [
        (1.0, A, ra, B, rb, sr(SSRC_A, NTP_AT_1S, 8000, 50, 8000) + sdes(SSRC_A, "alice@example.test")),
        (1.33, B, rb, A, ra, rr(SSRC_B, block(SSRC_A, 64, 3, 66, 80, lsr, 0x4000)) + sdes(SSRC_B, "bob")),
        (2.0, B, rb, A, ra, sr(SSRC_B, NTP_AT_1S + (1 << 32), 13000, 100, 16000,
                               block(SSRC_A, 0, 3, 116, 88, 0, 0)) + sdes(SSRC_B, "bob")),
        (2.1, A, ra, B, rb, rr(SSRC_A, block(SSRC_B, 0, 0, 105, 16, 0, 0)) + xr_voip(SSRC_A, SSRC_B, 0, 3, 41, 92)),
        (3.1, A, ra, B, rb, rr(SSRC_A) + bye(SSRC_A, "done")),
        (3.1, B, rb, A, ra, rr(SSRC_B) + bye(SSRC_B)),
    ]
    packets.sort(key=lambda p: p[0])
    records = [(100, round(t * 1e6), eth_ip(ipv4(s, d, 17, udp(s, d, sp, dp, payload))))
               for t, s, sp, d, dp, payload in packets]
    return write_pcap(tmp_path / "rtcp.pcap", 1, records)


def by_ssrc(a):
    return {s.ssrc: s for s in a.streams}


@pytest.mark.parametrize("mux", [False, True], ids=["rtp+1", "rtcp-mux"])
def test_rtcp_figures_join_the_stream_they_are_about(tmp_path, mux):
    a = sipflow.analyze(str(capture(tmp_path, mux)))
    assert a.stats["rtcp_packets"] == 6 and a.stats["malformed"] == 0
    streams = by_ssrc(a)
    ra, rb = streams[SSRC_A].rtcp, streams[SSRC_B].rtcp
    # what B reported about A's stream
    assert (ra.reports, ra.reporter_ssrc, ra.cumulative_lost) == (2, SSRC_B, 3)
    assert ra.fraction_lost == 0.0 and ra.fraction_lost_max == pytest.approx(25.0)
    assert ra.jitter == pytest.approx(11.0) and ra.jitter_max == pytest.approx(11.0)   # 88 units at 8 kHz
    assert ra.rtt_n == 1 and ra.rtt == pytest.approx(80.0, abs=0.01)
    # what A said of itself
    assert (ra.cname, ra.sender_packets, ra.kinds["SR"], ra.kinds["BYE"], ra.bye_reason) == \
        ("alice@example.test", 50, 1, 1, "done")
    assert ra.packets == 3 and not ra.encrypted
    # B's stream: A's report and XR about it; no SR of A's answered, so no round trip
    assert (rb.reports, rb.jitter, rb.rtt, rb.cname, rb.bye_reason) == (1, 2.0, None, "bob", None)
    assert rb.xr is not None and rb.xr.mos_cq == 4.1 and rb.xr.discard_rate == pytest.approx(3 / 256)
    assert rb.bye_frame is not None
    # the round trip goes into the E-model as half the delay
    q = streams[SSRC_A].quality
    assert q is not None and q.delay_ms == pytest.approx(40.0, abs=0.01)
    assert "half the RTCP round trip" in streams[SSRC_A].quality_note
    assert streams[SSRC_B].quality.delay_ms is None


def test_every_read_path_reads_rtcp_the_same(tmp_path, monkeypatch):
    path = capture(tmp_path)
    fast = sipflow.analyze(str(path))
    merged = sipflow.analyze([str(path), str(write_pcap(tmp_path / "empty.pcap", 1, []))])
    monkeypatch.setattr(sys.modules["sipflow.analysis.analyzer"], "_numpy_available", lambda: False)
    pure = sipflow.analyze(str(path))
    want = {s.ssrc: s.rtcp for s in fast.streams}
    assert want[SSRC_A] is not None
    assert {s.ssrc: s.rtcp for s in pure.streams} == want
    assert {s.ssrc: s.rtcp for s in merged.streams} == want


def test_damaged_rtcp_is_a_visible_malformed_record(tmp_path):
    cut = rr(SSRC_B, block(SSRC_A, 0, 0, 0, 0, 0, 0))[:20]     # the length says 32 bytes
    records = [(100, 0, eth_ip(ipv4(B, A, 17, udp(B, A, 6101, 6001, cut))))]
    a = sipflow.analyze(str(write_pcap(tmp_path / "cut.pcap", 1, records)))
    assert a.stats["malformed"] == 1 and "RTCP" in a.malformed[0].error


def test_rtp_shows_what_rtcp_said(tmp_path):
    from click.testing import CliRunner
    from sipflow.cli.app import main
    out = CliRunner().invoke(main, ["rtp", str(capture(tmp_path))]).output
    assert "RTCP (what each stream's receiver reported" in out
    assert "RTT 80.0 ms" in out and "CNAME alice@example.test" in out and "BYE in frame" in out
    csv_out = CliRunner().invoke(main, ["rtp", "--format", "csv", str(capture(tmp_path))]).output
    rtts = sorted(r["rtcp_rtt_ms"] for r in csv.DictReader(io.StringIO(csv_out)))
    assert rtts[0] == "" and float(rtts[1]) == pytest.approx(80.0, abs=0.01)


# -- on captures made by a real stack (baresip), against tshark ------------------------------------------

from conftest import SAMPLES  # noqa: E402

RTCP_SAMPLES = [SAMPLES / "call-rtcp.pcap", SAMPLES / "call-rtcp-mux.pcap"]


def tshark_rtcp(path):
    """Per source SSRC: its report blocks' (fraction, cumulative, jitter) in order; per sender SSRC:
    the last SR packet count and the CNAME, as tshark reads them."""
    import subprocess
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "rtcp and not icmp", "-T", "fields", "-E", "occurrence=a",
                          "-e", "rtcp.senderssrc", "-e", "rtcp.ssrc.identifier", "-e", "rtcp.ssrc.fraction",
                          "-e", "rtcp.ssrc.cum_nr", "-e", "rtcp.ssrc.jitter", "-e", "rtcp.sender.packetcount",
                          "-e", "rtcp.sdes.text"], capture_output=True, text=True, timeout=120).stdout
    blocks, senders = {}, {}
    for line in out.splitlines():
        sender, ids, frac, cum, jit, count, text = (line.split("\t") + [""] * 7)[:7]
        fracs = frac.split(",") if frac else []
        for ident, f, c, j in zip(ids.split(","), fracs, cum.split(","), jit.split(",")):   # blocks come first
            blocks.setdefault(int(ident, 16), []).append((int(f), int(c), int(j)))
        if sender and count:
            senders[int(sender, 16)] = (int(count), [t for t in text.split(",") if t.startswith("sip:")][0])
    return blocks, senders


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("path", RTCP_SAMPLES, ids=lambda p: p.name)
def test_a_real_stacks_rtcp_reads_as_tshark_reads_it(path):
    if not path.exists():
        pytest.skip(f"{path.name} not built")
    blocks, senders = tshark_rtcp(path)
    a = sipflow.analyze(str(path))
    assert a.stats["malformed"] == 0
    streams = [s for s in a.streams if s.rtcp is not None]
    assert len(streams) == 2
    for s in streams:
        r = s.rtcp
        reports = blocks[s.ssrc]
        frac, cum, jit = reports[-1]
        assert r.reports == len(reports) and r.cumulative_lost == cum
        assert r.fraction_lost == pytest.approx(frac * 100 / 256)
        assert r.jitter == pytest.approx(jit * 1000 / s.rate)
        assert (r.sender_packets, r.cname) == senders[s.ssrc]
        assert r.kinds.get("SR") == 2 and r.kinds.get("BYE") == 1 and r.bye_frame is not None
    # at least one round trip is answered on each capture (LSR naming an SR in the capture)
    assert any(s.rtcp.rtt is not None and 0 <= s.rtcp.rtt < 50 for s in streams)
