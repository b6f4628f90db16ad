"""`sipflow probe register` and `sipflow.sip.digest`: digest computed against RFC 7616's own example,
challenges parsed and chosen, then the real command against real registrars on loopback.

- Kamailio 5.6 as registrar (tests/scenarios/kamailio_registrar.cfg): one instance challenging with
  MD5, one with SHA-256 (the auth module's "algorithm" parameter, set by -A WITH_SHA256), nonce_count
  on. Kamailio cannot challenge with SHA-512-256 and SIPp 3.6.1's verifyauth only knows MD5, so
  SHA-512-256 is checked against the wire double below (its expectation computed here with hashlib).
- A small Python UDP registrar (``WireRegistrar``), a test double for what only the wire shows:
  digest-uri, cnonce, nc, stale, several challenges. It checks every Authorization with its own digest
  code (hashlib, not sipflow.sip.digest) and records what it got.

Loopback only (127.0.0.1, ::1), in the private network namespace of tests/test_probe.py (its fixture
and helpers are imported from there). Every process started here is stopped here; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sipflow.cli import ProbeExit, main
from sipflow.sip.digest import (DigestSession, challenges_from, choose, compute_response, parse_challenges,
                            redact)
from sipflow.errors import ProbeError
from sipflow.probe.common import Outcome
from sipflow.probe.register import (parse_aor, probe_register, register_nagios, register_prometheus,
                                    register_request, register_target, RegisterOptions)
from sipflow.sip.message import parse_message

from test_probe import (SCENARIOS, V4, V6, check_nagios, check_prometheus, free_port, has_ipv6, port_taken,
                        private_loopback, server, silent_udp)

assert private_loopback   # the imported fixture is this module's autouse network namespace too

PASSWORD = "secretpw"     # what tests/scenarios/kamailio_registrar.cfg accepts


# --------------------------------------------------------------------------- RFC 7616 §3.9.1

RFC = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life", method="GET",
           uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
           cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nc="00000001", qop="auth")
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CHALLENGE = (f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
                 f'nonce="{RFC["nonce"]}", opaque="{RFC_OPAQUE}"')


def rfc_response(algorithm):
    r = RFC
    return compute_response(algorithm, r["username"], r["realm"], r["password"], r["method"], r["uri"], r["nonce"],
                            r["cnonce"], r["nc"], r["qop"])


def test_rfc7616_example_md5_and_sha256():
    assert rfc_response("MD5") == "8ca523f5e9506fed4657c9700eebdbec"
    assert rfc_response("SHA-256") == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc7616_example_through_a_session_gives_the_rfc_authorization():
    (c,) = parse_challenges(RFC_CHALLENGE)
    s = DigestSession(c, "Mufasa", "Circle of Life", cnonce=lambda: RFC["cnonce"])
    a = s.authorize("GET", "/dir/index.html")
    got = auth_params(a.value)
    assert got["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert (got["username"], got["realm"], got["uri"], got["nonce"]) == \
        ("Mufasa", "http-auth@example.org", "/dir/index.html", RFC["nonce"])
    assert (got["qop"], got["nc"], got["cnonce"], got["opaque"], got["algorithm"]) == \
        ("auth", "00000001", RFC["cnonce"], RFC_OPAQUE, "SHA-256")
    assert a.header == "Authorization" and a.algorithm == "SHA-256"
    assert "Circle of Life" not in a.value and "Circle of Life" not in repr(s)


def independent_response(alg, user, realm, password, method, uri, nonce, cnonce, nc, qop, body=b""):
    """RFC 7616 §3.4.1 written out again with hashlib, for the wire double and the checks below."""
    base = alg.upper()
    sess = base.endswith("-SESS")
    base = base[:-5] if sess else base
    name = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[base]

    def H(data):
        return hashlib.new(name, data if isinstance(data, bytes) else data.encode()).hexdigest()
    ha1 = H(f"{user}:{realm}:{password}")
    if sess:
        ha1 = H(f"{ha1}:{nonce}:{cnonce}")
    ha2 = H(f"{method}:{uri}" + (f":{H(body)}" if qop == "auth-int" else ""))
    if not qop:
        return H(f"{ha1}:{nonce}:{ha2}")
    return H(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def test_sha512_256_is_fips_sha512_256_and_every_algorithm_matches_the_independent_formula():
    # FIPS 180-4 example: SHA-512/256("abc") (its own initial values, not SHA-512 cut short).
    assert hashlib.new("sha512_256", b"abc").hexdigest() == \
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    for alg in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess", "SHA-512-256", "SHA-512-256-sess"):
        for qop in ("auth", "auth-int", None):
            args = ("bob", "r", "p w", "REGISTER", "sip:example.com", "n0nce", "cn", "00000003", qop)
            assert compute_response(alg, *args) == independent_response(alg, *args), (alg, qop)


def auth_params(value):
    """The parameters of one Authorization value, parsed here (not with sipflow.sip.digest)."""
    assert value.startswith("Digest ")
    out = {}
    for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', value[7:]):
        out[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


# --------------------------------------------------------------------------- challenges

def test_several_challenges_in_one_header_and_across_headers_strongest_wins():
    one = parse_challenges('Digest realm="a", nonce="1", algorithm=MD5, qop="auth", '
                           'Digest realm="a", nonce="2", algorithm=SHA-256, qop="auth"')
    assert [c.nonce for c in one] == ["1", "2"] and [c.algorithm for c in one] == ["MD5", "SHA-256"]
    (best,) = choose(one)
    assert best.algorithm == "SHA-256"
    many = challenges_from([("WWW-Authenticate", 'Digest realm="a", nonce="1"'),
                            ("WWW-Authenticate", 'Digest realm="a", nonce="3", algorithm=SHA-512-256'),
                            ("WWW-Authenticate", 'Digest realm="a", nonce="2", algorithm=SHA-256')])
    assert [c.algorithm for c in choose(many)] == ["SHA-512-256"]
    # Equal strength: the first offered. Unknown algorithms and other schemes are left alone.
    assert choose(parse_challenges('Digest realm="a", nonce="x", algorithm=SHA-256-sess, '
                                   'Digest realm="a", nonce="y", algorithm=SHA-256'))[0].nonce == "x"
    odd = parse_challenges('Basic realm="a", Digest realm="a", nonce="z", algorithm=AKAv1-MD5, '
                           'Negotiate abc==, Digest realm="a", nonce="m"')
    assert [c.scheme for c in odd] == ["Basic", "Digest", "Negotiate", "Digest"]
    assert [c.nonce for c in choose(odd)] == ["m"] and choose(odd)[0].algorithm == "MD5"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='Digst realm=nonce"\\, ;aqop=-12SHA56MD', max_size=80))
def test_challenge_parser_never_raises(text):
    for c in parse_challenges(text):
        assert c.scheme and isinstance(c.supported, bool)
    choose(parse_challenges(text))


def test_quoted_strings_case_and_flags():
    (c,) = parse_challenges('DIGEST REALM="a \\"quoted\\", realm", Nonce="n,1", QOP="auth-int", '
                            'stale=TRUE, opaque="o", Algorithm=sha-256-SESS')
    assert c.realm == 'a "quoted", realm' and c.nonce == "n,1" and c.stale and c.opaque == "o"
    assert c.qop == "auth-int" and c.algorithm == "SHA-256-sess" and c.supported
    assert parse_challenges('Digest realm="a", nonce="n", qop="auth-int,auth"')[0].qop == "auth"
    assert not parse_challenges('Digest realm="a", nonce="n", qop="other"')[0].supported
    assert not parse_challenges('Digest realm="a"')[0].supported            # no nonce
    (p,) = challenges_from([("Proxy-Authenticate", 'Digest realm="p", nonce="n"')])
    assert p.answer_header == "Proxy-Authorization"
    # A realm each, answered each (a proxy and the registrar, say).
    both = choose(challenges_from([("Proxy-Authenticate", 'Digest realm="p", nonce="1"'),
                                   ("WWW-Authenticate", 'Digest realm="r", nonce="2"')]))
    assert [(c.answer_header, c.realm) for c in both] == [("Proxy-Authorization", "p"), ("Authorization", "r")]


def test_nc_counts_per_nonce_cnonce_is_fresh_and_no_qop_means_rfc2069():
    (c,) = parse_challenges('Digest realm="r", nonce="n", qop="auth", algorithm=MD5')
    s = DigestSession(c, "u", "pw")
    a1, a2, a3 = (auth_params(s.authorize("REGISTER", "sip:r").value) for _ in range(3))
    assert [a["nc"] for a in (a1, a2, a3)] == ["00000001", "00000002", "00000003"]
    assert len({a["cnonce"] for a in (a1, a2, a3)}) == 3 and len(a1["cnonce"]) >= 16
    for a in (a1, a2, a3):
        assert a["response"] == independent_response("MD5", "u", "r", "pw", "REGISTER", "sip:r", "n", a["cnonce"],
                                                      a["nc"], "auth")
    (old,) = parse_challenges('Digest realm="r", nonce="n"')
    a = auth_params(DigestSession(old, "u", "pw").authorize("REGISTER", "sip:r").value)
    assert "nc" not in a and "cnonce" not in a and "qop" not in a and "algorithm" not in a
    assert a["response"] == independent_response("MD5", "u", "r", "pw", "REGISTER", "sip:r", "n", None, None, None)


def test_auth_int_alone_and_userhash():
    (c,) = parse_challenges('Digest realm="r", nonce="n", qop="auth-int", algorithm=SHA-512-256, userhash=true')
    a = auth_params(DigestSession(c, "u", "pw", cnonce=lambda: "cn").authorize("REGISTER", "sip:r").value)
    assert a["qop"] == "auth-int" and a["userhash"] == "true"
    assert a["username"] == hashlib.new("sha512_256", b"u:r").hexdigest()
    assert a["response"] == independent_response("SHA-512-256", "u", "r", "pw", "REGISTER", "sip:r", "n", "cn",
                                                  "00000001", "auth-int")


def test_redact_blanks_response_hashes_and_the_password():
    text = ('REGISTER sip:x SIP/2.0\nAuthorization: Digest username="u", response="abcdef", nc=00000001\n'
            'Proxy-Authorization: Digest response=123abc, realm="p"\nX-Note: response="keep" pw=hunter2\n')
    out = redact(text, ["hunter2"])
    assert "abcdef" not in out and "123abc" not in out and "hunter2" not in out
    assert 'response="keep"' in out and 'username="u"' in out and out.count("<redacted>") == 3


# --------------------------------------------------------------------------- the request

def test_aor_request_uri_and_target():
    aor, t = parse_aor("sip:alice@example.com:5070;transport=tcp")
    assert (aor.uri, aor.user, aor.request_uri) == ("sip:alice@example.com:5070", "alice",
                                                    "sip:example.com:5070;transport=tcp")
    assert (t.host, t.port, t.transport) == ("example.com", 5070, "tcp")
    aor, t = register_target("sip:alice@example.com;transport=tcp", "sip:127.0.0.1:5999")
    assert (t.host, t.port, t.transport) == ("127.0.0.1", 5999, "tcp")      # the AOR's transport
    aor, t = register_target("sip:alice@example.com", "sip:[::1]:5999;transport=udp")
    assert (t.host, t.transport) == ("::1", "udp")
    for bad in ("sip:example.com", "sip:@example.com", "sip:alice:pw@example.com"):
        with pytest.raises(ProbeError):
            parse_aor(bad)
    with pytest.raises(ProbeError):
        RegisterOptions(expires=-1)


def test_register_request_is_well_formed():
    aor, _ = parse_aor("sip:alice@[::1]:5070")
    raw = register_request(aor, "tcp", (V6, 40000), "z9hG4bKx", "cid@sipflow", "ft", 3, 60,
                           auth=(("Authorization", 'Digest username="alice"'),), route="sip:[::1]:5070;lr")
    m = parse_message(raw, datagram=False)
    assert m.problems == () and m.method == "REGISTER" and m.uri == "sip:[::1]:5070"
    assert m.cseq == (3, "REGISTER") and m.header("Expires") == "60" and m.vias[0].param("rport") == ""
    assert (m.vias[0].host, m.vias[0].port) == (V6, 40000) and m.vias[0].transport == "TCP"
    assert str(m.contacts[0].uri) == "sip:alice@[::1]:40000;transport=tcp"
    assert str(m.to.uri) == str(m.from_.uri) == "sip:alice@[::1]:5070" and m.to.tag is None
    assert m.header("Route") == "<sip:[::1]:5070;lr>" and m.header("Authorization") == 'Digest username="alice"'


# --------------------------------------------------------------------------- a wire double

def reply(req, status, reason, *headers, to_tag="reg1"):
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.header_values("Via")]
    lines += [f"From: {req.header('From')}", f"To: {req.header('To')};tag={to_tag}",
              f"Call-ID: {req.call_id}", f"CSeq: {req.header('CSeq')}", *headers, "Server: wire double",
              "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class WireRegistrar:
    """A UDP registrar on loopback: challenges with ``challenges`` (a list of header lines, nonce
    placeholders {nonce}), checks each Authorization with ``independent_response`` against
    ``password``, answers 200 with the Contact and expires, or 401 again. ``stale_once``: the first
    correct answer draws a 401 stale=true with a new nonce. Every request is kept in ``requests``."""

    def __init__(self, challenges=('WWW-Authenticate: Digest realm="wire", nonce="{nonce}", qop="auth", '
                                   'algorithm=MD5',), password=PASSWORD, stale_once=False, grant=None, ip=V4,
                 proxy_challenge=None, min_expires=None, one_time=False, forbid=False):
        self.challenges, self.password, self.stale_once, self.grant = list(challenges), password, stale_once, grant
        self.proxy_challenge, self.min_expires, self.one_time = proxy_challenge, min_expires, one_time
        self.forbid = forbid      # wrong credentials draw 403 Forbidden, not another challenge
        self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.requests, self.nonces, self.bound = [], set(), {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _challenge(self, req, stale=False, lines=None, status=(401, "Unauthorized")):
        nonce = secrets.token_hex(8)
        self.nonces.add(nonce)
        lines = [c.format(nonce=nonce) + (", stale=true" if stale else "") for c in lines or self.challenges]
        return reply(req, *status, *lines)

    def _valid(self, value, req):
        if value is None:
            return None
        a = auth_params(value)
        alg = a.get("algorithm", "MD5")
        ok = a.get("nonce") in self.nonces and a.get("response") == independent_response(
            alg, a["username"], a["realm"], self.password, req.method, a["uri"], a["nonce"], a.get("cnonce"),
            a.get("nc"), a.get("qop"))
        return a if ok else None

    def _answer(self, req):
        if self.proxy_challenge and not self._valid(req.header("Proxy-Authorization"), req):
            return self._challenge(req, lines=[self.proxy_challenge], status=(407, "Proxy Authentication Required"))
        a = self._valid(req.header("Authorization"), req)
        if a is None:
            if self.forbid and req.header("Authorization"):
                return reply(req, 403, "Forbidden")
            return self._challenge(req)
        if self.stale_once:
            self.stale_once = False
            self.nonces.discard(a["nonce"])
            return self._challenge(req, stale=True)
        if self.one_time:
            self.nonces.discard(a["nonce"])
        contact = req.contacts[0].uri.raw
        expires = int(req.header("Expires"))
        if self.min_expires and 0 < expires < self.min_expires:
            return reply(req, 423, "Interval Too Brief", f"Min-Expires: {self.min_expires}")
        granted = min(expires, self.grant) if self.grant is not None else expires
        if granted:
            self.bound[contact] = granted
        else:
            self.bound.pop(contact, None)
        return reply(req, 200, "OK", *[f"Contact: <{c}>;expires={e}" for c, e in self.bound.items()])

    def _serve(self):
        while not self.stop.is_set():
            try:
                data, src = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            req = parse_message(data)
            self.requests.append(req)
            self.sock.sendto(self._answer(req), src)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@contextlib.contextmanager
def wire_registrar(**kw):
    w = WireRegistrar(**kw)
    try:
        yield w
    finally:
        w.close()


def authorizations(w):
    return [auth_params(r.header("Authorization")) for r in w.requests if r.header("Authorization")]


def test_digest_uri_is_the_request_uri_cseq_grows_and_cnonce_differs_between_runs():
    cnonces = []
    with wire_registrar() as w:
        for _ in range(2):
            before = len(w.requests)
            r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, timeout=3))
            assert r.outcome is Outcome.UP and r.auth_algorithm == "MD5" and r.registered, r
            first, second = w.requests[before:]
            assert first.header("Authorization") is None and second.uri == f"sip:{V4}:{w.port}"
            a = auth_params(second.header("Authorization"))
            assert a["uri"] == second.uri                                  # digest-uri == Request-URI
            assert (first.cseq[0] + 1, "REGISTER") == second.cseq
            assert first.call_id == second.call_id and first.from_.tag == second.from_.tag
            assert first.branch != second.branch and second.branch.startswith("z9hG4bK")
            cnonces.append(a["cnonce"])
    assert cnonces[0] != cnonces[1]


def test_nc_increments_when_the_nonce_is_reused_for_the_unregister():
    with wire_registrar() as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, unregister=True,
                                                                       timeout=3))
        auths = authorizations(w)
    assert r.outcome is Outcome.UP and r.registered and r.unregistered, r
    assert [a["nc"] for a in auths] == ["00000001", "00000002"] and auths[0]["nonce"] == auths[1]["nonce"]
    assert auths[0]["cnonce"] != auths[1]["cnonce"]
    assert [q.header("Expires") for q in w.requests] == ["60", "60", "0"]
    assert [q.cseq[0] for q in w.requests] == [1, 2, 3] and r.requests == 3 and r.challenges == 1


def test_stale_nonce_is_retried_once_with_the_new_nonce():
    with wire_registrar(stale_once=True) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, timeout=3))
        auths = authorizations(w)
    assert r.outcome is Outcome.UP and r.stale_retries == 1 and r.challenges == 2 and r.requests == 3, r
    assert auths[0]["nonce"] != auths[1]["nonce"] and auths[1]["nc"] == "00000001"
    assert [q.cseq[0] for q in w.requests] == [1, 2, 3]


def test_wrong_password_is_an_auth_failure_after_one_retry():
    with wire_registrar() as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password="wrong", timeout=3))
    assert r.outcome is Outcome.AUTH_FAILURE and r.status == 401 and len(w.requests) == 2, r
    assert "rejected" in r.reason
    with wire_registrar(forbid=True) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password="wrong", timeout=3))
    assert r.outcome is Outcome.AUTH_FAILURE and r.status == 403 and len(w.requests) == 2, r


def test_the_strongest_of_several_challenges_is_answered():
    challenges = ['WWW-Authenticate: Digest realm="wire", nonce="{nonce}", qop="auth", algorithm=MD5',
                  'WWW-Authenticate: Digest realm="wire", nonce="{nonce}", qop="auth", algorithm=SHA-512-256, '
                  'Digest realm="wire", nonce="{nonce}", qop="auth", algorithm=SHA-256']
    with wire_registrar(challenges=challenges) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, timeout=3))
        (a,) = authorizations(w)
    assert r.outcome is Outcome.UP and r.auth_algorithm == "SHA-512-256" and a["algorithm"] == "SHA-512-256", r
    assert r.to_dict()["auth_algorithm"] == "SHA-512-256"


def test_granted_expiry_comes_from_our_contact_and_other_bindings_are_listed():
    with wire_registrar(grant=30) as w:
        w.bound["sip:alice@192.0.2.7:5060"] = 3000
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, expires=120, timeout=3))
    assert r.outcome is Outcome.UP and r.expires == 30 and r.expires_requested == 120
    assert sorted((b.contact, b.expires, b.ours) for b in r.bindings) == sorted(
        [("sip:alice@192.0.2.7:5060", 3000, False), (f"sip:alice@{r.local}", 30, True)])


def test_proxy_and_registrar_challenges_are_both_answered():
    """A 407 from the proxy realm, then a 401 from the registrar's: the last REGISTER carries both."""
    proxy = 'Proxy-Authenticate: Digest realm="proxy", nonce="{nonce}", qop="auth", algorithm=SHA-256'
    with wire_registrar(proxy_challenge=proxy) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, timeout=3))
        last = w.requests[-1]
    assert r.outcome is Outcome.UP and r.challenges == 2 and [q.cseq[0] for q in w.requests] == [1, 2, 3], r
    pa, a = auth_params(last.header("Proxy-Authorization")), auth_params(last.header("Authorization"))
    assert (pa["realm"], pa["algorithm"], a["realm"]) == ("proxy", "SHA-256", "wire")
    assert r.auth_algorithm == "MD5" and r.auth_realm == "wire"      # the registrar's, Authorization


def test_interval_too_brief_is_retried_with_min_expires():
    with wire_registrar(min_expires=300) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, expires=60, timeout=3))
    assert r.outcome is Outcome.UP and r.expires == 300 and r.expires_requested == 60, r
    assert [q.header("Expires") for q in w.requests] == ["60", "60", "300"]
    assert [a["nc"] for a in authorizations(w)] == ["00000001", "00000002"]


def test_a_challenge_to_a_reused_nonce_is_a_new_challenge_not_a_rejection():
    """A registrar with one-time nonces challenges the unregister's reused nonce: answered once more."""
    with wire_registrar(one_time=True) as w:
        r = probe_register(f"sip:alice@{V4}:{w.port}", RegisterOptions(password=PASSWORD, unregister=True,
                                                                       timeout=3))
        auths = authorizations(w)
    assert r.outcome is Outcome.UP and r.unregistered and r.challenges == 2 and r.requests == 4, r
    assert [a["nc"] for a in auths] == ["00000001", "00000002", "00000001"]
    assert auths[0]["nonce"] == auths[1]["nonce"] != auths[2]["nonce"]


def test_password_and_response_hash_never_printed():
    with wire_registrar() as w:
        res = CliRunner().invoke(main, ["probe", "register", f"sip:alice@{V4}:{w.port}",
                                                        "--password", PASSWORD, "--format", "json", "-v"])
        hashes = [a["response"] for a in authorizations(w)]
    assert res.exit_code == 0, res.output
    assert "Authorization: Digest" in res.stderr and "<redacted>" in res.stderr
    for secret in [PASSWORD, *hashes]:
        assert secret not in res.stdout and secret not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["auth_algorithm"] == "MD5" and "password" not in doc and "response" not in doc


def test_a_challenge_without_password_is_an_auth_failure():
    with wire_registrar() as w:
        code = CliRunner().invoke(main, ["probe", "register", f"sip:alice@{V4}:{w.port}"], env={
            "SIPFLOW_PASSWORD": None}).exit_code
    assert code == ProbeExit.AUTH_FAILURE


# --------------------------------------------------------------------------- Kamailio registrars

def _kamailio(tmp_path_factory, sha256):
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    mpath = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                              "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
                  if Path(p, "registrar.so").exists() and Path(p, "auth.so").exists()), None)
    if mpath is None:
        pytest.skip("Kamailio's registrar and auth modules are not found")
    run = tmp_path_factory.mktemp("kamailio-sha256" if sha256 else "kamailio-md5")
    port = free_port(V4)
    listen = [f"{proto}:{V4}:{port}" for proto in ("udp", "tcp")]
    if has_ipv6():
        listen += [f"{proto}:[{V6}]:{port}" for proto in ("udp", "tcp")]
    cmd = ["kamailio", "-f", SCENARIOS / "kamailio_registrar.cfg", "-L", mpath, "-DD", "-E", "-m", 32, "-M", 4,
           "-w", run, "-Y", run, "-P", run / "kamailio.pid"]
    if sha256:
        cmd += ["-A", "WITH_SHA256"]
    for addr in listen:
        cmd += ["-l", addr]
    ready = lambda: port_taken(V4, port, socket.SOCK_DGRAM) and port_taken(V4, port, socket.SOCK_STREAM)  # noqa
    return server(cmd, run / "kamailio.log", ready), port


@pytest.fixture(scope="module")
def registrar_md5(tmp_path_factory):
    ctx, port = _kamailio(tmp_path_factory, sha256=False)
    with ctx:
        time.sleep(0.2)
        yield port


@pytest.fixture(scope="module")
def registrar_sha256(tmp_path_factory):
    ctx, port = _kamailio(tmp_path_factory, sha256=True)
    with ctx:
        time.sleep(0.2)
        yield port


def check_register_nagios(code, out):
    """tests/test_probe.py's plugin-guidelines check; its first metric is 'rtt', here it is 'total'."""
    assert out.count("'total'=") == 1
    return check_nagios(code, out.replace("'total'=", "'rtt'="))


def register(*args):
    r = CliRunner().invoke(main, ["probe", "register", *map(str, args)])
    return r.exit_code, r.stdout, r.stderr


def test_kamailio_md5_registers(registrar_md5):
    code, out, err = register(f"sip:alice@{V4}:{registrar_md5}", "--password", PASSWORD, "--format", "json")
    assert code == ProbeExit.OK, (out, err)
    doc = json.loads(out)
    assert (doc["outcome"], doc["status"], doc["registered"], doc["auth_algorithm"]) == ("up", 200, True, "MD5")
    assert doc["expires"] == 60 and doc["challenges"] == 1 and doc["requests"] == 2 and doc["auth_qop"] == "auth"
    assert [b for b in doc["bindings"] if b["ours"]] == [{"contact": f"sip:alice@{doc['local']}", "expires": 60,
                                                           "ours": True}]
    for k in ("first_response", "challenge", "register", "total"):
        assert 0 < doc[k] < 1 and doc[k] == round(doc[k], 6), k
    assert doc["server"].startswith("kamailio") and doc["seen_as"] == doc["local"]
    assert PASSWORD not in out


def test_kamailio_sha256_registers_and_says_so(registrar_sha256):
    code, out, err = register(f"sip:bob@{V4}:{registrar_sha256}", "--password", PASSWORD, "--format", "json",
                              "--expires", 120)
    assert code == ProbeExit.OK, (out, err)
    doc = json.loads(out)
    assert doc["auth_algorithm"] == "SHA-256" and doc["registered"] and doc["expires"] == 120
    code, out, _ = register(f"sip:bob@{V4}:{registrar_sha256}", "--password", PASSWORD)
    assert code == 0 and "auth: digest SHA-256" in out and "result: registered" in out


@pytest.mark.parametrize("which", ["md5", "sha256"])
def test_kamailio_wrong_password_is_auth_failure_and_nagios_critical(which, request):
    port = request.getfixturevalue(f"registrar_{which}")
    target = f"sip:carol@{V4}:{port}"
    code, out, _ = register(target, "--password", "not-the-password", "--format", "json")
    doc = json.loads(out)
    assert code == ProbeExit.AUTH_FAILURE == 11 and doc["outcome"] == "auth failure" and doc["status"] == 401
    assert "not-the-password" not in out
    code, out, _ = register(target, "--password", "not-the-password", "--format", "nagios")
    state, _perf = check_register_nagios(code, out)
    assert state == "CRITICAL" and code == 2 and "auth failure" in out


def test_kamailio_unregister_leaves_no_binding(registrar_md5):
    aor = f"sip:dave@{V4}:{registrar_md5}"
    code, out, err = register(aor, "--password", PASSWORD, "--unregister", "--format", "json")
    assert code == ProbeExit.OK, (out, err)
    doc = json.loads(out)
    assert doc["registered"] and doc["unregistered"] and doc["unregister"] > 0
    # The unregister reused the nonce with nc 2, which Kamailio (nonce_count on) accepted unchallenged.
    assert doc["requests"] == 3 and doc["challenges"] == 1
    unreg = doc["steps"][-1]
    assert unreg["step"] == "unregister" and unreg["status"] == 200 and unreg["bindings"] == []
    # Nothing left: a REGISTER with --expires 0 alone (no binding of its own) gets 200 with no Contact.
    code, out, _ = register(aor, "--password", PASSWORD, "--expires", 0, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["unregistered"] and doc["steps"][0]["bindings"] == [] and doc["registered"] is False


def test_kamailio_over_tcp(registrar_sha256):
    code, out, err = register(f"sip:erin@{V4}:{registrar_sha256};transport=tcp", "--password", PASSWORD,
                              "--unregister", "--format", "json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["transport"] == "tcp" and doc["connect"] > 0 and doc["retransmissions"] == 0
    assert doc["registered"] and doc["unregistered"] and doc["auth_algorithm"] == "SHA-256"
    assert doc["bindings"][0]["contact"].endswith(";transport=tcp")


def test_kamailio_over_ipv6(registrar_md5):
    if not has_ipv6():
        pytest.skip("no IPv6 on loopback")
    for transport in ("udp", "tcp"):
        code, out, err = register(f"sip:frank@[{V6}]:{registrar_md5};transport={transport}", "--password",
                                  PASSWORD, "--unregister", "--format", "json")
        assert code == 0, (out, err)
        doc = json.loads(out)
        assert doc["remote"] == f"[{V6}]:{registrar_md5}" and doc["local"].startswith("[::1]:")
        assert doc["registered"] and doc["unregistered"]
        assert [b["contact"] for b in doc["bindings"] if b["ours"]] == \
            [f"sip:frank@{doc['local']}" + (";transport=tcp" if transport == "tcp" else "")]


def test_kamailio_through_proxy_option(registrar_md5):
    """--proxy: the REGISTER names the AOR's domain (here a name that is never resolved), and goes to
    the proxy address; the realm is the To domain."""
    code, out, err = register("sip:gina@sip.example.test", "--proxy", f"sip:{V4}:{registrar_md5}",
                              "--password", PASSWORD, "--format", "json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["request_uri"] == "sip:sip.example.test" and doc["auth_realm"] == "sip.example.test"
    assert doc["remote"] == f"{V4}:{registrar_md5}" and doc["registered"]


def test_kamailio_nagios_and_prometheus(registrar_sha256):
    code, out, _ = register(f"sip:hank@{V4}:{registrar_sha256}", "--password", PASSWORD, "--format", "nagios",
                            "-w", "0.5", "-c", "1")
    state, perf = check_register_nagios(code, out)
    assert state == "OK" and "(digest SHA-256)" in out and float(perf["rtt"]["value"]) > 0
    assert perf["expires"]["value"] == "60"
    code, out, _ = register(f"sip:hank@{V4}:{registrar_sha256}", "--password", PASSWORD, "--format", "prometheus")
    s = check_prometheus(out)
    labels = f'target="sip:hank@{V4}:{registrar_sha256}",transport="udp"'
    assert code == 0 and s[("probe_success", labels)] == 1 and s[("probe_sip_status_code", labels)] == 200
    assert s[("probe_sip_register_expires_seconds", labels)] == 60
    assert 0 < s[("probe_sip_phase_seconds", labels + ',phase="challenge"')] < 1
    code, out, _ = register(f"sip:hank@{V4}:{registrar_sha256}", "--password", "bad", "--format", "prometheus")
    s = check_prometheus(out)
    assert s[("probe_success", labels)] == 0 and s[("probe_sip_auth_failure", labels)] == 1


# --------------------------------------------------------------------------- --timeout, refused

def test_timeout_bounds_the_run_against_a_silent_server():
    with silent_udp() as sink:
        t0 = time.monotonic()
        r = probe_register(f"sip:alice@{V4}:{sink.port}", RegisterOptions(password=PASSWORD, timeout=1.2))
        took = time.monotonic() - t0
    # Sent at 0 and again at T1 = 0.5 s (Timer E); the next would be at 1.5 s, after --timeout.
    assert r.outcome is Outcome.TIMEOUT and 1.2 <= took < 1.35 and r.retransmissions == 1, (r, took)
    assert len(sink.got) == 2 and len({d for _, d, _ in sink.got}) == 1
    state, line = register_nagios(r)
    assert state == 2 and check_register_nagios(2, line + "\n")[0] == "CRITICAL"
    assert check_prometheus(register_prometheus(r))
    with silent_udp() as sink:
        code, out, _ = register(f"sip:alice@{V4}:{sink.port}", "--password", PASSWORD, "--timeout", 0.3)
    assert code == ProbeExit.TIMEOUT and "timeout: no final response before --timeout 0.3 s" in out


def test_timeout_bounds_a_tcp_registrar_that_never_answers():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.bind((V4, 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        t0 = time.monotonic()
        r = probe_register(f"sip:alice@{V4}:{port};transport=tcp", RegisterOptions(password=PASSWORD, timeout=0.8))
        took = time.monotonic() - t0
    assert r.outcome is Outcome.TIMEOUT and 0.8 <= took < 0.95 and r.retransmissions == 0


def test_dead_port_is_refused_at_once():
    port = free_port()
    t0 = time.monotonic()
    code, out, _ = register(f"sip:alice@{V4}:{port}", "--password", PASSWORD, "--format", "nagios")
    assert time.monotonic() - t0 < 1
    assert code == 2 and out.startswith("SIP CRITICAL - refused: connection refused")
    assert register(f"sip:alice@{V4}:{port}", "--password", PASSWORD)[0] == ProbeExit.REFUSED


def test_help_documents_the_auth_failure_exit_code():
    out = CliRunner().invoke(main, ["probe", "register", "--help"]).output
    assert "11 auth failure" in out and "SIPFLOW_PASSWORD" in out
    code, out, _ = register("sip:example.com", "--format", "nagios")
    assert code == 3 and out.startswith("SIP UNKNOWN - ")
