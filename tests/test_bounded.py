"""Bounded memory for endless input (AnalyzerOptions): finished calls beyond the most recent N are
summarised (every total and KPI unchanged, their message records dropped), transactions are forgotten
when RFC 3261's timers say so, calls and transactions that never end are aged out and reported."""
import pytest

import sipflow
from sipflow.analysis.analyzer import Analyzer
from sipflow.analysis.options import AnalyzerOptions
from sipflow.capture import open_captures, records

from pcaptools import sip_text, udp_frame, write_pcap

A, B = "198.51.100.10", "203.0.113.20"   # documentation addresses: data inside the file only
T0 = 1_700_000_000


def _msg(first, method, cseq, branch, call_id, ttag=None):
    h = [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), ("From", f"<sip:alice@x>;tag=f-{call_id}"),
         ("To", "<sip:bob@y>" + (f";tag={ttag}" if ttag else "")), ("Call-ID", call_id),
         ("CSeq", f"{cseq} {method}"), ("Contact", f"<sip:alice@{A}>")]
    return sip_text(first, h, "")


def _traffic(calls=120, spacing=5.0):
    """Calls one after another, every 5 s: answered (two in three) or busy; an OPTIONS ping with
    each; the last call still ringing at the end, and one INVITE nobody ever answers."""
    out = []
    for i in range(calls):
        t, cid = i * spacing, f"call-{i}@x"
        inv = f"z9hG4bK-{i}-1"
        out.append((t, "ab", _msg(f"INVITE sip:bob@{B} SIP/2.0", "INVITE", 1, inv, cid)))
        out.append((t + 0.1, "ba", _msg("SIP/2.0 180 Ringing", "INVITE", 1, inv, cid, "t")))
        if i == calls - 1:
            break
        if i % 3 == 2:
            out.append((t + 0.5, "ba", _msg("SIP/2.0 486 Busy Here", "INVITE", 1, inv, cid, "t")))
            out.append((t + 0.6, "ab", _msg(f"ACK sip:bob@{B} SIP/2.0", "ACK", 1, inv, cid, "t")))
        else:
            out.append((t + 0.5, "ba", _msg("SIP/2.0 200 OK", "INVITE", 1, inv, cid, "t")))
            out.append((t + 0.6, "ab", _msg(f"ACK sip:bob@{B} SIP/2.0", "ACK", 1, f"z9hG4bK-{i}-2", cid, "t")))
            out.append((t + 3.0, "ab", _msg(f"BYE sip:bob@{B} SIP/2.0", "BYE", 2, f"z9hG4bK-{i}-3", cid, "t")))
            out.append((t + 3.1, "ba", _msg("SIP/2.0 200 OK", "BYE", 2, f"z9hG4bK-{i}-3", cid, "t")))
        out.append((t + 4.0, "ab", _msg(f"OPTIONS sip:bob@{B} SIP/2.0", "OPTIONS", 1, f"z9hG4bK-o{i}", f"ping-{i}@x")))
        out.append((t + 4.1, "ba", _msg("SIP/2.0 200 OK", "OPTIONS", 1, f"z9hG4bK-o{i}", f"ping-{i}@x", "o")))
    out.append((1.0, "ab", _msg(f"INVITE sip:bob@{B} SIP/2.0", "INVITE", 1, "z9hG4bK-lost", "lost@x")))
    out.sort(key=lambda m: m[0])
    return out


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    recs = []
    for n, (t, direction, payload) in enumerate(_traffic()):
        s, d = (A, B) if direction == "ab" else (B, A)
        recs.append((T0 + int(t), int(round((t % 1) * 1e6)), udp_frame(s, 5060, d, 5060, payload, ident=n + 1)))
    return str(write_pcap(tmp_path_factory.mktemp("bounded") / "calls.pcap", 1, recs))


def test_summarised_calls_keep_every_total_and_kpi(capture):
    everything = sipflow.analyze(capture)
    bounded = sipflow.analyze(capture, options=AnalyzerOptions(keep_calls=10))
    # held: the 10 most recent finished calls, those still inside the 32 s linger (32 / 5 s apart),
    # and the two that never finished
    assert len(everything.calls) == 121 and len(bounded.calls) <= 10 + 7 + 2 + 1
    assert len(bounded.summarised) == 121 - len(bounded.calls)
    assert bounded.kpis() == everything.kpis()
    assert bounded.call_outcomes() == everything.call_outcomes()
    for key in ("calls", "sip_messages", "retransmissions", "anomalies", "frames"):
        assert bounded.stats[key] == everything.stats[key], key
    assert bounded.stats["messages_kept"] == len(bounded.messages) < len(everything.messages) // 4
    # What is held is the most recent: the last calls, and every message of each held call.
    held = {c.call_id for c in bounded.calls}
    assert "call-119@x" in held and "call-0@x" not in held
    by_call = {c.call_id: len(c.events) for c in everything.calls}
    assert all(len(c.events) == by_call[c.call_id] for c in bounded.calls)
    assert [m.frame for m in bounded.messages] == sorted(m.frame for m in bounded.messages)


def test_what_is_held_stays_flat_while_the_input_goes_on(capture):
    files = open_captures([capture])
    an = Analyzer(AnalyzerOptions(keep_calls=5))
    an.files.extend(files)
    peaks = {"records": 0, "calls": 0, "transactions": 0}
    for n, (ts, fi, frame, lt, buf, off, caplen) in enumerate(records(files)):
        an.feed(ts, fi, frame, lt, bytes(buf[off:off + caplen]))
        if n > 200:   # after the start-up: bounded by keep_calls and the 32 s linger, not by the input
            peaks["records"] = max(peaks["records"], len(an.events))
            peaks["calls"] = max(peaks["calls"], len(an.tracker.calls))
            peaks["transactions"] = max(peaks["transactions"], len(an.tracker.transactions))
    # Calls finish 32 s after their last message and are then queued: about 5 + 32 / 5 calls at most.
    assert peaks["calls"] <= 5 + 10, peaks
    assert peaks["transactions"] <= 4 * 10 + 2, peaks
    assert peaks["records"] <= 2 * (7 * 15 + 8 * 5 * 2) + 1100, peaks


def test_without_options_nothing_is_forgotten_but_finished_transactions(capture):
    files = open_captures([capture])
    an = Analyzer()
    an.run(files)
    live = len(an.tracker.transactions)
    a = an.result()
    assert len(a.messages) == a.stats["sip_messages"] and len(a.calls) == 121
    # 80 answered calls x (INVITE, ACK, BYE, OPTIONS) + 39 busy x (INVITE, OPTIONS) + 2 unanswered INVITEs
    created = a.stats["transactions_expired"] + live
    assert created == 400 and a.stats["transactions_expired"] > 340, \
        "finished transactions are forgotten 32 s after their last message (Timers D, J)"
    assert live <= 4 * (32 + 10) // 5 + 2, "what is left is the last ~42 s"
    # The result made, the tracker let go of what matching needed; the result has it all
    assert not an.tracker.transactions and not an.tracker.calls and not an.tracker.registrations
    assert not an.events and an.result() is a and an.snapshot() is a


def test_calls_and_transactions_that_never_end_are_aged_out_and_reported(capture):
    a = sipflow.analyze(capture, options=AnalyzerOptions(idle_timeout=60))
    aged = [x for x in a.anomalies if x.kind == "aged_out"]
    calls = {x.call_id for x in aged}
    assert "lost@x" in calls, "the INVITE nobody answered"
    assert a.stats["calls_aged_out"] >= 1 and a.stats["transactions_aged_out"] >= 1
    lost = a.call("lost@x")
    assert lost is not None and lost.outcome.value == "no_response"


def test_options_reject_nonsense():
    with pytest.raises(ValueError):
        AnalyzerOptions(keep_calls=-1)
    with pytest.raises(ValueError):
        AnalyzerOptions(idle_timeout=0)


def test_the_cli_lists_what_it_keeps_and_counts_everything(capture):
    import json

    from click.testing import CliRunner

    from sipflow.cli import main
    full = json.loads(CliRunner().invoke(main, ["summary", capture, "--format", "json"]).output)
    r = CliRunner().invoke(main, ["summary", capture, "--format", "json", "--keep-calls", "3"])
    kept = json.loads(r.output)
    assert kept["call_outcomes"] == full["call_outcomes"] and kept["kpis"] == full["kpis"]
    assert kept["stats"]["calls_summarised"] > 100 and kept["stats"]["calls"] == full["stats"]["calls"]
    text = CliRunner().invoke(main, ["summary", capture, "--keep-calls", "3"]).output
    assert "summarised by --keep-calls" in text


def _rtp(seq, ts, ssrc):
    import struct
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + b"\xd5" * 160


def test_silent_streams_beyond_the_bound_are_retired_and_still_counted(tmp_path):
    """200 short RTP streams one after another, beside one stream that never stops: with keep_calls=16
    (64 streams kept), the analyzer holds at most the bound plus what is still sending, counts every
    packet and stream, and the stream still sending keeps its figures whole."""
    recs, frame = [], 0
    short, long_packets = 200, 0
    for i in range(short):
        t0 = i * 2.0
        for k in range(10):
            frame += 1
            t = t0 + k * 0.02
            recs.append((T0 + int(t), int(round(t % 1 * 1e6)), udp_frame(A, 30000 + 2 * i, B, 40000 + 2 * i,
                                                                        _rtp(k, k * 160, 0x1000 + i), frame)))
    for k in range(0, int(short * 2.0 / 0.02), 5):      # the long stream: every 100 ms from start to end
        frame += 1
        t = k * 0.02 + 0.005
        recs.append((T0 + int(t), int(round(t % 1 * 1e6)), udp_frame(A, 29998, B, 39998, _rtp(k // 5, k * 160, 0xABC),
                                                                     frame)))
        long_packets += 1
    recs.sort(key=lambda r: (r[0], r[1]))
    path = write_pcap(tmp_path / "streams.pcap", 1, recs)
    an = Analyzer(AnalyzerOptions(keep_calls=16))
    for ts, fi, fr, lt, buf, off, caplen in records(open_captures([str(path)])):
        an.feed(ts, fi, fr, lt, bytes(buf[off:off + caplen]))
        assert len(an.by_ssrc) <= 64 + 1         # the bound (the newest stream goes over it, then a round)
    a = an.result()
    assert a.stats["rtp_packets"] == short * 10 + long_packets
    assert a.stats["streams"] == short + 1 and a.stats["streams_retired"] > 100
    (long_stream,) = [s for s in a.streams if s.ssrc == 0xABC]
    assert long_stream.packets == long_packets and long_stream.lost == 0
    unbounded = sipflow.analyze(str(path))
    assert unbounded.stats["rtp_packets"] == a.stats["rtp_packets"] and len(unbounded.streams) == short + 1


def test_the_message_file_is_compacted_on_endless_input_and_kept_messages_read_the_same(capture):
    """keep_calls: once the message file passes its bound, only the bytes of the records still held
    move to a new one. The file stays bounded whatever the input's length, every kept message
    (calls, registrations, transactions in flight) reads exactly as without any bound, and a
    snapshot taken before a compaction never reads another message's bytes for a dropped one."""
    everything = sipflow.analyze(capture)
    raw_of = {(m.file, m.frame): m.raw for m in everything.messages}
    files = open_captures([capture])
    an = Analyzer(AnalyzerOptions(keep_calls=5))
    an.compact_at = 20_000          # about 40 messages: the sample's 800 force many compactions
    an.files.extend(files)
    early = None
    biggest = 0
    for n, (ts, fi, frame, lt, buf, off, caplen) in enumerate(records(files)):
        an.feed(ts, fi, frame, lt, bytes(buf[off:off + caplen]))
        biggest = max(biggest, an.store.size)
        if n == 100:
            early = an.snapshot()
    a = an.result()
    assert a.stats["store_compactions"] >= 10 and an.store.compactions == a.stats["store_compactions"]
    live = sum(len(m.raw) for m in a.messages)
    assert biggest <= an.compact_at + live + 64 * 1024, (biggest, live)
    assert a.messages and all(m.raw == raw_of[(m.file, m.frame)] for m in a.messages)
    for c in a.calls:
        assert all(e.raw == raw_of[(e.file, e.frame)] for e in c.events)
    # the early snapshot's messages: each reads as itself, or (dropped since) as nothing at all
    assert any(m.raw == b"" for m in early.messages)
    assert all(m.raw in (b"", raw_of[(m.file, m.frame)]) for m in early.messages)


def test_shared_record_parts_stay_bounded_under_a_flood_of_new_flows(tmp_path):
    """Message records share their flow and kind tuples through the analyzer's tables; a flood of new
    senders empties the table instead of growing it, and the records made before keep their values."""
    from sipflow.analysis.messages import Shared


    def _options(i):
        return sip_text("OPTIONS sip:ping@198.51.100.1 SIP/2.0", [
            ("Via", f"SIP/2.0/UDP 192.0.2.{i + 1}:{5060 + i};branch=z9hG4bKflood{i}"),
            ("From", f"<sip:ping@192.0.2.{i + 1}>;tag=f{i}"), ("To", "<sip:ping@198.51.100.1>"),
            ("Call-ID", f"flood-{i}"), ("CSeq", "1 OPTIONS")])

    recs = [(1_700_000_000 + i, 0, udp_frame(f"192.0.2.{i + 1}", 5060 + i, "198.51.100.1", 5060,
                                             _options(i), i + 1)) for i in range(30)]
    path = write_pcap(tmp_path / "flood.pcap", 1, recs)
    an = Analyzer()
    an.shared = Shared(8)
    an.run(open_captures([str(path)]))
    a = an.result()
    assert len(a.messages) == 30 and len(an.shared.flows) <= 8
    assert [(m.src, m.sport) for m in a.messages] == [(f"192.0.2.{i + 1}", 5060 + i) for i in range(30)]
    assert {m.method for m in a.messages} == {"OPTIONS"} and len(an.shared.kinds) == 1


def test_a_flood_of_reinvites_on_one_call_keeps_every_offer_and_grows_lists(tmp_path):
    """What a call rarely has (re-INVITEs, SDP offers, holds) starts as a shared empty tuple; a flood
    on one Call-ID turns each into a list, so that every append stays constant-time, and the record
    still has every one of them in order."""
    from sipflow.analysis.dialogs import _SHORT
    n = 3 * _SHORT
    a_ip, b_ip = "192.0.2.10", "198.51.100.20"

    def sdp(hold):
        return ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
                f"m=audio 40000 RTP/AVP 0\r\na={'sendonly' if hold else 'sendrecv'}\r\n")

    def msg(first, cseq, method, branch, ttag=None, body=""):
        headers = [("Via", f"SIP/2.0/UDP {a_ip}:5060;branch={branch}"), ("From", "<sip:a@x>;tag=fa"),
                   ("To", "<sip:b@y>" + (f";tag={ttag}" if ttag else "")), ("Call-ID", "flood@x"),
                   ("CSeq", f"{cseq} {method}")]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return sip_text(first, headers, body)

    msgs = [(a_ip, b_ip, msg("INVITE sip:b@y SIP/2.0", 1, "INVITE", "z9hG4bKi0", body=sdp(False))),
            (b_ip, a_ip, msg("SIP/2.0 200 OK", 1, "INVITE", "z9hG4bKi0", "tb")),
            (a_ip, b_ip, msg("ACK sip:b@y SIP/2.0", 1, "ACK", "z9hG4bKa0", "tb"))]
    for i in range(n):
        branch = f"z9hG4bKr{i}"
        msgs += [(a_ip, b_ip, msg("INVITE sip:b@y SIP/2.0", i + 2, "INVITE", branch, "tb", sdp(i % 2 == 0))),
                 (b_ip, a_ip, msg("SIP/2.0 200 OK", i + 2, "INVITE", branch, "tb"))]
    recs = [(1_700_000_000 + k // 100, (k % 100) * 10_000, udp_frame(s, 5060, d, 5060, m, k + 1))
            for k, (s, d, m) in enumerate(msgs)]
    an = Analyzer()
    an.run(open_captures([str(write_pcap(tmp_path / "reinvites.pcap", 1, recs))]))
    live = an.tracker.calls["flood@x"]
    assert all(type(seq) is list for seq in (live.reinvites, live.media, live.holds))
    c = an.result().calls[0]
    assert len(c.reinvites) == n and [t.request.cseq for t in c.reinvites] == list(range(2, n + 2))
    assert len(c.media) == n + 1 and [h[2] for h in c.holds] == ["hold", "unhold"] * (n // 2)
