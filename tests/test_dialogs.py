"""Transactions, calls and registrations rebuilt from the bundled samples.

Each expectation comes from how the sample was made (samples/README.md: which SIPp scenario, which
Kamailio behaviour), not from sipflow's own output; the state tables are walked as data.
"""
import pytest

import sipflow
from sipflow.analysis.dialogs import CALL_TABLE, TRANSACTION_TABLE, CallState, TxState

from conftest import SAMPLES


def sample(name):
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"samples/{name} missing")
    return sipflow.analyze(str(path))


def only_call(a):
    assert len(a.calls) == 1, [c.call_id for c in a.calls]
    return a.calls[0]


# -- the tables ---------------------------------------------------------------------------------------

def test_transaction_table_every_target_state_has_a_row_and_finals_are_absorbing():
    for (is_invite, _state), row in TRANSACTION_TABLE.items():
        for event, target in row.items():
            assert (is_invite, target) in TRANSACTION_TABLE, (is_invite, target)
            assert event in ("1xx", "2xx", "final", "ack")
    # once final, a transaction never goes back to trying/proceeding
    for (is_invite, state), row in TRANSACTION_TABLE.items():
        if state in (TxState.COMPLETED, TxState.CONFIRMED, TxState.ACCEPTED):
            assert not set(row.values()) & {TxState.TRYING, TxState.PROCEEDING}


def test_call_table_reaches_every_state_from_setup():
    seen, todo = {CallState.SETUP}, [CallState.SETUP]
    while todo:
        for nxt in CALL_TABLE[todo.pop()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(CallState)


# -- calls ----------------------------------------------------------------------------------------------

def test_basic_call_is_answered_with_timings_in_order_and_two_joined_streams():
    a = sample("basic-call-rtp.pcap")
    c = only_call(a)
    assert c.outcome.value == "answered" and c.final_status == 200
    t = c.timings()
    assert 0 < t["time_to_first_response"] <= t["pdd"] <= t["time_to_answer"] <= t["setup_time"]
    assert t["duration"] > 2.0  # SIPp plays 2.5 s of audio before the BYE
    assert c.ended_by == "caller" and c.hops == 1 and len(c.dialogs) == 1
    assert len(c.streams) == 2 and all(s.codec == "PCMA" and s.call_id == c.call_id for s in c.streams)
    assert {(s.src, s.sport) for s in c.streams} == {(s.dst, s.dport) for s in c.streams}  # both directions


def test_busy_486_and_its_ack():
    a = sample("busy-486.pcap")
    c = only_call(a)
    assert (c.outcome.value, c.final_status) == ("busy", 486)
    tx = c.first_hop()[0]
    assert tx.ack is not None and tx.state is TxState.CONFIRMED
    assert not [x for x in a.anomalies if x.kind == "missing_ack"]


def test_cancel_is_matched_to_the_invite_it_cancels():
    a = sample("cancel-487.pcap")
    c = only_call(a)
    assert (c.outcome.value, c.final_status) == ("cancelled", 487)
    tx = c.first_hop()[0]
    assert tx.cancel is not None and tx.cancel.final.status == 200
    assert tx.cancel.request.branch == tx.request.branch


def test_404_from_the_proxy_is_a_rejection():
    a = sample("not-found-404.pcap")
    c = only_call(a)
    assert (c.outcome.value, c.final_status) == ("rejected", 404)


def test_no_answer_408_on_the_callers_hop_and_487_on_the_callees():
    a = sample("no-answer-408.pcap")
    c = only_call(a)
    assert (c.outcome.value, c.final_status) == ("no_answer", 408)
    assert c.hops == 2
    statuses = {t.final.status for t in c.invites if t.final}
    assert statuses == {408, 487}


def test_call_through_record_routing_proxy_is_one_call_with_two_hops():
    a = sample("call-via-proxy.pcap")
    c = only_call(a)
    assert c.outcome.value == "answered" and c.hops == 2
    byes = [e for e in c.events if e.msg.method == "BYE"]
    assert len(byes) == 2 and c.bye is byes[0]
    assert len(c.streams) == 2


def test_reinvite_hold_and_unhold_seen_from_sdp_direction():
    a = sample("reinvite-hold.pcap")
    c = only_call(a)
    assert [what for _, _, what in c.holds] == ["hold", "unhold"]
    assert len(c.reinvites) == 2 and c.outcome.value == "answered"


@pytest.mark.parametrize("name", ["call-tcp.pcap", "call-ipv6.pcap", "udp-fragmented.pcap", "tcp-segmented.pcap"])
def test_transport_variants_give_an_answered_call(name):
    a = sample(name)
    answered = [c for c in a.calls if c.outcome.value == "answered"]
    assert len(answered) == 1 and answered[0].bye is not None


def test_udp_fragmented_invite_names_all_its_fragments():
    a = sample("udp-fragmented.pcap")
    invite = next(e for e in a.messages if e.msg.method == "INVITE")
    assert len(invite.frames) == 3 and invite.frame == max(invite.frames)


def test_retransmissions_are_flagged_not_double_counted():
    a = sample("no-answer-408.pcap")
    flagged = [e for e in a.messages if e.retransmission]
    assert a.stats["retransmissions"] == len(flagged)
    counted = sum(v for row in a.methods.values() for v in row.values())
    assert counted == len(a.messages) - len(flagged)


# -- registrations --------------------------------------------------------------------------------------

def test_register_challenged_then_registered():
    a = sample("register-401-200.pcap")
    (r,) = a.registrations
    assert (r.outcome, r.final_status, r.challenges) == ("registered", 200, 1)
    assert r.expires_granted and r.expires_granted > 0
    assert list(a.bindings[r.aor].values())[0] > a.end_ts  # the binding is still active at the end


def test_unregister_removes_the_binding():
    a = sample("unregister.pcap")
    (r,) = a.registrations
    assert r.outcome == "unregistered" and r.expires_granted == 0 and r.refreshes == 0
    assert a.bindings.get(r.aor) == {}


def test_wrong_password_is_a_failure():
    a = sample("register-wrong-password.pcap")
    (r,) = a.registrations
    assert (r.outcome, r.final_status) == ("failed", 403) and r.challenges == 2


def test_other_methods_are_counted_with_their_responses():
    a = sample("options-message-subscribe.pcap")
    for method in ("OPTIONS", "MESSAGE", "SUBSCRIBE", "NOTIFY"):
        row = a.methods[method]
        assert row["requests"] >= 1 and row.get("200", 0) == row["requests"], (method, row)
    assert not a.calls


def test_websocket_sample_has_register_and_calls_over_ws():
    a = sample("websocket.pcap")
    ws = [e for e in a.messages if e.transport == "ws"]
    assert {e.msg.method for e in ws if e.msg.method} >= {"REGISTER", "INVITE", "OPTIONS", "ACK"}
    assert any(r.outcome == "registered" for r in a.registrations)
