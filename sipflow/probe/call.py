"""``sipflow probe call``: a real test call to the one URI the user names, and what it measured.

Owns the call's options and result, and ``CallFlow``, the sans-IO transaction user that decides what
to send when (INVITE, digest retry, PRACK, ACK, CANCEL, BYE, answers to the far end's requests, the
extra dialogs of a forked 2xx). The requests themselves and the dialog's state are ``probe.dialog``'s;
the result's formats (text, JSON, Nagios, Prometheus) ``probe.callout``'s. The INVITE and non-INVITE
client transactions (with the ACK of a rejection and CANCEL) are ``sip.transaction``'s; the sockets,
the clock and the RTP (``probe.media``) are run by ``probe.driver``; ``probe.flow.Credentials`` answers
401/407.

In the dialog (RFC 3261 §13.2.2.4, §12.2.1.1): ACK for 2xx is a new request (new branch, the INVITE's
CSeq number); BYE gets CSeq + 1. CANCEL (§9.1) copies the INVITE's Request-URI, top Via (same branch),
Route, From, To, Call-ID and CSeq number, and is only sent once a provisional response came.
"""
from __future__ import annotations

import enum
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.media.g711 import read_wav
from sipflow.probe.common import (Failure, Result, Target, TlsOptions, first_hop, hop_of, new_branch, parse_target,
                                  route_for, to_us, uri_host)
from sipflow.probe.dialog import Dialog, invite_request, sdp_offer
from sipflow.probe.driver import Driver
from sipflow.probe.flow import (Action, Connect, Credentials, Flow, Link, MediaAnswer, OpenMedia, Send, StartMedia,
                                StopMedia, Transactions, link_text, parse, seen_as)
from sipflow.probe.media import parse_dtmf
from sipflow.sip import builder
from sipflow.sip.message import SipMessage, parse_uri
from sipflow.sip.transaction import TIMER_B, ClientTransaction, InviteClientTransaction, InviteState, cancel_for

DEFAULT_DURATION = 5.0        # seconds from ACK to BYE
DEFAULT_SLACK = 30.0          # the default --timeout is --duration (+ --ring-timeout) + this
MAX_DURATION = 3600.0


# ---------------------------------------------------------------------------------------------------
# Options and result


class CallOutcome(enum.Enum):
    ANSWERED = "answered"            # 2xx, ACK sent (and BYE when the call ended)
    BUSY = "busy"                    # 486 or 600 (ACK sent)
    REJECTED = "rejected"            # another 3xx-6xx
    NO_ANSWER = "no answer"          # --ring-timeout: CANCEL sent (487, or the 200 raced it and got a BYE)
    TIMEOUT = "timeout"              # no final response (Timer B, or --timeout)
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    ERROR = "error"
    AUTH_FAILURE = "auth failure"


@dataclass(frozen=True)
class CallOptions:
    from_uri: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ring_timeout: Optional[float] = None
    duration: float = DEFAULT_DURATION
    dtmf: str = ""
    proxy: Optional[str] = None
    timeout: Optional[float] = None
    bind: Optional[str] = None
    family: Optional[int] = None
    audio: Optional[str] = None       # a WAV file (8000 Hz mono 16-bit PCM) sent instead of the tone
    tls: TlsOptions = TlsOptions()    # how a TLS hop's certificate is checked

    def __post_init__(self) -> None:
        if not 0 <= self.duration <= MAX_DURATION:
            raise ProbeError(f"duration must be 0..{MAX_DURATION:g} s")
        if self.ring_timeout is not None and not self.ring_timeout > 0:
            raise ProbeError("ring timeout must be positive")
        if self.timeout is not None and not self.timeout > 0:
            raise ProbeError("timeout must be positive")
        parse_dtmf(self.dtmf)

    @property
    def run_timeout(self) -> float:
        if self.timeout is not None:
            return self.timeout
        return self.duration + (self.ring_timeout or 0.0) + DEFAULT_SLACK


@dataclass(frozen=True, kw_only=True)
class CallResult(Result):
    """One test call. Times are seconds from a monotonic clock, rounded to microseconds, all counted from
    the first INVITE sent (so a challenge's round trip is in them), except ``bye`` and ``cancel``
    (their own round trips) and ``duration`` (ACK to BYE)."""
    from_uri: str
    provisional: Tuple[int, ...] = ()
    pdd: Optional[float] = None
    answer: Optional[float] = None
    setup: Optional[float] = None
    duration: Optional[float] = None
    bye: Optional[float] = None
    cancel: Optional[float] = None
    challenge: Optional[float] = None
    total: Optional[float] = None
    invites: int = 0
    ack_sent: bool = False
    bye_sent: bool = False
    bye_status: Optional[int] = None
    cancel_sent: bool = False
    cancel_status: Optional[int] = None
    hung_up_by: Optional[str] = None      # "us" or "them"
    auth_algorithm: Optional[str] = None
    auth_realm: Optional[str] = None
    route_set: Tuple[str, ...] = ()
    remote_target: Optional[str] = None
    rtp: Optional[dict] = None
    stray: int = 0
    pracks: int = 0                       # RFC 3262: reliable provisionals PRACKed
    prack_status: Optional[int] = None    # the last PRACK's final response
    prack_retransmitted: int = 0          # PRACKs sent again for retransmitted reliable provisionals

    @property
    def up(self) -> bool:
        return self.outcome is CallOutcome.ANSWERED and not (self.rtp or {}).get("one_way_audio")

    def to_dict(self) -> dict:
        return {
            "probe": "call", "target": self.target, "from": self.from_uri, "transport": self.transport,
            "remote": self.remote, "local": self.local, "proxy": self.proxy, "outcome": self.outcome.value,
            "status": self.status, "reason": self.reason, "provisional": list(self.provisional),
            "first_response": self.first_response, "pdd": self.pdd, "answer": self.answer, "setup": self.setup,
            "duration": self.duration, "bye": self.bye, "cancel": self.cancel, "challenge": self.challenge,
            "total": self.total, "elapsed": self.elapsed, "retransmissions": self.retransmissions,
            "invites": self.invites, "ack_sent": self.ack_sent, "bye_sent": self.bye_sent,
            "bye_status": self.bye_status, "cancel_sent": self.cancel_sent, "cancel_status": self.cancel_status,
            "hung_up_by": self.hung_up_by, "auth_algorithm": self.auth_algorithm, "auth_realm": self.auth_realm,
            "server": self.server, "call_id": self.call_id, "route_set": list(self.route_set),
            "remote_target": self.remote_target, "rtp": self.rtp, "stray": self.stray,
            "connect": self.connect, "handshake": self.handshake, "upgrade_status": self.upgrade_status,
            "seen_as": self.seen_as, "pracks": self.pracks, "prack_status": self.prack_status,
            "prack_retransmitted": self.prack_retransmitted,
        }


# ---------------------------------------------------------------------------------------------------
# Running a call


def probe_call(target: str, options: CallOptions = CallOptions(),
               on_message: Optional[Callable[[str, bytes], None]] = None,
               clock: Callable[[], float] = time.monotonic, recorder=None) -> CallResult:
    """Call ``target`` (``sip:user@host[:port][;transport=udp|tcp|tls|ws|wss]``), send the tone, hang up
    after ``options.duration`` and return what happened. ``on_message(direction, data)`` sees every SIP
    message sent (``">"``) and received (``"<"``). The whole run ends within ``options.run_timeout``."""
    samples = None
    if options.audio and options.audio != "tone":
        try:
            samples = read_wav(options.audio)
        except ValueError as e:
            raise ProbeError(f"--audio {e}") from None
    tgt = parse_target(target)
    if "@" not in tgt.uri.split(":", 1)[1].split(";")[0]:
        raise ProbeError(f"{target!r}: a call goes to a user, as in sip:bob@{uri_host(tgt.host)}")
    flow = CallFlow(tgt, options)
    driver = Driver(flow, options.run_timeout, family=options.family, bind=options.bind, tls=options.tls,
                    clock=clock, on_message=on_message, recorder=recorder, samples=samples)
    try:
        start, end = driver.run()
        return flow.result(driver.remote_text, start, end, driver.media_stats())
    finally:
        driver.close()


@dataclass
class Exchange:
    """A request of ours beside the INVITE (BYE, CANCEL): its transaction, when it first went out, and
    how it ended (the final status and when; no status: no answer)."""
    tx: Optional[ClientTransaction] = None
    sent_at: Optional[float] = None
    status: Optional[int] = None
    done_at: Optional[float] = None

    @property
    def rtt(self) -> Optional[float]:
        return to_us(self.done_at - self.sent_at) if self.status is not None else None


class CallFlow(Flow):
    """One test call, sans-IO. Links are named after their next hop ("main" is the first one);
    a request for a next hop that is not up yet waits for ``connected`` (or ``failed``)."""

    def __init__(self, target: Target, options: CallOptions, call_id: Optional[str] = None,
                 from_tag: Optional[str] = None, cnonce: Optional[Callable[[], str]] = None) -> None:
        self.target, self.opts = target, options
        self.hop = first_hop(target, options.proxy)
        self.route = route_for(options.proxy)
        self.call_id = call_id or f"{secrets.token_hex(12)}@sipflow"
        self.from_tag = from_tag or secrets.token_hex(6)
        self.from_uri = options.from_uri
        self.dtmf = parse_dtmf(options.dtmf)
        self.cnonce = cnonce
        self.auth: Optional[Credentials] = None       # made once From is known (its user is the default)
        self.links: Dict[str, Link] = {}
        self.waiting: Dict[str, List[Callable[[Optional[Link], Optional[Failure]], List[Action]]]] = {}
        self.txs = Transactions()
        self.sdp = b""
        self.cseq = 0
        self.invite: Optional[InviteClientTransaction] = None
        self.invites: List[InviteClientTransaction] = []
        self.auth_used: Tuple = ()
        self.challenge_at: Optional[float] = None
        self.first_sent: Optional[float] = None
        self.first_response_at: Optional[float] = None
        self.pdd_at: Optional[float] = None
        self.ring_started: Optional[float] = None
        self.provisional: List[int] = []
        self.final: Optional[SipMessage] = None
        self.answer_at: Optional[float] = None
        self.early_sdp: Optional[bytes] = None
        self.dialog: Optional[Dialog] = None
        self.dialog_link = "main"
        self.ack: Optional[bytes] = None
        self.ack_at: Optional[float] = None
        self.media_started = False
        self.bye_due: Optional[float] = None
        self.bye = Exchange()
        self.bye_retried = False
        self.cancel = Exchange()
        self.hung_up_by: Optional[str] = None
        self.outcome: Optional[CallOutcome] = None
        self.reason: Optional[str] = None
        self.failure: Optional[Failure] = None
        self.finished = False
        self.stray = 0
        self.pracks: Dict[Tuple[str, int], Tuple[bytes, str]] = {}   # (To-tag, RSeq) -> PRACK sent, its link
        self.forks: Dict[str, Tuple[bytes, str]] = {}   # To-tag of another fork's 2xx -> its ACK, its link
        self.prack_retransmitted = 0
        self.prack_status: Optional[int] = None

    # -- links --------------------------------------------------------------------------------------

    def start(self, now: float) -> List[Action]:
        return [Connect("main", self.hop)]

    def connected(self, link: Link, now: float) -> List[Action]:
        self.links[link.name] = link
        if link.name == "main" and self.auth is None:
            if not self.from_uri:
                self.from_uri = f"sip:sipflow@{uri_host(link.local[0])}"
            user = self.opts.user or parse_uri(self.from_uri).user or "sipflow"
            self.auth = Credentials(user, self.opts.password, self.cnonce)
            return [OpenMedia("main")]
        out: List[Action] = []
        for then in self.waiting.pop(link.name, []):
            out += then(link, None)
        return out

    def failed(self, link: str, failure: Failure, now: float) -> List[Action]:
        self.links.pop(link, None)
        if link in self.waiting:
            out: List[Action] = []
            for then in self.waiting.pop(link):
                out += then(None, failure)
            return out
        return self._transport_failed(failure, now)

    def _on_hop(self, uri: str, then) -> List[Action]:
        """Run ``then(link, failure)`` on the link to ``uri``'s next hop, opening it first if need be."""
        hop = hop_of(uri, self.hop.transport)
        name = f"{hop.transport}:{hop.host}:{hop.port}"
        if name in self.links:
            return then(self.links[name], None)
        first = name not in self.waiting
        self.waiting.setdefault(name, []).append(then)
        return [Connect(name, hop)] if first else []

    def media_opened(self, port: int, now: float) -> List[Action]:
        local_ip = self.links["main"].local[0]
        self.sdp = sdp_offer(local_ip, port, random.randrange(1, 2 ** 31))
        return self._send_invite(now)

    # -- time ---------------------------------------------------------------------------------------

    def _ring_deadline(self) -> Optional[float]:
        if (self.opts.ring_timeout is None or self.ring_started is None or self.cancel.tx is not None
                or self.dialog is not None or self.invite is None or self.invite.done):
            return None
        return self.ring_started + self.opts.ring_timeout

    def deadline(self) -> Optional[float]:
        completed = lambda tx: isinstance(tx, InviteClientTransaction) and tx.state is InviteState.COMPLETED  # noqa
        times = [self.txs.deadline(completed), self._ring_deadline(),
                 self.bye_due if self.bye.tx is None else None]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def timer(self, now: float) -> List[Action]:
        out: List[Action] = []
        for tx, sends in self.txs.fire(now):
            out += sends
            out += self._after(tx, now)
            if self.finished:
                return out
        ring = self._ring_deadline()
        if ring is not None and now >= ring:
            out += self._send_cancel(now)
        if self.bye_due is not None and self.bye.tx is None and now >= self.bye_due:
            out += self._send_bye(now)
        return out

    def expire(self, now: float) -> List[Action]:
        """--timeout: end the run now, leaving nothing behind: hang up a call, cancel a ringing one
        (best effort: the driver does not wait for the answers)."""
        out: List[Action] = []
        if self.dialog is not None and self.bye.tx is None and self.hung_up_by is None:
            out += self._send_bye(now)
            self.reason = (self.reason or "") + f"; --timeout {self.opts.run_timeout:g} s ended the call"
        elif self.dialog is None and self.invite is not None and self.invite.state is InviteState.PROCEEDING \
                and self.cancel.tx is None:
            out += self._send_cancel(now)
        if self.outcome is None and self.cancel.sent_at is not None and self.cancel.sent_at < now \
                and self.opts.ring_timeout is not None:
            self.outcome = CallOutcome.NO_ANSWER   # we gave up on it; the far end never confirmed (no 487)
            self.reason = (f"no answer within --ring-timeout {self.opts.ring_timeout:g} s: CANCEL sent, but no "
                           f"final response before --timeout {self.opts.run_timeout:g} s")
        elif self.outcome is None:
            what = "ringing, no answer" if self.provisional else "no final response"
            self.outcome = CallOutcome.TIMEOUT
            self.reason = f"{what} before --timeout {self.opts.run_timeout:g} s" + (
                " (CANCEL sent)" if self.cancel.tx is not None else "")
        elif self.bye.tx is not None and self.bye.done_at is None and "--timeout" not in (self.reason or ""):
            self.reason = (self.reason or "") + "; no response to the BYE before --timeout"
        return out + self._finish(now)

    # -- SIP in -------------------------------------------------------------------------------------

    def received(self, link: str, data: bytes, now: float) -> List[Action]:
        msg = parse(data, self.links.get(link))
        if msg is None:
            self.stray += 1
            return []
        if msg.method is not None:
            return self._on_request(msg, link, now)
        tx = self.txs.match(msg)
        if tx is None:
            self.stray += 1
            return []
        if self.first_response_at is None:
            self.first_response_at = now
        if isinstance(tx, InviteClientTransaction) and 200 <= msg.status < 300 and tx.state is InviteState.TERMINATED:
            return self._on_2xx(msg, now)   # §13.2.2.4: ACK every retransmission of the 2xx
        out: List[Action] = [Send(self.txs.link_of(tx), data) for data in tx.on_response(msg, now)]
        if tx is self.invite:
            if msg.status < 200 and tx.state is InviteState.PROCEEDING:
                out += self._on_provisional(msg, now)
            elif 200 <= msg.status < 300:
                out += self._on_2xx(msg, now)
            elif msg.status >= 300 and tx.acks == 1 and tx.final is msg:
                out += self._on_rejected(msg, now)
        else:
            out += self._after(tx, now)
        return out

    def _on_request(self, msg: SipMessage, link: str, now: float) -> List[Action]:
        d = self.dialog
        ours = d is not None and msg.call_id == d.call_id
        if msg.method == "ACK":
            return []
        if msg.method == "BYE" and ours:
            out: List[Action] = [Send(link, builder.response(msg, 200, "OK", self.from_tag))]
            if self.hung_up_by is None:
                self.hung_up_by = "them"
                self.bye_due = None
                self.reason = "the far end hung up"
                out += self._finish(now)
            return out
        if msg.method == "OPTIONS" or (ours and msg.method in ("INFO", "UPDATE", "NOTIFY")):
            status, reason = 200, "OK"
        elif not ours:
            status, reason = 481, "Call/Transaction Does Not Exist"
        else:   # a re-INVITE, REFER...: a probe does not change its call
            status, reason = 501, "Not Implemented"
        return [Send(link, builder.response(msg, status, reason, self.from_tag))]

    def _on_provisional(self, msg: SipMessage, now: float) -> List[Action]:
        again, out = self._reliable_provisional(msg, now)
        if again:
            return out    # a retransmission of a reliable provisional we already PRACKed
        self.provisional.append(msg.status)
        if msg.body and msg.content_type == "application/sdp":
            self.early_sdp = msg.body    # early media (183): the answer, unless the 2xx brings its own
        if self.pdd_at is None and 180 <= msg.status < 190:
            self.pdd_at = now
        if self.ring_started is None:
            self.ring_started = now   # CANCEL is allowed from here on (§9.1)
        return out

    def _early_dialog(self, msg: SipMessage, tag: str, cseq: int) -> Dialog:
        return Dialog(call_id=self.call_id, local_uri=self.from_uri, local_tag=self.from_tag,
                      remote_uri=self.target.uri, remote_tag=tag,
                      remote_target=msg.contacts[0].uri.raw if msg.contacts else self.target.uri,
                      route_set=tuple(reversed(msg.header_values("Record-Route"))), cseq=cseq)

    def _reliable_provisional(self, msg: SipMessage, now: float) -> Tuple[bool, List[Action]]:
        """RFC 3262 §4: a 101-199 with Require: 100rel and RSeq is PRACKed in its early dialog (To-tag,
        Contact, Record-Route of the 1xx), RAck = RSeq, the INVITE's CSeq number and method. A
        retransmission of it (same To-tag and RSeq) gets the same PRACK again: (True, that PRACK)."""
        require = {t.strip().lower() for v in msg.header_values("Require") for t in v.split(",")}
        rseq_text = (msg.header("RSeq") or "").strip()
        if msg.status == 100 or "100rel" not in require or not rseq_text.isdigit():
            return False, []
        tag = (msg.to.tag if msg.to else "") or ""
        key = (tag, int(rseq_text))
        if key in self.pracks:
            data, link = self.pracks[key]
            self.prack_retransmitted += 1
            return True, [Send(link, data)]
        early = self._early_dialog(msg, tag, self.invite.message.cseq[0])

        def prack(link: Optional[Link], failure: Optional[Failure]) -> List[Action]:
            link = link or self.links["main"]    # an unreachable early next hop: try the first hop
            self.cseq += 1
            branch = new_branch()
            request = early.request("PRACK", link.transport, link.local, branch, self.cseq,
                                    (("RAck", f"{key[1]} {early.cseq} INVITE"),), sent_by=link.sent_by)
            self.txs.add(ClientTransaction(request, branch, "PRACK", link.reliable, now), link.name)
            self.pracks[key] = (request, link.name)
            return [Send(link.name, request)]
        return False, self._on_hop(early.next_hop(), prack)

    def _on_2xx(self, msg: SipMessage, now: float) -> List[Action]:
        tag = (msg.to.tag if msg.to is not None else None) or ""
        if self.dialog is not None:
            if tag != self.dialog.remote_tag:
                return self._on_forked_2xx(msg, tag, now)
            return [Send(self.dialog_link, self.ack)] if self.ack is not None else []
        self.final = msg
        self.answer_at = now
        self.dialog = self._early_dialog(msg, tag, msg.cseq[0] or self.cseq)

        def ack(link: Optional[Link], failure: Optional[Failure]) -> List[Action]:
            if link is None:
                self.outcome, self.reason = CallOutcome.ERROR, f"cannot reach the dialog's next hop: {failure.reason}"
                return self._finish(now)
            self.dialog_link = link.name
            self.ack = self.dialog.request("ACK", link.transport, link.local, new_branch(), self.dialog.cseq,
                                           sent_by=link.sent_by)
            self.ack_at = now
            out: List[Action] = [Send(link.name, self.ack), MediaAnswer(msg.body or self.early_sdp or None)]
            if self.cancel.tx is not None:   # the 200 OK crossed our CANCEL: the call exists, end it
                self.outcome = CallOutcome.NO_ANSWER
                self.reason = f"answered ({msg.status}) after the CANCEL: ACK and BYE sent"
                return out + self._send_bye(now)
            self.outcome = CallOutcome.ANSWERED
            self.reason = f"{msg.status} {msg.reason or ''}".rstrip()
            self.media_started = True
            self.bye_due = self.ack_at + self.opts.duration
            return out + [StartMedia(self.ack_at, self.dtmf)]
        return self._on_hop(self.dialog.next_hop(), ack)

    def _on_forked_2xx(self, msg: SipMessage, tag: str, now: float) -> List[Action]:
        """A 2xx from another fork (another To-tag) after the call was answered: RFC 3261 §13.2.2.4 wants
        it ACKed, and a UAC that keeps one call ends the extra dialog with a BYE. Its retransmissions get
        the same ACK again; the BYE is sent once and not waited for (the call we measure goes on)."""
        if tag in self.forks:
            ack, link = self.forks[tag]
            return [Send(link, ack)]
        fork = self._early_dialog(msg, tag, msg.cseq[0] or self.cseq)

        def ack_and_bye(link: Optional[Link], failure: Optional[Failure]) -> List[Action]:
            link = link or self.links["main"]
            ack = fork.request("ACK", link.transport, link.local, new_branch(), fork.cseq, sent_by=link.sent_by)
            self.forks[tag] = (ack, link.name)
            bye = fork.request("BYE", link.transport, link.local, new_branch(), fork.cseq + 1, sent_by=link.sent_by)
            return [Send(link.name, ack), Send(link.name, bye)]
        return self._on_hop(fork.next_hop(), ack_and_bye)

    def _on_rejected(self, msg: SipMessage, now: float) -> List[Action]:
        self.final = msg
        status = msg.status
        text = f"{status} {msg.reason or ''}".rstrip()
        if status in (401, 407) and self.cancel.tx is None:
            if self.challenge_at is None:
                self.challenge_at = now
            why = self.auth.challenged(msg)
            if why is None and len(self.invites) >= 4:
                why = f"{text} after {len(self.invites)} INVITEs"
            if why is not None:
                return self._fail(CallOutcome.AUTH_FAILURE, why, now)
            self.ring_started = None
            return self._send_invite(now)
        if self.cancel.tx is not None and status == 487:
            outcome = CallOutcome.NO_ANSWER
            text = f"no answer within --ring-timeout {self.opts.ring_timeout:g} s: CANCEL sent, {text}"
        elif status in (486, 600):
            outcome = CallOutcome.BUSY
        elif status == 403 and self.auth.sessions:
            outcome, text = CallOutcome.AUTH_FAILURE, f"credentials rejected: {text}"
        else:
            outcome = CallOutcome.REJECTED
        return self._fail(outcome, text, now)

    def _after(self, tx, now: float) -> List[Action]:
        """A non-INVITE transaction (PRACK, CANCEL, BYE) or a timer of the INVITE moved on."""
        if tx is self.invite and tx.state is InviteState.TERMINATED and tx.final is None and self.outcome is None:
            return self._fail(CallOutcome.TIMEOUT, f"no response to the INVITE within {TIMER_B:g} s (Timer B)", now)
        if tx.method == "PRACK" and tx.final is not None and tx.final.status >= 200:
            self.prack_status = tx.final.status
        if tx is self.cancel.tx and tx.done and self.cancel.status is None:
            self.cancel.status = tx.final.status if tx.final is not None else None
            self.cancel.done_at = tx.final_at
        if tx is self.bye.tx and tx.done and self.bye.done_at is None:
            final = tx.final
            if final is not None and final.status in (401, 407) and not self.bye_retried \
                    and self.opts.password is not None:
                self.bye_retried = True           # §22.2: a challenge to the BYE is answered once
                self.auth.next_step()
                if self.auth.challenged(final) is None:
                    self.bye.tx = None
                    return self._send_bye(now)
            self.bye.status = final.status if final is not None else None
            self.bye.done_at = tx.final_at if final is not None else now
            if final is None and self.outcome is CallOutcome.ANSWERED:
                self.reason += "; no response to the BYE"
            return self._finish(now)
        return []

    # -- SIP out ------------------------------------------------------------------------------------

    def _send_invite(self, now: float) -> List[Action]:
        link = self.links["main"]
        branch = new_branch()
        self.cseq += 1
        auth = self.auth.headers("INVITE", self.target.uri)
        if auth:
            self.auth_used = self.auth.sent
        request = invite_request(self.target.uri, self.from_uri, link.transport, link.local, branch, self.call_id,
                                 self.from_tag, self.cseq, self.sdp, auth, self.route, sent_by=link.sent_by)
        tx = InviteClientTransaction(request, branch, link.reliable, now)
        if self.first_sent is None:
            self.first_sent = now
        self.invite = tx
        self.invites.append(tx)
        self.txs.add(tx, "main")
        return [Send("main", request)]

    def _send_cancel(self, now: float) -> List[Action]:
        request = cancel_for(self.invite.message)
        tx = ClientTransaction(request, self.invite.branch, "CANCEL", self.invite.reliable, now)
        self.cancel.tx = tx
        self.cancel.sent_at = now
        self.txs.add(tx, "main")
        return [Send("main", request)]

    def _send_bye(self, now: float) -> List[Action]:
        self.bye_due = None
        self.hung_up_by = self.hung_up_by or "us"
        self.cseq += 1
        branch = new_branch()
        link = self.links.get(self.dialog_link) or self.links["main"]
        ruri = self.dialog.request_uri()
        auth = self.auth.headers("BYE", ruri) if self.bye_retried else ()
        request = self.dialog.request("BYE", link.transport, link.local, branch, self.cseq, auth,
                                      sent_by=link.sent_by)
        tx = ClientTransaction(request, branch, "BYE", link.reliable, now)
        self.bye.tx = tx
        if self.bye.sent_at is None:
            self.bye.sent_at = now
        self.txs.add(tx, link.name)
        return [StopMedia(now), Send(link.name, request)]

    def _fail(self, outcome: CallOutcome, reason: str, now: float) -> List[Action]:
        self.outcome, self.reason = outcome, reason
        return self._finish(now)

    def _transport_failed(self, failure: Failure, now: float) -> List[Action]:
        if self.outcome is None:
            self.outcome, self.reason, self.failure = CallOutcome(failure.outcome.value), failure.reason, failure
        else:   # the call was answered (or given up) first: say what ended it
            self.reason = (self.reason or "") + f"; then {failure.reason}"
        return self._finish(now)

    def _finish(self, now: float) -> List[Action]:
        self.finished = True
        return [StopMedia(now)]

    # -- the result ---------------------------------------------------------------------------------

    def result(self, remote: str, start: float, end: float, media_stats: Optional[dict]) -> CallResult:
        t0 = self.first_sent

        def since(t):
            return to_us(t - t0) if t is not None and t0 is not None else None
        final = self.final
        main = self.links.get("main")
        auth = next((a for a in self.auth_used if a.header == "Authorization"),
                    self.auth_used[0] if self.auth_used else None)
        rtp = media_stats if (self.media_started or self.dialog is not None) else None
        last = max([t for t in (self.bye.done_at, self.cancel.done_at, self.ack_at,
                                self.invite.final_at if self.invite else None) if t is not None], default=None)
        server = (final.header("Server") or final.header("User-Agent")) if final is not None else None
        return CallResult(
            target=self.target.uri, from_uri=self.from_uri or "", transport=self.hop.transport,
            remote=remote, local=link_text(main), outcome=self.outcome or CallOutcome.ERROR,
            status=final.status if final is not None else None,
            reason=self.reason or "the run ended without an answer", provisional=tuple(self.provisional),
            first_response=since(self.first_response_at), pdd=since(self.pdd_at), answer=since(self.answer_at),
            setup=since(self.ack_at),
            duration=to_us(self.bye.sent_at - self.ack_at) if self.bye.sent_at and self.ack_at else None,
            bye=self.bye.rtt, cancel=self.cancel.rtt,
            challenge=since(self.challenge_at), total=since(last), elapsed=to_us(end - start),
            retransmissions=self.txs.retransmissions,
            invites=len(self.invites), ack_sent=self.ack_at is not None or any(t.acks for t in self.invites),
            bye_sent=self.bye.sent_at is not None, bye_status=self.bye.status,
            cancel_sent=self.cancel.tx is not None, cancel_status=self.cancel.status, hung_up_by=self.hung_up_by,
            auth_algorithm=auth.algorithm if auth else None, auth_realm=auth.realm if auth else None,
            server=server, call_id=self.call_id if self.invites else None,
            route_set=self.dialog.route_set if self.dialog else (),
            remote_target=self.dialog.remote_target if self.dialog else None, proxy=self.opts.proxy, rtp=rtp,
            stray=self.stray, connect=to_us(main.connect if main else None),
            handshake=to_us(main.handshake if main else None), seen_as=seen_as(final, main),
            upgrade_status=self.failure.upgrade_status if self.failure else None,
            pracks=len(self.pracks), prack_status=self.prack_status,
            prack_retransmitted=self.prack_retransmitted)
