"""HTTP digest authentication as a SIP client does it (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

Owns reading challenges (WWW-Authenticate, Proxy-Authenticate), choosing which to answer, and building
the Authorization or Proxy-Authorization value. No I/O and no clock: the probe's transaction user
(``sipflow.probe``) decides when to retry; this module only computes.

- Challenges: several per header and several headers per response; quoted strings with backslash
  escapes; parameter names case-insensitive. Schemes other than Digest (e.g. Basic, token68 forms) are
  read past and ignored.
- Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess (RFC 7616 §3.4.2,
  RFC 8760 for SIP). No ``algorithm`` parameter means MD5 (RFC 2617 §3.2.1). Per realm the strongest
  offered algorithm is chosen: SHA-512-256 > SHA-256 > MD5 (a ``-sess`` variant ranks with its hash);
  equal strength goes to the challenge offered first.
- qop: ``auth`` when offered; ``auth-int`` when it is offered alone (the hash of the body, here usually
  empty, goes into A2); no qop at all is RFC 2069 compatibility (no cnonce, no nc).
- ``userhash=true`` (RFC 7616 §3.4.4): the username sent is H(user ":" realm).
- cnonce from ``secrets``, fresh for every Authorization; nc counts, per nonce, the requests sent with
  it (8 hex digits); opaque echoed unchanged; digest-uri is whatever the caller passes, which for SIP
  must be the Request-URI exactly (RFC 3261 §22.4).

Never logged here, never in ``repr``: the password. ``redact`` blanks the response hash (it can be
attacked offline) in any text about to be shown.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

# name -> (hashlib name, session variant, strength). SHA-512-256 is SHA-512/256 (FIPS 180-4, its own
# initial values), not SHA-512 cut short; it is offered only when the local hashlib (OpenSSL) has it.
_ALGORITHMS: Dict[str, Tuple[str, bool, int]] = {
    "MD5": ("md5", False, 1),
    "MD5-SESS": ("md5", True, 1),
    "SHA-256": ("sha256", False, 2),
    "SHA-256-SESS": ("sha256", True, 2),
    "SHA-512-256": ("sha512_256", False, 3),
    "SHA-512-256-SESS": ("sha512_256", True, 3),
}


def _available(hash_name: str) -> bool:
    try:
        hashlib.new(hash_name)
        return True
    except ValueError:
        return False


SUPPORTED = tuple(name for name, (h, _, _) in _ALGORITHMS.items() if _available(h))


def _canonical_algorithm(name: str) -> str:
    """``sha-256-sess`` -> ``SHA-256-sess`` (the spelling RFC 7616 uses on the wire)."""
    up = name.upper()
    return up[:-5] + "-sess" if up.endswith("-SESS") else up


def hasher(algorithm: str) -> Callable[[bytes], str]:
    """The hex digest function H of an algorithm name (case-insensitive, -sess or not)."""
    hash_name = _ALGORITHMS[algorithm.upper()][0]
    return lambda data: hashlib.new(hash_name, data).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Challenges


@dataclass(frozen=True)
class Challenge:
    """One challenge: its scheme and parameters (names lower-cased, values unquoted)."""
    scheme: str
    params: Tuple[Tuple[str, str], ...] = ()
    header: str = "WWW-Authenticate"     # or Proxy-Authenticate: decides the answering header

    def param(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.params if k == name), None)

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    @property
    def realm(self) -> str:
        return self.param("realm") or ""

    @property
    def nonce(self) -> str:
        return self.param("nonce") or ""

    @property
    def opaque(self) -> Optional[str]:
        return self.param("opaque")

    @property
    def algorithm(self) -> str:
        """As offered, canonical spelling; MD5 when the challenge names none."""
        return _canonical_algorithm(self.param("algorithm") or "MD5")

    @property
    def qop_options(self) -> Tuple[str, ...]:
        v = self.param("qop")
        return tuple(q.strip().lower() for q in v.split(",") if q.strip()) if v is not None else ()

    @property
    def stale(self) -> bool:
        return (self.param("stale") or "").strip().lower() == "true"

    @property
    def userhash(self) -> bool:
        return (self.param("userhash") or "").strip().lower() == "true"

    @property
    def answer_header(self) -> str:
        return "Proxy-Authorization" if self.header.lower() == "proxy-authenticate" else "Authorization"

    @property
    def qop(self) -> Optional[str]:
        """The qop we answer with: auth when offered, auth-int when alone, None for RFC 2069 mode.
        Raises ValueError when qop is offered but names neither."""
        opts = self.qop_options
        if self.param("qop") is None:
            return None
        if "auth" in opts:
            return "auth"
        if "auth-int" in opts:
            return "auth-int"
        raise ValueError(f"qop {self.param('qop')!r} offers neither auth nor auth-int")

    @property
    def supported(self) -> bool:
        """A Digest challenge this client can answer: known algorithm, a nonce, a usable qop."""
        if not self.is_digest or not self.nonce or self.param("realm") is None:
            return False
        if self.algorithm.upper() not in SUPPORTED:
            return False
        try:
            self.qop
        except ValueError:
            return False
        return True

    @property
    def strength(self) -> int:
        return _ALGORITHMS.get(self.algorithm.upper(), ("", False, 0))[2]

    def describe(self) -> str:
        """For humans: ``Digest SHA-256 realm="x" qop=auth`` (nothing secret in a challenge)."""
        out = f"{self.scheme} {self.algorithm} realm=\"{self.realm}\""
        if self.param("qop") is not None:
            out += f" qop={self.param('qop')}"
        if self.stale:
            out += " stale"
        return out


_WS = " \t\r\n"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def _skip(text: str, i: int, chars: str = _WS) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _quoted(text: str, i: int) -> Tuple[str, int]:
    """A quoted-string starting at text[i] == '"': (its unescaped value, index after it). An
    unterminated string runs to the end."""
    out, i = [], i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i


def parse_challenges(value: str, header: str = "WWW-Authenticate") -> List[Challenge]:
    """Every challenge in one header value (RFC 7235 §4.1: ``1#challenge``), in order.

    ``Digest realm="a", nonce="n", qop="auth,auth-int", Digest realm="a", algorithm=SHA-256, ...``
    gives two challenges. Malformed pieces are skipped, never raised."""
    out: List[Challenge] = []
    scheme: Optional[str] = None
    params: List[Tuple[str, str]] = []

    def close():
        if scheme is not None:
            out.append(Challenge(scheme=scheme, params=tuple(params), header=header))

    i, n = 0, len(value)
    while True:
        i = _skip(value, i, _WS + ",")
        if i >= n:
            break
        m = _TOKEN_CHARS.match(value, i)
        if not m:
            # junk: skip to the next comma outside quotes
            while i < n and value[i] != ",":
                i = _quoted(value, i)[1] if value[i] == '"' else i + 1
            continue
        name, j = m.group(0), _skip(value, m.end())
        if j < n and value[j] == "=" and scheme is not None and not (j + 1 < n and value[j + 1] == "="):
            # name=value: an auth-param of the current challenge
            k = _skip(value, j + 1)
            if k < n and value[k] == '"':
                v, i = _quoted(value, k)
            else:
                vm = _TOKEN_CHARS.match(value, k)
                v, i = (vm.group(0), vm.end()) if vm else ("", k)
            key = name.lower()
            if all(key != existing for existing, _ in params):   # each parameter once: the first wins
                params.append((key, v))
            continue
        # a new challenge: scheme [token68]
        close()
        scheme, params = name, []
        i = j
        t = _TOKEN68.match(value, i)
        if t:
            after = _skip(value, t.end())
            if after >= n or value[after] == ",":
                params.append(("token68", t.group(0)))   # e.g. Basic, Negotiate: not ours to answer
                i = after
    close()
    return out


def challenges_from(headers: Iterable[Tuple[str, str]]) -> List[Challenge]:
    """The challenges of a response's WWW-Authenticate and Proxy-Authenticate headers, in order.
    ``headers`` is (name, value) pairs, e.g. ``[("WWW-Authenticate", v) for v in ...]``."""
    out: List[Challenge] = []
    for name, value in headers:
        canon = "Proxy-Authenticate" if name.lower() == "proxy-authenticate" else "WWW-Authenticate"
        out += parse_challenges(value, canon)
    return out


def choose(challenges: Iterable[Challenge]) -> List[Challenge]:
    """The challenges to answer: per (header, realm), the strongest supported Digest challenge, the
    first offered among equals. Realms keep the order they were first offered in."""
    best: Dict[Tuple[str, str], Challenge] = {}
    for c in challenges:
        if not c.supported:
            continue
        key = (c.answer_header, c.realm)
        if key not in best or c.strength > best[key].strength:
            best[key] = c
    return list(best.values())


# ---------------------------------------------------------------------------------------------------
# Answers


def compute_response(algorithm: str, username: str, realm: str, password: str, method: str, uri: str,
                     nonce: str, cnonce: Optional[str] = None, nc: Optional[str] = None,
                     qop: Optional[str] = None, body: bytes = b"") -> str:
    """The ``response`` value (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1). Pure: the test vectors check it."""
    H = hasher(algorithm)
    ha1 = H(f"{username}:{realm}:{password}".encode("utf-8"))
    if algorithm.upper().endswith("-SESS"):
        ha1 = H(f"{ha1}:{nonce}:{cnonce}".encode("utf-8"))
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + H(body)
    ha2 = H(a2.encode("utf-8"))
    if qop:
        return H(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode("utf-8"))
    return H(f"{ha1}:{nonce}:{ha2}".encode("utf-8"))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Authorization:
    """One answer, ready to send: the header name and value, and what went into it (for reports; the
    response hash itself is only in ``value``)."""
    header: str          # Authorization or Proxy-Authorization
    value: str
    algorithm: str
    realm: str
    qop: Optional[str]
    nc: Optional[str]
    cnonce: Optional[str]
    uri: str
    nonce: str


class DigestSession:
    """Answers for one challenge (one nonce): every ``authorize`` call is one request sent with this
    nonce, so nc counts 1, 2, 3... The password stays in here and never appears in ``repr``."""

    def __init__(self, challenge: Challenge, username: str, password: str,
                 cnonce: Optional[Callable[[], str]] = None) -> None:
        if not challenge.supported:
            raise ValueError(f"cannot answer {challenge.describe()}")
        self.challenge = challenge
        self.username = username
        self._password = password
        self._cnonce = cnonce or (lambda: secrets.token_hex(16))
        self.count = 0

    def __repr__(self) -> str:
        return f"DigestSession({self.challenge.describe()}, user={self.username!r}, nc={self.count})"

    @property
    def algorithm(self) -> str:
        return self.challenge.algorithm

    @property
    def realm(self) -> str:
        return self.challenge.realm

    def authorize(self, method: str, uri: str, body: bytes = b"") -> Authorization:
        """The answer for one request: ``uri`` must be the Request-URI exactly (RFC 3261 §22.4)."""
        c = self.challenge
        qop = c.qop
        self.count += 1
        nc = f"{self.count:08x}" if qop else None
        cnonce = self._cnonce() if qop or c.algorithm.upper().endswith("-SESS") else None
        username = self.username
        if c.userhash:
            username = hasher(c.algorithm)(f"{self.username}:{c.realm}".encode("utf-8"))
        response = compute_response(c.algorithm, self.username, c.realm, self._password, method, uri, c.nonce,
                                    cnonce, nc, qop, body)
        parts = [f"username={_quote(username)}", f"realm={_quote(c.realm)}", f"nonce={_quote(c.nonce)}",
                 f"uri={_quote(uri)}", f"response={_quote(response)}"]
        if c.param("algorithm") is not None:
            parts.append(f"algorithm={c.algorithm}")
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if c.opaque is not None:
            parts.append(f"opaque={_quote(c.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        if c.userhash:
            parts.append("userhash=true")
        return Authorization(header=c.answer_header, value="Digest " + ", ".join(parts), algorithm=c.algorithm,
                             realm=c.realm, qop=qop, nc=nc, cnonce=cnonce, uri=uri, nonce=c.nonce)


# ---------------------------------------------------------------------------------------------------
# Keeping secrets out of what is shown

_SECRET_PARAM = re.compile(r'(\b(?:response|rspauth)\s*=\s*)("(?:[^"\\]|\\.)*"|[^\s,]+)', re.I)
_AUTH_LINE = re.compile(r"^((?:proxy-)?authorization|authentication-info|proxy-authentication-info)\s*:.*$",
                        re.I | re.M)


def redact(text: str, secrets_: Iterable[str] = ()) -> str:
    """``text`` (e.g. a SIP message) with the digest response hashes blanked in Authorization,
    Proxy-Authorization and *-Authentication-Info lines, and every string of ``secrets_`` (the
    password) replaced wherever it appears."""
    def line(m: re.Match) -> str:
        return _SECRET_PARAM.sub(lambda p: p.group(1) + '"<redacted>"', m.group(0))

    out = _AUTH_LINE.sub(line, text)
    for s in secrets_:
        if s:
            out = out.replace(s, "<redacted>")
    return out
