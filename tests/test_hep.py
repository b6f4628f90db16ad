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
