"""`sipflow probe` over TLS (issue 3): `sip:host;transport=tls` and `sips:host` targets, port 5061 by
default, the server certificate checked against the system CA store, `--ca FILE` or not at all
(`--insecure`), against a real Kamailio 5.6 with its tls module (Debian: kamailio-tls-modules) running
tests/scenarios/kamailio_registrar.cfg with -A WITH_TLS: OPTIONS answered, REGISTER challenged with
MD5 digest.

The CA and the server certificate (IP SANs 127.0.0.1 and ::1) are made with the openssl command in a
temporary directory at test time. Only 127.0.0.1 and ::1 are used, in tests/test_probe.py's private
network namespace (its autouse fixture is imported). Every process started here is stopped here.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipflow.cli import ProbeExit, main
from sipflow.errors import ProbeError
from sipflow.probe.common import parse_target, TlsOptions
from sipflow.probe.options import options_request
from sipflow.probe.register import parse_aor, register_request

from test_probe import (SCENARIOS, V4, V6, check_nagios, free_port, has_ipv6, port_taken, private_loopback,
                        server)

assert private_loopback   # the imported fixture is this module's autouse network namespace too

PASSWORD = "secretpw"     # what tests/scenarios/kamailio_registrar.cfg accepts
MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
               "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")


# --------------------------------------------------------------------------- targets and requests, offline

@pytest.mark.parametrize("text, port, transport, uri", [
    ("sips:127.0.0.1", 5061, "tls", "sips:127.0.0.1"),
    ("sip:127.0.0.1;transport=tls", 5061, "tls", "sip:127.0.0.1;transport=tls"),
    ("sip:127.0.0.1;transport=TLS", 5061, "tls", "sip:127.0.0.1;transport=TLS"),
    ("SIPS:[::1]:5071", 5071, "tls", "sips:[::1]:5071"),
    ("sips:alice@pbx.example.com;transport=tcp", 5061, "tls", "sips:alice@pbx.example.com;transport=tcp"),
    ("sip:127.0.0.1;transport=tcp", 5060, "tcp", "sip:127.0.0.1;transport=tcp"),
])
def test_tls_targets(text, port, transport, uri):
    t = parse_target(text)
    assert (t.port, t.transport, t.uri) == (port, transport, uri)


@pytest.mark.parametrize("text", ["sips:127.0.0.1;transport=udp", "sip:127.0.0.1;transport=sctp", "sips:",
                                  "sips:::1"])
def test_bad_tls_targets_are_refused(text):
    with pytest.raises(ProbeError):
        parse_target(text)


def test_requests_over_tls_say_tls_in_via_and_contact():
    raw = options_request(parse_target("sips:127.0.0.1"), (V4, 40000), "z9hG4bKx", "c@x", "ft", 1)
    assert b"OPTIONS sips:127.0.0.1 SIP/2.0\r\n" in raw
    assert b"Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKx;rport\r\n" in raw
    assert b"Contact: <sip:sipflow@127.0.0.1:40000;transport=tls>\r\n" in raw
    aor, target = parse_aor("sips:alice@example.com")
    assert (aor.uri, aor.request_uri, target.transport, target.port) == (
        "sips:alice@example.com", "sips:example.com", "tls", 5061)
    raw = register_request(aor, "tls", (V4, 40001), "z9hG4bKy", "c@x", "ft", 1, 60)
    assert b"Via: SIP/2.0/TLS 127.0.0.1:40001;" in raw and b"<sip:alice@127.0.0.1:40001;transport=tls>" in raw


def test_a_missing_ca_file_is_a_could_not_run_error(tmp_path):
    with pytest.raises(ProbeError, match="--ca"):
        TlsOptions(ca=str(tmp_path / "nope.pem")).context()
    r = CliRunner().invoke(main, ["probe", "options", "sips:127.0.0.1", "--ca", str(tmp_path / "nope.pem")])
    assert r.exit_code == ProbeExit.USAGE   # click checks that the file exists


# --------------------------------------------------------------------------- a CA, a certificate, Kamailio

def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, names: str, cas=("ca",)) -> Path:
    """In ``d``: CAs (``<name>.pem``), and a server certificate for 127.0.0.1 signed by the first, with
    the subjectAltName ``names`` (e.g. ``IP:127.0.0.1,DNS:localhost``). Returns ``d``."""
    for name in cas:
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", 2, "-subj", f"/CN=sipflow test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName={names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{cas[0]}.pem", "-CAkey", f"{cas[0]}.key",
            "-CAcreateserial", "-out", "server.pem", "-days", 2, "-extfile", "ext.cnf", cwd=d)
    return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and ::1 (IP SANs); also a
    second CA that signed nothing. Returns the directory."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    return make_pki(tmp_path_factory.mktemp("pki"), "IP:127.0.0.1,IP:::1", ("ca", "other-ca"))


@pytest.fixture(scope="module")
def kamailio_tls(tmp_path_factory, pki):
    """tests/scenarios/kamailio_registrar.cfg with -A WITH_TLS, listening on TLS only (127.0.0.1 and
    ::1, one free port); yields the port."""
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    mpath = next((p for p in MODULE_DIRS if Path(p, "registrar.so").exists()), None)
    if mpath is None:
        pytest.skip("Kamailio's registrar module is not found")
    if not Path(mpath, "tls.so").exists():
        pytest.skip("Kamailio's tls module is not installed (Debian: apt-get install kamailio-tls-modules)")
    run = tmp_path_factory.mktemp("kamailio-tls")
    tls_cfg = run / "tls.cfg"
    tls_cfg.write_text("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
                       f"private_key = {pki / 'server.key'}\ncertificate = {pki / 'server.pem'}\n\n"
                       "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")
    port = free_port(V4, socket.SOCK_STREAM)
    listen = [f"tls:{V4}:{port}"]
    if has_ipv6():
        listen.append(f"tls:[{V6}]:{port}")
    cmd = ["kamailio", "-f", SCENARIOS / "kamailio_registrar.cfg", "-L", mpath, "-DD", "-E", "-m", 32, "-M", 8,
           "-w", run, "-Y", run, "-P", run / "kamailio.pid", "-A", "WITH_TLS", "-A", f'TLS_CONFIG="{tls_cfg}"']
    for addr in listen:
        cmd += ["-l", addr]
    with server(cmd, run / "kamailio.log", lambda: port_taken(V4, port, socket.SOCK_STREAM)):
        time.sleep(0.3)   # the TLS workers have the socket too; give them a moment
        yield port


def probe(*args):
    r = CliRunner().invoke(main, ["probe", *map(str, args)])
    return r.exit_code, r.stdout, r.stderr


# --------------------------------------------------------------------------- OPTIONS over TLS

def test_options_over_tls_with_the_test_ca_gets_200(kamailio_tls, pki):
    code, out, _ = probe("options", f"sip:{V4}:{kamailio_tls};transport=tls", "--ca", pki / "ca.pem",
                         "--format", "json", "--count", 2, "--interval", 0.2, "--timeout", 5)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == ProbeExit.OK, out
    assert [(r["outcome"], r["status"], r["transport"]) for r in rows] == [("up", 200, "tls")] * 2
    assert rows[0]["retransmissions"] == 0 and rows[0]["connect"] > 0   # TCP + TLS handshake timed
    assert rows[1]["connect"] is None                                   # the second reuses the connection
    assert rows[0]["local"] == rows[1]["local"] and "kamailio" in rows[0]["server"]


def test_sips_uri_without_the_ca_is_a_certificate_verify_failure(kamailio_tls):
    code, out, _ = probe("options", f"sips:{V4}:{kamailio_tls}", "--format", "json", "--timeout", 5)
    row = json.loads(out)
    assert code == ProbeExit.TRANSPORT_ERROR
    assert row["outcome"] == "error" and row["status"] is None
    assert row["reason"].startswith("TLS certificate verify failed: "), row["reason"]
    code, out, _ = probe("options", f"sips:{V4}:{kamailio_tls}", "--format", "nagios", "--timeout", 5)
    check_nagios(code, out)
    assert code == 2 and out.startswith("SIP CRITICAL - TLS certificate verify failed: "), out


def test_a_ca_that_did_not_sign_the_certificate_is_a_verify_failure(kamailio_tls, pki):
    code, out, _ = probe("options", f"sips:{V4}:{kamailio_tls}", "--ca", pki / "other-ca.pem", "--timeout", 5)
    assert code == ProbeExit.TRANSPORT_ERROR and "TLS certificate verify failed: " in out, out


def test_the_name_is_checked_and_insecure_skips_the_check(kamailio_tls, pki):
    # "localhost" resolves to 127.0.0.1, but the certificate names only the IP addresses
    code, out, _ = probe("options", f"sips:localhost:{kamailio_tls}", "--ca", pki / "ca.pem", "-4",
                         "--format", "json", "--timeout", 5)
    assert code == ProbeExit.TRANSPORT_ERROR and "TLS certificate verify failed" in json.loads(out)["reason"]
    assert "localhost" in json.loads(out)["reason"]
    for target in (f"sips:localhost:{kamailio_tls}", f"sips:{V4}:{kamailio_tls}"):
        code, out, _ = probe("options", target, "--insecure", "-4", "--format", "json", "--timeout", 5)
        assert code == ProbeExit.OK and json.loads(out)["status"] == 200, out


def test_options_over_tls_on_ipv6(kamailio_tls, pki):
    if not has_ipv6():
        pytest.skip("no IPv6 on loopback")
    code, out, _ = probe("options", f"sips:[{V6}]:{kamailio_tls}", "--ca", pki / "ca.pem", "--format", "json",
                         "--timeout", 5)
    assert code == ProbeExit.OK and json.loads(out)["remote"] == f"[{V6}]:{kamailio_tls}", out


def test_a_server_that_never_finishes_the_handshake_is_bounded_by_timeout():
    with socket.socket() as listener:   # the kernel accepts the TCP connection; nobody speaks TLS
        listener.bind((V4, 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        code, out, _ = probe("options", f"sips:{V4}:{port}", "--insecure", "--timeout", 1, "--format", "json")
        took = time.monotonic() - t0
    row = json.loads(out)
    assert code == ProbeExit.TIMEOUT and row["outcome"] == "timeout" and "TLS handshake" in row["reason"], out
    assert took < 2.5


def test_pcap_records_the_tls_cleartext_as_tcp_on_the_tls_port(kamailio_tls, pki, tmp_path):
    cap = tmp_path / "tls.pcap"
    code, out, _ = probe("options", f"sips:{V4}:{kamailio_tls}", "--ca", pki / "ca.pem", "--pcap", cap,
                         "--timeout", 5)
    assert code == ProbeExit.OK, out
    data = cap.read_bytes()
    assert f"OPTIONS sips:{V4}:{kamailio_tls} SIP/2.0".encode() in data and b"SIP/2.0 200 OK" in data
    assert kamailio_tls.to_bytes(2, "big") in data   # the TLS port in the TCP headers
    if shutil.which("tshark"):
        p = subprocess.run(["tshark", "-r", str(cap), "-d", f"tcp.port=={kamailio_tls},sip", "-T", "fields",
                            "-e", "tcp.dstport", "-e", "sip.Method", "-e", "sip.Status-Code"],
                           capture_output=True, text=True, timeout=60)
        rows = [line.split("\t") for line in p.stdout.splitlines() if line.strip("\t")]
        assert [str(kamailio_tls), "OPTIONS", ""] in rows and any(r[2] == "200" for r in rows), p.stdout


# --------------------------------------------------------------------------- REGISTER and INVITE over TLS

def test_register_with_digest_over_tls(kamailio_tls, pki):
    code, out, err = probe("register", f"sips:alice@{V4}:{kamailio_tls}", "--password", PASSWORD, "--unregister",
                           "--ca", pki / "ca.pem", "--format", "json", "-v", "--timeout", 5)
    r = json.loads(out)
    assert code == ProbeExit.OK, (out, err)
    assert (r["outcome"], r["transport"], r["registered"], r["unregistered"]) == ("up", "tls", True, True)
    assert r["auth_algorithm"] == "MD5" and r["challenges"] == 1 and r["retransmissions"] == 0
    assert r["steps"][0]["bindings"] and all(b["ours"] for b in r["steps"][0]["bindings"])
    assert err.count("Via: SIP/2.0/TLS ") == 6                       # 3 requests and their 3 responses
    assert ";transport=tls>" in err and "REGISTER sips:" in err and PASSWORD not in err
    assert r["seen_as"] == r["local"]


def test_register_over_tls_with_a_wrong_password_is_an_auth_failure(kamailio_tls, pki):
    code, out, _ = probe("register", f"sip:bob@{V4}:{kamailio_tls};transport=tls", "--password", "wrong",
                         "--ca", pki / "ca.pem", "--format", "json", "--timeout", 5)
    assert code == ProbeExit.AUTH_FAILURE and json.loads(out)["outcome"] == "auth failure", out


def test_register_without_the_ca_is_a_certificate_verify_failure(kamailio_tls):
    code, out, _ = probe("register", f"sips:alice@{V4}:{kamailio_tls}", "--password", PASSWORD,
                         "--format", "nagios", "--timeout", 5)
    check_nagios(code, out.replace("'total'=", "'rtt'="))
    assert code == 2 and "TLS certificate verify failed" in out, out


def test_invite_over_tls_reaches_the_server_and_its_answer_is_reported(kamailio_tls, pki):
    """The registrar answers INVITE with 501: the call is rejected, over TLS, with the 5xx exit code."""
    code, out, err = probe("call", f"sips:bob@{V4}:{kamailio_tls}", "--ca", pki / "ca.pem", "--format", "json",
                           "-v", "--timeout", 5, "--duration", 0)
    r = json.loads(out)
    assert code == ProbeExit.SERVER_ERROR, (out, err)
    assert (r["transport"], r["status"]) == ("tls", 501)
    assert "INVITE sips:bob@" in err and "Via: SIP/2.0/TLS " in err and ";transport=tls>" in err


def test_call_without_the_ca_is_a_certificate_verify_failure(kamailio_tls):
    code, out, _ = probe("call", f"sips:bob@{V4}:{kamailio_tls}", "--format", "json", "--timeout", 5,
                         "--duration", 0)
    r = json.loads(out)
    assert code == ProbeExit.TRANSPORT_ERROR and r["outcome"] == "error", out
    assert r["reason"].startswith("TLS certificate verify failed: "), out


# --------------------------------------------------------------------------- reading SIP over TLS back

def test_sip_over_tls_is_read_back_with_the_key_log(kamailio_tls, pki, tmp_path, monkeypatch):
    """tcpdump records the probe's OPTIONS over TLS while Python's ssl writes the session keys
    (SSLKEYLOGFILE, as a browser or SIP.js does); sipflow alone sees no SIP in that capture, and with
    --tls-keylog (tshark decrypts) it finds both requests and both answers, as TLS, with the capture's
    frame numbers and the addresses the probe reported."""
    if not shutil.which("tcpdump") or not shutil.which("tshark"):
        pytest.skip("needs tcpdump and tshark")
    cap, keys, log = tmp_path / "tls.pcap", tmp_path / "keys.txt", tmp_path / "tcpdump.log"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-s", "65535", "-B", "4096",
                             "-w", str(cap), "tcp", "port", str(kamailio_tls)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if b"listening on" in log.read_bytes():
                break
            time.sleep(0.1)
        monkeypatch.setenv("SSLKEYLOGFILE", str(keys))
        code, out, _ = probe("options", f"sip:{V4}:{kamailio_tls};transport=tls", "--ca", pki / "ca.pem",
                             "--format", "json", "--count", 2, "--interval", 0.2, "--timeout", 5)
        assert code == ProbeExit.OK, out
        local = json.loads(out.splitlines()[0])["local"]
        for _ in range(100):     # the connection's FINs (both ways) are in the file: nothing more to come
            r = subprocess.run(["tcpdump", "-r", str(cap), "-n", "tcp[tcpflags] & tcp-fin != 0"],
                               capture_output=True, text=True, timeout=30)
            if len(r.stdout.splitlines()) >= 2:
                break
            time.sleep(0.1)
    finally:
        dump.send_signal(2)
        dump.wait(timeout=30)
    assert keys.read_text().count("CLIENT_TRAFFIC_SECRET_0") + keys.read_text().count("CLIENT_RANDOM") >= 1
    plain = CliRunner().invoke(main, ["dialogs", str(cap), "--format", "csv", "--no-progress"])
    assert plain.exit_code == 0 and "OPTIONS" not in plain.output
    r = CliRunner().invoke(main, ["show", str(cap), "--method", "OPTIONS", "--tls-keylog", str(keys), "--no-progress"])
    assert r.exit_code == 0, r.output
    banners = [line for line in r.output.splitlines() if line.startswith("=== ")]
    assert len(banners) == 4, r.output          # 2 OPTIONS, 2 x 200
    assert all("| TLS" in b for b in banners)
    assert sum(f"{local} -> {V4}:{kamailio_tls}" in b for b in banners) == 2
    lines = r.output.splitlines()
    assert sum(line.startswith("OPTIONS sip:") for line in lines) == 2
    assert sum(line.startswith("SIP/2.0 200") for line in lines) == 2
    # the frame numbers are the capture's own: tshark shows TLS application data in those frames
    frames = [int(b.split("frame ")[1].split()[0].rstrip(",")) for b in banners]
    t = subprocess.run(["tshark", "-r", str(cap), "-Y", "tls.app_data", "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=60)
    assert set(frames) <= {int(x) for x in t.stdout.split()}
    # --engine tshark reads the same capture the same way: every SIP message through Wireshark's
    # dissectors (here: decrypted with the key log), the same banners, frames and transport
    t = CliRunner().invoke(main, ["show", str(cap), "--method", "OPTIONS", "--tls-keylog", str(keys),
                                  "--engine", "tshark", "--no-progress"])
    assert t.exit_code == 0 and [line for line in t.output.splitlines() if line.startswith("=== ")] == banners


@contextlib.contextmanager
def live_sipflow(tmp_path, *args):
    """`sipflow live -i lo ARGS --format ndjson` in a subprocess, once it says it is capturing; yields
    a function that waits (bounded) until its stats count at least N SIP messages. Stopped by SIGINT
    at the end of the block; ``lines`` (the NDJSON lines it wrote) end with the summary."""
    for tool in ("tshark", "dumpcap"):
        if not shutil.which(tool):
            pytest.skip(f"needs {tool}")
    root = Path(__file__).resolve().parents[1]
    err = tmp_path / "live.err"
    live = subprocess.Popen([sys.executable, "-m", "sipflow", "live", "-i", "lo", *map(str, args), "--format",
                             "ndjson", "--stats-every", "0.2", "--duration", "60"], stdout=subprocess.PIPE,
                            stderr=open(err, "wb"), cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(live.stdout.readline, b"")), daemon=True)
    reader.start()

    def told(n):
        """Wait until live has told n SIP messages (the stop's own drain is not what is tested)."""
        for _ in range(300):
            stats = [json.loads(x) for x in list(lines) if b'"type":"stats"' in x]
            if (stats and stats[-1]["sip_messages"] >= n) or live.poll() is not None:
                return
            time.sleep(0.1)
    try:
        for _ in range(300):     # it says so once libpcap and the tshark pipeline are both capturing
            if b"capturing on" in err.read_bytes() or live.poll() is not None:
                break
            time.sleep(0.1)
        assert b"capturing on" in err.read_bytes(), err.read_text()
        yield told, lines
    finally:
        live.send_signal(signal.SIGINT)
        live.wait(timeout=90)
        reader.join(timeout=30)
    assert live.returncode == 0, err.read_text()


def test_live_decrypts_sip_over_tls_as_it_is_captured(kamailio_tls, pki, tmp_path, monkeypatch):
    """`sipflow live -i lo --tls-keylog K` while the probe sends OPTIONS over TLS to Kamailio and
    Python's ssl writes the session keys to K as it opens the session (K empty when live starts): the
    NDJSON summary counts both OPTIONS and both 200s, decrypted, as TLS, and nothing malformed."""
    keys = tmp_path / "keys.txt"
    keys.write_text("")
    with live_sipflow(tmp_path, "-f", f"port {kamailio_tls}", "--tls-keylog", keys, "--tls-port",
                      kamailio_tls) as (told, lines):
        monkeypatch.setenv("SSLKEYLOGFILE", str(keys))
        code, out, _ = probe("options", f"sip:{V4}:{kamailio_tls};transport=tls", "--ca", pki / "ca.pem",
                             "--format", "json", "--count", 2, "--interval", 0.2, "--timeout", 5)
        assert code == ProbeExit.OK, out
        told(4)
    summary = json.loads(lines[-1])
    assert summary["type"] == "summary" and summary["counters"]["tshark_messages"] == 4, summary["counters"]
    assert summary["methods"]["OPTIONS"]["requests"] == 2 and summary["methods"]["OPTIONS"]["200"] == 2
    assert summary["counters"]["sip_messages"] == 4 and summary["counters"]["malformed"] == 0


def test_live_engine_tshark_reads_the_interface_through_wiresharks_dissectors(tmp_path):
    """`sipflow live -i lo --engine tshark` while the probe sends OPTIONS over UDP to SIPp: both
    messages come through tshark (each counted as such, none read twice by sipflow's own decoder):
    one OPTIONS and its 200."""
    from test_probe import sipp_uas
    with sipp_uas(tmp_path) as port:
        with live_sipflow(tmp_path, "-f", f"udp port {port}", "--engine", "tshark") as (told, lines):
            code, out, _ = probe("options", f"sip:{V4}:{port}", "--format", "json", "--timeout", 5)
            assert code == ProbeExit.OK, out
            told(2)
    summary = json.loads(lines[-1])
    assert summary["counters"]["tshark_messages"] == summary["counters"]["sip_messages"] == 2, summary["counters"]
    assert summary["methods"]["OPTIONS"] == {"requests": 1, "200": 1}
