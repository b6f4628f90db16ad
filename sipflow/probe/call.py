"""``sipflow probe call``: a real test call to the one URI the user names, and what it measured.

Owns the call's options and result, and its socket driver (``_CallDriver``: signalling and media
sockets, the monotonic clock, ``select``), which decides what to send when. The requests themselves and
the dialog's state are ``probe.dialog``'s; the result's formats (text, JSON, Nagios, Prometheus)
``probe.callout``'s. The INVITE and non-INVITE client transactions (with the ACK of a rejection and
CANCEL) are ``probe.transaction``'s; the target, channel and Nagios/Prometheus helpers
``probe.common``'s; the RTP sent and measured ``probe.media``'s; ``sip.digest`` answers 401/407 and
``sip.sdp`` reads the answer.

In the dialog (RFC 3261 §13.2.2.4, §12.2.1.1): ACK for 2xx is a new request (new branch, the INVITE's
CSeq number); BYE gets CSeq + 1. CANCEL (§9.1) copies the INVITE's Request-URI, top Via (same branch),
Route, From, To, Call-ID and CSeq number, and is only sent once a provisional response came.
"""
from __future__ import annotations

import enum
import random
import secrets
import select
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from sipflow.sip.digest import DigestSession, challenges_from, choose
from sipflow.errors import ParseError, ProbeError
from sipflow.media.g711 import read_wav
from sipflow.probe.common import (Channel, DEFAULT_PORT, DEFAULT_TLS_PORT, describe_failure, new_branch, parse_bind,
                                  parse_target, resolve_target, Target, TlsOptions, to_us, uri_host)
from sipflow.probe.dialog import Dialog, invite_request, response_to, sdp_offer
from sipflow.probe.media import Media, parse_dtmf
from sipflow.probe.transaction import (TIMER_B, ClientTransaction, InviteClientTransaction,
                                       InviteState, cancel_for)
from sipflow.sip.message import SipMessage, parse_message, parse_uri

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


@dataclass(frozen=True)
class CallResult:
    """One test call. Times are seconds from a monotonic clock, rounded to microseconds, all counted from
    the first INVITE sent (so a challenge's round trip is in them), except ``bye`` and ``cancel``
    (their own round trips) and ``duration`` (ACK to BYE)."""
    target: str
    from_uri: str
    transport: str
    remote: str
    local: str
    outcome: CallOutcome
    status: Optional[int] = None
    reason: Optional[str] = None
    provisional: Tuple[int, ...] = ()
    first_response: Optional[float] = None
    pdd: Optional[float] = None
    answer: Optional[float] = None
    setup: Optional[float] = None
    duration: Optional[float] = None
    bye: Optional[float] = None
    cancel: Optional[float] = None
    challenge: Optional[float] = None
    total: Optional[float] = None
    elapsed: Optional[float] = None
    retransmissions: int = 0
    invites: int = 0
    ack_sent: bool = False
    bye_sent: bool = False
    bye_status: Optional[int] = None
    cancel_sent: bool = False
    cancel_status: Optional[int] = None
    hung_up_by: Optional[str] = None      # "us" or "them"
    auth_algorithm: Optional[str] = None
    auth_realm: Optional[str] = None
    server: Optional[str] = None
    call_id: Optional[str] = None
    route_set: Tuple[str, ...] = ()
    remote_target: Optional[str] = None
    proxy: Optional[str] = None
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
            "pracks": self.pracks, "prack_status": self.prack_status,
            "prack_retransmitted": self.prack_retransmitted,
        }


# ---------------------------------------------------------------------------------------------------
# The driver


def probe_call(target: str, options: CallOptions = CallOptions(),
               on_message: Optional[Callable[[str, bytes], None]] = None,
               clock: Callable[[], float] = time.monotonic) -> CallResult:
    """Call ``target`` (``sip:user@host[:port][;transport=udp|tcp]``), send the tone, hang up after
    ``options.duration`` and return what happened. ``on_message(direction, data)`` sees every SIP
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
    route = None
    hop = tgt
    if options.proxy:
        hop = parse_target(options.proxy)
        if parse_uri(hop.uri).param("transport") is None and hop.transport != tgt.transport:
            hop = Target(uri=hop.uri, host=hop.host, port=hop.port, transport=tgt.transport)
        route = hop.uri if parse_uri(hop.uri).param("lr") is not None else hop.uri + ";lr"
    driver = _CallDriver(tgt, hop, route, options, clock, on_message)
    driver.samples = samples
    return driver.run()


class _CallDriver:
    def __init__(self, target: Target, hop: Target, route: Optional[str], options: CallOptions, clock,
                 on_message) -> None:
        self.target, self.hop, self.route, self.opts, self.clock = target, hop, route, options, clock
        self.on_message = on_message
        self.bind = parse_bind(options.bind) if options.bind else None
        self.call_id = f"{secrets.token_hex(12)}@sipflow"
        self.from_tag = secrets.token_hex(6)
        self.dtmf = parse_dtmf(options.dtmf)
        self.channel: Optional[Channel] = None
        self.dialog_channel: Optional[Channel] = None
        self.media: Optional[Media] = None
        self.invite: Optional[InviteClientTransaction] = None
        self.invites: List[InviteClientTransaction] = []
        self.txs: Dict[Tuple[str, str], object] = {}     # (branch, method) -> transaction
        self.cseq = 0
        self.sessions: Dict[Tuple[str, str], DigestSession] = {}
        self.answered_realms: set = set()
        self.stale_left = 1
        self.auth_used = None
        self.challenge_at: Optional[float] = None
        self.first_sent: Optional[float] = None
        self.first_response_at: Optional[float] = None
        self.pdd_at: Optional[float] = None
        self.ring_started: Optional[float] = None
        self.provisional: List[int] = []
        self.final: Optional[SipMessage] = None
        self.answer_at: Optional[float] = None
        self.ack: Optional[bytes] = None
        self.ack_at: Optional[float] = None
        self.dialog: Optional[Dialog] = None
        self.bye_due: Optional[float] = None
        self.bye_tx: Optional[ClientTransaction] = None
        self.bye_sent_at: Optional[float] = None
        self.bye_status: Optional[int] = None
        self.bye_done_at: Optional[float] = None
        self.cancel_tx: Optional[ClientTransaction] = None
        self.cancel_sent_at: Optional[float] = None
        self.cancel_status: Optional[int] = None
        self.cancel_done_at: Optional[float] = None
        self.hung_up_by: Optional[str] = None
        self.outcome: Optional[CallOutcome] = None
        self.reason: Optional[str] = None
        self.finished = False
        self.stray = 0
        self.from_uri = options.from_uri
        self._bye_retried = False
        self.early_sdp: Optional[bytes] = None
        self.pracks: Dict[Tuple[str, int], Tuple[bytes, Channel]] = {}   # (To-tag, RSeq) -> PRACK sent
        self.forks: Dict[str, Tuple[bytes, Channel]] = {}   # To-tag of another fork's 2xx -> its ACK
        self.prack_retransmitted = 0
        self.prack_status: Optional[int] = None
        self.tx_channel: Dict[Tuple[str, str], Channel] = {}
        self.extra_channels: List[Channel] = []
        self.samples: Optional[List[int]] = None        # --audio FILE.wav, read by probe_call
        self.remote_text = ""

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> CallResult:
        start = self.clock()
        deadline = start + self.opts.run_timeout
        family, remote = resolve_target(self.hop, self.opts.family, self.bind, deadline - start)
        self.remote_text = f"{uri_host(remote[0])}:{remote[1]}"
        try:
            try:
                self.channel = Channel(self.hop, family, remote, self.bind, deadline - self.clock(), self.clock,
                                        self.opts.tls)
                local_ip = self.channel.local[0]
                if not self.from_uri:
                    self.from_uri = f"sip:sipflow@{uri_host(local_ip)}"
                self.media = Media(local_ip, family)
                self.media.samples = self.samples
                self.sdp = sdp_offer(local_ip, self.media.local[1], random.randrange(1, 2 ** 31))
                self._send_invite()
            except (OSError, EOFError) as e:
                self._transport_failed(e)
            while not self.finished:
                now = self.clock()
                if now >= deadline:
                    self._deadline(now)
                    break
                self._fire_timers(now)
                if not self.finished:
                    self._due(now)
                if self.finished:
                    break
                self._wait(now, deadline)
        finally:
            end = min(self.clock(), deadline)
            if self.media:
                self.media.stop(end)
            for ch in dict.fromkeys((self.channel, self.dialog_channel, *self.extra_channels)):
                if ch:
                    ch.close()
        result = self._result(start, end)
        if self.media:
            self.media.close()
        return result

    def _trace(self, direction: str, data: bytes) -> None:
        if self.on_message:
            self.on_message(direction, data)

    def _send(self, data: bytes, channel: Optional[Channel] = None) -> None:
        self._trace(">", data)
        (channel or self.channel).send(data)

    def _send_invite(self) -> None:
        now = self.clock()
        branch = new_branch()
        self.cseq += 1
        auths = tuple(s.authorize("INVITE", self.target.uri) for s in self.sessions.values())
        if auths:
            self.auth_used = auths
        request = invite_request(self.target.uri, self.from_uri, self.hop.transport, self.channel.local, branch,
                                 self.call_id, self.from_tag, self.cseq, self.sdp,
                                 tuple((a.header, a.value) for a in auths), self.route)
        tx = InviteClientTransaction(request, branch, self.channel.reliable, now)
        if self.first_sent is None:
            self.first_sent = now
        self.invite = tx
        self.invites.append(tx)
        self.txs[(branch, "INVITE")] = tx
        self._send(request)

    def _fire_timers(self, now: float) -> None:
        for key, tx in list(self.txs.items()):
            d = tx.next_deadline()
            if d is None or d > now:
                continue
            ch = self.tx_channel.get(key) or (
                self.dialog_channel if key[1] == "BYE" and self.dialog_channel else self.channel)
            for data in tx.on_timer(now):
                try:
                    self._send(data, ch)
                except (OSError, EOFError) as e:
                    self._transport_failed(e)
                    return
            self._after(tx, now)

    def _due(self, now: float) -> None:
        m = self.media
        if m is not None:
            m.send_due(now)
        if (self.opts.ring_timeout is not None and self.ring_started is not None and self.cancel_tx is None
                and self.dialog is None and self.invite is not None and not self.invite.done
                and now >= self.ring_started + self.opts.ring_timeout):
            self._send_cancel(now)
        if self.bye_due is not None and self.bye_tx is None and now >= self.bye_due:
            self._send_bye(now)

    def _wait(self, now: float, deadline: float) -> None:
        wake = [deadline]
        for tx in self.txs.values():
            d = tx.next_deadline()
            if d is not None and not (isinstance(tx, InviteClientTransaction) and tx.state is InviteState.COMPLETED):
                wake.append(d)
        if self.media and self.media.due() is not None:
            wake.append(self.media.due())
        if self.opts.ring_timeout is not None and self.ring_started is not None and self.cancel_tx is None:
            wake.append(self.ring_started + self.opts.ring_timeout)
        if self.bye_due is not None and self.bye_tx is None:
            wake.append(self.bye_due)
        delay = max(0.0, min(wake) - now)
        chans = [c for c in (self.channel, self.dialog_channel, *self.extra_channels) if c is not None]
        chans = list(dict.fromkeys(chans))
        rd = [c.sock for c in chans] + ([self.media.sock] if self.media else [])
        wr = [c.sock for c in chans if c.wants_write]
        readable, writable, _ = select.select(rd, wr, [], delay)
        for c in chans:
            try:
                if c.sock in writable:
                    c.flush()
                if c.sock in readable:
                    for data in c.receive():
                        self._on_message(data, c)
            except (OSError, EOFError) as e:
                self._transport_failed(e)
                return
        if self.media and self.media.sock in readable:
            self.media.receive(self.clock())

    # -- SIP in ----------------------------------------------------------------------------------------

    def _on_message(self, data: bytes, channel: Channel) -> None:
        now = self.clock()
        self._trace("<", data)
        try:
            msg = parse_message(data, datagram=not channel.reliable)
        except ParseError:
            self.stray += 1
            return
        if msg.method is not None:
            self._on_request(msg, channel)
            return
        tx = self.txs.get((msg.branch or "", msg.cseq[1] or ""))
        if tx is None or not tx.matches(msg):
            self.stray += 1
            return
        if self.first_response_at is None:
            self.first_response_at = now
        if isinstance(tx, InviteClientTransaction) and 200 <= msg.status < 300 and tx.state is InviteState.TERMINATED:
            self._on_2xx(msg, now)   # §13.2.2.4: ACK every retransmission of the 2xx
            return
        out = tx.on_response(msg, now)
        for data in out:
            try:
                self._send(data)
            except (OSError, EOFError) as e:
                self._transport_failed(e)
                return
        if isinstance(tx, InviteClientTransaction) and tx is self.invite:
            if msg.status < 200 and tx.state in (InviteState.PROCEEDING,):
                self._on_provisional(msg, now)
            elif 200 <= msg.status < 300:
                self._on_2xx(msg, now)
            elif msg.status >= 300 and tx.acks == 1 and tx.final is msg:
                self._on_rejected(msg, now)
        else:
            self._after(tx, now)

    def _on_request(self, msg: SipMessage, channel: Channel) -> None:
        d = self.dialog
        ours = d is not None and msg.call_id == d.call_id
        if msg.method == "ACK":
            return
        if msg.method == "BYE" and ours:
            self._send(response_to(msg, 200, "OK", self.from_tag), channel)
            if self.hung_up_by is None:
                self.hung_up_by = "them"
                now = self.clock()
                if self.media:
                    self.media.stop(now)
                self.bye_due = None
                self.reason = "the far end hung up"
                self._finish()
            return
        if msg.method == "OPTIONS" or (ours and msg.method in ("INFO", "UPDATE", "NOTIFY")):
            status, reason = 200, "OK"
        elif not ours:
            status, reason = 481, "Call/Transaction Does Not Exist"
        else:   # a re-INVITE, REFER...: a probe does not change its call
            status, reason = 501, "Not Implemented"
        self._send(response_to(msg, status, reason, self.from_tag), channel)

    def _on_provisional(self, msg: SipMessage, now: float) -> None:
        if self._reliable_provisional(msg, now):
            return    # a retransmission of a reliable provisional we already PRACKed
        self.provisional.append(msg.status)
        if msg.body and msg.content_type == "application/sdp":
            self.early_sdp = msg.body    # early media (183): the answer, unless the 2xx brings its own
        if msg.status != 100:
            if self.pdd_at is None and 180 <= msg.status < 190:
                self.pdd_at = now
        if self.ring_started is None:
            self.ring_started = now   # CANCEL is allowed from here on (§9.1)

    def _reliable_provisional(self, msg: SipMessage, now: float) -> bool:
        """RFC 3262 §4: a 101-199 with Require: 100rel and RSeq is PRACKed in its early dialog (To-tag,
        Contact, Record-Route of the 1xx), RAck = RSeq, the INVITE's CSeq number and method. A
        retransmission of it (same To-tag and RSeq) gets the same PRACK again. True for a retransmission."""
        require = {t.strip().lower() for v in msg.header_values("Require") for t in v.split(",")}
        rseq_text = (msg.header("RSeq") or "").strip()
        if msg.status == 100 or "100rel" not in require or not rseq_text.isdigit():
            return False
        tag = (msg.to.tag if msg.to else "") or ""
        key = (tag, int(rseq_text))
        if key in self.pracks:
            data, ch = self.pracks[key]
            self.prack_retransmitted += 1
            try:
                self._send(data, ch)
            except (OSError, EOFError) as e:
                self._transport_failed(e)
            return True
        contact = msg.contacts[0].uri.raw if msg.contacts else self.target.uri
        early = Dialog(call_id=self.call_id, local_uri=self.from_uri, local_tag=self.from_tag,
                       remote_uri=self.target.uri, remote_tag=tag, remote_target=contact,
                       route_set=tuple(reversed(msg.header_values("Record-Route"))), cseq=self.invite.message.cseq[0])
        try:
            ch = self._channel_for(early.next_hop())
        except ProbeError:
            ch = self.channel
        if ch is not self.channel and ch not in self.extra_channels:
            self.extra_channels.append(ch)
        self.cseq += 1
        branch = new_branch()
        request = early.request("PRACK", self.hop.transport, ch.local, branch, self.cseq,
                                (("RAck", f"{key[1]} {early.cseq} INVITE"),))
        tx = ClientTransaction(request, branch, "PRACK", ch.reliable, now)
        self.txs[(branch, "PRACK")] = tx
        self.tx_channel[(branch, "PRACK")] = ch
        self.pracks[key] = (request, ch)
        try:
            self._send(request, ch)
        except (OSError, EOFError) as e:
            self._transport_failed(e)
        return False

    def _on_2xx(self, msg: SipMessage, now: float) -> None:
        if self.dialog is not None:
            tag = msg.to.tag if msg.to is not None else None
            if tag == self.dialog.remote_tag:
                if self.ack is not None:
                    self._send(self.ack, self.dialog_channel)
            else:
                self._on_forked_2xx(msg, tag or "")
            return
        self.final = msg
        self.answer_at = now
        contact = msg.contacts[0].uri.raw if msg.contacts else self.target.uri
        rr = tuple(reversed(msg.header_values("Record-Route")))
        self.dialog = Dialog(call_id=self.call_id, local_uri=self.from_uri, local_tag=self.from_tag,
                             remote_uri=self.target.uri, remote_tag=(msg.to.tag if msg.to else "") or "",
                             remote_target=contact, route_set=rr, cseq=msg.cseq[0] or self.cseq)
        try:
            self.dialog_channel = self._channel_for(self.dialog.next_hop())
            self.ack = self.dialog.request("ACK", self.hop.transport, self.dialog_channel.local, new_branch(),
                                           self.dialog.cseq)
            self._send(self.ack, self.dialog_channel)
            self.ack_at = self.clock()
        except (OSError, EOFError) as e:
            self._transport_failed(e)
            return
        except ProbeError as e:
            self.outcome, self.reason = CallOutcome.ERROR, f"cannot reach the dialog's next hop: {e}"
            self._finish()
            return
        if self.media and (msg.body or self.early_sdp):
            self.media.configure(msg.body or self.early_sdp)
        elif self.media:
            self.media.problem = "no SDP answer (neither in the 2xx nor in a 1xx)"
        if self.cancel_tx is not None:   # the 200 OK crossed our CANCEL: the call exists, end it
            self.outcome = CallOutcome.NO_ANSWER
            self.reason = f"answered ({msg.status}) after the CANCEL: ACK and BYE sent"
            self._send_bye(self.clock())
            return
        self.outcome = CallOutcome.ANSWERED
        self.reason = f"{msg.status} {msg.reason or ''}".rstrip()
        if self.media:
            self.media.start(self.ack_at, self.dtmf)
        self.bye_due = self.ack_at + self.opts.duration

    def _on_forked_2xx(self, msg: SipMessage, tag: str) -> None:
        """A 2xx from another fork (another To-tag) after the call was answered: RFC 3261 §13.2.2.4 wants
        it ACKed, and a UAC that keeps one call ends the extra dialog with a BYE. Its retransmissions get
        the same ACK again; the BYE is sent once and not waited for (the call we measure goes on)."""
        if tag in self.forks:
            ack, ch = self.forks[tag]
            self._send(ack, ch)
            return
        fork = Dialog(call_id=self.call_id, local_uri=self.from_uri, local_tag=self.from_tag,
                      remote_uri=self.target.uri, remote_tag=tag,
                      remote_target=msg.contacts[0].uri.raw if msg.contacts else self.target.uri,
                      route_set=tuple(reversed(msg.header_values("Record-Route"))), cseq=msg.cseq[0] or self.cseq)
        try:
            ch = self._channel_for(fork.next_hop())
        except ProbeError:
            ch = self.channel
        if ch is not self.channel and ch is not self.dialog_channel and ch not in self.extra_channels:
            self.extra_channels.append(ch)
        ack = fork.request("ACK", self.hop.transport, ch.local, new_branch(), fork.cseq)
        self.forks[tag] = (ack, ch)
        try:
            self._send(ack, ch)
            self._send(fork.request("BYE", self.hop.transport, ch.local, new_branch(), fork.cseq + 1), ch)
        except (OSError, EOFError):
            pass  # the call we measure is unaffected; the far end's fork times out on its own

    def _channel_for(self, uri: str) -> Channel:
        """The channel to a dialog's next hop: the one we have when it is the same address."""
        u = parse_uri(uri)
        transport = (u.param("transport") or self.hop.transport).lower()
        if u.scheme == "sips":
            transport = "tls"
        if transport not in ("udp", "tcp", "tls"):
            transport = self.hop.transport
        port = u.port or (DEFAULT_TLS_PORT if transport == "tls" else DEFAULT_PORT)
        hop = Target(uri=uri, host=u.host, port=port, transport=transport)
        fam, remote = resolve_target(hop, self.opts.family, self.bind, 2.0)
        main_remote = self.channel.sock.getpeername()
        if remote[:2] == main_remote[:2] and transport == self.hop.transport:
            return self.channel
        for ch in self.extra_channels:   # a PRACK's early dialog went there already
            if ch.peer[:2] == remote[:2] and ch.transport == transport:
                return ch
        bind = (self.channel.local[0], 0)
        return Channel(hop, fam, remote, bind, 2.0, self.clock, self.opts.tls)

    def _on_rejected(self, msg: SipMessage, now: float) -> None:
        self.final = msg
        status = msg.status
        text = f"{status} {msg.reason or ''}".rstrip()
        if status in (401, 407) and self.cancel_tx is None:
            if self.challenge_at is None:
                self.challenge_at = now
            offered = challenges_from([(name, v) for name in ("WWW-Authenticate", "Proxy-Authenticate")
                                       for v in msg.header_values(name)])
            chosen = choose(offered)
            if not chosen:
                return self._fail(CallOutcome.AUTH_FAILURE, f"{text}: no digest challenge sipflow can answer")
            if self.opts.password is None:
                return self._fail(CallOutcome.AUTH_FAILURE, f"{text} (digest {chosen[0].algorithm}, realm "
                                                            f"\"{chosen[0].realm}\") and no --password")
            for c in chosen:
                key = (c.answer_header, c.realm)
                if key in self.answered_realms:
                    if c.stale and self.stale_left > 0:
                        self.stale_left -= 1
                    else:
                        return self._fail(CallOutcome.AUTH_FAILURE, f"credentials rejected: {text} again "
                                                                    f"(realm \"{c.realm}\")")
                self.sessions[key] = DigestSession(c, self.opts.user or parse_uri(self.from_uri).user or "sipflow",
                                                   self.opts.password)
                self.answered_realms.add(key)
            if len(self.invites) >= 4:
                return self._fail(CallOutcome.AUTH_FAILURE, f"{text} after {len(self.invites)} INVITEs")
            self.ring_started = None
            try:
                self._send_invite()
            except (OSError, EOFError) as e:
                self._transport_failed(e)
            return
        if self.cancel_tx is not None and status == 487:
            outcome = CallOutcome.NO_ANSWER
            text = f"no answer within --ring-timeout {self.opts.ring_timeout:g} s: CANCEL sent, {text}"
        elif status in (486, 600):
            outcome = CallOutcome.BUSY
        elif status == 403 and self.sessions:
            outcome, text = CallOutcome.AUTH_FAILURE, f"credentials rejected: {text}"
        else:
            outcome = CallOutcome.REJECTED
        self._fail(outcome, text)

    def _fail(self, outcome: CallOutcome, reason: str) -> None:
        self.outcome, self.reason = outcome, reason
        self._finish()

    def _after(self, tx, now: float) -> None:
        """A non-INVITE transaction (CANCEL, BYE) or a timer of the INVITE moved on."""
        if tx is self.invite and tx.state is InviteState.TERMINATED and tx.final is None and self.outcome is None:
            self._fail(CallOutcome.TIMEOUT, f"no response to the INVITE within {TIMER_B:g} s (Timer B)")
            return
        if getattr(tx, "method", None) == "PRACK" and tx.final is not None and tx.final.status >= 200:
            self.prack_status = tx.final.status
        if tx is self.cancel_tx and tx.done and self.cancel_status is None:
            self.cancel_status = tx.final.status if tx.final is not None else None
            self.cancel_done_at = tx.final_at
        if tx is self.bye_tx and tx.done and self.bye_done_at is None:
            if tx.final is not None and tx.final.status in (401, 407) and self.sessions and not self._bye_retried:
                self._bye_retried = True
                for c in choose(challenges_from([(n, v) for n in ("WWW-Authenticate", "Proxy-Authenticate")
                                                 for v in tx.final.header_values(n)])):
                    self.sessions[(c.answer_header, c.realm)] = DigestSession(
                        c, self.opts.user or parse_uri(self.from_uri).user or "sipflow", self.opts.password)
                self.bye_tx = None
                self._send_bye(now)
                return
            self.bye_status = tx.final.status if tx.final is not None else None
            self.bye_done_at = tx.final_at if tx.final is not None else now
            if tx.final is None and self.outcome is CallOutcome.ANSWERED:
                self.reason += "; no response to the BYE"
            self._finish()

    # -- SIP out ---------------------------------------------------------------------------------------

    def _send_cancel(self, now: float) -> None:
        request = cancel_for(self.invite.message)
        tx = ClientTransaction(request, self.invite.branch, "CANCEL", self.channel.reliable, now)
        self.cancel_tx = tx
        self.cancel_sent_at = now
        self.txs[(self.invite.branch, "CANCEL")] = tx
        try:
            self._send(request)
        except (OSError, EOFError) as e:
            self._transport_failed(e)

    def _send_bye(self, now: float) -> None:
        if self.media:
            self.media.stop(now)
        self.bye_due = None
        self.hung_up_by = self.hung_up_by or "us"
        self.cseq += 1
        branch = new_branch()
        ch = self.dialog_channel or self.channel
        auths = tuple(s.authorize("BYE", self.dialog.request_uri()) for s in self.sessions.values()) \
            if self._bye_retried else ()
        request = self.dialog.request("BYE", self.hop.transport, ch.local, branch, self.cseq,
                                      tuple((a.header, a.value) for a in auths))
        tx = ClientTransaction(request, branch, "BYE", ch.reliable, now)
        self.bye_tx = tx
        if self.bye_sent_at is None:
            self.bye_sent_at = now
        self.txs[(branch, "BYE")] = tx
        try:
            self._send(request, ch)
        except (OSError, EOFError) as e:
            self._transport_failed(e)

    def _deadline(self, now: float) -> None:
        """--timeout: end the run now, leaving nothing behind: hang up a call, cancel a ringing one
        (best effort, no wait)."""
        try:
            if self.dialog is not None and self.bye_tx is None and self.hung_up_by is None:
                self._send_bye(now)
                self.reason = (self.reason or "") + f"; --timeout {self.opts.run_timeout:g} s ended the call"
            elif self.dialog is None and self.invite is not None and self.invite.state is InviteState.PROCEEDING \
                    and self.cancel_tx is None:
                self._send_cancel(now)
        except (OSError, EOFError, ProbeError):
            pass
        if self.outcome is None and self.cancel_sent_at is not None and self.cancel_sent_at < now \
                and self.opts.ring_timeout is not None:
            self.outcome = CallOutcome.NO_ANSWER   # we gave up on it; the far end never confirmed (no 487)
            self.reason = (f"no answer within --ring-timeout {self.opts.ring_timeout:g} s: CANCEL sent, but no "
                           f"final response before --timeout {self.opts.run_timeout:g} s")
        elif self.outcome is None:
            what = "ringing, no answer" if self.provisional else "no final response"
            self.outcome = CallOutcome.TIMEOUT
            self.reason = f"{what} before --timeout {self.opts.run_timeout:g} s" + (
                " (CANCEL sent)" if self.cancel_tx is not None else "")
        elif self.bye_tx is not None and self.bye_done_at is None and "--timeout" not in (self.reason or ""):
            self.reason = (self.reason or "") + "; no response to the BYE before --timeout"

    def _transport_failed(self, err: BaseException) -> None:
        outcome, reason = describe_failure(err)
        if self.outcome is None:
            self.outcome, self.reason = CallOutcome(outcome.value), reason
        else:   # the call was answered (or given up) first: say what ended it
            self.reason = (self.reason or "") + f"; then {reason}"
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        if self.media:
            self.media.stop(self.clock())

    # -- the result ------------------------------------------------------------------------------------

    def _result(self, start: float, end: float) -> CallResult:
        t0 = self.first_sent

        def since(t):
            return to_us(t - t0) if t is not None and t0 is not None else None
        final = self.final
        local = ""
        if self.channel is not None:
            local = f"{uri_host(self.channel.local[0])}:{self.channel.local[1]}"
        auth = next((a for a in (self.auth_used or ()) if a.header == "Authorization"),
                    (self.auth_used or (None,))[0])
        rtp = self.media.stats() if self.media is not None and self.media.started_at is not None else None
        if rtp is None and self.media is not None and self.dialog is not None:
            rtp = self.media.stats()
        last = max([t for t in (self.bye_done_at, self.cancel_done_at, self.ack_at,
                                self.invite.final_at if self.invite else None) if t is not None], default=None)
        server = None
        if final is not None:
            server = final.header("Server") or final.header("User-Agent")
        return CallResult(
            target=self.target.uri, from_uri=self.from_uri or "", transport=self.hop.transport,
            remote=self.remote_text, local=local, outcome=self.outcome or CallOutcome.ERROR,
            status=final.status if final is not None else None,
            reason=self.reason or "the run ended without an answer", provisional=tuple(self.provisional),
            first_response=since(self.first_response_at), pdd=since(self.pdd_at), answer=since(self.answer_at),
            setup=since(self.ack_at),
            duration=to_us(self.bye_sent_at - self.ack_at) if self.bye_sent_at and self.ack_at else None,
            bye=to_us(self.bye_done_at - self.bye_sent_at) if self.bye_status is not None else None,
            cancel=to_us(self.cancel_done_at - self.cancel_sent_at) if self.cancel_status is not None else None,
            challenge=since(self.challenge_at), total=since(last), elapsed=to_us(end - start),
            retransmissions=sum(getattr(t, "retransmissions", 0) for t in self.txs.values()),
            invites=len(self.invites), ack_sent=self.ack_at is not None or any(t.acks for t in self.invites),
            bye_sent=self.bye_sent_at is not None, bye_status=self.bye_status,
            cancel_sent=self.cancel_tx is not None, cancel_status=self.cancel_status, hung_up_by=self.hung_up_by,
            auth_algorithm=auth.algorithm if auth else None, auth_realm=auth.realm if auth else None,
            server=server, call_id=self.call_id if self.invites else None,
            route_set=self.dialog.route_set if self.dialog else (),
            remote_target=self.dialog.remote_target if self.dialog else None, proxy=self.opts.proxy, rtp=rtp,
            stray=self.stray, pracks=len(self.pracks), prack_status=self.prack_status,
            prack_retransmitted=self.prack_retransmitted)
