"""The SIP hot path: one pass over a message for what the analyzer needs, nothing more.

Owns ``scan`` (bytes -> ``SipHead``) and ``head_of`` (a fully parsed ``SipMessage`` -> the same
``SipHead``). The analyzer scans every message; the full parse (``sip.message``) stays the reference and
runs only for the views that show a message, and for the rare message the scan does not read plainly.

What the scan reads: the start line, Call-ID, CSeq, the top Via (branch and sent-by), From and To (URI,
user, tag), Contact values, Expires, Content-Type and the body by Content-Length. It reads them by the
same rules as the full parse (RFC 3261 §7.3 and §20, the same helpers where it can), and it gives up
on anything unusual (keep-alive bytes before the message, LF-only line ends, folded header lines, a
start line the regular expressions are needed for, a missing mandatory header, a name with a space):
those messages go through the full parse and ``head_of``, so the two never disagree. A test holds them
to that on every message of the samples and the public captures.

Cost, measured on a 700-byte INVITE: about 4 µs against 24 µs for the full parse with the From, To,
Via and Contact values parsed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional, Tuple

from sipflow.sip.message import (COMPACT, KNOWN_METHODS, MAX_DIGITS, REQUIRED, NameAddr, SipMessage, body_of,
                                 laquot, parse_message, parse_name_addr, split_host_port, split_list, to_int)

__all__ = ["SipHead", "scan", "head_of", "parse_contact", "contact_host"]


class SipHead:
    """What the analyzer needs from one SIP message. ``body`` is the message body (empty when none)."""
    __slots__ = ("method", "uri", "status", "reason", "call_id", "cseq", "cseq_method", "branch", "sent_by",
                 "via", "from_uri", "from_user", "from_tag", "to_uri", "to_user", "to_tag", "from_value", "to_value",
                 "contacts",
                 "expires", "content_type", "reason_header", "user_agent", "server", "body", "problems")

    method: Optional[str]
    uri: Optional[str]
    status: Optional[int]
    reason: Optional[str]
    call_id: Optional[str]
    cseq: Optional[int]
    cseq_method: Optional[str]
    branch: Optional[str]
    sent_by: Optional[str]       # top Via's host:port, as the transaction key uses it (§17.2.3)
    via: Optional[str]           # top Via value, for RFC 2543 transaction keys
    from_uri: str
    from_user: Optional[str]
    from_tag: Optional[str]
    to_uri: str
    to_user: Optional[str]
    to_tag: Optional[str]
    from_value: str              # the From and To headers as written (display names are read from them)
    to_value: str
    contacts: Tuple[str, ...]    # every Contact value, lists split (§7.3.1)
    expires: Optional[str]       # the Expires header as written
    content_type: str            # the Content-Type header as written ("" when none)
    reason_header: Optional[str]  # the Reason header (RFC 3326), as written
    user_agent: Optional[str]    # the User-Agent header (the software that sent a request, or a UAS's response)
    server: Optional[str]        # the Server header
    body: bytes
    problems: Tuple[str, ...]

    def fields(self) -> dict:
        """Every field as a dict (what the agreement tests compare)."""
        out = {k: getattr(self, k) for k in self.__slots__}
        out["problem_kinds"] = tuple(p.kind for p in self.problems)
        return out


# The headers the scan looks at, by canonical (lower-case) name; compact forms map to the same slot.
_WANT = {"call-id": "call_id", "cseq": "cseq", "via": "via", "from": "from", "to": "to", "contact": "contact",
         "expires": "expires", "content-type": "content_type", "content-length": "content_length",
         "reason": "reason_header", "user-agent": "user_agent", "server": "server"}
_SLOT: Dict[str, Optional[str]] = {}   # header name as written -> wanted slot, or None (bounded below)
_METHODS = frozenset(KNOWN_METHODS)
_NEW = "?"   # a header name not seen before
_REQUIRED_SLOTS = tuple(_WANT[name.lower()] for name in REQUIRED)


def _slot(name: str) -> Optional[str]:
    """The slot of a header name as written, or None; raises ValueError for a name the full parse
    would reject (empty, or with a space inside)."""
    stripped = name.strip()
    if not stripped or " " in stripped or "\t" in stripped:
        raise ValueError(name)
    low = stripped.lower()
    slot = _WANT.get(COMPACT.get(low, low))
    if len(_SLOT) < 4096:  # hostile input must not grow memory
        _SLOT[name] = slot
    return slot


def _param(text: str, name: str) -> Optional[str]:
    """The first parameter called ``name`` in ``;a=b;c`` text ("" when it has no value), by the same rule
    as sip.message's parameter reader, without building the whole list."""
    if not text:
        return None
    for part in text.split(";"):
        k, eq, v = part.partition("=")
        if k.strip().lower() == name:
            return v.strip().strip('"') if eq else ""
    return None


def _uri_user(uri: str) -> Optional[str]:
    # sip.message.parse_uri's user, without building the Uri
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme == "tel":
        return rest.partition(";")[0]
    if scheme not in ("sip", "sips"):
        return None
    userinfo, at, _ = rest.split("?", 1)[0].rpartition("@")
    return userinfo.split(":", 1)[0] if at else None


@lru_cache(maxsize=8192)
def name_addr_fields(value: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(URI, user, tag) of a From/To value, by sip.message.parse_name_addr's rules. Cached: within a
    dialog every message repeats the same From and To. Written apart from ``parse_name_addr`` on purpose:
    building its Uri and NameAddr objects on each cache miss cost 6 % of a signalling-only run (measured);
    tests/test_scan.py holds the two to the same answers."""
    text = value.strip()
    lt = laquot(text)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            gt = len(text)
        uri, params = text[lt + 1:gt].strip(), text[gt + 1:]
    elif text == "*":
        return "*", None, None
    else:
        uri, _, params = text.partition(";")
        uri = uri.strip()
    return uri, _uri_user(uri), _param(params, "tag")


def _via_fields(value: str) -> Tuple[str, Optional[str], str]:
    """(value, branch, sent-by) of the top Via, by sip.message.parse_via's rules."""
    if "," in value:
        value = (split_list(value) or [""])[0]
    text = value.strip()
    rest = text.partition(" ")[2].strip()
    hostport, _, params = rest.partition(";")
    return text, _param(params, "branch"), _sent_by(hostport)


@lru_cache(maxsize=4096)
def _sent_by(hostport: str) -> str:
    """A Via's sent-by as transaction keys use it (``host:port``, host in lower case). Cached: a sender
    repeats it in every request."""
    host, port = split_host_port(hostport.strip())
    return f"{host.lower()}:{port or ''}"


@lru_cache(maxsize=4096)
def parse_contact(value: str) -> NameAddr:
    """A Contact value, parsed (cached: a user agent repeats its Contact in every request)."""
    return parse_name_addr(value)


def contact_host(value: str) -> str:
    return parse_contact(value).uri.host


class _Unusual(Exception):
    """The message is not plain enough for the scan: the full parse reads it."""


def scan(data: bytes, datagram: bool = True) -> SipHead:
    """Read what the analyzer needs from one whole SIP message. Raises ``ParseError`` (from the full
    parse) when the bytes are not a SIP message at all."""
    try:
        return _scan(data, datagram)
    except _Unusual:
        return head_of(parse_message(data, datagram))


def _scan(data: bytes, datagram: bool) -> SipHead:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0 or not data[:1].isalpha():
        raise _Unusual
    text = data[:head_end].decode("utf-8", "replace")
    lines = text.split("\r\n")
    first = lines[0]
    if "\t" in first or "\r" in first or "\x0b" in first or "\x0c" in first:
        raise _Unusual  # whitespace the start-line grammar treats apart
    h = SipHead()
    if first[:8] == "SIP/2.0 ":
        code = first[8:11]
        if not (code.isdigit() and code.isascii() and "1" <= code[0] <= "6") or first[11:12] not in (" ", ""):
            raise _Unusual
        h.method, h.uri, h.status = None, None, int(code)
        h.reason = first[12:].strip()
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or parts[0] not in _METHODS or not parts[1]:
            raise _Unusual
        h.method, h.uri, h.status, h.reason = parts[0], parts[1], None, None
    if len(lines) != text.count("\n") + 1 or "\r\n " in text or "\r\n\t" in text:
        raise _Unusual   # a line that ends in a bare LF, or a folded continuation (§7.3.1)
    found: Dict[str, str] = {}
    contacts: List[str] = []
    slots = _SLOT
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise _Unusual
        slot = slots.get(name, _NEW)
        if slot is None:
            continue
        if slot is _NEW:
            try:
                slot = _slot(name)
            except ValueError:
                raise _Unusual from None
            if slot is None:
                continue
        if slot == "contact":
            contacts.append(value)
        elif slot not in found:
            found[slot] = value
    for slot in _REQUIRED_SLOTS:
        if slot not in found:
            raise _Unusual  # the full parse names what is missing
    if not found["via"].strip():
        raise _Unusual  # an empty Via: the full parse takes the top Via from the next one
    h.call_id = found["call_id"].strip()
    num, _, method = found["cseq"].strip().partition(" ")
    h.cseq = int(num) if num.isdigit() and num.isascii() and len(num) <= MAX_DIGITS else to_int(num)
    h.cseq_method = method.strip().upper() or None
    h.from_value, h.to_value = found["from"].strip(), found["to"].strip()
    h.from_uri, h.from_user, h.from_tag = name_addr_fields(h.from_value)
    h.to_uri, h.to_user, h.to_tag = name_addr_fields(h.to_value)
    h.via, h.branch, h.sent_by = _via_fields(found["via"])
    h.contacts = tuple(c for value in contacts for c in split_list(value.strip())) if contacts else ()
    expires = found.get("expires")
    h.expires = expires.strip() if expires is not None else None
    h.content_type = found.get("content_type", "").strip()
    reason = found.get("reason_header")
    h.reason_header = reason.strip() if reason is not None else None
    agent, server = found.get("user_agent"), found.get("server")
    h.user_agent = agent.strip() if agent is not None else None
    h.server = server.strip() if server is not None else None
    cl = found.get("content_length")
    if cl is not None and len(data) == head_end + 4 and cl.strip() == "0":
        h.body, h.problems = b"", ()    # no body, and the length says so: body_of's answer, sooner
        return h
    problems: List[str] = []
    h.body = body_of(data[head_end + 4:], cl.strip() if cl is not None else None, datagram, problems)
    h.problems = tuple(problems)
    return h


def head_of(msg: SipMessage) -> SipHead:
    """The ``SipHead`` of a fully parsed message (the reference the scan is held to)."""
    h = SipHead()
    h.method, h.uri, h.status, h.reason = msg.method, msg.uri, msg.status, msg.reason
    h.call_id = msg.call_id
    h.cseq, h.cseq_method = msg.cseq
    f, t = msg.from_, msg.to
    h.from_uri, h.from_user, h.from_tag = (str(f.uri), f.uri.user, f.tag) if f else ("", None, None)
    h.to_uri, h.to_user, h.to_tag = (str(t.uri), t.uri.user, t.tag) if t else ("", None, None)
    h.from_value, h.to_value = msg.header("From") or "", msg.header("To") or ""
    via = msg.vias[0] if msg.vias else None
    h.via, h.branch, h.sent_by = (via.raw, via.branch, via.sent_by) if via else (None, None, None)
    h.contacts = tuple(msg.header_values("Contact"))
    h.expires = msg.header("Expires")
    h.content_type = msg.header("Content-Type") or ""
    h.reason_header = msg.header("Reason")
    agent, server = msg.header("User-Agent"), msg.header("Server")
    h.user_agent = agent.strip() if agent is not None else None
    h.server = server.strip() if server is not None else None
    h.body = msg.body
    h.problems = msg.problems
    return h
