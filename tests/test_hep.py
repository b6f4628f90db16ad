"""The HEP packet format (net.hep): packets built by the tests' own independent writer (pcaptools) are
read field by field, sipflow's packets read back the same, and damaged ones say what is wrong."""
import struct
import zlib

import pytest

from sipflow.net import hep

from pcaptools import hep2, hep3

A, B = "198.51.100.10", "203.0.113.20"      # documentation addresses: data inside the packets only
A6, B6 = "2001:db8::10", "2001:db8::20"
SIP = b"OPTIONS sip:b SIP/2.0\r\nCall-ID: x\r\n\r\n"


def test_a_hep3_packet_from_an_independent_writer():
    p = hep.decode(hep3(A, B, 5060, 5080, 1_433_719_443, 979, SIP, proto=6, capture_id=2001, auth_key=b"myHep"))
    assert (p.src, p.dst, p.sport, p.dport, p.ip_proto, p.sec, p.usec) == (A, B, 5060, 5080, 6, 1_433_719_443, 979)
    assert (p.proto_type, p.proto_name, p.capture_id, p.auth_key, p.payload) == (1, "sip", 2001, "myHep", SIP)


@pytest.mark.parametrize("src,dst", [(A, B), (A6, B6)])
def test_sipflow_packets_read_back_with_every_field(src, dst):
    sent = hep.HepPacket(src, dst, 5061, 5060, SIP, 17, 1_700_000_000, 123_456, hep.PROTO_SIP, 7, "call-1@x",
                         "sbc-1", "secret")
    data = hep.encode(sent)
    assert data[:4] == b"HEP3" and struct.unpack_from("!H", data, 4)[0] == len(data)
    assert hep.decode(data) == sent


def test_hep2_time_header_in_either_byte_order():
    little = hep2(A, B, 5060, 5060, 1_700_000_000, 250_000, SIP)            # captagent on x86
    p = hep.decode(little, near=1_700_000_001.0)
    assert (p.version, p.src, p.dst, p.sec, p.usec, p.payload) == (2, A, B, 1_700_000_000, 250_000, SIP)
    s, d = bytes(map(int, A.split("."))), bytes(map(int, B.split(".")))
    big = struct.pack("!BBBBHH", 2, 28, 2, 17, 5060, 5060) + s + d + struct.pack("!IIHH", 1_700_000_000,
                                                                                   250_000, 1, 0) + SIP
    assert hep.decode(big, near=1_700_000_001.0).ts == pytest.approx(1_700_000_000.25)


def test_vendor_chunks_are_skipped_and_compressed_payloads_inflated():
    def chunk(vendor, ctype, value):
        return struct.pack("!HHH", vendor, ctype, 6 + len(value)) + value
    body = b"".join([chunk(0, 1, b"\x02"), chunk(0, 3, bytes([198, 51, 100, 10])),
                     chunk(0, 4, bytes([203, 0, 113, 20])), chunk(0, 7, b"\x13\xc4"), chunk(0, 8, b"\x13\xc4"),
                     chunk(3, 99, b"kamailio's own"),
                     chunk(0, 16, zlib.compress(SIP))])
    p = hep.decode(b"HEP3" + struct.pack("!H", 6 + len(body)) + body)
    assert (p.src, p.sport, p.payload) == (A, 5060, SIP)


@pytest.mark.parametrize("number,name", [(5, "rtcp"), (34, "qos"), (6, "qos"), (35, "rtcp-xr"), (100, "log"),
                                         (77, "type 77")])
def test_protocol_types_in_both_numberings(number, name):
    p = hep.decode(hep3(A, B, 1, 2, 0, 0, b"{}", proto_type=number))
    assert p.proto_name == name


@pytest.mark.parametrize("data,kind", [
    (b"HEP3\x00\x40" + b"\x00" * 10, "incomplete"),                         # a length past the end
    (hep3(A, B, 1, 2, 0, 0, SIP)[:-5] + b"", "incomplete"),                  # cut: the length says more
    (b"HEP3\x00\x0f" + struct.pack("!HHH", 0, 3, 9) + b"\x01\x02\x03", "bad_chunk"),   # a 3-byte IPv4 address
    (b"HEP3\x00\x0d" + struct.pack("!HHH", 0, 1, 7) + b"\x02", "incomplete"),   # no addresses, no payload
    (b"GET / HTTP/1.1\r\n", "not_hep"),
])
def test_damaged_packets_say_what_is_wrong(data, kind):
    with pytest.raises(hep.HepError) as e:
        hep.decode(data)
    assert e.value.kind == kind


def test_a_packet_too_big_for_hep_is_refused():
    with pytest.raises(hep.HepError, match="does not fit"):
        hep.encode(hep.HepPacket(A, B, 1, 2, b"x" * 70_000))


# --------------------------------------------------------------------------- RTCP and stream reports out

def _rtcp_and_reports(path):
    """What --hep-send sends besides SIP for a capture: [(frame ts, HEP packet)] of its RTCP, and the
    reports of each call's streams, each decoded back with sipflow's own HEP reader."""
    import sipflow
    from sipflow.analysis.analyzer import Analyzer
    from sipflow.capture.files import open_captures
    from sipflow.render import hepout
    out = []
    an = Analyzer()
    an.on_rtcp = lambda ts, src, sport, dst, dport, payload, cid: out.append(
        (ts, hepout.rtcp_packet(ts, src, sport, dst, dport, payload, cid, 7, "pw", "lab")))
    an.run(open_captures([str(path)]))
    a = an.result()
    reports = [(s, p) for c in a.calls for s, p in hepout.report_packets(c, a.end_ts, 7, "pw", "lab")]
    assert isinstance(a, sipflow.Analysis)
    return a, [(ts, hep.decode(p)) for ts, p in out], [(s, hep.decode(p)) for s, p in reports]


def test_rtcp_goes_to_homer_as_heplify_json_tied_to_its_call_and_agrees_with_tshark():
    import json
    import shutil
    import subprocess
    from conftest import SAMPLES
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    path = SAMPLES / "call-rtcp.pcap"
    a, rtcp, _ = _rtcp_and_reports(path)
    t = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "rtcp.pt == 200 || rtcp.pt == 201", "-T", "fields",
                        "-e", "rtcp.senderssrc", "-e", "rtcp.ssrc.identifier", "-e", "rtcp.ssrc.fraction",
                        "-e", "rtcp.ssrc.cum_nr", "-e", "rtcp.ssrc.jitter", "-e", "rtcp.sender.packetcount"],
                       capture_output=True, text=True, timeout=60, check=True)
    expected = [line.split("\t") for line in t.stdout.splitlines()]
    types = [json.loads(p.payload)["type"] for _, p in rtcp]
    assert a.stats["rtcp_packets"] == len(rtcp) and not a.malformed and set(types) - {200, 201} <= {202, 203, 204}
    rtcp = [(ts, p) for (ts, p), kind in zip(rtcp, types) if kind in (200, 201)]
    assert len(rtcp) == len(expected) > 0
    (call,) = a.calls
    for (ts, p), (sender, sources, fraction, lost, jitter, count) in zip(rtcp, expected):
        assert (p.proto_type, p.correlation_id, p.capture_id, p.node_name, p.auth_key) == (
            hep.PROTO_RTCP, call.call_id, 7, "lab", "pw")
        body = json.loads(p.payload)
        assert body["ssrc"] == int(sender, 16)
        blocks = body["report_blocks"]
        # tshark lists the sender's SSRC with the reported sources: the blocks are the others
        assert [b["source_ssrc"] for b in blocks] == [int(x, 16) for x in sources.split(",")[:len(blocks)]]
        first = blocks[0]
        assert (first["fraction_lost"], first["packets_lost"], first["ia_jitter"]) == (
            int(fraction.split(",")[0]), int(lost.split(",")[0]), int(jitter.split(",")[0]))
        if count:
            assert body["sender_information"]["packets"] == int(count)


def test_each_stream_of_an_ended_call_is_reported_as_a_homer_qos_report():
    import json
    from conftest import SAMPLES
    a, _, reports = _rtcp_and_reports(SAMPLES / "basic-call-rtp.pcap")
    (call,) = a.calls
    assert len(reports) == len(call.streams) == 2
    for s, p in reports:
        body = json.loads(p.payload)
        assert (p.proto_type, p.correlation_id, p.proto_name) == (34, call.call_id, "qos")
        assert (p.src, p.sport, p.dst, p.dport) == (s.src, s.sport, s.dst, s.dport)
        assert (body["CORRELATION_ID"], body["TYPE"], body["SSRC"]) == (call.call_id, "FINAL", f"0x{s.ssrc:08X}")
        assert (body["TOTAL_PK"], body["PACKET_LOSS"], body["CODEC_NAME"]) == (s.packets, s.lost, s.codec)
        assert body["MOS"] == round(s.quality.mos, 2) and 1 <= body["MOS"] <= 4.5
        assert body["MAX_JITTER"] == round(s.jitter_max, 3)


def test_a_collector_counts_agents_reports_and_reads_only_packets():
    """sipflow as a collector: a QoS report (type 34) or RTCP as JSON is counted by its kind, never read
    as a packet (it is not one)."""
    from sipflow.net.decoder import Decoder
    from sipflow.net.link import HEP_PAYLOAD
    d = Decoder()
    qos = hep.encode(hep.HepPacket("192.0.2.1", "192.0.2.2", 4000, 4002, b'{"MOS":4.1}', proto_type=34))
    rtcp_json = hep.encode(hep.HepPacket("192.0.2.1", "192.0.2.2", 4001, 4003, b'{"type":200}', proto_type=5))
    sip = hep.encode(hep.HepPacket("192.0.2.1", "192.0.2.2", 5060, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n"))
    got = [dg for data in (qos, rtcp_json, sip) for dg in d.decode(1.0, 0, 1, HEP_PAYLOAD, data)]
    assert [dg.payload[:7] for dg in got] == [b"OPTIONS"]
    assert (d.counters["hep_qos"], d.counters["hep_rtcp"], d.counters["hep"]) == (1, 1, 3)
