"""SDP bodies, RTP statistics (RFC 3550) and the join of streams to calls, NAT included."""
import struct

import sipflow
from sipflow.media.stats import RtpStream
from sipflow.sip.sdp import parse_sdp, sdp_of

from pcaptools import sip_text, udp_frame, write_pcap

OFFER = (b"v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
         b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
         b"a=rtcp:49171 IN IP6 2001:db8::2\r\na=sendonly\r\n"
         b"m=video 0 RTP/AVP 96\r\nc=IN IP4 192.0.2.7\r\na=rtpmap:96 H264/90000\r\n")


def test_sdp_media_codecs_direction_rtcp_and_ipv6():
    s = parse_sdp(OFFER)
    audio, video = s.media
    assert (audio.address, audio.port, audio.direction, audio.on_hold) == ("2001:db8::1", 49170, "sendonly", True)
    assert [(c.pt, c.name, c.clock_rate) for c in audio.codecs] == [(0, "PCMU", 8000), (8, "PCMA", 8000),
                                                                   (101, "telephone-event", 8000)]
    assert audio.codec(101).fmtp == "0-16" and (audio.rtcp_port, audio.rtcp_address) == (49171, "2001:db8::2")
    assert (video.address, video.codecs[0].clock_rate, video.direction) == ("192.0.2.7", 90000, "sendrecv")


def test_sdp_inside_multipart_mixed():
    body = (b"--xyz\r\nContent-Type: application/isup\r\n\r\n\x01\x02\r\n--xyz\r\nContent-Type: application/sdp\r\n\r\n"
            + OFFER + b"\r\n--xyz--\r\n")
    s = sdp_of('multipart/mixed;boundary="xyz"', body)
    assert s is not None and s.media[0].port == 49170


def test_bad_sdp_lines_are_problems_not_errors():
    s = parse_sdp(b"v=0\r\nm=audio notaport RTP/AVP 0\r\ngarbage\r\nc=IN IP4 192.0.2.1\r\n")
    assert len(s.problems) == 2 and s.address == "192.0.2.1"


def feed(stream, packets):
    for seq, ts, arrival, pt in packets:
        stream.add(seq, ts, arrival, pt)
    stream.flush()
    return stream


def test_loss_duplicates_reordering_and_wrap():
    seqs = [65533, 65534, 65535, 0, 2, 1, 2, 3, 5]  # 4 lost, 2 duplicated, 1 late
    s = feed(RtpStream("a", 1, "b", 2, 7, 0, 1), [(q, i * 160, i * 0.02, 0) for i, q in enumerate(seqs)])
    assert (s.packets, s.expected, s.seq_wraps, s.duplicates, s.out_of_order) == (9, 9, 1, 1, 1)
    assert s.lost == 0  # RFC 3550 A.3: the duplicate makes up for seq 4 in the cumulative figure


def test_jitter_is_zero_for_perfect_timing_and_grows_with_noise():
    perfect = feed(RtpStream("a", 1, "b", 2, 7, 0, 1), [(i, i * 160, 100 + i * 0.02, 0) for i in range(500)])
    assert perfect.jitter_max < 1e-6 and abs(perfect.max_delta * 1000 - 20) < 1e-6
    noisy = feed(RtpStream("a", 1, "b", 2, 7, 0, 1),
                 [(i, i * 160, 100 + i * 0.02 + (0.004 if i % 2 else 0), 0) for i in range(500)])
    # |D| alternates 4 ms: the RFC 3550 estimate converges to 4 ms
    assert 3.9 < noisy.jitter_max <= 4.0 + 1e-6 and 3.5 < noisy.jitter_mean <= 4.0 + 1e-6


def test_dtmf_events_do_not_count_as_jitter():
    pkts = [(i, i * 160, i * 0.02, 0) for i in range(50)]
    pkts += [(50 + k, 49 * 160, 1.0 + k * 0.02, 101) for k in range(5)]  # events keep their timestamp
    pkts += [(55 + k, (55 + k) * 160, 1.1 + k * 0.02, 0) for k in range(20)]
    s = feed(RtpStream("a", 1, "b", 2, 7, 0, 1), pkts)
    assert s.other_pts == {101: 5} and s.jitter_max < 1e-6 and s.lost == 0


def rtp(seq, ts, ssrc, pt=8):
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + b"\xd5" * 160


def test_streams_join_their_call_and_nat_is_flagged(tmp_path):
    """The caller sits behind NAT: its SDP says 10.0.0.5:4000 (private), its packets come from
    198.51.100.10. Both directions must be joined to the call; the one sent to the NAT's public
    address (which no SDP announced) is flagged."""
    pub, callee = "198.51.100.10", "203.0.113.20"
    offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"
    answer = offer.replace("10.0.0.5", callee).replace("4000", "5000")
    common = [("From", "<sip:alice@x>;tag=a"), ("Call-ID", "nat1"), ("Contact", "<sip:alice@10.0.0.5>")]
    inv = sip_text("INVITE sip:bob@y SIP/2.0", [("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport"),
                   *common, ("To", "<sip:bob@y>"), ("CSeq", "1 INVITE"), ("Content-Type", "application/sdp")], offer)
    ok = sip_text("SIP/2.0 200 OK", [("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport"), *common,
                  ("To", "<sip:bob@y>;tag=b"), ("CSeq", "1 INVITE"), ("Content-Type", "application/sdp")], answer)
    recs = [(1000, 0, udp_frame(pub, 5060, callee, 5060, inv)), (1000, 100000, udp_frame(callee, 5060, pub, 5060, ok))]
    for i in range(40):
        recs.append((1001, i * 20000, udp_frame(pub, 4000, callee, 5000, rtp(i, i * 160, 0xA))))
        recs.append((1001, i * 20000 + 5000, udp_frame(callee, 5000, pub, 4000, rtp(100 + i, i * 160, 0xB))))
    recs.sort(key=lambda r: (r[0], r[1]))
    a = sipflow.analyze(str(write_pcap(tmp_path / "nat.pcap", 1, recs)))
    assert len(a.streams) == 2 and {s.call_id for s in a.streams} == {"nat1"}
    by_ssrc = {s.ssrc: s for s in a.streams}
    assert by_ssrc[0xB].nat and not by_ssrc[0xA].nat
    assert all(s.codec == "PCMA" and s.packets == 40 and s.lost == 0 for s in a.streams)
    assert any(x.kind == "nat" for x in a.anomalies)


def test_unannounced_rtp_is_kept_only_when_it_behaves_like_media(tmp_path):
    recs = [(1000, i * 20000, udp_frame("192.0.2.1", 7000, "192.0.2.2", 7002, rtp(i, i * 160, 0xC, pt=0)))
            for i in range(30)]
    # and some DNS-like noise whose first byte happens to look like RTP version 2
    recs += [(1001, i, udp_frame("192.0.2.3", 53, "192.0.2.4", 3333 + i, bytes([0x81, i]) + b"\x01" * 30))
             for i in range(30)]
    a = sipflow.analyze(str(write_pcap(tmp_path / "heur.pcap", 1, recs)))
    assert [(s.src, s.sport, s.packets, s.call_id, s.codec) for s in a.streams] == [("192.0.2.1", 7000, 30, None, "PCMU")]
