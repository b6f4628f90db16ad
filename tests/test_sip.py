"""The SIP parser and stream framer: RFC 3261 syntax rules, and robustness on arbitrary bytes."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipflow.errors import ParseError
from sipflow.sip.framing import StreamFramer, frame_stream
from sipflow.sip.message import parse_message, parse_name_addr, parse_uri, split_list

INVITE = (b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
          b"v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;rport\r\n"
          b"Via: SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK-2;received=192.0.2.9\r\n"
          b"Max-Forwards: 70\r\n"
          b"t: Bob <sip:bob@biloxi.example.com>\r\n"
          b"f: \"Alice, A.\" <sip:alice@atlanta.example.com;transport=tcp>;tag=1928301774\r\n"
          b"i: a84b4c76e66710@pc33.atlanta.example.com\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"m: <sip:alice@pc33.atlanta.example.com>, sip:alice@192.0.2.1;expires=60\r\n"
          b"Subject: folded\r\n  continuation line\r\n"
          b"c: application/sdp\r\n"
          b"l: 4\r\n\r\nv=0\n")


def test_compact_forms_are_expanded_and_values_kept_in_order():
    m = parse_message(INVITE)
    assert m.method == "INVITE" and m.uri == "sip:bob@biloxi.example.com"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == (314159, "INVITE")
    assert [name for name, _ in m.headers][:3] == ["Via", "Via", "Max-Forwards"]
    assert m.header("Content-Type") == "application/sdp" and m.header("c") == "application/sdp"
    assert m.body == b"v=0\n" and m.problems == ()


def test_from_to_tags_display_names_and_uri_params():
    m = parse_message(INVITE)
    assert m.from_.tag == "1928301774" and m.from_.display == "Alice, A."
    assert m.from_.uri.user == "alice" and m.from_.uri.param("transport") == "tcp"
    assert m.to.tag is None and m.to.uri.host == "biloxi.example.com"


def test_via_list_branch_rport_received_and_ipv6():
    vias = parse_message(INVITE).vias
    assert [v.transport for v in vias] == ["UDP", "TCP"]
    assert vias[0].branch == "z9hG4bKnashds8" and vias[0].param("rport") == ""
    assert vias[1].host == "2001:db8::9" and vias[1].port == 5061 and vias[1].param("received") == "192.0.2.9"


def test_contact_list_with_addr_spec_params_belonging_to_header():
    contacts = parse_message(INVITE).contacts
    assert len(contacts) == 2
    assert contacts[1].param("expires") == "60" and contacts[1].uri.params == ()


def test_folded_header_is_unfolded():
    assert parse_message(INVITE).header("Subject") == "folded continuation line"


def test_response_line_and_reason():
    m = parse_message(b"SIP/2.0 486 Busy Here\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nFrom: <sip:a@b>;tag=1\r\n"
                      b"To: <sip:c@d>;tag=2\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert (m.status, m.reason, m.method) == (486, "Busy Here", None)
    assert m.to.tag == "2"


def test_missing_content_length_on_udp_means_rest_of_datagram():
    m = parse_message(INVITE.replace(b"l: 4\r\n", b"") + b"o=x\r\n")
    assert m.body == b"v=0\no=x\r\n" and m.problems == ()


@pytest.mark.parametrize("cl,problem", [(b"99", "Content-Length 99 but only 4"), (b"2", "Content-Length 2 but 4"),
                                        (b"bad", "invalid Content-Length")])
def test_wrong_content_length_is_a_problem_not_an_error(cl, problem):
    m = parse_message(INVITE.replace(b"l: 4", b"l: " + cl))
    assert any(p.startswith(problem) for p in m.problems), m.problems


def test_junk_before_method_is_stripped_like_wireshark():
    m = parse_message(b"DBREGISTER sip:1.1.1.1:5060 SIP/2.0\r\nExpires: 3600\r\n\r\n")
    assert m.method == "REGISTER"
    assert any("junk" in p for p in m.problems) and any("missing Call-ID" in p for p in m.problems)


def test_tel_and_sips_uris():
    assert parse_uri("tel:+1-201-555-0123;phone-context=x").user == "+1-201-555-0123"
    u = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tls?subject=x")
    assert (u.scheme, u.user, u.host, u.port, u.param("transport")) == ("sips", "alice", "2001:db8::1", 5061, "tls")


def test_split_list_respects_quotes_and_brackets():
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]
    assert parse_name_addr("*").uri.raw == "*"


def test_not_sip_raises_parse_error():
    with pytest.raises(ParseError):
        parse_message(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_parse_error(data):
    try:
        m = parse_message(data)
    except ParseError:
        return
    # Whatever parses must expose its derived fields without raising.
    _ = (m.call_id, m.cseq, m.from_, m.to, m.vias, m.contacts, m.summary())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"INVITE sip:x SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b""]))
def test_arbitrary_sip_like_bytes_raise_only_parse_error(tail, head):
    try:
        m = parse_message(head + tail)
    except ParseError:
        return
    _ = (m.call_id, m.cseq, m.from_, m.to, m.vias, m.contacts)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_framer_never_raises_and_never_loses_bytes(chunks):
    f = StreamFramer()
    total = 0
    for i, c in enumerate(chunks):
        for raw, frames in f.feed(c, i):
            total += len(raw)
            assert frames
    assert total + f.junk_bytes + f.keepalive_bytes + len(f.buf) == sum(len(c) for c in chunks)


def test_frame_stream_contract():
    assert frame_stream(b"") == ("need", 0)
    assert frame_stream(b"\r\n\r\n") == ("keepalive", 4)
    assert frame_stream(INVITE[:50]) == ("need", 0)
    assert frame_stream(INVITE + b"SIP/2.0") == ("message", len(INVITE))
