"""The probe's sans-IO flows wired to scripted peers in memory, as h11's tests wire two connections:
no socket, no clock but the one the test moves. Every rule that the real-stack tests can only reach
through SIPp or a threaded socket double is walked here: PRACK (and its retransmission), a forked 2xx,
the 200 OK that crosses our CANCEL, 401 then 407, a stale nonce, a challenge to BYE, the far end
hanging up, Timer E/F and Timer B on a fake clock, MESSAGE with a challenge, and a link that fails.

The peer is a function given each request the flow sends; it schedules the messages it sends back,
each after a delay on the test's clock. Addresses are documentation addresses (RFC 5737); nothing
is sent anywhere.
"""
from __future__ import annotations

import hashlib
import heapq
import re
from typing import Callable, List, Optional

from sipflow.probe.call import CallFlow, CallOptions, CallOutcome
from sipflow.probe.common import Failure, Outcome, parse_target
from sipflow.probe.flow import (Connect, Link, MediaAnswer, OpenMedia, Report, Send, StartMedia, StopMedia)
from sipflow.probe.message import MessageFlow, MessageOptions
from sipflow.probe.options import OptionsFlow, ProbeOptions
from sipflow.probe.register import RegisterFlow, RegisterOptions, register_target
from sipflow.sip import builder
from sipflow.sip.message import SipMessage, parse_message
from sipflow.sip.transaction import T1, TIMER_B, TIMER_F

US = "192.0.2.1"          # our address (TEST-NET-1)
THEM = "192.0.2.10"
PASSWORD = "secretpw"
SDP = (b"v=0\r\no=uas 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
       b"m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


class Wire:
    """A flow and a scripted peer in memory. Links connect at once (each a new local port), the media
    socket opens at once, and every message the flow sends is handed to ``peer(wire, link, msg)``,
    which answers through ``wire.reply``/``wire.request``."""

    def __init__(self, flow, peer: Callable, transport: str = "udp", refuse: Optional[str] = None) -> None:
        self.flow, self.peer, self.transport, self.refuse = flow, peer, transport, refuse
        self.now = 0.0
        self.sent: List[tuple] = []          # (time, link, SipMessage)
        self.reports: List[object] = []
        self.media: List[object] = []
        self.connects: List[Connect] = []
        self.queue: list = []                # (time, n, link, bytes)
        self.n = 0

    # what the peer uses
    def reply(self, req: SipMessage, status: int, reason: str = "OK", *, tag: Optional[str] = "uas",
              headers=(), body: bytes = b"", after: float = 0.0, link: str = "main") -> None:
        self.deliver(builder.response(req, status, reason, tag, headers, body,
                                      "application/sdp" if body else None), after, link)

    def deliver(self, data: bytes, after: float = 0.0, link: str = "main") -> None:
        self.n += 1
        heapq.heappush(self.queue, (self.now + after, self.n, link, data))

    # carrying out the flow's actions
    def do(self, actions) -> None:
        for a in actions:
            if isinstance(a, Connect):
                self.connects.append(a)
                if self.refuse == a.link:
                    self.do(self.flow.failed(a.link, Failure(Outcome.REFUSED, "connection refused"), self.now))
                    continue
                port = 40000 + 2 * len(self.connects)
                sent_by = "abcdef.invalid" if a.hop.transport in ("ws", "wss") else f"{US}:{port}"
                self.do(self.flow.connected(Link(a.link, a.hop.transport, (US, port), (a.hop.host, a.hop.port),
                                                 sent_by, connect=0.001 if a.hop.transport != "udp" else None),
                                            self.now))
            elif isinstance(a, OpenMedia):
                self.do(self.flow.media_opened(42000, self.now))
            elif isinstance(a, Send):
                msg = parse_message(a.data)
                self.sent.append((self.now, a.link, msg))
                self.peer(self, a.link, msg)
            elif isinstance(a, Report):
                self.reports.append(a.result)
            else:
                self.media.append(a)

    def run(self, limit: float = 120.0):
        self.do(self.flow.start(self.now))
        while not self.flow.finished:
            due = self.flow.deadline()
            nxt = self.queue[0][0] if self.queue else None
            when = min(t for t in (due, nxt, limit) if t is not None)
            self.now = max(self.now, when)
            if self.now >= limit:
                self.do(self.flow.expire(self.now))
                break
            if nxt is not None and nxt <= self.now and (due is None or nxt <= due):
                _, _, link, data = heapq.heappop(self.queue)
                self.do(self.flow.received(link, data, self.now))
            else:
                self.do(self.flow.timer(self.now))
        return self

    def methods(self) -> List[str]:
        return [m.method for _, _, m in self.sent]

    def of(self, method: str) -> List[SipMessage]:
        return [m for _, _, m in self.sent if m.method == method]


def call_flow(**kw) -> CallFlow:
    kw.setdefault("duration", 1.0)
    return CallFlow(parse_target(kw.pop("target", f"sip:bob@{THEM}:5060")), CallOptions(**kw))


def digest_params(value: str) -> dict:
    return dict(re.findall(r'(\w+)="?([^",]*)"?', value.split(" ", 1)[1]))


def md5_response(a: dict, method: str, password: str = PASSWORD) -> str:
    """RFC 2617 §3.2.2.1 with qop=auth, computed here independently of sip.digest."""
    h = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = h(f"{a['username']}:{a['realm']}:{password}"), h(f"{method}:{a['uri']}")
    return h(f"{ha1}:{a['nonce']}:{a['nc']}:{a['cnonce']}:{a['qop']}:{ha2}")


def challenge(header: str, realm: str, nonce: str, stale: bool = False):
    return ((header, f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
             + (", stale=true" if stale else "")),)

# --------------------------------------------------------------------------- a plain call


def answering_uas(wire, link, msg, *, record_route=(), ringing=True):
    if msg.method == "INVITE":
        if ringing:
            wire.reply(msg, 180, "Ringing", after=0.01)
        wire.reply(msg, 200, "OK", body=SDP, after=0.05,
                   headers=(("Contact", f"<sip:bob@{THEM}:5060>"), *(("Record-Route", r) for r in record_route)))
    elif msg.method == "BYE":
        wire.reply(msg, 200, "OK", after=0.01)


def test_a_call_is_invited_acked_timed_and_hung_up_on_the_fake_clock():
    w = Wire(call_flow(duration=2.0), answering_uas).run()
    r = w.flow.result("192.0.2.10:5060", 0.0, w.now, {"sent": 100})
    assert w.methods() == ["INVITE", "ACK", "BYE"]
    assert r.outcome is CallOutcome.ANSWERED and r.bye_status == 200 and r.hung_up_by == "us"
    assert (r.pdd, r.answer, r.setup) == (0.01, 0.05, 0.05) and r.duration == 2.0 and r.bye == 0.01
    ack = w.of("ACK")[0]
    assert ack.uri == f"sip:bob@{THEM}:5060" and ack.cseq == (1, "ACK") and ack.branch != w.of("INVITE")[0].branch
    assert [type(a) for a in w.media] == [MediaAnswer, StartMedia, StopMedia, StopMedia]
    assert w.media[0].sdp == SDP and w.media[1].at == 0.05 and w.media[2].at == 2.05
    assert w.of("BYE")[0].cseq == (2, "BYE") and r.rtp == {"sent": 100}


def test_ack_and_bye_follow_the_record_route_and_reuse_a_link_to_the_same_hop():
    rr = ("<sip:192.0.2.20;lr>", "<sip:192.0.2.21:5070;lr>")
    w = Wire(call_flow(), lambda w, link, m: answering_uas(w, link, m, record_route=rr)).run()
    ack, bye = w.of("ACK")[0], w.of("BYE")[0]
    assert ack.header_values("Route") == list(reversed(rr)) == bye.header_values("Route")
    # the dialog's next hop (192.0.2.21:5070) is a link of its own, opened once for ACK and BYE
    assert [c.hop.host + ":" + str(c.hop.port) for c in w.connects] == [f"{THEM}:5060", "192.0.2.21:5070"]
    assert {link for _, link, m in w.sent if m.method in ("ACK", "BYE")} == {"udp:192.0.2.21:5070"}


def test_the_far_end_hanging_up_gets_200_and_ends_the_call():
    def uas(w, link, m):
        answering_uas(w, link, m)
        if m.method == "ACK":
            bye = (f"BYE sip:sipflow@{US} SIP/2.0\r\nVia: SIP/2.0/UDP {THEM};branch=z9hG4bKfar\r\n"
                   f"From: <sip:bob@{THEM}>;tag=uas\r\nTo: <sip:sipflow@{US}>;tag={w.flow.from_tag}\r\n"
                   f"Call-ID: {w.flow.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n").encode()
            w.deliver(bye, after=0.3)
    w = Wire(call_flow(duration=5), uas).run()
    r = w.flow.result("", 0, w.now, None)
    answer = [m for _, _, m in w.sent if m.status == 200]
    assert r.hung_up_by == "them" and r.reason == "the far end hung up" and not r.bye_sent
    assert len(answer) == 1 and answer[0].cseq == (1, "BYE") and answer[0].to.tag == w.flow.from_tag

# --------------------------------------------------------------------------- PRACK (RFC 3262)


def test_a_reliable_provisional_is_pracked_in_its_early_dialog_and_again_when_retransmitted():
    def uas(w, link, m):
        if m.method == "INVITE":
            rel = (("Require", "100rel"), ("RSeq", "7"), ("Contact", f"<sip:bob@{THEM}:5062>"))
            w.reply(m, 100, "Trying", tag=None)
            w.reply(m, 183, "Session Progress", headers=rel, body=SDP, after=0.01)
            w.reply(m, 183, "Session Progress", headers=rel, body=SDP, after=0.51)   # retransmitted
            w.reply(m, 200, "OK", headers=(("Contact", f"<sip:bob@{THEM}:5062>"),), after=1.0)
        elif m.method in ("PRACK", "BYE"):
            w.reply(m, 200, "OK", after=0.01)
    w = Wire(call_flow(), uas).run()
    pracks = w.of("PRACK")
    r = w.flow.result("", 0, w.now, None)
    assert len(pracks) == 2 and pracks[0].raw == pracks[1].raw                      # the same PRACK again
    assert pracks[0].header("RAck") == "7 1 INVITE" and pracks[0].uri == f"sip:bob@{THEM}:5062"
    assert pracks[0].to.tag == "uas" and pracks[0].cseq == (2, "PRACK")
    assert (r.pracks, r.prack_retransmitted, r.prack_status) == (1, 1, 200)
    assert r.provisional == (100, 183) and r.outcome is CallOutcome.ANSWERED
    # no SDP in the 200: the 183's answer is the one the media uses
    assert next(a for a in w.media if isinstance(a, MediaAnswer)).sdp == SDP
    assert w.of("BYE")[0].cseq == (3, "BYE")

# --------------------------------------------------------------------------- forking (§13.2.2.4)


def test_a_second_forks_2xx_is_acked_and_byed_and_its_retransmission_acked_again():
    def uas(w, link, m):
        if m.method == "INVITE":
            w.reply(m, 180, "Ringing", tag="a", after=0.01)
            w.reply(m, 200, "OK", tag="a", body=SDP, headers=(("Contact", "<sip:a@192.0.2.11>"),), after=0.05)
            w.reply(m, 200, "OK", tag="b", body=SDP, headers=(("Contact", "<sip:b@192.0.2.12>"),), after=0.06)
            w.reply(m, 200, "OK", tag="b", body=SDP, headers=(("Contact", "<sip:b@192.0.2.12>"),), after=0.56)
        elif m.method == "BYE":
            w.reply(m, 200, "OK", tag=None, after=0.01)
    w = Wire(call_flow(duration=1), uas).run()
    acks, byes = w.of("ACK"), w.of("BYE")
    assert [a.to.tag for a in acks] == ["a", "b", "b"] and acks[1].raw == acks[2].raw
    assert acks[0].uri == "sip:a@192.0.2.11" and acks[1].uri == "sip:b@192.0.2.12"
    assert [b.to.tag for b in byes] == ["b", "a"]                # the extra dialog ended at once, ours later
    r = w.flow.result("", 0, w.now, None)
    assert r.outcome is CallOutcome.ANSWERED and r.remote_target == "sip:a@192.0.2.11" and r.bye_status == 200

# --------------------------------------------------------------------------- CANCEL (§9.1)


def test_ring_timeout_cancels_and_the_487_is_acked():
    def uas(w, link, m):
        if m.method == "INVITE":
            w.reply(m, 180, "Ringing", after=0.01)
            w.pending = m
        elif m.method == "CANCEL":
            w.reply(m, 200, "OK", after=0.01)
            w.reply(w.pending, 487, "Request Terminated", after=0.02)
    w = Wire(call_flow(ring_timeout=1.5), uas).run()
    cancel = w.of("CANCEL")[0]
    invite = w.of("INVITE")[0]
    r = w.flow.result("", 0, w.now, None)
    assert next(t for t, _, m in w.sent if m.method == "CANCEL") == 0.01 + 1.5
    assert cancel.branch == invite.branch and cancel.cseq == (1, "CANCEL") and cancel.uri == invite.uri
    assert w.of("ACK")[0].branch == invite.branch and w.of("ACK")[0].to.tag == "uas"   # the transaction's ACK
    assert (r.outcome, r.cancel_status, r.status) == (CallOutcome.NO_ANSWER, 200, 487)


def test_the_200_that_crosses_the_cancel_is_acked_and_hung_up():
    def uas(w, link, m):
        if m.method == "INVITE":
            w.reply(m, 180, "Ringing", after=0.01)
            w.pending = m
        elif m.method == "CANCEL":
            w.reply(w.pending, 200, "OK", body=SDP, headers=(("Contact", f"<sip:bob@{THEM}>"),))   # the race
            w.reply(m, 481, "Call/Transaction Does Not Exist", after=0.01)
        elif m.method == "BYE":
            w.reply(m, 200, "OK", after=0.01)
    w = Wire(call_flow(ring_timeout=1.0), uas).run()
    r = w.flow.result("", 0, w.now, None)
    assert w.methods() == ["INVITE", "CANCEL", "ACK", "BYE"]
    assert r.outcome is CallOutcome.NO_ANSWER and "after the CANCEL" in r.reason
    assert r.bye_status == 200 and r.cancel_status == 481 and not any(isinstance(a, StartMedia) for a in w.media)

# --------------------------------------------------------------------------- digest


def test_401_then_407_are_both_answered_on_new_invites():
    def uas(w, link, m):
        if m.method != "INVITE":
            if m.method == "BYE":
                w.reply(m, 200, "OK")
            return
        n = len(w.of("INVITE"))
        if n == 1:
            w.reply(m, 401, "Unauthorized", headers=challenge("WWW-Authenticate", "uas.example", "n1"))
        elif n == 2:
            w.reply(m, 407, "Proxy Authentication Required",
                    headers=challenge("Proxy-Authenticate", "proxy.example", "n2"))
        else:
            w.reply(m, 200, "OK", body=SDP, headers=(("Contact", f"<sip:bob@{THEM}>"),))
    w = Wire(call_flow(user="alice", password=PASSWORD), uas).run()
    invites = w.of("INVITE")
    r = w.flow.result("", 0, w.now, None)
    assert [i.cseq[0] for i in invites] == [1, 2, 3] and len({i.branch for i in invites}) == 3
    assert invites[0].header("Authorization") is None
    www, proxy = digest_params(invites[2].header("Authorization")), digest_params(invites[2].header(
        "Proxy-Authorization"))
    assert invites[1].header("Proxy-Authorization") is None and (www["realm"], proxy["realm"]) == (
        "uas.example", "proxy.example")
    for a in (www, proxy, digest_params(invites[1].header("Authorization"))):
        assert a["response"] == md5_response(a, "INVITE") and a["uri"] == f"sip:bob@{THEM}:5060"
    assert www["nc"] == "00000002"      # the 401's nonce answered a second time
    assert w.methods().count("ACK") == 3    # the 401 and the 407 by their transactions, the 200 by us
    assert r.outcome is CallOutcome.ANSWERED and r.invites == 3 and r.auth_realm == "uas.example"


def test_the_same_realm_challenging_fresh_credentials_again_is_an_auth_failure():
    def uas(w, link, m):
        if m.method == "INVITE":
            w.reply(m, 407, "Proxy Authentication Required",
                    headers=challenge("Proxy-Authenticate", "proxy.example", f"n{len(w.of('INVITE'))}"))
    w = Wire(call_flow(password="wrong"), uas).run()
    r = w.flow.result("", 0, w.now, None)
    assert r.outcome is CallOutcome.AUTH_FAILURE and 'rejected: 407' in r.reason and r.invites == 2


def register_flow(**kw):
    aor, hop = register_target(f"sip:alice@{THEM}", None)
    return RegisterFlow(aor, RegisterOptions(password=PASSWORD, **kw), hop, "cid@test", "ft",
                        cnonce=lambda: "0a4f113b")


def test_a_stale_nonce_is_retried_once_with_the_new_nonce_then_a_second_stale_fails():
    def registrar(stale_times):
        def peer(w, link, m):
            n = len(w.of("REGISTER"))
            if n == 1:
                w.reply(m, 401, "Unauthorized", headers=challenge("WWW-Authenticate", "r", "n1"))
            elif n <= 1 + stale_times:
                w.reply(m, 401, "Unauthorized", headers=challenge("WWW-Authenticate", "r", f"n{n}", stale=True))
            else:
                w.reply(m, 200, "OK", headers=(("Contact", f"<sip:alice@{US}:40002>;expires=60"),))
        return peer
    ok = Wire(register_flow(), registrar(1)).run()
    nonces = [digest_params(m.header("Authorization"))["nonce"] for m in ok.of("REGISTER")[1:]]
    assert ok.flow.outcome is Outcome.UP and nonces == ["n1", "n2"] and ok.flow.auth.stale_retries == 1
    assert all(digest_params(m.header("Authorization"))["response"] == md5_response(
        digest_params(m.header("Authorization")), "REGISTER") for m in ok.of("REGISTER")[1:])
    bad = Wire(register_flow(), registrar(2)).run()
    assert bad.flow.outcome is Outcome.AUTH_FAILURE and len(bad.of("REGISTER")) == 3


def test_a_challenge_to_the_bye_is_answered_once_with_credentials():
    def uas(w, link, m):
        answering_uas(w, link, m, ringing=False) if m.method == "INVITE" else None
        if m.method == "BYE":
            if m.header("Proxy-Authorization") is None:
                w.reply(m, 407, "Proxy Authentication Required",
                        headers=challenge("Proxy-Authenticate", "proxy.example", "bye1"))
            else:
                w.reply(m, 200, "OK")
    w = Wire(call_flow(user="alice", password=PASSWORD), uas).run()
    byes = w.of("BYE")
    r = w.flow.result("", 0, w.now, None)
    assert [b.cseq[0] for b in byes] == [2, 3] and byes[0].branch != byes[1].branch
    a = digest_params(byes[1].header("Proxy-Authorization"))
    assert a["nonce"] == "bye1" and a["uri"] == f"sip:bob@{THEM}:5060" and a["response"] == md5_response(a, "BYE")
    assert r.bye_status == 200 and r.outcome is CallOutcome.ANSWERED

# --------------------------------------------------------------------------- timers on the fake clock


def test_options_over_udp_retransmits_on_timer_e_and_ends_on_timer_f():
    flow = OptionsFlow(parse_target(f"sip:{THEM}"), ProbeOptions(timeout=60))
    w = Wire(flow, lambda w, link, m: None).run()
    times = [t for t, _, m in w.sent]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert gaps[:4] == [T1, 2 * T1, 4 * T1, 4.0] and set(gaps[4:]) == {4.0}   # capped at T2
    (r,) = w.reports
    assert r.outcome is Outcome.TIMEOUT and "Timer F" in r.reason and w.now == TIMER_F
    assert r.retransmissions == len(times) - 1


def test_an_invite_nobody_answers_ends_on_timer_b():
    w = Wire(call_flow(timeout=100), lambda w, link, m: None).run()
    r = w.flow.result("", 0, w.now, None)
    assert r.outcome is CallOutcome.TIMEOUT and "Timer B" in r.reason and w.now == TIMER_B
    assert len(w.of("INVITE")) == 7      # 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: Timer A doubling uncapped


def test_options_probes_reconnect_after_a_refused_link():
    flow = OptionsFlow(parse_target(f"sip:{THEM};transport=tcp"), ProbeOptions(count=2, interval=1, timeout=5))
    w = Wire(flow, lambda w, link, m: w.reply(m, 200, "OK"), refuse="main")
    w.run(limit=0.5)                           # the first probe's link is refused
    w.refuse = None
    w.run()
    assert [r.outcome for r in w.reports] == [Outcome.REFUSED, Outcome.UP]
    assert len(w.connects) == 2 and w.reports[1].connect == 0.001

# --------------------------------------------------------------------------- MESSAGE, and WebSocket identities


def test_message_is_challenged_then_accepted_with_202():
    flow = MessageFlow(parse_target(f"sip:bob@{THEM}"), MessageOptions(text="héllo", user="alice",
                                                                        password=PASSWORD))

    def peer(w, link, m):
        if m.header("Proxy-Authorization") is None:
            w.reply(m, 407, "Proxy Authentication Required", headers=challenge("Proxy-Authenticate", "p", "m1"))
        else:
            w.reply(m, 202, "Accepted", after=0.02)
    w = Wire(flow, peer).run()
    msgs = w.of("MESSAGE")
    r = flow.result("", 0, w.now)
    assert [m.cseq for m in msgs] == [(1, "MESSAGE"), (2, "MESSAGE")] and msgs[1].body == "héllo".encode()
    assert msgs[1].content_type.startswith("text/plain") and msgs[1].header("Contact") is None
    a = digest_params(msgs[1].header("Proxy-Authorization"))
    assert a["response"] == md5_response(a, "MESSAGE")
    assert (r.outcome, r.status, r.challenges, r.rtt, r.length) == (Outcome.UP, 202, 1, 0.02, 6)


def test_over_websocket_via_names_a_dot_invalid_host_and_contact_says_ws_and_ob():
    opts = RegisterOptions(password=PASSWORD, proxy="ws://192.0.2.10:5066/sip")
    aor, hop = register_target("sip:alice@example.com", opts.proxy)
    flow = RegisterFlow(aor, opts, hop, "cid@ws", "ft")
    w = Wire(flow, lambda w, link, m: w.reply(m, 200, "OK", headers=(
        ("Contact", "<sip:alice@abcdef.invalid;transport=ws;ob>;expires=60"),))).run()
    reg = w.of("REGISTER")[0]
    assert hop.transport == "ws" and hop.path == "/sip" and w.connects[0].hop.port == 5066
    assert reg.header("Via").startswith("SIP/2.0/WS abcdef.invalid;branch=z9hG4bK")
    assert reg.header("Contact") == "<sip:alice@abcdef.invalid;transport=ws;ob>"
    assert reg.header("Route") == "<sip:192.0.2.10:5066;transport=ws;lr>"
    assert flow.outcome is Outcome.UP and flow.steps[0].granted == 60      # our binding recognised


def test_a_refused_upgrade_fails_the_call_with_its_status():
    flow = call_flow(target=f"sip:bob@{THEM};transport=wss")

    class Refusing(Wire):
        def do(self, actions):
            for a in actions:
                if isinstance(a, Connect):
                    self.do(self.flow.failed(a.link, Failure(Outcome.ERROR, "WebSocket upgrade refused: HTTP 403 "
                                                                            "Forbidden", 403), self.now))
                else:
                    super().do([a])
    w = Refusing(flow, answering_uas).run()
    r = flow.result("", 0, w.now, None)
    assert (r.outcome, r.upgrade_status, r.invites) == (CallOutcome.ERROR, 403, 0) and "403" in r.reason
