"""Bad input never gives a traceback: real frames with random damage go through the whole analysis.

Mutation fuzzing (hypothesis): frames of real samples (UDP, TCP, WebSocket, fragments) with bytes
flipped, cut or inserted; every record must be accounted for and the result must serialise."""
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sipflow

from conftest import SAMPLES
from fuzz.campaign import mutate, run_one
from pcaptools import read_pcap, write_pcap

SOURCES = ["basic-call-rtp.pcap", "websocket.pcap", "tcp-segmented.pcap", "udp-fragmented.pcap",
           "call-ipv6.pcap", "options-message-subscribe.pcap"]


@pytest.fixture(scope="module")
def frames():
    out = []
    for name in SOURCES:
        if (SAMPLES / name).exists():
            lt, recs = read_pcap(SAMPLES / name)
            out += [r for r in recs if len(r[2]) < 4000]
    if not out:
        pytest.skip("samples missing")
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_damaged_frames_never_raise(tmp_path_factory, frames, seed):
    rnd = random.Random(seed)
    picked = rnd.sample(frames, min(len(frames), 60))
    pool = [f for _, _, f in frames]
    # the long campaign's mutations (tests/fuzz/campaign.py): flips, insertions, deletions, truncation,
    # and splices of another frame's bytes at link, IP, UDP/TCP and SIP boundaries
    recs = [(s, u, mutate(f, pool, rnd) if rnd.random() < 0.7 else f) for s, u, f in picked]
    recs.sort(key=lambda r: (r[0], r[1]))
    path = write_pcap(tmp_path_factory.mktemp("fuzz") / "f.pcap", 1, recs)
    a = sipflow.analyze(str(path))
    assert a.stats["frames"] == len(recs)
    json.dumps(a.to_dict())  # every figure is serialisable, nothing half-built
    from sipflow.render import tables as report
    report.summary_text(a), report.calls_text(a), report.analysis_csv(a)
    run_one(str(path))   # and every other renderer, and the full parse of stored messages


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=3000))
def test_random_bytes_as_a_capture_file_give_a_clear_error_or_a_result(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rnd") / "r.pcap"
    # half the time, a valid header in front of random records
    path.write_bytes((b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + b"\0" * 8 + b"\xff\xff\x00\x00\x01\x00\x00\x00" + data)
                     if data[:1] and data[0] % 2 else data)
    try:
        a = sipflow.analyze(str(path))
    except sipflow.CaptureError as e:
        assert str(path) in str(e)
        return
    json.dumps(a.to_dict())


# -- the crashes an audit found (issue 12): each is now a counted, visible condition, never a traceback --

from click.testing import CliRunner  # noqa: E402

from pcaptools import eth_ip, ipv4, sip_text, tcp, udp_frame, write_pcapng  # noqa: E402

A, B = "198.51.100.10", "203.0.113.20"   # documentation addresses: data inside the file only


def _req(method="INVITE", extra=(), body="", ctype=None):
    h = [("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bK1"), ("From", "<sip:alice@x>;tag=f1"), ("To", "<sip:bob@y>"),
         ("Call-ID", "c1@x"), ("CSeq", f"1 {method}"), *extra]
    if ctype:
        h.append(("Content-Type", ctype))
    return sip_text(f"{method} sip:bob@y SIP/2.0", h, body)


def _udp_capture(tmp_path, payloads, name="x.pcap"):
    recs = [(1_700_000_000 + i, 0, udp_frame(A, 5060, B, 5060, p, i + 1)) for i, p in enumerate(payloads)]
    return str(write_pcap(tmp_path / name, 1, recs))


def test_hep3_address_chunk_of_the_wrong_size_is_counted(tmp_path):
    from pcaptools import hep3
    good = hep3(A, B, 5060, 5060, 1_700_000_000, 0, _req())
    bad = good.replace(b"\x00\x00\x00\x03\x00\x0a" + bytes([198, 51, 100, 10]),
                       b"\x00\x00\x00\x03\x00\x0b" + bytes([198, 51, 100, 10, 7]))
    assert bad != good
    recs = [(1_700_000_000, 0, udp_frame(A, 9060, B, 9060, bad)), (1_700_000_001, 0, udp_frame(A, 9060, B, 9060, good, 2))]
    a = sipflow.analyze(str(write_pcap(tmp_path / "hep.pcap", 1, recs)))
    assert a.stats["net_hep_bad_chunk"] == 1 and a.stats["sip_messages"] == 1


def test_a_length_of_thousands_of_digits_is_malformed_not_a_crash(tmp_path):
    huge = "9" * 5000
    msgs = [_req(extra=(("Content-Length", huge),)), _req("REGISTER", extra=(("Contact", f"<sip:a@x>;expires={'4' * 400}"),)),
            _req("REGISTER", extra=(("Expires", "5" * 400),))]
    a = sipflow.analyze(_udp_capture(tmp_path, msgs))
    assert a.stats["sip_messages"] == 3
    assert any(x.kind == "content_length_mismatch" for x in a.anomalies)


def test_an_rtpmap_clock_of_hundreds_of_digits_is_a_problem_not_an_overflow(tmp_path):
    sdp = f"v=0\r\nc=IN IP4 {A}\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 X/{'9' * 400}\r\n"
    rtp = bytes([0x80, 96, 0, 1]) + (160).to_bytes(4, "big") + (0x1234).to_bytes(4, "big") + b"\0" * 160
    recs = [(1_700_000_000, 0, udp_frame(A, 5060, B, 5060, _req(body=sdp, ctype="application/sdp")))]
    recs += [(1_700_000_001, i * 20000, udp_frame(B, 5000, A, 4000, rtp[:2] + (i + 1).to_bytes(2, "big") + rtp[4:],
                                                  i + 2)) for i in range(20)]
    a = sipflow.analyze(str(write_pcap(tmp_path / "sdp.pcap", 1, recs)))
    assert len(a.streams) == 1 and a.streams[0].rate == 8000
    r = CliRunner().invoke(__import__("sipflow.cli", fromlist=["main"]).main, ["rtp", str(tmp_path / "sdp.pcap")])
    assert r.exit_code == 0, r.output


def test_a_stream_announcing_a_gigabyte_body_is_not_buffered(tmp_path):
    head = _req(extra=(("Content-Length", "1000000000"),)).replace(b"Content-Length: 0\r\n", b"")
    follow = _req("OPTIONS")
    recs, seq = [], 1000
    for i, chunk in enumerate([head] + [b"x" * 1400] * 50 + [b"\r\n" + follow]):
        seg = tcp(A, B, 40000, 5060, seq, 1, 0x18, chunk)
        recs.append((1_700_000_000, i * 1000, eth_ip(ipv4(A, B, 6, seg, ident=i + 1))))
        seq += len(chunk)
    a = sipflow.analyze(str(write_pcap(tmp_path / "tcp.pcap", 1, recs)))
    assert a.stats["tcp_sip_oversized"] == 1
    assert [m.method for m in a.messages] == ["INVITE", "OPTIONS"], "resynchronised on the next start line"
    assert any(x.kind == "content_length_mismatch" for x in a.anomalies)


def test_a_websocket_header_cut_by_a_tcp_gap_at_the_end_is_counted(tmp_path):
    upgrade = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    frame = b"\x81\x7e" + (300).to_bytes(2, "big") + b"I" * 300
    pieces = [(1000, upgrade), (1000 + len(upgrade) + 10, b"\x81\x7e")]   # a gap, then a header cut short
    recs = [(1_700_000_000, i, eth_ip(ipv4(A, B, 6, tcp(A, B, 40000, 5060, s, 1, 0x18, p), ident=i + 1)))
            for i, (s, p) in enumerate(pieces)]
    del frame
    a = sipflow.analyze(str(write_pcap(tmp_path / "ws.pcap", 1, recs)))
    assert a.stats["frames"] == 2


def test_a_timestamp_no_calendar_holds_is_shown_as_a_number(tmp_path):
    payload = udp_frame(A, 5060, B, 5060, _req())
    path = write_pcapng(tmp_path / "far.pcapng", [(1, 6)], [(0, 2 ** 32 - 1, 999999, payload)])
    data = bytearray(path.read_bytes())
    shb = int.from_bytes(data[4:8], "little")
    epb = shb + int.from_bytes(data[shb + 4:shb + 8], "little")   # after the section and interface blocks
    assert data[epb] == 6 and data[shb + 16:shb + 20] == b"\x09\x00\x01\x00"   # IDB option if_tsresol
    data[shb + 20] = 0                                   # the interface counts whole seconds ...
    data[epb + 12:epb + 20] = b"\xff\xff\xff\xfe\xff\xff\xff\xff"   # ... and it is 2^64 of them
    path.write_bytes(bytes(data))
    from sipflow.cli import main
    r = CliRunner().invoke(main, ["calls", str(path)])
    assert r.exit_code == 0 and "?" in r.output, r.output


def _cpu_seconds_to_analyze(path) -> float:
    """CPU seconds of sipflow.analyze alone, in a fresh interpreter (what the scaling tests compare)."""
    import subprocess
    import sys
    code = ("import sys, time, sipflow; t = time.process_time(); sipflow.analyze(sys.argv[1]); "
            "print(time.process_time() - t)")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return float(r.stdout)


def test_one_call_id_with_thousands_of_invite_transactions_costs_linear_time(tmp_path):
    """A flood of INVITEs (each challenged and ACKed) in one Call-ID: every per-message step must be
    constant time (it was a rescan of every transaction of the call, per response). Four times the
    messages must cost well under eight times the CPU (a rescan makes it sixteen)."""
    def flood(n, name):
        recs = []
        for i in range(n):
            br = f"z9hG4bK{i}"
            for j, (first, frm, ftag_to, method) in enumerate((
                    ("INVITE sip:bob@y SIP/2.0", A, "", "INVITE"),
                    ("SIP/2.0 407 Proxy Authentication Required", B, ";tag=t", "INVITE"),
                    ("ACK sip:bob@y SIP/2.0", A, ";tag=t", "ACK"))):
                msg = sip_text(first, [("Via", f"SIP/2.0/UDP {A}:5060;branch={br}"), ("From", "<sip:a@x>;tag=f"),
                                       ("To", "<sip:bob@y>" + ftag_to), ("Call-ID", "flood@x"),
                                       ("CSeq", f"{i + 1} {method}")])
                src, dst = (A, B) if frm == A else (B, A)
                recs.append((1_700_000_000 + i // 100, (i % 100) * 10000 + j, udp_frame(src, 5060, dst, 5060, msg)))
        return write_pcap(tmp_path / name, 1, recs)
    small, big = _cpu_seconds_to_analyze(flood(3000, "s.pcap")), _cpu_seconds_to_analyze(flood(12000, "b.pcap"))
    assert big < 8 * small, (small, big)


def test_tcp_segments_in_reverse_order_cost_linear_time(tmp_path):
    """A TCP stream whose segments arrive last-first: each one held until the first arrives, then all
    delivered. Delivering must not rescan everything held for each segment (it did: 16.6 s for 20 000)."""
    def stream(n, name):
        msg = sip_text("OPTIONS sip:bob@y SIP/2.0", [("Via", f"SIP/2.0/TCP {A}:5060;branch=z9hG4bKr"),
                                                      ("From", "<sip:a@x>;tag=f"), ("To", "<sip:bob@y>"),
                                                      ("Call-ID", "rev@x"), ("CSeq", "1 OPTIONS")])
        data = msg * (n * 50 // len(msg) + 1)
        pieces = [(1000 + i * 50, data[i * 50:(i + 1) * 50]) for i in range(n)]
        order = pieces[1:][::-1] + pieces[:1]
        syn = eth_ip(ipv4(A, B, 6, tcp(A, B, 40000, 5060, 999, 0, 0x02, b"")))   # the stream starts at 1000
        recs = [(1_699_999_999, 0, syn)]
        recs += [(1_700_000_000, i, eth_ip(ipv4(A, B, 6, tcp(A, B, 40000, 5060, s, 1, 0x18, p), ident=i & 0xFFFF)))
                 for i, (s, p) in enumerate(order)]
        return write_pcap(tmp_path / name, 1, recs)
    small, big = _cpu_seconds_to_analyze(stream(4000, "s.pcap")), _cpu_seconds_to_analyze(stream(16000, "b.pcap"))
    assert big < 8 * small, (small, big)
    a = sipflow.analyze(str(tmp_path / "s.pcap"))
    assert a.stats["sip_messages"] >= 4000 * 50 // 200 and a.stats.get("net_tcp_gap", 0) == 0


def test_sctp_fragments_reassemble_in_any_order_and_a_flood_of_beginnings_costs_linear_time(tmp_path):
    from pcaptools import sctp, sctp_data_chunk
    msg = sip_text("OPTIONS sip:bob@y SIP/2.0", [("Via", f"SIP/2.0/SCTP {A}:5060;branch=z9hG4bKs"),
                                                  ("From", "<sip:a@x>;tag=f"), ("To", "<sip:bob@y>"),
                                                  ("Call-ID", "sctp@x"), ("CSeq", "1 OPTIONS")])
    pieces = [msg[i:i + 40] for i in range(0, len(msg), 40)]
    chunks = [sctp_data_chunk(100 + i, 0, 0, p, begin=i == 0, end=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    order = chunks[2:] + [chunks[0]] + [chunks[1]]       # the beginning arrives late
    recs = [(1_700_000_000, i, eth_ip(ipv4(A, B, 132, sctp(5060, 5060, 1, [c]), ident=i + 1)))
            for i, c in enumerate(order)]
    a = sipflow.analyze(str(write_pcap(tmp_path / "ok.pcap", 1, recs)))
    assert [m.method for m in a.messages] == ["OPTIONS"] and sorted(a.messages[0].frames) == list(range(1, len(recs) + 1))

    def flood(n, name):   # n chunks, every one flagged "begin", none "end", consecutive TSNs
        recs = [(1_700_000_000, i, eth_ip(ipv4(A, B, 132, sctp(5060, 5060, 1, [sctp_data_chunk(
            7 + i, 0, 0, b"x" * 32, begin=True, end=False)]), ident=i & 0xFFFF))) for i in range(n)]
        return write_pcap(tmp_path / name, 1, recs)
    small, big = _cpu_seconds_to_analyze(flood(1000, "s.pcap")), _cpu_seconds_to_analyze(flood(4000, "b.pcap"))
    assert big < 8 * small, (small, big)


def test_a_websocket_http_head_that_never_ends_is_given_up_on(tmp_path):
    head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nX: " + b"a" * 200_000   # no blank line, ever
    recs, seq = [(1_699_999_999, 0, eth_ip(ipv4(A, B, 6, tcp(A, B, 40000, 5060, 999, 0, 0x02, b""))))], 1000
    for i in range(0, len(head), 1000):
        piece = head[i:i + 1000]
        recs.append((1_700_000_000, i, eth_ip(ipv4(A, B, 6, tcp(A, B, 40000, 5060, seq, 1, 0x18, piece),
                                                     ident=(i // 1000 + 1) & 0xFFFF))))
        seq += len(piece)
    a = sipflow.analyze(str(write_pcap(tmp_path / "ws.pcap", 1, recs)))
    assert a.stats["net_ws_http_head_too_long"] == 1 and a.stats["frames"] == len(recs)


def test_thousands_of_overlapping_fragments_of_one_datagram_cost_linear_time(tmp_path):
    """One IP ID, fragments at every 8-byte offset, each 1 480 bytes (they overlap), the last one never
    sent: each fragment must not re-sort everything held (30 000 took 42 s); a datagram of more pieces
    than IP allows is given up on and counted."""
    def frags(n, name):
        last = ipv4(A, B, 17, b"\xcd" * 100, ident=4242, frag=8100)      # the end is known from the start
        recs = [(1_699_999_999, 0, eth_ip(last))]
        for i in range(n):
            off = ((i * 7919) % 8000 + 1) * 8                            # scattered; offset 0 never comes
            pkt = ipv4(A, B, 17, b"\xab" * 1480, ident=4242, frag=0x2000 | (off // 8))
            recs.append((1_700_000_000, i, eth_ip(pkt)))
        return write_pcap(tmp_path / name, 1, recs)
    small, big = _cpu_seconds_to_analyze(frags(5000, "s.pcap")), _cpu_seconds_to_analyze(frags(20000, "b.pcap"))
    assert big < 5 * small, (small, big)   # linear work is at most 4x (the old re-sort measured 6.6x)
    a = sipflow.analyze(str(tmp_path / "b.pcap"))
    assert a.stats["net_ip_fragments_dropped"] >= 2 and a.stats["frames"] == 20001


def test_fragments_in_any_order_and_with_overlaps_still_reassemble(tmp_path):
    from pcaptools import fragment_ipv4
    msg = sip_text("OPTIONS sip:bob@y SIP/2.0", [("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bKf"),
                                                  ("From", "<sip:a@x>;tag=f"), ("To", "<sip:bob@y>"),
                                                  ("Call-ID", "frag@x"), ("CSeq", "1 OPTIONS"),
                                                  ("X-Pad", "p" * 3000)])
    whole = udp_frame(A, 5060, B, 5060, msg, 77)[14:]
    parts = fragment_ipv4(whole, [1480, 1480])
    order = [parts[2], parts[0], parts[0], parts[1]]          # last first, a duplicate, then the middle
    recs = [(1_700_000_000, i, eth_ip(p)) for i, p in enumerate(order)]
    a = sipflow.analyze(str(write_pcap(tmp_path / "f.pcap", 1, recs)))
    assert [m.method for m in a.messages] == ["OPTIONS"] and a.stats["net_ip_reassembled"] == 1
