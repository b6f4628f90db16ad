"""SIP messages (RFC 3261): parsing, the lossless message model, URIs, and stream framing.

Owns bytes -> ``SipMessage``: the full parse, URIs, name-addr and Via values. Leaves stream framing
to ``sip.framing``, the cheap scan the analyzer runs on every message to ``sip.scan``, transactions and
dialogs to ``analysis``, SDP bodies to ``sip.sdp``. Does no I/O.

The model is lossless: the raw bytes, every header in order with repeats, names canonicalised (compact
forms such as ``i`` or ``v`` expanded, §7.3.3) but values untouched. A message that breaks a rule the
parser can live with (bad Content-Length, junk before the request line) is parsed and the problem kept
in ``problems``; only bytes that are not a SIP message at all raise ``ParseError``.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Optional, Tuple

from sipflow.errors import ParseError

# RFC 3261 §7.3.3 and later RFCs' compact forms.
COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "o": "event", "u": "allow-events",
    "e": "content-encoding", "r": "refer-to", "b": "referred-by", "x": "session-expires",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity",
    "n": "identity-info",
}
_CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate", "mime-version": "MIME-Version",
    "rack": "RAck", "rseq": "RSeq", "p-asserted-identity": "P-Asserted-Identity", "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match", "session-id": "Session-ID",
}
# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); others (e.g. Date, WWW-Authenticate)
# contain commas that are not separators.
LIST_HEADERS = frozenset((
    "via", "contact", "route", "record-route", "allow", "supported", "require", "proxy-require",
    "unsupported", "allow-events", "accept", "accept-encoding", "accept-language", "content-encoding",
    "in-reply-to", "path", "service-route", "p-asserted-identity", "reason",
))
KNOWN_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE", "NOTIFY",
                 "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")

_TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") +(\S+) +SIP/2\.0 *\r?$", re.I)
STATUS_LINE = re.compile(rb"SIP/2\.0 +([1-6][0-9][0-9])(?: +([^\r\n]*))?\r?$", re.I)


class ProblemKind(enum.Enum):
    """What is wrong with a message that could still be read. Code decides by kind, never by wording."""
    LF_LINE_ENDS = "lf_line_ends"
    NO_EMPTY_LINE = "no_empty_line"
    JUNK_BEFORE_METHOD = "junk_before_method"
    BAD_HEADER_LINE = "bad_header_line"
    MISSING_HEADER = "missing_header"
    CONTENT_LENGTH = "content_length"            # invalid, or not the length of the body
    NO_CONTENT_LENGTH = "no_content_length"      # on a stream transport, where it is mandatory


# Kinds that make a message malformed (read with damage: a header or the message's end is lost).
DAMAGE = frozenset((ProblemKind.NO_EMPTY_LINE, ProblemKind.BAD_HEADER_LINE, ProblemKind.MISSING_HEADER))


class Problem(str):
    """One problem with a message: the text a person reads, and ``kind`` for code to decide by."""

    def __new__(cls, kind: ProblemKind, text: str) -> "Problem":
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj


_NAMES: Dict[str, str] = {}  # header name as written -> canonical (a few dozen distinct names in practice)


MAX_DIGITS = 18   # every number in a SIP header fits 64 bits; longer is a malformed field, never an int


def to_int(text: Optional[str]) -> Optional[int]:
    """An ASCII decimal number, or None (``str.isdigit`` accepts digits ``int`` refuses, such as ²; a
    number of 4,300 digits would make ``int`` raise)."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS else None


def canonical_name(name: str) -> str:
    canon = _NAMES.get(name)
    if canon is None:
        low = name.strip().lower()
        low = COMPACT.get(low, low)
        canon = _CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in low.split("-"))
        if len(_NAMES) < 4096:  # bounded: header names in hostile input must not grow memory
            _NAMES[name] = canon
    return canon


# ---------------------------------------------------------------------------------------------------
# Values: URIs, name-addr, Via


def _params(text: str) -> Tuple[Tuple[str, Optional[str]], ...]:
    out = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        k, eq, v = part.partition("=")
        out.append((k.strip().lower(), v.strip().strip('"') if eq else None))
    return tuple(out)


def _param(params, name: str) -> Optional[str]:
    for k, v in params:
        if k == name:
            return v if v is not None else ""
    return None


@dataclass(frozen=True)
class Uri:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966); other schemes keep only ``raw``."""
    raw: str
    scheme: str = ""
    user: Optional[str] = None
    host: str = ""
    port: Optional[int] = None
    params: Tuple[Tuple[str, Optional[str]], ...] = ()

    def param(self, name: str) -> Optional[str]:
        return _param(self.params, name)

    def __str__(self) -> str:
        return self.raw


def split_host_port(hostport: str) -> Tuple[str, Optional[int]]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None)."""
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        return host, (to_int(tail[1:]) if tail.startswith(":") else None)
    host, _, port = hostport.partition(":")
    return host, to_int(port)


def parse_uri(text: str) -> Uri:
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon:
        return Uri(raw=text)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        return Uri(raw=text, scheme=scheme, user=number, params=_params(params))
    if scheme not in ("sip", "sips"):
        return Uri(raw=text, scheme=scheme)
    rest = rest.split("?", 1)[0]
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] if at else None
    hostport, _, params = hostpart.partition(";")
    host, port = split_host_port(hostport)
    return Uri(raw=text, scheme=scheme, user=user, host=host.lower(), port=port, params=_params(params))


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Route value: name-addr (``"Bob" <sip:bob@x>;tag=1``) or addr-spec form.
    In addr-spec form the parameters after the URI belong to the header, not the URI (§20.10)."""
    raw: str
    uri: Uri
    display: Optional[str] = None
    params: Tuple[Tuple[str, Optional[str]], ...] = ()

    @property
    def tag(self) -> Optional[str]:
        return _param(self.params, "tag")

    def param(self, name: str) -> Optional[str]:
        return _param(self.params, name)


def quoted_end(text: str) -> int:
    """Where a leading quoted-string (RFC 3261 §25.1: quoted-pairs ``\\x`` inside) ends, or 0 when
    ``text`` does not start with one. A display name is text: a ``<`` inside it is not the address."""
    if not text.startswith('"'):
        return 0
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    return len(text)   # unterminated: all of it is display name, there is no address


def laquot(text: str) -> int:
    """The ``<`` that opens a name-addr's address (after any quoted display name), or -1."""
    return text.find("<", quoted_end(text))


_QUOTED_PAIR = re.compile(r"\\(.)")


def display_name(text: str) -> Optional[str]:
    """The display name of a From/To/Contact value (None when it has none), by the grammar: a quoted
    string first, so ``"<sip:ceo@bank>" <sip:x@evil>`` names ``<sip:ceo@bank>``, which is only text."""
    text = (text or "").strip()
    lt = laquot(text)
    if lt <= 0:
        return None
    q = quoted_end(text)
    return (_QUOTED_PAIR.sub(r"\1", text[1:q - 1]) if q else text[:lt].strip().strip('"')) or None


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip()
    lt = laquot(text)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            gt = len(text)
        return NameAddr(raw=text, uri=parse_uri(text[lt + 1:gt]), display=display_name(text),
                        params=_params(text[gt + 1:]))
    if text == "*":
        return NameAddr(raw=text, uri=Uri(raw="*"))
    uri, _, params = text.partition(";")
    return NameAddr(raw=text, uri=parse_uri(uri), params=_params(params))


@dataclass(frozen=True)
class Via:
    """One Via value (§20.42): ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""
    raw: str
    transport: str
    host: str
    port: Optional[int]
    params: Tuple[Tuple[str, Optional[str]], ...]

    @property
    def branch(self) -> Optional[str]:
        return _param(self.params, "branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port or ''}"

    def param(self, name: str) -> Optional[str]:
        return _param(self.params, name)


def parse_via(text: str) -> Via:
    text = text.strip()
    proto, _, rest = text.partition(" ")
    transport = proto.rsplit("/", 1)[-1].strip().upper()
    rest = rest.strip()
    hostport, _, params = rest.partition(";")
    host, port = split_host_port(hostport.strip())
    return Via(raw=text, transport=transport, host=host.lower(), port=port, params=_params(params))


def split_list(value: str) -> List[str]:
    """Split a header value on commas that are outside quotes and angle brackets (§7.3.1)."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    out, depth, quote, start, i = [], 0, False, 0, 0
    while i < len(value):
        ch = value[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    last = value[start:].strip()
    if last or not out:
        out.append(last)
    return [v for v in out if v]


# ---------------------------------------------------------------------------------------------------
# The message


@dataclass(frozen=True)
class SipMessage:
    """One SIP request or response, lossless. ``method`` is set for requests, ``status`` for responses."""
    raw: bytes
    method: Optional[str]
    uri: Optional[str]
    status: Optional[int]
    reason: Optional[str]
    headers: Tuple[Tuple[str, str], ...]
    body: bytes
    problems: Tuple[str, ...] = ()
    _index: Dict[str, List[str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> Optional[str]:
        """First value of a header (case-insensitive, compact forms accepted), or None."""
        values = self._index.get(canonical_name(name))
        return values[0] if values else None

    def header_values(self, name: str) -> List[str]:
        """Every value of a header in order, comma-separated lists split where the RFC allows it."""
        canon = canonical_name(name)
        values = self._index.get(canon, [])
        if canon.lower() in LIST_HEADERS:
            return [v for value in values for v in split_list(value)]
        return list(values)

    @cached_property
    def call_id(self) -> Optional[str]:
        v = self.header("Call-ID")
        return v.strip() if v is not None else None

    @cached_property
    def cseq(self) -> Tuple[Optional[int], Optional[str]]:
        v = self.header("CSeq")
        if not v:
            return None, None
        num, _, method = v.strip().partition(" ")
        return to_int(num), method.strip().upper() or None

    @cached_property
    def from_(self) -> Optional[NameAddr]:
        v = self.header("From")
        return parse_name_addr(v) if v is not None else None

    @cached_property
    def to(self) -> Optional[NameAddr]:
        v = self.header("To")
        return parse_name_addr(v) if v is not None else None

    @cached_property
    def vias(self) -> List[Via]:
        return [parse_via(v) for v in self.header_values("Via")]

    @cached_property
    def contacts(self) -> List[NameAddr]:
        return [parse_name_addr(v) for v in self.header_values("Contact")]

    @property
    def branch(self) -> Optional[str]:
        return self.vias[0].branch if self.vias else None

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def expires(self) -> Optional[int]:
        return to_int(self.header("Expires"))

    @property
    def first_line(self) -> str:
        if self.method:
            return f"{self.method} {self.uri} SIP/2.0"
        return f"SIP/2.0 {self.status} {self.reason or ''}".rstrip()

    def summary(self) -> str:
        """What a ladder arrow or a list line says: ``INVITE`` or ``200 OK``."""
        return self.method if self.method else f"{self.status} {self.reason or ''}".rstrip()


def looks_like_sip(data) -> bool:
    """Cheap test on a datagram's first bytes: could this be a SIP message?"""
    if data[:8] == b"SIP/2.0 ":
        return True
    nl = data.find(b"\n", 0, 2048)
    line = data[:nl if nl >= 0 else min(len(data), 2048)].rstrip(b"\r")
    return line.endswith(b" SIP/2.0") and b" " in line[:-8]


def body_of(rest: bytes, content_length: Optional[str], datagram: bool, problems: List[str]) -> bytes:
    """The body among the bytes after the headers, by Content-Length (RFC 3261 §18.3, §20.14); what is
    wrong with the length goes to ``problems``. Shared by the full parse and the scan, so both say the
    same thing about the same message."""
    if content_length is None:
        if not datagram:
            problems.append(Problem(ProblemKind.NO_CONTENT_LENGTH, "no Content-Length on a stream transport"))
        return rest
    cl = to_int(content_length)
    if cl is None:
        problems.append(Problem(ProblemKind.CONTENT_LENGTH, f"invalid Content-Length {content_length!r}"))
        return rest
    if cl > len(rest):
        problems.append(Problem(ProblemKind.CONTENT_LENGTH, f"Content-Length {cl} but only {len(rest)} body bytes"))
    elif cl < len(rest):
        if rest[cl:].strip(b"\r\n\x00 "):
            problems.append(Problem(ProblemKind.CONTENT_LENGTH,
                                    f"Content-Length {cl} but {len(rest)} bytes follow the headers"))
        return rest[:cl]
    return rest


REQUIRED = ("Call-ID", "CSeq", "From", "To", "Via")  # RFC 3261 §8.1.1: every request carries these


def parse_message(data: bytes, datagram: bool = True) -> SipMessage:
    """Parse one whole SIP message. ``datagram``: a missing Content-Length means the rest of the data
    (RFC 3261 §18.3 allows that only on UDP); on a stream the framer has already cut the message out."""
    problems: List[str] = []
    raw = bytes(data)
    start = 0
    while raw.startswith(b"\r\n", start):  # RFC 5626 keep-alives before a message
        start += 2
    head_end = raw.find(b"\r\n\r\n", start)
    sep = 4
    if head_end < 0:
        head_end = raw.find(b"\n\n", start)
        sep = 2
        if head_end >= 0:
            problems.append(Problem(ProblemKind.LF_LINE_ENDS, "header lines end with LF, not CRLF"))
    if head_end < 0:
        head_end, sep = len(raw), 0
        problems.append(Problem(ProblemKind.NO_EMPTY_LINE, "no empty line after the headers"))
    head = raw[start:head_end]
    nl = head.find(b"\n")
    first = (head[:nl] if nl >= 0 else head).rstrip(b"\r")
    method = uri = reason = None
    status = None
    m = STATUS_LINE.match(first)
    if m:
        status = int(m.group(1))
        reason = (m.group(2) or b"").decode("utf-8", "replace").strip()
    else:
        m = REQUEST_LINE.match(first)
        if not m:
            raise ParseError(f"not a SIP start line: {first[:60]!r}")
        method = m.group(1).decode("ascii").upper()
        if method not in KNOWN_METHODS:
            for known in KNOWN_METHODS:  # junk glued before a method ("DBREGISTER"), as tshark reads it
                if method.endswith(known):
                    problems.append(Problem(ProblemKind.JUNK_BEFORE_METHOD,
                                            f"junk before the request line: {method[:-len(known)]!r}"))
                    method = known
                    break
        uri = m.group(2).decode("utf-8", "replace")
    headers: List[Tuple[str, str]] = []
    index: Dict[str, List[str]] = {}
    names = _NAMES
    nl = head.find(b"\n")
    for text in (head[nl + 1:].decode("utf-8", "replace").split("\n") if nl >= 0 else ()):
        if text[-1:] == "\r":
            text = text[:-1]
        if not text:
            continue
        if text[0] in " \t" and headers:  # folded continuation (§7.3.1)
            name, value = headers[-1]
            headers[-1] = (name, value + " " + text.strip())
            index[name][-1] = headers[-1][1]
            continue
        raw_name, colon, value = text.partition(":")
        name = names.get(raw_name)
        if name is None:
            stripped = raw_name.strip()
            if not colon or not stripped or " " in stripped:
                problems.append(Problem(ProblemKind.BAD_HEADER_LINE, f"bad header line: {text[:60]!r}"))
                continue
            name = canonical_name(raw_name)
        value = value.strip()
        headers.append((name, value))
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    rest = raw[head_end + sep:]
    cl_values = index.get("Content-Length")
    body = body_of(rest, cl_values[0] if cl_values else None, datagram, problems)
    if datagram and cl_values and len(body) < len(rest):
        raw = raw[:head_end + sep + len(body)]
    for required in REQUIRED:
        if required not in index:
            problems.append(Problem(ProblemKind.MISSING_HEADER, f"missing {required}"))
    return SipMessage(raw=raw, method=method, uri=uri, status=status, reason=reason, headers=tuple(headers),
                      body=body, problems=tuple(problems), _index=index)
