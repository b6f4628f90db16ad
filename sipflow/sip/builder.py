"""Building SIP messages: the one place that writes a request or a response as bytes.

Owns the header order every message sipflow sends follows (start line, Via, Max-Forwards, Route, From,
To, Call-ID, CSeq, Contact, the rest, User-Agent, Content-Type, Content-Length), the Via text for
each transport (a ``.invalid`` host for WebSocket, as RFC 7118 §5.2 and browsers do), and responses to
a request (Via, From, To, Call-ID and CSeq copied, RFC 3261 §8.2.6.2). The parser is
``sip.message``; who sends what, and when, is the probe's.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

from sipflow import __version__

USER_AGENT = f"sipflow/{__version__}"
Headers = Sequence[Tuple[str, str]]


def message(start_line: str, headers: Iterable[Tuple[str, str]], body: bytes = b"",
            content_type: Optional[str] = None) -> bytes:
    """A whole message: the start line, the headers in the order given, User-Agent or Server is the
    caller's, then Content-Type (when a body has one) and Content-Length."""
    lines = [start_line] + [f"{name}: {value}" for name, value in headers]
    if body and content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def via(transport: str, sent_by: str, branch: str) -> str:
    """The Via value of a request we send: ``rport`` asks for the reply to come back to the port it
    left from (RFC 3581)."""
    return f"SIP/2.0/{transport.upper()} {sent_by};branch={branch};rport"


def request(method: str, uri: str, *, via_value: str, from_: str, to: str, call_id: str, cseq: int,
            route: Sequence[str] = (), contact: Optional[str] = None, headers: Headers = (),
            body: bytes = b"", content_type: Optional[str] = None, cseq_method: Optional[str] = None,
            max_forwards: int = 70) -> bytes:
    """A request. ``from_``/``to``/``route``/``contact`` are header values as they go on the wire
    (name-addr with tags and parameters); ``headers`` come after Contact, in the order given."""
    hs = [("Via", via_value), ("Max-Forwards", str(max_forwards))]
    hs += [("Route", r) for r in route]
    hs += [("From", from_), ("To", to), ("Call-ID", call_id), ("CSeq", f"{cseq} {cseq_method or method}")]
    if contact:
        hs.append(("Contact", contact))
    hs += list(headers)
    hs.append(("User-Agent", USER_AGENT))
    return message(f"{method} {uri} SIP/2.0", hs, body, content_type)


def response(req, status: int, reason: str, to_tag: Optional[str] = None, headers: Headers = (),
             body: bytes = b"", content_type: Optional[str] = None) -> bytes:
    """A response to ``req`` (a parsed ``SipMessage``): every Via, From, Call-ID and CSeq as they came,
    To with ``to_tag`` added when the request had none (§8.2.6.2), then ``headers``."""
    to = req.header("To") or ""
    if to_tag and req.to is not None and req.to.tag is None:
        to += f";tag={to_tag}"
    hs = [("Via", v) for v in req.header_values("Via")]
    hs += [("From", req.header("From") or ""), ("To", to), ("Call-ID", req.call_id or ""),
           ("CSeq", req.header("CSeq") or "")]
    hs += list(headers) + [("User-Agent", USER_AGENT)]
    return message(f"SIP/2.0 {status} {reason}", hs, body, content_type)
