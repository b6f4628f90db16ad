"""The one driver every probe runs on: it owns the sockets, the clock, ``select``, the media socket
and the recorder, and carries out what a sans-IO flow (``probe.flow``) asks.

Owns the loop: start the flow, carry out its actions (open links, send, open and run the media),
wait on every socket until the earliest of the flow's deadline, the media's next packet and the run's
deadline, feed what comes in back to the flow, and at the run's deadline let the flow say its last
words (``expire``: a BYE or CANCEL, sent without waiting). Links to the same address and transport
share one channel (the dialog's next hop is often the proxy we already talk to, and over WebSocket
it must be the same connection). Nothing here decides anything about SIP.
"""
from __future__ import annotations

import select
import time
from typing import Callable, Dict, List, Optional, Tuple

from sipflow.errors import ProbeError
from sipflow.probe.common import Failure, Outcome, Target, TlsOptions, parse_bind, uri_host
from sipflow.probe.flow import Connect, Flow, Link, MediaAnswer, OpenMedia, Report, Send, StartMedia, StopMedia
from sipflow.probe.transport import Channel, describe_failure, resolve_target

NEXT_HOP_LIMIT = 2.0     # seconds to resolve and connect a dialog's next hop (the first hop has --timeout)


class Driver:
    """Runs one flow to its end or to ``run_timeout``. ``on_message(direction, data)`` sees every SIP
    message sent (``">"``) and received (``"<"``); ``on_report(result)`` every ``Report``;
    ``recorder`` (a ``PcapRecorder``) every packet."""

    def __init__(self, flow: Flow, run_timeout: float, *, family: Optional[int] = None, bind: Optional[str] = None,
                 tls: TlsOptions = TlsOptions(), clock: Callable[[], float] = time.monotonic,
                 on_message: Optional[Callable[[str, bytes], None]] = None,
                 on_report: Optional[Callable[[object], None]] = None, recorder=None,
                 samples: Optional[List[int]] = None) -> None:
        self.flow, self.run_timeout, self.family, self.tls, self.clock = flow, run_timeout, family, tls, clock
        self.bind = parse_bind(bind) if bind else None
        self.on_message, self.on_report, self.recorder = on_message, on_report, recorder
        self.samples = samples
        self.links: Dict[str, Channel] = {}       # link name -> its channel (several names may share one)
        self.channels: List[Channel] = []
        self.names: Dict[int, str] = {}           # id(channel) -> the name the flow first gave it
        self.media = None
        self.start = 0.0
        self.deadline = 0.0
        self.remote_text = ""                     # the first hop's ip:port, for the result
        self.first_hop: Optional[Target] = None

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> Tuple[float, float]:
        """Run the flow; returns (start, end) on the driver's clock."""
        self.start = self.clock()
        self.deadline = self.start + self.run_timeout
        try:
            self._do(self.flow.start(self.start))
            while not self.flow.finished:
                now = self.clock()
                if now >= self.deadline:
                    self._do(self.flow.expire(now), best_effort=True)
                    break
                due = self.flow.deadline()
                if due is not None and due <= now:
                    self._do(self.flow.timer(now))
                    continue
                if self.media is not None:
                    self.media.send_due(now)
                self._wait(now, due)
        finally:
            end = min(self.clock(), self.deadline)
            if self.media is not None:
                self.media.stop(end)
            for ch in self.channels:
                ch.close()
        return self.start, end

    def _wait(self, now: float, due: Optional[float]) -> None:
        wake = [self.deadline] + ([due] if due is not None else [])
        if self.media is not None and self.media.due() is not None:
            wake.append(self.media.due())
        delay = max(0.0, min(wake) - now)
        rd = [c.sock for c in self.channels] + ([self.media.sock] if self.media is not None else [])
        if not rd:
            time.sleep(delay)
            return
        wr = [c.sock for c in self.channels if c.wants_write]
        readable, writable, _ = select.select(rd, wr, [], delay)
        for ch in list(self.channels):
            name = self.names[id(ch)]
            try:
                if ch.sock in writable:
                    ch.flush()
                if ch.sock in readable:
                    for data in ch.receive():
                        if self.on_message:
                            self.on_message("<", data)
                        self._do(self.flow.received(name, data, self.clock()))
            except (OSError, EOFError) as e:
                self._lost(ch, e)
        if self.media is not None and self.media.sock in readable:
            self.media.receive(self.clock())

    # -- actions ------------------------------------------------------------------------------------

    def _do(self, actions: List, best_effort: bool = False) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send(action, best_effort)
            elif isinstance(action, Connect):
                self._connect(action, best_effort)
            elif isinstance(action, Report):
                if self.on_report:
                    self.on_report(action.result)
            elif isinstance(action, OpenMedia):
                self._open_media(action)
            elif isinstance(action, MediaAnswer):
                if self.media is not None:
                    if action.sdp is not None:
                        self.media.configure(action.sdp)
                    else:
                        self.media.problem = "no SDP answer (neither in the 2xx nor in a 1xx)"
            elif isinstance(action, StartMedia):
                if self.media is not None:
                    self.media.start(action.at, action.dtmf)
            elif isinstance(action, StopMedia):
                if self.media is not None:
                    self.media.stop(action.at)

    def _send(self, action: Send, best_effort: bool) -> None:
        ch = self.links.get(action.link)
        if ch is None:
            return   # the link failed before: the flow has been told
        if self.on_message:
            self.on_message(">", action.data)
        try:
            ch.send(action.data)
        except (OSError, EOFError) as e:
            if not best_effort:
                self._lost(ch, e)

    def _connect(self, action: Connect, best_effort: bool) -> None:
        first = self.first_hop is None or action.hop == self.first_hop
        if self.first_hop is None:
            self.first_hop = action.hop
        now = self.clock()
        limit = (self.deadline - now) if first else min(NEXT_HOP_LIMIT, max(0.0, self.deadline - now))
        try:
            family, remote = resolve_target(action.hop, self.family, self.bind, limit)
        except ProbeError as e:
            if first:
                raise     # the target itself cannot be reached: the probe cannot run
            self._do(self.flow.failed(action.link, Failure(Outcome.ERROR, str(e)), self.clock()), best_effort)
            return
        if first:
            self.remote_text = _addr_text(remote)
        self.flow.resolved(action.link, tuple(remote[:2]))
        ch = self._existing(action.hop, remote)
        if ch is None:
            bind = self.bind if first or not self.channels else (self.channels[0].local[0], 0)
            try:
                ch = Channel(action.hop, family, remote, bind, limit, self.clock, self.tls, self.recorder)
            except ProbeError:
                if first:
                    raise
                self._do(self.flow.failed(action.link, Failure(Outcome.ERROR, "cannot open a channel to "
                                                               f"{action.hop.uri}"), self.clock()), best_effort)
                return
            except (OSError, EOFError) as e:
                self._do(self.flow.failed(action.link, describe_failure(e), self.clock()), best_effort)
                return
            self.channels.append(ch)
            self.names[id(ch)] = action.link
        self.links[action.link] = ch
        link = Link(name=action.link, transport=ch.transport, local=ch.local, remote=tuple(ch.peer[:2]),
                    sent_by=ch.sent_by, connect=ch.connect_time, handshake=ch.handshake_time)
        self._do(self.flow.connected(link, self.clock()), best_effort)

    def _existing(self, hop: Target, remote) -> Optional[Channel]:
        family = {"ws": "ws", "wss": "ws"}.get(hop.transport, hop.transport)
        for ch in self.channels:
            kind = {"ws": "ws", "wss": "ws"}.get(ch.transport, ch.transport)
            if tuple(ch.peer[:2]) == tuple(remote[:2]) and kind == family:
                return ch
        return None

    def _lost(self, ch: Channel, err: BaseException) -> None:
        """A channel failed: close it, forget every link on it, and tell the flow (once per link)."""
        if ch not in self.channels:
            return
        self.channels.remove(ch)
        ch.close()
        failure = describe_failure(err)
        names = [n for n, c in self.links.items() if c is ch]
        for n in names:
            del self.links[n]
        for n in names:
            self._do(self.flow.failed(n, failure, self.clock()))

    def _open_media(self, action: OpenMedia) -> None:
        from sipflow.probe.media import Media
        ch = self.links[action.link]
        family = ch.sock.family
        self.media = Media(ch.local[0], family, recorder=self.recorder)
        self.media.samples = self.samples
        self._do(self.flow.media_opened(self.media.local[1], self.clock()))

    def media_stats(self) -> Optional[dict]:
        return self.media.stats() if self.media is not None else None

    def close(self) -> None:
        if self.media is not None:
            self.media.close()


def _addr_text(addr) -> str:
    return f"{uri_host(addr[0])}:{addr[1]}"
