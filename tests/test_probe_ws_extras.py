"""`sipflow probe` over WebSocket, read back from captures: the TLS key log of a wss probe and the
probe's own --pcap recording of ws traffic, each checked against tshark as an independent decoder.

- `--tls-keylog FILE` (and `SSLKEYLOGFILE` in the environment of `python -m sipflow probe ...`, with no
  option) writes the session secrets of a wss OPTIONS in the NSS key log format; tcpdump records the
  real TLS traffic on lo meanwhile, and tshark, given the key log, finds the WebSocket upgrade, the
  OPTIONS (masked, as a client must send it) and its 200 OK inside the TLS stream, with the Call-ID
  and the ports the probe reported. Without the key log, no SIP is visible.
- `--pcap FILE` of a ws OPTIONS and of a ws REGISTER with digest: `sipflow analyze --format json`
  reads the SIP messages with transport "ws", and tshark decodes the same messages, in the same
  frames, from the recorded HTTP upgrade and unmasked WebSocket frames. The REGISTER's digest
  `response="..."` is recorded as x's of the same length, or with --keep-secrets as sent (and then it
  is the right MD5 digest for the recorded challenge).

Kamailio (tests/scenarios/kamailio_ws.cfg), the CA and the private network namespace are those of
tests/test_probe_ws.py and tests/test_probe.py (their fixtures are imported). Every process started
here is stopped here; every wait is bounded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipflow.cli import ProbeExit

from test_probe import V4, private_loopback, stop_group
from test_probe_ws import PASSWORD, kamailio_ws, kamailio_ws_process, pki, probe, sip_target, url_target

assert private_loopback   # the imported fixture is this module's autouse network namespace too
assert kamailio_ws and kamailio_ws_process and pki   # fixtures used by name below

pytestmark = pytest.mark.stacks

REPO = Path(__file__).resolve().parents[1]
TLS13_LABELS = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
KEYLOG_LINE = re.compile(r"^([A-Z0-9_]+) ([0-9a-f]{64}) ([0-9a-f]{32,})$")


def need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install {' '.join(missing)})")


def tshark(*args) -> list:
    """tshark's tab-separated rows (fields mode) for the given arguments; each row a list."""
    p = subprocess.run(["tshark", *map(str, args)], check=False, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines() if line.strip("\t")]


def analyze(pcap) -> dict:
    p = subprocess.run([sys.executable, "-m", "sipflow", "analyze", str(pcap), "--format", "json"],
                       check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


# --------------------------------------------------------------------------- a real capture on lo

@contextlib.contextmanager
def tcpdump(cap: Path, port: int):
    """tcpdump on lo (this namespace), TCP to or from `port`, written to `cap` packet by packet, from
    the moment it says it listens until the block ends (SIGINT); bounded by timeout(1) at 60 s."""
    log = cap.with_suffix(".log")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(["timeout", "-s", "INT", "-k", "5", "60", "tcpdump", "-i", "lo", "-n", "-U",
                                 "--immediate-mode", "-s", "65535", "-w", str(cap), "tcp", "port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        end = time.monotonic() + 10
        while b"listening on" not in log.read_bytes():
            if proc.poll() is not None:
                pytest.skip(f"tcpdump cannot capture on lo: {log.read_text(errors='replace')[-500:]}")
            if time.monotonic() > end:
                pytest.fail(f"tcpdump did not start within 10 s: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)
        yield
    finally:
        stop_group(proc, ((signal.SIGINT, 15), (signal.SIGKILL, 5)))   # SIGINT: tcpdump flushes the file


def wait_for_client_close(cap: Path, client_port: str, limit=10.0) -> None:
    """Until the capture holds the probe's FIN (or RST): the last packet the probe causes (bounded)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        r = subprocess.run(["tcpdump", "-r", str(cap), "-n",
                            f"src port {client_port} and tcp[tcpflags] & (tcp-fin|tcp-rst) != 0"],
                           check=False, capture_output=True, text=True, timeout=30)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    pytest.fail(f"the probe's FIN from port {client_port} is not in the capture after {limit} s")


def options_over_wss(kam, pki, keys: Path, how: str) -> dict:
    """One wss OPTIONS whose TLS secrets go to `keys`: by --tls-keylog (in process), or by
    SSLKEYLOGFILE in the environment of a `python -m sipflow probe` subprocess. Its JSON row."""
    ca = pki / "ca.pem"
    if how == "option":
        code, out, err = probe("options", url_target(kam, "wss"), "--ca", ca, "--tls-keylog", keys,
                               "--format", "json", "--timeout", 5)
    else:
        env = {**os.environ, "SSLKEYLOGFILE": str(keys)}
        p = subprocess.run([sys.executable, "-m", "sipflow", "probe", "options", sip_target(kam, "wss"),
                            "--ca", str(ca), "--format", "json", "--timeout", "5"],
                           check=False, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        code, out, err = p.returncode, p.stdout, p.stderr
    assert code == ProbeExit.OK, (out, err)
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert (row["outcome"], row["status"], row["transport"]) == ("up", 200, "wss"), row
    return row


# --------------------------------------------------------------------------- 1. wss and the TLS key log

@pytest.mark.parametrize("how", ["option", "env"])
def test_the_tls_key_log_of_a_wss_probe_decrypts_a_real_capture(kamailio_ws, pki, tmp_path, how):
    need("tcpdump", "tshark")
    cap, keys = tmp_path / "wss.pcap", tmp_path / f"keys-{how}.txt"
    wss = kamailio_ws.wss
    with tcpdump(cap, wss):
        row = options_over_wss(kamailio_ws, pki, keys, how)
        local = port_of(row["local"])
        wait_for_client_close(cap, local)
    assert row["remote"] == f"{V4}:{wss}"

    # the key log: NSS format, TLS 1.3 secrets (or the TLS 1.2 master secret) of this one handshake
    assert keys.exists(), f"no key log written ({how})"
    lines = [line for line in keys.read_text().splitlines() if line.strip() and not line.startswith("#")]
    parsed = [KEYLOG_LINE.match(line) for line in lines]
    assert lines and all(parsed), lines
    labels = {m.group(1) for m in parsed}
    assert TLS13_LABELS <= labels or "CLIENT_RANDOM" in labels, labels
    randoms = {m.group(2) for m in parsed}
    hellos = tshark("-r", cap, "-d", f"tcp.port=={wss},tls", "-Y", "tls.handshake.type == 1",
                    "-T", "fields", "-e", "tls.handshake.random")
    assert len(hellos) == 1, hellos      # one connection, one ClientHello
    assert randoms == {hellos[0][0].replace(":", "").lower()}, (randoms, hellos)

    # the capture is really encrypted: no SIP text in it, and tshark sees none without the keys
    assert b"OPTIONS sip:" not in cap.read_bytes() and b"SIP/2.0 200" not in cap.read_bytes()
    assert tshark("-r", cap, "-d", f"tcp.port=={wss},tls", "-Y", "sip || http") == []

    # with the keys: the upgrade, then the OPTIONS and its 200 as SIP over the WebSocket
    decrypt = ["-r", cap, "-o", f"tls.keylog_file:{keys}", "-d", f"tcp.port=={wss},tls"]
    http = tshark(*decrypt, "-Y", "http", "-T", "fields", "-e", "tcp.srcport", "-e", "http.request.method",
                  "-e", "http.response.code", "-e", "http.upgrade")
    assert http == [[local, "GET", "", "websocket"], [str(wss), "", "101", "websocket"]], http
    sip = tshark(*decrypt, "-Y", "sip", "-T", "fields", "-E", "occurrence=f", "-e", "tcp.srcport",
                 "-e", "tcp.dstport", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method",
                 "-e", "sip.Call-ID", "-e", "sip.Via", "-e", "websocket.mask")
    assert [r[:6] for r in sip] == [[local, str(wss), "OPTIONS", "", "OPTIONS", row["call_id"]],
                                    [str(wss), local, "", "200", "OPTIONS", row["call_id"]]], sip
    assert all(r[6].startswith("SIP/2.0/WSS ") for r in sip), sip
    # on the wire the client's frames are masked (RFC 6455 5.3), the server's are not
    assert [r[7] for r in sip] in (["1", "0"], ["True", "False"]), sip


# --------------------------------------------------------------------------- 2. the --pcap recording of ws

def recorded_sip(pcap, ws_port) -> list:
    """tshark's reading of a --pcap recording: [(frame, method, status, Call-ID, mask, opcode)]."""
    rows = tshark("-r", pcap, "-d", f"tcp.port=={ws_port},http", "-Y", "sip", "-T", "fields", "-E", "occurrence=f",
                  "-e", "frame.number", "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID",
                  "-e", "websocket.mask", "-e", "websocket.opcode")
    return [tuple(r) for r in rows]


def check_recorded_upgrade(pcap, ws_port, local) -> None:
    """The recording starts with the HTTP upgrade, which tshark reads as one, and nothing in it is
    malformed for tshark."""
    http = tshark("-r", pcap, "-d", f"tcp.port=={ws_port},http", "-Y", "http", "-T", "fields",
                  "-e", "tcp.srcport", "-e", "http.request.method", "-e", "http.response.code", "-e", "http.upgrade")
    assert http == [[local, "GET", "", "websocket"], [str(ws_port), "", "101", "websocket"]], http
    assert tshark("-r", pcap, "-d", f"tcp.port=={ws_port},http", "-Y", "_ws.malformed") == []


def test_pcap_of_a_ws_options_reads_back_as_ws(kamailio_ws, tmp_path):
    need("tshark")
    pcap = tmp_path / "options-ws.pcap"
    code, out, err = probe("options", url_target(kamailio_ws, "ws"), "--pcap", pcap, "--format", "json",
                           "--timeout", 5)
    assert code == ProbeExit.OK, (out, err)
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    cid, local, remote = row["call_id"], row["local"], row["remote"]
    assert remote == f"{V4}:{kamailio_ws.ws}"

    doc = analyze(pcap)
    got = [(m["transport"], m["method"], m["status"], m["call_id"], m["src"], m["dst"]) for m in doc["messages"]]
    assert got == [("ws", "OPTIONS", None, cid, local, remote), ("ws", None, 200, cid, remote, local)], got
    assert doc["other"] == [{"method": "OPTIONS", "requests": 1, "responses": {"200": 1}}], doc["other"]
    assert doc["stats"]["malformed"] == 0 and doc["malformed"] == [], doc["malformed"]

    check_recorded_upgrade(pcap, kamailio_ws.ws, port_of(local))
    frames = [str(m["frame"]) for m in doc["messages"]]
    # the same messages in the same frames; the frames are text frames, written unmasked
    assert recorded_sip(pcap, kamailio_ws.ws) == [(frames[0], "OPTIONS", "", cid, "0", "1"),
                                                  (frames[1], "", "200", cid, "0", "1")]


def digest_response(auth: dict, method: str) -> str:
    """RFC 2617 MD5 (with or without qop=auth) for the test's password."""
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{auth['username']}:{auth['realm']}:{PASSWORD}")
    ha2 = md5(f"{method}:{auth['uri']}")
    if "qop" in auth:
        return md5(f"{ha1}:{auth['nonce']}:{auth['nc']}:{auth['cnonce']}:{auth['qop']}:{ha2}")
    return md5(f"{ha1}:{auth['nonce']}:{ha2}")


def digest_params(value: str) -> dict:
    return {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', value)}


@pytest.mark.parametrize("keep", [False, True], ids=["redacted", "keep-secrets"])
def test_pcap_of_a_ws_register_with_digest_reads_back_as_ws(kamailio_ws, tmp_path, keep):
    need("tshark")
    pcap = tmp_path / "register-ws.pcap"
    code, out, err = probe("register", "sip:alice@sipflow.test", "--proxy", sip_target(kamailio_ws, "ws"),
                           "--password", PASSWORD, "--pcap", pcap, *(["--keep-secrets"] if keep else []),
                           "--format", "json", "--timeout", 10)
    assert code == ProbeExit.OK, (out, err)
    r = json.loads(out)
    assert (r["outcome"], r["transport"], r["registered"], r["challenges"]) == ("up", "ws", True, 1), r
    cid = r["call_id"]

    # the digest response: x's of the same length, or as sent (and then right for the recorded nonce)
    data = pcap.read_bytes()
    assert PASSWORD.encode() not in data
    (challenge,) = re.findall(rb"\r\nWWW-Authenticate: *Digest ([^\r\n]*)", data, re.IGNORECASE)
    (authorization,) = re.findall(rb"\r\nAuthorization: *Digest ([^\r\n]*)", data, re.IGNORECASE)
    auth = digest_params(authorization.decode())
    assert auth["username"] == "alice" and auth["realm"] == "sipflow.test", auth
    assert auth["nonce"] == digest_params(challenge.decode())["nonce"], (auth, challenge)
    if keep:
        assert re.fullmatch(r"[0-9a-f]{32}", auth["response"]), auth
        assert auth["response"] == digest_response(auth, "REGISTER"), auth
    else:
        assert auth["response"] == "x" * 32, auth
        assert re.search(rb'response="[0-9a-f]{32}"', data) is None

    doc = analyze(pcap)
    got = [(m["transport"], m["method"], m["status"], m["cseq"], m["call_id"]) for m in doc["messages"]]
    assert got == [("ws", "REGISTER", None, 1, cid), ("ws", None, 401, 1, cid),
                   ("ws", "REGISTER", None, 2, cid), ("ws", None, 200, 2, cid)], got
    assert all((m["src"], m["dst"]) == ((r["local"], r["remote"]) if m["method"] else (r["remote"], r["local"]))
               for m in doc["messages"]), doc["messages"]
    (reg,) = doc["registrations"]
    assert (reg["aor"], reg["outcome"], reg["final_status"], reg["challenges"], reg["call_id"]) == (
        "sip:alice@sipflow.test", "registered", 200, 1, cid), reg
    assert doc["stats"]["malformed"] == 0, doc["malformed"]

    check_recorded_upgrade(pcap, kamailio_ws.ws, port_of(r["local"]))
    frames = [str(m["frame"]) for m in doc["messages"]]
    assert recorded_sip(pcap, kamailio_ws.ws) == [(frames[0], "REGISTER", "", cid, "0", "1"),
                                                  (frames[1], "", "401", cid, "0", "1"),
                                                  (frames[2], "REGISTER", "", cid, "0", "1"),
                                                  (frames[3], "", "200", cid, "0", "1")]
    # tshark found the whole Authorization header in the frame: the redaction kept every length
    (response,) = [row[0] for row in tshark("-r", pcap, "-d", f"tcp.port=={kamailio_ws.ws},http",
                                            "-Y", "sip.auth.digest.response", "-T", "fields",
                                            "-e", "sip.auth.digest.response")]
    assert response.strip('"') == auth["response"], response
