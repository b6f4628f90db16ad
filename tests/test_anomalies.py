"""Anomalies are data on the call: each test builds the broken exchange it is about (real stacks do
not misbehave on demand) and checks sipflow names it, with the frame to look at."""
import sipflow
from sipflow.analysis.dialogs import DialogState

from pcaptools import sip_text, udp_frame, write_pcap

A, B = "198.51.100.10", "203.0.113.20"   # documentation addresses: data inside the file only


def req(method, cseq, branch, call_id="c1@x", ftag="f1", ttag=None, body="", ctype=None, extra=()):
    h = [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), ("From", f"<sip:alice@x>;tag={ftag}"),
         ("To", "<sip:bob@y>" + (f";tag={ttag}" if ttag else "")), ("Call-ID", call_id),
         ("CSeq", f"{cseq} {method}"), ("Contact", f"<sip:alice@{A}>"), *extra]
    if ctype:
        h.append(("Content-Type", ctype))
    return sip_text(f"{method} sip:bob@{B} SIP/2.0", h, body)


def resp(status, reason, method, cseq, branch, call_id="c1@x", ftag="f1", ttag="t1", extra=()):
    h = [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"), ("From", f"<sip:alice@x>;tag={ftag}"),
         ("To", f"<sip:bob@y>;tag={ttag}"), ("Call-ID", call_id), ("CSeq", f"{cseq} {method}"), *extra]
    return sip_text(f"SIP/2.0 {status} {reason}", h)


def capture(tmp_path, messages, name="x.pcap"):
    """messages: (seconds offset, direction 'ab' or 'ba', bytes)"""
    recs = []
    for i, (t, direction, payload) in enumerate(messages):
        s, d = (A, B) if direction == "ab" else (B, A)
        sec = 1_700_000_000 + int(t)
        recs.append((sec, int((t % 1) * 1e6), udp_frame(s, 5060, d, 5060, payload, ident=i + 1)))
    return sipflow.analyze(str(write_pcap(tmp_path / name, 1, recs)))


def kinds(a):
    return {(x.kind, x.frame) for x in a.anomalies}


def test_response_without_request(tmp_path):
    a = capture(tmp_path, [(0, "ba", resp(200, "OK", "OPTIONS", 1, "z9hG4bKnone"))])
    assert ("response_without_request", 1) in kinds(a)


def test_missing_ack_for_a_rejection(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(486, "Busy Here", "INVITE", 1, "z9hG4bK1")),
                           (5, "ab", req("OPTIONS", 2, "z9hG4bK2", call_id="other"))])
    assert ("missing_ack", 2) in kinds(a)
    assert a.calls[0].outcome.value == "busy"


def test_bye_before_answer(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")),
                           (0.1, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1")),
                           (1, "ab", req("BYE", 2, "z9hG4bK2", ttag="t1"))])
    assert ("bye_before_answer", 3) in kinds(a)


def test_cseq_going_backwards(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INFO", 5, "z9hG4bK1")), (1, "ab", req("INFO", 3, "z9hG4bK2"))])
    assert ("cseq_backwards", 2) in kinds(a)


def test_timer_a_is_not_a_storm_but_more_copies_than_the_timers_send_is(tmp_path):
    inv = req("INVITE", 1, "z9hG4bK1")
    # RFC 3261 Timer A: the INVITE again at 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s: the protocol at work
    a = capture(tmp_path, [(t, "ab", inv) for t in (0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5)])
    assert not [k for k in kinds(a) if k[0] == "retransmission_storm"]
    assert a.methods["INVITE"]["requests"] == 1 and a.stats["retransmissions"] == 6
    assert [m.retransmission for m in a.messages] == [False] + [True] * 6
    # nobody answered within Timer B (32 s) of the INVITE... the capture ends at 31.5 s: in progress
    assert a.calls[0].outcome.value == "in_progress"
    # a broken stack that sends it every 100 ms: the 8th copy (7 retransmissions) is one too many
    b = capture(tmp_path, [(t / 10, "ab", inv) for t in range(12)])
    assert ("retransmission_storm", 8) in kinds(b) and sum(k[0] == "retransmission_storm" for k in kinds(b)) == 1
    opts = req("OPTIONS", 1, "z9hG4bK7", call_id="ping")
    c = capture(tmp_path, [(t / 10, "ab", opts) for t in range(11)])     # 10 retransmissions: Timer E's most
    assert not [k for k in kinds(c) if k[0] == "retransmission_storm"]


def test_no_response_after_timer_b(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")),
                           (40, "ab", req("OPTIONS", 1, "z9hG4bK9", call_id="later"))])
    assert a.calls[0].outcome.value == "no_response"


def test_private_address_in_sdp_and_contact_behind_nat(tmp_path):
    sdp = "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\ns=-\r\nc=IN IP4 10.1.2.3\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    inv = req("INVITE", 1, "z9hG4bK1", body=sdp, ctype="application/sdp").replace(
        f"Contact: <sip:alice@{A}>".encode(), b"Contact: <sip:alice@192.168.1.7:5060>")
    a = capture(tmp_path, [(0, "ab", inv)])
    details = [x.detail for x in a.anomalies if x.kind == "nat"]
    assert any("10.1.2.3" in d for d in details) and any("192.168.1.7" in d for d in details)


def test_content_length_too_big_is_an_anomaly_and_the_message_is_kept(tmp_path):
    bad = req("OPTIONS", 1, "z9hG4bK1", extra=[("Content-Length", "500")])
    a = capture(tmp_path, [(0, "ab", bad)])
    assert [m.msg.method for m in a.messages] == ["OPTIONS"]
    assert ("content_length_mismatch", 1) in kinds(a)


def test_forked_invite_makes_two_early_dialogs(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")),
                           (0.1, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1", ttag="fork1")),
                           (0.2, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1", ttag="fork2")),
                           (1.0, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1", ttag="fork2")),
                           (1.1, "ab", req("ACK", 1, "z9hG4bK3", ttag="fork2"))])
    c = a.calls[0]
    assert set(c.dialogs) == {("f1", "fork1"), ("f1", "fork2")}
    assert c.dialogs[("f1", "fork2")].state is DialogState.CONFIRMED and c.dialogs[("f1", "fork1")].state is DialogState.EARLY
    assert c.outcome.value == "answered"
    assert c.timings()["setup_time"] is not None


def test_a_fork_flood_keeps_every_dialog_in_order(tmp_path):
    """More forks than a call keeps in its small tuple (16; past that a dict): the record lists every
    dialog in the order they were made, each with its own state, and finds each by its tags."""
    n = 40
    msgs = [(0, "ab", req("INVITE", 1, "z9hG4bK1"))]
    msgs += [(0.01 * (i + 1), "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1", ttag=f"fork{i}")) for i in range(n)]
    msgs += [(1.0, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1", ttag="fork33")),
             (1.1, "ba", resp(183, "Progress", "INVITE", 1, "z9hG4bK1", ttag="fork2"))]
    c = capture(tmp_path, msgs).calls[0]
    assert list(c.dialogs) == [("f1", f"fork{i}") for i in range(n)]
    assert [k for k, d in c.dialogs.items() if d.state is DialogState.CONFIRMED] == [("f1", "fork33")]
    assert c.dialogs[("f1", "fork39")].state is DialogState.EARLY and ("f1", "fork40") not in c.dialogs


def test_malformed_sip_is_listed_with_its_frame_not_dropped(tmp_path):
    junk = b"INVITE sip:bob@y SIP/2.0\r\nthis line has no colon\r\nCall-ID: q\r\n\r\n"
    a = capture(tmp_path, [(0, "ab", junk), (1, "ab", b"NOTSIP garbage \x00\x01")])
    assert [m.frame for m in a.malformed] == [1]
    assert a.messages and a.messages[0].msg.method == "INVITE"
    assert a.stats["undecoded"] == 1


def test_rfc2543_peer_without_magic_cookie_is_matched_by_call_id_tag_and_cseq(tmp_path):
    """Old peers put no z9hG4bK branch: transactions fall back to Call-ID, From tag, CSeq and top Via
    (RFC 3261 §17.1.3 / §17.2.3), so a retransmitted INVITE is still recognised and ACK still matches."""
    inv = req("INVITE", 1, "old1")
    a = capture(tmp_path, [(0, "ab", inv), (0.5, "ab", inv), (0.6, "ba", resp(486, "Busy Here", "INVITE", 1, "old1")),
                           (0.7, "ab", req("ACK", 1, "old1", ttag="t1"))])
    c = a.calls[0]
    assert [m.retransmission for m in a.messages] == [False, True, False, False]
    assert c.first_hop()[0].ack is not None and c.outcome.value == "busy"
    assert not [x for x in a.anomalies if x.kind == "missing_ack"]


def test_unregister_all_with_star_clears_the_binding_table(tmp_path):
    def register(cseq, branch, contact, extra=()):
        return sip_text("REGISTER sip:x SIP/2.0", [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"),
                        ("From", "<sip:alice@x>;tag=r"), ("To", "<sip:alice@x>"), ("Call-ID", "reg"),
                        ("CSeq", f"{cseq} REGISTER"), ("Contact", contact), *extra])

    def ok(cseq, branch, contact=None):
        extra = [("Contact", contact)] if contact else []
        return sip_text("SIP/2.0 200 OK", [("Via", f"SIP/2.0/UDP {A}:5060;branch={branch}"),
                        ("From", "<sip:alice@x>;tag=r"), ("To", "<sip:alice@x>;tag=s"), ("Call-ID", "reg"),
                        ("CSeq", f"{cseq} REGISTER"), *extra])

    a = capture(tmp_path, [
        (0, "ab", register(1, "z9hG4bKr1", f"<sip:alice@{A}>;expires=600")),
        (0.1, "ba", ok(1, "z9hG4bKr1", f"<sip:alice@{A}>;expires=300")),
        (1, "ab", register(2, "z9hG4bKr2", f"<sip:alice@{A}>;expires=600")),
        (1.1, "ba", ok(2, "z9hG4bKr2", f"<sip:alice@{A}>;expires=300")),
        (2, "ab", register(3, "z9hG4bKr3", "*", extra=[("Expires", "0")])),
        (2.1, "ba", ok(3, "z9hG4bKr3")),
    ])
    (r,) = a.registrations
    assert (r.expires_requested, r.outcome, r.refreshes) == (0, "unregistered", 1)
    assert a.bindings["sip:alice@x"] == {}


def test_registration_grants_less_than_asked(tmp_path):
    reg = sip_text("REGISTER sip:x SIP/2.0", [("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bKg"),
                   ("From", "<sip:bob@x>;tag=r"), ("To", "<sip:bob@x>"), ("Call-ID", "g"), ("CSeq", "1 REGISTER"),
                   ("Contact", f"<sip:bob@{A}>"), ("Expires", "3600")])
    ok = sip_text("SIP/2.0 200 OK", [("Via", f"SIP/2.0/UDP {A}:5060;branch=z9hG4bKg"), ("From", "<sip:bob@x>;tag=r"),
                  ("To", "<sip:bob@x>;tag=s"), ("Call-ID", "g"), ("CSeq", "1 REGISTER"),
                  ("Contact", f"<sip:bob@{A}>;expires=120")])
    a = capture(tmp_path, [(0, "ab", reg), (0.2, "ba", ok)])
    (r,) = a.registrations
    assert (r.expires_requested, r.expires_granted, r.outcome) == (3600, 120, "registered")
    assert a.bindings["sip:bob@x"][f"sip:bob@{A}"] == a.messages[1].ts + 120


def test_ack_for_a_rejection_with_a_new_branch_is_matched_and_flagged(tmp_path):
    """Some WebRTC stacks (seen in heplify__sip_tcp_websocket) ACK a 407 with a fresh branch: the ACK
    still belongs to the rejected INVITE, must not count as the ACK of a 2xx (setup time), and is named."""
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")),
                           (0.05, "ba", resp(407, "Proxy Authentication Required", "INVITE", 1, "z9hG4bK1")),
                           (0.06, "ab", req("ACK", 1, "z9hG4bKother", ttag="t1")),
                           (0.1, "ab", req("INVITE", 2, "z9hG4bK2")),
                           (2.0, "ba", resp(200, "OK", "INVITE", 2, "z9hG4bK2")),
                           (2.1, "ab", req("ACK", 2, "z9hG4bK3", ttag="t1")),
                           (5.0, "ab", req("BYE", 3, "z9hG4bK4", ttag="t1"))])
    c = a.calls[0]
    assert ("ack_branch_mismatch", 3) in kinds(a) and not [x for x in a.anomalies if x.kind == "missing_ack"]
    assert c.final_status == 200 and abs(c.timings()["setup_time"] - 2.1) < 1e-6


# -- the state tables decide: every step they do not have is an anomaly at its frame -----------------

def test_a_second_final_response_to_a_non_invite_is_unexpected(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1")),
                           (0.2, "ab", req("ACK", 1, "z9hG4bK2", ttag="t1")),
                           (1, "ab", req("BYE", 2, "z9hG4bK3", ttag="t1")), (1.1, "ba", resp(200, "OK", "BYE", 2, "z9hG4bK3")),
                           (1.2, "ba", resp(481, "Call Does Not Exist", "BYE", 2, "z9hG4bK3"))])
    assert ("unexpected_in_transaction", 6) in kinds(a)
    assert [x.frame for x in a.anomalies] == [6], "only the 481 is out of place"
    detail = next(x.detail for x in a.anomalies)
    assert "481" in detail and "BYE" in detail and "completed" in detail


def test_a_retransmitted_final_response_is_not_an_anomaly(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("OPTIONS", 1, "z9hG4bK1")), (0.1, "ba", resp(200, "OK", "OPTIONS", 1, "z9hG4bK1")),
                           (0.6, "ba", resp(200, "OK", "OPTIONS", 1, "z9hG4bK1"))])
    assert not a.anomalies and a.messages[2].retransmission


def test_a_2xx_after_a_rejection_in_the_same_invite_transaction_is_unexpected(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(486, "Busy Here", "INVITE", 1, "z9hG4bK1")),
                           (0.2, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1")),
                           (0.3, "ab", req("ACK", 1, "z9hG4bK1"))])
    assert ("unexpected_in_transaction", 3) in kinds(a)
    assert a.calls[0].outcome.value == "busy", "the first final response decides"


def test_an_ack_before_any_final_response_is_unexpected(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1")),
                           (0.2, "ab", req("ACK", 1, "z9hG4bK1"))])
    assert ("unexpected_in_transaction", 3) in kinds(a)


def test_a_provisional_after_a_rejection_is_unexpected(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(603, "Decline", "INVITE", 1, "z9hG4bK1")),
                           (0.2, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1", ttag="t2")),
                           (0.3, "ab", req("ACK", 1, "z9hG4bK1"))])
    assert ("unexpected_in_transaction", 3) in kinds(a)


def test_a_rejection_of_a_new_initial_invite_in_an_answered_call_is_unexpected_in_the_call(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1")),
                           (0.2, "ab", req("ACK", 1, "z9hG4bK2", ttag="t1")),
                           (1, "ab", req("INVITE", 2, "z9hG4bK3")), (1.1, "ba", resp(486, "Busy Here", "INVITE", 2, "z9hG4bK3")),
                           (1.2, "ab", req("ACK", 2, "z9hG4bK3"))])
    assert ("unexpected_in_call", 5) in kinds(a)
    assert a.calls[0].state.value == "in_call", "the table keeps the state when it has no step"


def test_forked_provisionals_and_a_cancel_that_lost_the_race_are_not_anomalies(tmp_path):
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")),
                           (0.1, "ba", resp(180, "Ringing", "INVITE", 1, "z9hG4bK1", ttag="fork1")),
                           (0.2, "ba", resp(200, "OK", "INVITE", 1, "z9hG4bK1", ttag="fork2")),
                           (0.21, "ab", req("CANCEL", 1, "z9hG4bK1")),
                           (0.22, "ba", resp(183, "Session Progress", "INVITE", 1, "z9hG4bK1", ttag="fork1")),
                           (0.23, "ba", resp(200, "OK", "CANCEL", 1, "z9hG4bK1", ttag="fork2")),
                           (0.3, "ab", req("ACK", 1, "z9hG4bK2", ttag="fork2"))])
    assert not a.anomalies, a.anomalies
    assert a.calls[0].outcome.value == "answered"


def test_a_missing_ack_is_still_reported_after_its_transaction_is_forgotten(tmp_path):
    # 100 s later the INVITE transaction is long gone (Timer D, 32 s): the call still says what happened
    a = capture(tmp_path, [(0, "ab", req("INVITE", 1, "z9hG4bK1")), (0.1, "ba", resp(486, "Busy Here", "INVITE", 1, "z9hG4bK1")),
                           (100, "ab", req("OPTIONS", 2, "z9hG4bK2", call_id="other")),
                           (100.1, "ba", resp(200, "OK", "OPTIONS", 2, "z9hG4bK2", call_id="other"))])
    assert ("missing_ack", 2) in kinds(a)
    assert a.stats["transactions_expired"] >= 1
