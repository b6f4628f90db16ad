"""Media measured right: the clock a stream's jitter uses, the call a stream joins, DTMF.

On the samples made by SIPp (call-av-dtmf.pcap: PCMA + VP8 at 90 kHz, RFC 4733 and INFO DTMF;
port-reuse.pcap: a callee that reuses its media port across overlapping and consecutive calls), checked
against tshark's own decoding where it decodes the same thing, and on hand-made packets for the rules."""
import random
import shutil
import struct
import subprocess

import pytest

import sipflow
from sipflow.analysis.analyzer import Analyzer
from sipflow.media.events import MAX_EVENTS, EventLog, rtp_payload
from sipflow.media.stats import CLOCK_PROBE, RtpStream, measure_clock
from sipflow.sip.dtmf import dtmf_of

from conftest import SAMPLES
from pcaptools import eth_ip, ipv4, udp

AV = SAMPLES / "call-av-dtmf.pcap"
REUSE = SAMPLES / "port-reuse.pcap"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


# -- the clock -------------------------------------------------------------------------------------

def flat(packets):
    return [v for p in packets for v in p]


@pytest.mark.parametrize("rate,step,period", [(8000, 160, 0.02), (16000, 320, 0.02), (48000, 960, 0.02),
                                              (90000, 3000, 1 / 30)])
def test_measure_clock_finds_the_usual_rates_through_arrival_noise(rate, step, period):
    rnd = random.Random(rate)
    packets = [(i, 1000 + i * step, 100.0 + i * period + rnd.uniform(-0.004, 0.004), 96) for i in range(CLOCK_PROBE)]
    assert measure_clock(flat(packets)) == rate


def test_measure_clock_refuses_too_little_time_and_odd_rates():
    short = [(i, i * 3000, 100.0 + i * 0.001, 96) for i in range(25)]          # 25 ms of packets
    odd = [(i, i * 1234, 100.0 + i * 0.02, 96) for i in range(25)]             # 61.7 kHz: no usual clock
    backwards = [(i, 10 ** 6 - i * 160, 100.0 + i * 0.02, 96) for i in range(25)]
    assert measure_clock(flat(short)) == 0
    assert measure_clock(flat(odd)) == 0
    assert measure_clock(flat(backwards)) == 0


def test_a_dynamic_payload_type_no_sdp_names_gets_a_measured_clock_and_its_true_jitter():
    """90 kHz video without any SDP: measured, and the jitter is the one computed at 90 kHz."""
    rnd = random.Random(5)
    packets = [(i, i * 3000, 100.0 + i / 30 + rnd.uniform(0, 0.002), 96) for i in range(200)]
    known = RtpStream("a", 1, "b", 2, 7, 96, 1, clock_rate=90000)
    unknown = RtpStream("a", 1, "b", 2, 7, 96, 1)
    for p in packets:
        known.add(*p)
        unknown.add(*p)
    known.flush()
    unknown.flush()
    assert unknown.clock_source == "measured" and unknown.rate == 90000
    assert unknown.jitter_max == pytest.approx(known.jitter_max) and unknown.jitter_max < 3.0


def test_video_jitter_uses_the_sdp_clock_and_agrees_with_a_90_khz_reference():
    """The issue's case: VP8/90000 in the SDP. Every stream's clock comes from the SDP (not assumed,
    not guessed), and the video's jitter is what RFC 3550 gives at 90 kHz on the same packets."""
    a = sipflow.analyze(str(AV))
    video = [s for s in a.streams if s.codec == "VP8"]
    assert len(video) == 2 and len(a.streams) == 4
    for s in a.streams:
        assert s.clock_source == "sdp" and not s.clock_rate_guessed
        assert s.rate == (90000 if s.codec == "VP8" else 8000)
        assert s.media == ("video" if s.codec == "VP8" else "audio")
    # The reference: the same packets folded by RtpStream with the 90 kHz clock given up front.
    from sipflow.capture.files import open_captures
    ref = {}
    for ts, _, frame, lt, buf, off, caplen in open_captures([str(AV)])[0]:
        data = bytes(buf[off:off + caplen])
        if len(data) < 54 or data[23] != 17:
            continue
        sport, dport = struct.unpack_from("!HH", data, 34)
        if dport not in (6002, 6102):
            continue
        b0, b1, seq, rts, ssrc = struct.unpack_from("!BBHII", data, 42)
        st = ref.setdefault(ssrc, RtpStream("x", sport, "y", dport, ssrc, b1 & 0x7F, frame, clock_rate=90000))
        st.add(seq, rts, ts, b1)
    for s in video:
        r = ref[s.ssrc]
        r.flush()
        assert s.jitter_max == pytest.approx(r.jitter_max) and s.jitter_mean == pytest.approx(r.jitter_mean)
        assert s.jitter_max < 5.0   # an 8 kHz clock would make it about 11 times larger


# -- the join --------------------------------------------------------------------------------------

def test_a_callee_reusing_its_port_gets_each_stream_joined_to_its_own_call():
    """port-reuse.pcap: calls A and B overlap on the callee's port 6100, A and C use the same ports one
    after the other. The SSRCs say which call sent what (0xAAAA.... is A, 0xBBBB.... B, 0xCCCC.... C)."""
    a = sipflow.analyze(str(REUSE))
    order = [c.call_id for c in sorted(a.calls, key=lambda c: c.start)]
    assert len(order) == 3 and len(a.streams) == 6
    owner = {0xAAAA: order[0], 0xBBBB: order[1], 0xCCCC: order[2]}
    for s in a.streams:
        assert s.call_id == owner[s.ssrc >> 16], f"{s.src}:{s.sport} -> {s.dst}:{s.dport} {s.ssrc:#x}"
        assert not s.nat
    for c in a.calls:
        assert len(c.streams) == 2


@needs_tshark
def test_tshark_gives_call_a_stream_to_call_b_after_bs_answer():
    """Why the join must not follow tshark packet by packet: after B's 200 OK announces 6100 again,
    tshark's rtp.setup-frame for A's later packets names B's INVITE (the oracle test compares each
    stream's first packet, where tshark is right)."""
    out = subprocess.run(["tshark", "-r", str(REUSE), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtp.ssrc == 0xAAAA0001",
                          "-T", "fields", "-e", "rtp.setup-frame"], capture_output=True, text=True, timeout=60).stdout
    setups = [int(x) for x in out.split()]
    assert len(setups) == 100 and len(set(setups)) == 2   # two different SDP frames for one stream
    a = sipflow.analyze(str(REUSE))
    (st,) = [s for s in a.streams if s.ssrc == 0xAAAA0001]
    call_a = min(a.calls, key=lambda c: c.start)
    # tshark names the offer (A's INVITE); sipflow the SDP that announced the stream's destination
    # (A's 200 OK, 127.0.0.1:6100): both are A's
    assert st.call_id == call_a.call_id and st.setup_frame in {e.frame for e in call_a.events}
    assert min(setups) in {e.frame for e in call_a.events}


# -- DTMF ------------------------------------------------------------------------------------------

def event(code, end, volume, duration):
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def test_event_log_folds_packets_into_key_presses():
    log = EventLog()
    for i, d in enumerate((160, 320, 480)):
        log.add(101, 1000, 1.0 + i * 0.02, 10 + i, 0, event(5, False, 10, d))
    for i in range(3):   # the end packet, sent three times
        log.add(101, 1000, 1.1 + i * 0.02, 20 + i, 0, event(5, True, 10, 640))
    log.add(101, 5000, 2.0, 40, 0, event(11, False, 7, 160))   # "#", cut short: no end packet
    log.add(101, 6000, 2.5, 50, 0, b"\x01\x02\x03")             # not a whole event
    assert [(p.code, p.duration, p.ended, p.end_frame, p.packets, p.frame) for p in log.presses] == [
        (5, 640, True, 20, 6, 10), (11, 160, False, None, 1, 40)]
    assert log.malformed == 1


def test_event_log_is_bounded():
    log = EventLog()
    for i in range(MAX_EVENTS + 10):
        log.add(101, i * 800, float(i), i, 0, event(1, True, 10, 160))
    assert len(log.presses) == MAX_EVENTS and log.overflow == 10


def test_rtp_payload_skips_csrcs_and_a_header_extension_and_drops_padding():
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00"       # one-word extension (Chrome's shape)
    pkt = bytes([0x80 | 0x10 | 0x20 | 1, 101]) + b"\0" * 10 + b"CSRC" + ext + event(1, False, 10, 160) + b"\0\0\x03"
    off, n = rtp_payload(pkt, 0, len(pkt))
    assert pkt[off:off + n] == event(1, False, 10, 160)
    assert rtp_payload(pkt[:18], 0, 18) is None        # the extension header runs past the end
    assert rtp_payload(pkt[:11], 0, 11) is None        # not even a fixed header


@needs_tshark
def test_rfc4733_keys_agree_with_tsharks_rtpevent_decoding():
    """Each key press: its key, first frame and end frame as tshark's rtpevent dissector reads the
    packets (event id, end bit), and its duration (the largest duration field, 8 kHz)."""
    out = subprocess.run(["tshark", "-r", str(AV), "-o", "rtp.heuristic_rtp:TRUE", "-Y", "rtpevent", "-T", "fields",
                          "-e", "frame.number", "-e", "rtp.timestamp", "-e", "rtpevent.event_id",
                          "-e", "rtpevent.end_of_event", "-e", "rtpevent.duration"],
                         capture_output=True, text=True, timeout=60).stdout
    presses = {}
    for line in out.splitlines():
        frame, ts, code, end, dur = line.split("\t")
        p = presses.setdefault(int(ts), {"frame": int(frame), "code": int(code), "end": None, "dur": 0})
        if end in ("1", "True") and p["end"] is None:
            p["end"] = int(frame)
        p["dur"] = max(p["dur"], int(dur))
    expected = [("0123456789*#ABCD"[p["code"]], p["frame"], p["end"], p["dur"] / 8.0)
                for _, p in sorted(presses.items())]
    a = sipflow.analyze(str(AV))
    got = [(d.key, d.frame, d.end_frame, d.duration_ms) for d in a.calls[0].dtmf if d.source == "rfc4733"]
    assert len(expected) == 3 and got == expected
    assert all(d.confirmed and d.payload_type == 101 for d in a.calls[0].dtmf if d.source == "rfc4733")


def test_info_dtmf_is_read_from_both_body_types():
    a = sipflow.analyze(str(AV))
    info = [(d.key, d.duration_ms) for d in a.calls[0].dtmf if d.source == "info"]
    assert info == [("5", 160.0), ("#", None)]
    keys = [d.key for d in a.calls[0].dtmf]
    assert keys == ["1", "5", "#", "5", "#"]   # RFC 4733 first (during the call), then the two INFOs


@pytest.mark.parametrize("ctype,body,expected", [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
    ("application/dtmf-relay", b"Signal= *\r\nDuration= 250\r\n", ("*", 250)),
    ("Application/DTMF-Relay; charset=x", b"Signal=11\r\n", ("#", None)),
    ("application/dtmf", b"#", ("#", None)),
    ("application/dtmf", b"7\r\n", ("7", None)),
    ("application/dtmf-relay", b"Signal=Z\r\n", None),
    ("application/dtmf-relay", b"Signal=5\r\nDuration=" + b"9" * 500, ("5", None)),
    ("text/plain", b"Signal=5", None),
    ("application/dtmf", b"", None),
])
def test_dtmf_of_info_bodies(ctype, body, expected):
    assert dtmf_of(ctype, body) == expected


def test_a_stream_of_only_events_reports_no_jitter():
    """A separate SSRC that carries only telephone-events (the SDP says PT 101 is telephone-event):
    its packets share timestamps, so it shows no jitter, and its key presses are decoded."""
    sdp = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
           "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    invite = ("INVITE sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
              "From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>\r\nCall-ID: ev@x\r\nCSeq: 1 INVITE\r\n"
              "Contact: <sip:a@192.0.2.1>\r\nContent-Type: application/sdp\r\n"
              f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
    an = Analyzer()
    an.feed(100.0, 0, 1, 1, eth_ip(ipv4("192.0.2.1", "192.0.2.2", 17, udp("192.0.2.1", "192.0.2.2", 5060, 5060, invite))))
    frame = 2
    for i, (d, end) in enumerate(((160, False), (320, False), (480, True), (480, True))):
        rtp = struct.pack("!BBHII", 0x80, 101 | (0x80 if i == 0 else 0), 10 + i, 8000, 0xE0E0) + event(9, end, 12, d)
        an.feed(100.5 + i * 0.05, 0, frame, 1, eth_ip(ipv4("192.0.2.2", "192.0.2.1", 17,
                                                           udp("192.0.2.2", "192.0.2.1", 4002, 4000, rtp))))
        frame += 1
    a = an.result()
    (s,) = a.streams
    assert s.codec == "telephone-event" and s.jitter_mean is None and s.jitter_max is None
    assert [(d.key, d.duration_ms, d.ended, d.packets) for d in s.dtmf] == [("9", 60.0, True, 4)]
    assert "DTMF" in sipflow_text(a)


def sipflow_text(a):
    from sipflow.render.tables import streams_text
    return streams_text(a)


# -- what is RTP without an SDP ---------------------------------------------------------------------

def flow(an, src, sport, dst, dport, payloads, t0=100.0, step=0.02, frame0=1):
    for i, p in enumerate(payloads):
        an.feed(t0 + i * step, 0, frame0 + i, 1, eth_ip(ipv4(src, dst, 17, udp(src, dst, sport, dport, p))))


def nbns_query(i):
    """A NetBIOS name query whose transaction id starts with binary 10: it passes the RTP version test."""
    return struct.pack("!HHHHHH", 0x8000 + i, 0x0110, 1, 0, 0, 0) + b"\x20" + b"EOEBFDEBEC" * 3 + b"AA\0\0\x20\0\x01"


@pytest.mark.parametrize("ports", [(137, 137), (40000, 40002)])
def test_netbios_is_not_rtp(ports):
    """The issue's capture: 99 NetBIOS queries reported as 'PT103? 99 packets -98 lost'. On port 137
    the port rules it out; elsewhere the constant 'sequence number' and 'timestamp' do."""
    an = Analyzer()
    flow(an, "192.0.2.5", ports[0], "192.0.2.255", ports[1], [nbns_query(i) for i in range(99)], step=0.75)
    a = an.result()
    assert a.streams == () and a.stats["rtp_packets"] == 99   # counted as RTP-looking, listed as no stream


def test_a_flow_whose_timestamps_do_not_follow_the_clock_is_not_rtp():
    an = Analyzer()
    junk = [struct.pack("!BBHII", 0x80, 0, i, 12345, 0xDEAD) + b"x" * 20 for i in range(50)]
    flow(an, "192.0.2.1", 40000, "192.0.2.2", 40002, junk)
    assert an.result().streams == ()


def test_an_unannounced_real_stream_is_kept(tmp_path):
    """basic-call-rtp.pcap without its SIP: both RTP streams are still found, with no call."""
    from pcaptools import read_pcap, write_pcap
    lt, recs = read_pcap(SAMPLES / "basic-call-rtp.pcap")
    rtp_only = [r for r in recs if b"SIP/2.0" not in r[2]]
    a = sipflow.analyze(str(write_pcap(tmp_path / "rtp.pcap", lt, rtp_only)))
    assert len(a.streams) == 2 and all(s.call_id is None and s.packets == 125 for s in a.streams)


def test_an_unannounced_video_stream_is_kept_with_its_measured_clock(tmp_path):
    """call-av-dtmf.pcap without its SIP: the VP8 streams (dynamic PT 96, no SDP) are kept, their
    clock measured at 90 kHz, their jitter the same as with the SDP."""
    from pcaptools import read_pcap, write_pcap
    lt, recs = read_pcap(AV)
    with_sdp = {s.ssrc: s for s in sipflow.analyze(str(AV)).streams}
    a = sipflow.analyze(str(write_pcap(tmp_path / "rtp.pcap", lt, [r for r in recs if b"SIP/2.0" not in r[2]])))
    video = [s for s in a.streams if s.pt == 96]
    assert len(video) == 2
    for s in video:
        assert (s.rate, s.clock_source, s.clock_rate_guessed, s.call_id) == (90000, "measured", True, None)
        assert s.jitter_max == pytest.approx(with_sdp[s.ssrc].jitter_max)


def sip_msg(first, call_id, cseq, from_tag, to_tag, via_branch, sdp_port=None, src="192.0.2.1",
            direction="sendrecv"):
    sdp = ""
    if sdp_port:
        sdp = (f"v=0\r\no=- 1 {cseq} IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
               f"m=audio {sdp_port} RTP/AVP 0\r\na={direction}\r\n")
    method = first.split()[0] if not first.startswith("SIP/") else "INVITE"
    lines = [first, f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={via_branch}", f"From: <sip:a@x>;tag={from_tag}",
             "To: <sip:b@y>" + (f";tag={to_tag}" if to_tag else ""), f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
             "Contact: <sip:a@192.0.2.1>"]
    if sdp:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(sdp)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + sdp).encode()


def test_a_short_stream_after_a_late_reinvite_is_found_and_joined():
    """The issue's case: 6 packets to the port a late re-INVITE moved the media to. Announced streams
    are listed however short, and joined to the re-INVITE's call with the codec it names."""
    an = Analyzer()
    a_ip, b_ip = "192.0.2.1", "192.0.2.2"

    def sip(t, frame, data, forward=True):
        s, d = (a_ip, b_ip) if forward else (b_ip, a_ip)
        an.feed(t, 0, frame, 1, eth_ip(ipv4(s, d, 17, udp(s, d, 5060, 5060, data))))

    sip(0.0, 1, sip_msg("INVITE sip:b@y SIP/2.0", "late@x", 1, "f1", None, "z9hG4bK1", 4000))
    sip(0.1, 2, sip_msg("SIP/2.0 200 OK", "late@x", 1, "f1", "t1", "z9hG4bK1", 5000, src=b_ip), False)
    sip(0.2, 3, sip_msg("ACK sip:b@y SIP/2.0", "late@x", 1, "f1", "t1", "z9hG4bK2"))
    sip(30.0, 4, sip_msg("INVITE sip:b@y SIP/2.0", "late@x", 2, "f1", "t1", "z9hG4bK3", 4100))
    sip(30.1, 5, sip_msg("SIP/2.0 200 OK", "late@x", 2, "f1", "t1", "z9hG4bK3", 5000, src=b_ip), False)
    frame = 6
    for i in range(6):
        rtp = struct.pack("!BBHII", 0x80, 0, 100 + i, 1000 + 160 * i, 0xABC) + b"\xff" * 160
        an.feed(30.2 + i * 0.02, 0, frame, 1, eth_ip(ipv4(b_ip, a_ip, 17, udp(b_ip, a_ip, 5000, 4100, rtp))))
        frame += 1
    a = an.result()
    (s,) = a.streams
    assert (s.packets, s.dport, s.call_id, s.codec, s.setup_frame) == (6, 4100, "late@x", "PCMU", 4)


def test_a_pause_is_an_outage_unless_a_hold_explains_it():
    """Two calls, each with a 2 s pause in the caller's audio that ends without a marker bit: in one
    the call is up (a MEDIA_GAP), in the other a re-INVITE put it on hold first (no judgment). A
    pause that ends with a talkspurt (marker) is silence suppression, not an outage."""
    an = Analyzer()
    a_ip, b_ip = "192.0.2.1", "192.0.2.2"
    frame = [0]

    def send(t, s, d, sport, dport, data):
        frame[0] += 1
        an.feed(t, 0, frame[0], 1, eth_ip(ipv4(s, d, 17, udp(s, d, sport, dport, data))))

    def call(call_id, t0, port, hold):
        def sip(t, data, forward=True):
            send(t, *((a_ip, b_ip) if forward else (b_ip, a_ip)), 5060, 5060, data)
        sip(t0, sip_msg("INVITE sip:b@y SIP/2.0", call_id, 1, "f", None, "z9hG4bK1" + call_id, port))
        sip(t0 + 0.1, sip_msg("SIP/2.0 200 OK", call_id, 1, "f", "t", "z9hG4bK1" + call_id, port + 1000, src=b_ip),
            False)
        sip(t0 + 0.2, sip_msg("ACK sip:b@y SIP/2.0", call_id, 1, "f", "t", "z9hG4bK2" + call_id))
        t, seq = t0 + 0.3, 0
        for i in range(200):
            if i == 60:
                if hold:
                    sip(t, sip_msg("INVITE sip:b@y SIP/2.0", call_id, 2, "f", "t", "z9hG4bK3" + call_id, port,
                                   direction="sendonly"))
                    sip(t + 0.05, sip_msg("SIP/2.0 200 OK", call_id, 2, "f", "t", "z9hG4bK3" + call_id, port + 1000,
                                          src=b_ip, direction="recvonly"), False)
                    sip(t + 1.9, sip_msg("INVITE sip:b@y SIP/2.0", call_id, 3, "f", "t", "z9hG4bK4" + call_id, port))
                    sip(t + 1.95, sip_msg("SIP/2.0 200 OK", call_id, 3, "f", "t", "z9hG4bK4" + call_id, port + 1000,
                                          src=b_ip), False)
                t += 2.0
            marker = 0x80 if i == 150 else 0
            if i == 150:
                t += 3.0    # silence suppression: the talkspurt after it starts with the marker bit
            send(t, a_ip, b_ip, port, port + 1000,
                 struct.pack("!BBHII", 0x80, marker, seq, 160 * seq, 0x600D + port) + b"\xff" * 160)
            t, seq = t + 0.02, seq + 1

    call("up@x", 0.0, 4000, hold=False)
    call("held@x", 100.0, 4100, hold=True)
    a = an.result()
    streams = {s.call_id: s for s in a.streams}
    (gap,) = streams["up@x"].media_gaps
    assert gap[1] - gap[0] == pytest.approx(2.02, abs=0.001)
    assert streams["held@x"].media_gaps == ()
    found = [x for x in a.anomalies if x.kind.value == "media_gap"]
    assert [x.call_id for x in found] == ["up@x"] and "for 2.0 s while the call was up" in found[0].detail


# -- the E-model ------------------------------------------------------------------------------------

from sipflow.media import emodel  # noqa: E402


def test_emodel_defaults_give_the_standards_r_of_93_2():
    r = emodel.rate(0.0, 25.1, 0.0)
    assert r.r == pytest.approx(93.2, abs=0.01) and r.ro == pytest.approx(94.77, abs=0.01)
    assert r.is_ == pytest.approx(1.41, abs=0.01) and r.id_ == pytest.approx(0.15, abs=0.01)


@pytest.mark.parametrize("ie,bpl,ppl,r,mos", [
    (0.0, 25.1, 1.0, 89.6, 4.33),    # G.711 with PLC, 1 % random loss
    (11.0, 19.0, 1.0, 78.0, 3.95),   # G.729A + VAD, 1 % random loss
    (0.0, 25.1, 0.0, 93.2, 4.41),
])
def test_emodel_vectors(ie, bpl, ppl, r, mos):
    """Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl), R = 93.2 - Ie,eff at the defaults, and
    MOS = 1 + 0.035 R + R (R - 60)(100 - R) 7e-6 (G.107 §7.5, Annex B), worked by hand."""
    got = emodel.rate(ie, bpl, ppl)
    assert got.r == pytest.approx(r, abs=0.05) and got.mos == pytest.approx(mos, abs=0.005)


def test_emodel_bursts_delay_and_bounds():
    random_loss, bursty = emodel.rate(0.0, 25.1, 2.0), emodel.rate(0.0, 25.1, 2.0, burst_r=2.0)
    assert bursty.r < random_loss.r and bursty.ie_eff > random_loss.ie_eff
    assert emodel.rate(0.0, 25.1, 0.0, delay_ms=100).idd == 0.0
    near, far = emodel.rate(0.0, 25.1, 0.0, delay_ms=200), emodel.rate(0.0, 25.1, 0.0, delay_ms=400)
    assert 0 < near.idd < far.idd and far.r < near.r < 93.2
    assert emodel.mos_from_r(-5) == 1.0 and emodel.mos_from_r(120) == 4.5
    assert emodel.rate(0.0, 25.1, 100.0).mos >= 1.0


def test_burst_ratio_is_one_for_random_loss_and_grows_with_bursts():
    assert emodel.burst_ratio(0, 1000, 0) == 1.0
    assert emodel.burst_ratio(10, 1000, 10) == 1.0     # single losses: 1 x 0.99, never below 1
    assert emodel.burst_ratio(40, 1000, 10) == pytest.approx(4 * 0.96)


@pytest.mark.parametrize("codec,kind,expected,note", [
    ("VP8", "video", 500, "video"), ("telephone-event", "audio", 500, "DTMF"), ("opus", "audio", 500, "G.107.1"),
    ("iLBC", "audio", 500, "no G.113"), ("PCMU", "audio", 50, "too few"),
])
def test_streams_that_are_not_rated_say_why(codec, kind, expected, note):
    rating, why = emodel.judge(codec, kind, expected, 0, 0)
    assert rating is None and note in why


def test_a_stream_with_loss_is_rated_with_its_loss_and_bursts():
    """200 PCMA packets, 2 lost singly and one burst of 4: Ppl 3 %, BurstR above 1, every term shown."""
    st = RtpStream("a", 1, "b", 2, 3, 8, 1)
    missing = {50, 120, 160, 161, 162, 163}
    for i in range(206):
        if i not in missing:
            st.add(i, i * 160, 100.0 + i * 0.02, 8)
    st.flush()
    assert (st.lost, st.loss_events) == (6, 3)
    rating, note = emodel.judge("PCMA", "audio", st.expected, st.lost, st.loss_events)
    assert rating.ppl == pytest.approx(600 / 206) and rating.burst_r == pytest.approx(2 * (1 - 6 / 206))
    assert rating.r == pytest.approx(emodel.rate(0.0, 25.1, 600 / 206, 2 * (1 - 6 / 206)).r)
    assert "delay not counted" in note and 3.0 < rating.mos < 4.41


# -- one-way audio ----------------------------------------------------------------------------------

def test_one_way_audio_is_stated_on_the_call(tmp_path):
    """basic-call-rtp.pcap with the callee's RTP cut out: the call says no RTP reached the caller's
    address, in words, with the frame of the SDP that announced it; the full capture says nothing."""
    from pcaptools import read_pcap, write_pcap
    lt, recs = read_pcap(SAMPLES / "basic-call-rtp.pcap")
    callee_rtp = struct.pack("!HH", 6100, 6000)
    cut = [r for r in recs if r[2][34:38] != callee_rtp]
    assert len(cut) == len(recs) - 125
    a = sipflow.analyze(str(write_pcap(tmp_path / "one-way.pcap", lt, cut)))
    (call,) = a.calls
    (one,) = [x for x in call.anomalies if x.kind.value == "one_way_media"]
    assert "no RTP reached 127.0.0.1:6000" in one.detail and "127.0.0.1:6100 received 125 packets" in one.detail
    assert one.frame == 1 and one in a.anomalies
    for sample in ("basic-call-rtp.pcap", "call-via-proxy.pcap", "reinvite-hold.pcap", "busy-486.pcap",
                   "call-av-dtmf.pcap", "port-reuse.pcap"):
        assert not [x for x in sipflow.analyze(str(SAMPLES / sample)).anomalies if x.kind.value == "one_way_media"]


# -- video pictures ---------------------------------------------------------------------------------

from sipflow.media.video import VideoLog, key_frame  # noqa: E402


@needs_tshark
def test_video_frames_and_key_frames_agree_with_tshark():
    """Pictures are distinct RTP timestamps; key frames are where tshark's VP8 dissector finds the key
    frame start code (frame type 0)."""
    out = subprocess.run(["tshark", "-r", str(AV), "-Y", "vp8", "-T", "fields", "-e", "frame.number", "-e",
                          "rtp.ssrc", "-e", "rtp.timestamp", "-e", "vp8.keyframe.start_code"],
                         capture_output=True, text=True, timeout=120).stdout
    stamps, keys = {}, {}
    for line in out.splitlines():
        frame, ssrc, ts, start = line.split("\t")
        stamps.setdefault(int(ssrc, 16), set()).add(int(ts))
        if start:
            keys.setdefault(int(ssrc, 16), []).append(int(frame))
    videos = [s for s in sipflow.analyze(str(AV)).streams if s.video is not None]
    assert len(videos) == 2 and set(stamps) == {s.ssrc for s in videos}
    for s in videos:
        v = s.video
        assert (v.codec, v.frames, v.key_frames, v.first_key_frame) == \
            ("VP8", len(stamps[s.ssrc]), len(keys[s.ssrc]), keys[s.ssrc][0])
        assert v.frame_rate == pytest.approx(30.0, rel=0.05) and v.damaged_frames == 0


@pytest.mark.parametrize("codec,payload,want", [
    ("VP8", bytes([0x10, 0x00]), True),                 # S=1, PartID 0, P=0: a key frame
    ("VP8", bytes([0x10, 0x01]), False),                # P=1: an inter frame
    ("VP8", bytes([0x00, 0x00]), None),                 # not the start of a partition
    ("VP8", bytes([0x90, 0x80, 0x81, 0x23, 0x00]), True),   # X, I with a 15-bit PictureID, then the header
    ("VP8", bytes([0x90, 0xC0, 0x05, 0x07, 0x01]), False),  # X, I (7 bits) and L (TL0PICIDX)
    ("VP9", bytes([0x08]), True), ("VP9", bytes([0x48]), False), ("VP9", bytes([0x40]), None),
    ("H264", bytes([0x65]), True),                      # IDR slice
    ("H264", bytes([0x41]), False),                     # non-IDR slice
    ("H264", bytes([0x78, 0x00, 0x10, 0x67]), True),    # STAP-A starting with an SPS
    ("H264", bytes([0x7C, 0x85]), True),                # FU-A start of an IDR
    ("H264", bytes([0x7C, 0x05]), None),                # FU-A middle fragment
    ("H264", bytes([0x7C, 0x81]), False),               # FU-A start of a non-IDR slice
    ("opus", bytes([0x10]), None),
])
def test_key_frames_from_payload_headers(codec, payload, want):
    assert key_frame(codec, payload) is want


def test_pictures_count_once_and_a_lost_packet_damages_its_picture():
    log = VideoLog("H264")
    packets = [(1, 3000, b"\x67"), (2, 3000, b"\x68"), (3, 3000, b"\x65"),   # SPS, PPS, IDR: one key frame
               (4, 6000, b"\x41"), (6, 6000, b"\x41"),                        # 5 lost: picture 2 damaged
               (7, 9000, b"\x41"), (9, 12000, b"\x41")]                       # 8 lost: picture 4 damaged
    for i, (seq, ts, p) in enumerate(packets):
        log.add(seq, ts, 10.0 + i / 30, i + 1, p)
    assert (log.frames, log.key_frames, log.first_key_frame, log.damaged_frames) == (4, 1, 1, 2)
    assert log.frame_rate == pytest.approx(3 / (6 / 30))


# -- the calls table's media column -------------------------------------------------------------------

def media_column(path):
    from click.testing import CliRunner
    from sipflow.cli.app import main
    out = CliRunner().invoke(main, ["calls", "--format", "csv", str(path)]).output
    import csv
    import io
    return [row["media"] for row in csv.DictReader(io.StringIO(out))]


def test_media_column_reads_one_entry_per_direction(tmp_path):
    """Caller to callee first (→), then back (←): codecs, video after +, the worst loss, "none" for a
    silent direction."""
    from pcaptools import read_pcap, write_pcap
    assert media_column(AV) == ["→PCMA+VP8 ←PCMA+VP8"]
    basic = SAMPLES / "basic-call-rtp.pcap"
    lt, recs = read_pcap(basic)
    port = struct.Struct("!HH")

    def ports(r):
        return port.unpack_from(r[2], 14 + 20)     # Ethernet + IPv4 without options (the sample's shape)

    one_way = [r for r in recs if ports(r) != (6100, 6000)]
    assert media_column(write_pcap(tmp_path / "oneway.pcap", lt, one_way)) == ["→PCMA ←none"]
    caller = [i for i, r in enumerate(recs) if ports(r) == (6000, 6100)]
    lossy = [r for i, r in enumerate(recs) if i not in caller[10:15]]       # 5 of 125 lost: 4 %
    assert media_column(write_pcap(tmp_path / "lossy.pcap", lt, lossy)) == ["→PCMA 4% ←PCMA"]
    assert media_column(SAMPLES / "busy-486.pcap") == ["-"]


# -- simulated jitter buffers ---------------------------------------------------------------------------

def buffered(delay, n=1000, seed=1):
    """A 20 ms PCMU stream whose packet i arrives ``delay(i, rnd)`` seconds after its due time."""
    rnd = random.Random(seed)
    s = RtpStream("a", 1, "b", 2, 1, 0, 1)
    for i in range(n):
        s.add(i, i * 160, 100.0 + 0.02 * i + delay(i, rnd), 0)
    s.flush()
    return s


def test_jitter_buffers_discard_what_comes_too_late():
    """A fixed 60 ms buffer loses every packet held up longer; the adaptive one loses a packet much
    later than the ones before it, then holds that depth (decaying over seconds)."""
    spikes = buffered(lambda i, r: 0.1 if i % 100 == 50 else 0.0)       # 100 ms, every 2 s
    assert (spikes.late_fixed, spikes.late_adaptive) == (10, 10)       # 2 s decays 100 ms under 100 / 1.2
    burst = buffered(lambda i, r: 0.1 if 500 <= i < 510 else 0.0)      # ten in a row: the first one only
    assert (burst.late_fixed, burst.late_adaptive) == (10, 1)
    step = buffered(lambda i, r: 0.04 if i >= 500 else 0.0)            # the route changes: 40 ms more
    assert (step.late_fixed, step.late_adaptive) == (0, 1)
    steady = buffered(lambda i, r: r.uniform(0, 0.004))
    assert (steady.late_fixed, steady.late_adaptive) == (0, 0)
    heavy = buffered(lambda i, r: r.uniform(0, 0.08), n=5000)          # a quarter is over 60 ms
    assert 0.2 < heavy.late_fixed / 5000 < 0.3 and heavy.late_adaptive < 50


def test_clock_drift_is_not_lateness():
    """A sender whose clock is 1000 ppm slow: its packets come 1 ms later every second, for 10
    minutes. The playout base follows (up to 2 ms per second), so nothing is late."""
    drift = buffered(lambda i, r: i * 0.02 * 0.001, n=30000)
    assert (drift.late_fixed, drift.late_adaptive) == (0, 0)


def test_late_packets_count_as_lost_in_the_mos():
    rating, note = emodel.judge("PCMU", "audio", 1000, 0, 0, None, 10)
    assert rating.ppl == pytest.approx(1.0) and rating.mos == pytest.approx(emodel.rate(0.0, 25.1, 1.0).mos)
    assert "10 late for an adaptive jitter buffer" in note


def test_a_stream_that_starts_with_a_key_press_is_still_the_audio_stream():
    """The caller presses a key as the media starts: the SSRC's first packets are telephone-events.
    The stream is the SDP's audio codec (not an events-only stream), the key is decoded, and the
    audio's figures are computed on the audio."""
    an = Analyzer()
    a_ip, b_ip = "192.0.2.1", "192.0.2.2"
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {a_ip}\r\ns=-\r\nc=IN IP4 {a_ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\n"
           "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n")
    invite = ("INVITE sip:b@y SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKk\r\nFrom: <sip:a@x>;tag=1\r\n"
              "To: <sip:b@y>\r\nCall-ID: key@x\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
              f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
    an.feed(0.0, 0, 1, 1, eth_ip(ipv4(b_ip, a_ip, 17, udp(b_ip, a_ip, 5060, 5060, invite))))
    frame, seq = 2, 0
    for i in range(8):   # key "7": 8 packets, one timestamp, the last three with the end bit
        ev = struct.pack("!BBH", 7, 0x80 | 10 if i >= 5 else 10, 160 * (i + 1))
        rtp = struct.pack("!BBHII", 0x80, 101 | (0x80 if i == 0 else 0), seq, 8000, 0x5EED) + ev
        an.feed(1.0 + 0.02 * i, 0, frame, 1, eth_ip(ipv4(b_ip, a_ip, 17, udp(b_ip, a_ip, 5000, 4000, rtp))))
        frame, seq = frame + 1, seq + 1
    for i in range(120):
        rtp = struct.pack("!BBHII", 0x80, 0, seq, 8000 + 160 * (8 + i), 0x5EED) + b"\xff" * 160
        an.feed(1.16 + 0.02 * i, 0, frame, 1, eth_ip(ipv4(b_ip, a_ip, 17, udp(b_ip, a_ip, 5000, 4000, rtp))))
        frame, seq = frame + 1, seq + 1
    (s,) = an.result().streams
    assert (s.pt, s.codec, s.packets, s.lost) == (0, "PCMU", 128, 0)
    assert [d.key for d in s.dtmf] == ["7"] and s.dtmf[0].ended
    assert s.jitter_mean is not None and s.jitter_max < 1.0 and s.quality is not None
