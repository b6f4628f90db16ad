"""The requests of ``sipflow probe call``'s dialog: the INVITE with its SDP offer, and requests inside
the dialog (ACK for a 2xx, BYE, PRACK) by RFC 3261's routing rules.

Owns building these messages from the dialog's state (``Dialog``: Call-ID, tags, CSeq, remote target,
route set). Dialog rules (RFC 3261 §12.1.2, §13.2.2.4, §12.2.1.1): the remote target is the 2xx's
Contact, the route set its Record-Route in reverse order; with a loose router (``;lr``) first, the
Request-URI is the remote target and the route set goes into Route; with a strict router first, it is
the Request-URI and the remote target ends the Route list. Deciding when to send them is
``probe.call``'s flow; writing them, ``sip.builder``'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from sipflow.probe.common import contact_params, uri_host
from sipflow.probe.media import DTMF_PT
from sipflow.sip import builder
from sipflow.sip.message import parse_name_addr, parse_uri


@dataclass
class Dialog:
    """§12.1.2: what the UAC keeps once the 2xx came."""
    call_id: str
    local_uri: str
    local_tag: str
    remote_uri: str
    remote_tag: str
    remote_target: str
    route_set: Tuple[str, ...]        # Record-Route of the 2xx, reversed (each a name-addr text)
    cseq: int                         # the INVITE's

    def request(self, method: str, transport: str, local: Tuple[str, int], branch: str, cseq: int,
                auth: Tuple[Tuple[str, str], ...] = (), sent_by: Optional[str] = None) -> bytes:
        """An in-dialog request (§12.2.1.1) from ``local`` (or ``sent_by``, a .invalid host over WS)."""
        routes = list(self.route_set)
        ruri = self.remote_target
        if routes and parse_name_addr(routes[0]).uri.param("lr") is None:   # a strict router first
            ruri = parse_name_addr(routes[0]).uri.raw
            routes = routes[1:] + [f"<{self.remote_target}>"]
        sent_by = sent_by or f"{uri_host(local[0])}:{local[1]}"
        return builder.request(method, ruri, via_value=builder.via(transport, sent_by, branch), route=routes,
                               from_=f"<{self.local_uri}>;tag={self.local_tag}",
                               to=f"<{self.remote_uri}>;tag={self.remote_tag}", call_id=self.call_id, cseq=cseq,
                               headers=auth)

    def request_uri(self) -> str:
        if self.route_set and parse_name_addr(self.route_set[0]).uri.param("lr") is None:
            return parse_name_addr(self.route_set[0]).uri.raw
        return self.remote_target

    def next_hop(self) -> str:
        """The URI the request goes to: the first route, or the remote target (§8.1.2, §12.2.1.1)."""
        return parse_name_addr(self.route_set[0]).uri.raw if self.route_set else self.remote_target


def sdp_offer(ip: str, port: int, session_id: int) -> bytes:
    """PCMU, PCMA and telephone-event (RFC 4733) on ``ip``:``port``, 20 ms packets."""
    kind = "IP6" if ":" in ip else "IP4"
    return ("\r\n".join([
        "v=0", f"o=sipflow {session_id} {session_id} IN {kind} {ip}", "s=sipflow probe call",
        f"c=IN {kind} {ip}", "t=0 0", f"m=audio {port} RTP/AVP 0 8 {DTMF_PT}",
        "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", f"a=rtpmap:{DTMF_PT} telephone-event/8000",
        f"a=fmtp:{DTMF_PT} 0-16", "a=ptime:20", "a=sendrecv"]) + "\r\n").encode("ascii")


def invite_request(uri: str, from_uri: str, transport: str, local: Tuple[str, int], branch: str, call_id: str,
                   from_tag: str, cseq: int, sdp: bytes, auth: Tuple[Tuple[str, str], ...] = (),
                   route: Optional[str] = None, sent_by: Optional[str] = None) -> bytes:
    sent_by = sent_by or f"{uri_host(local[0])}:{local[1]}"
    user = parse_uri(from_uri).user or "sipflow"
    return builder.request(
        "INVITE", uri, via_value=builder.via(transport, sent_by, branch), route=(f"<{route}>",) if route else (),
        from_=f"<{from_uri}>;tag={from_tag}", to=f"<{uri}>", call_id=call_id, cseq=cseq,
        contact=f"<sip:{user}@{sent_by}{contact_params(transport)}>",
        headers=(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK"), ("Supported", "100rel"), *auth),
        body=sdp, content_type="application/sdp")
