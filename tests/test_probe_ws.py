"""`sipflow probe` over WebSocket (RFC 7118, SIP over WebSocket): ws and wss targets
(`sip:host:port;transport=ws|wss`, and the URL forms `ws://host:port/path`, `wss://host:port/path`)
against a real Kamailio 5.6 running tests/scenarios/kamailio_ws.cfg (xhttp + websocket + tls modules;
Debian: kamailio-websocket-modules, kamailio-tls-modules):

- OPTIONS to the proxy is answered 200; the result has the WebSocket upgrade time (`handshake`) beside
  the TCP/TLS connect time;
- REGISTER is challenged (401, MD5) and then saved; the request carries the RFC 7118 shape (Via
  SIP/2.0/WS or WSS with a *.invalid host, Contact ;transport=ws and ;ob);
- MESSAGE is challenged (407) and then answered 200 by Kamailio itself;
- INVITE through the proxy to a SIPp UAS over UDP (tests/scenarios/uas_call.xml, which copies the
  Record-Route into its answers), ACK and BYE routed back through Kamailio by its Record-Route;
- an upgrade refused by the server (403 on the path /refuse) is a critical failure;
- wss without the test CA fails the certificate check.

What Kamailio received is read from its log (the cfg logs method, transport, Via, Contact and Call-ID
of every request); what SIPp received from its -trace_msg log. The CA and the server certificate
(127.0.0.1 and localhost) are made with the openssl command at test time. Loopback only (127.0.0.1),
in the private network namespace of tests/test_probe.py (its fixture and helpers are imported).
One Kamailio for the module, one SIPp per call; every process started here is stopped here, every
wait is bounded.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipflow.cli import ProbeExit, main

from test_probe import SCENARIOS, V4, free_port, port_taken, private_loopback, server
from test_probe_call import _kamailio_modules, received, sipp
from test_probe_tls import make_pki

assert private_loopback   # the imported fixture is this module's autouse network namespace too

pytestmark = pytest.mark.stacks

PASSWORD = "secretpw"     # what tests/scenarios/kamailio_ws.cfg accepts, realm "sipflow.test"
TRANSPORTS = ("ws", "wss")


# --------------------------------------------------------------------------- a CA, a certificate, Kamailio

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and the server certificate it signed for 127.0.0.1 and localhost; the directory."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed (Debian: apt-get install openssl)")
    return make_pki(tmp_path_factory.mktemp("pki-ws"), "IP:127.0.0.1,DNS:localhost")


@dataclass
class Proxy:
    """The running Kamailio: its ports and its log."""
    udp: int
    ws: int
    wss: int
    log: Path

    def port(self, transport):
        return self.ws if transport == "ws" else self.wss

    def mark(self) -> int:
        """Where the log ends now: what follows is what the next probe caused."""
        return self.log.stat().st_size

    def seen(self, call_id, method, count=1, since=0, limit=3.0):
        """The log lines of the requests Kamailio received with this method and Call-ID (None: any)
        after `since` (waits, bounded, until there are `count` of them)."""
        end = time.monotonic() + limit
        while True:
            with open(self.log, "rb") as f:
                f.seek(since)
                text = f.read().decode("utf-8", "replace")
            lines = [line for line in text.splitlines() if f"sipflow-ws: {method} " in line
                     and (call_id is None or line.rstrip().endswith(f"callid={call_id}"))]
            if len(lines) >= count or time.monotonic() > end:
                return lines
            time.sleep(0.05)


def http_status(port, path="/") -> str:
    """The status line Kamailio answers a plain GET with (no Upgrade): the xhttp route is alive."""
    with socket.create_connection((V4, port), timeout=3) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {V4}:{port}\r\n\r\n".encode())
        return s.recv(4096).decode("latin-1").split("\r\n", 1)[0]


@pytest.fixture(scope="module")
def kamailio_ws_process(tmp_path_factory, pki):
    """tests/scenarios/kamailio_ws.cfg: ws on tcp:127.0.0.1:WS, wss on tls:127.0.0.1:WSS, UDP towards the
    SIPp UAS on udp:127.0.0.1:UDP (three free ports); one for the module. Yields (Proxy, process)."""
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (Debian: apt-get install kamailio)")
    mpath = _kamailio_modules()
    if mpath is None:
        pytest.skip("Kamailio's modules are not found")
    for module, package in (("websocket.so", "kamailio-websocket-modules"), ("xhttp.so", "kamailio"),
                            ("tls.so", "kamailio-tls-modules")):
        if not Path(mpath, module).exists():
            pytest.skip(f"Kamailio's {module[:-3]} module is not installed (Debian: apt-get install {package})")
    run = tmp_path_factory.mktemp("kamailio-ws")
    udp = free_port(V4)
    ws = free_port(V4, socket.SOCK_STREAM)
    wss = next(p for p in (free_port(V4, socket.SOCK_STREAM) for _ in range(20)) if p != ws)
    cmd = ["kamailio", "-f", SCENARIOS / "kamailio_ws.cfg", "-L", mpath, "-DD", "-E", "-m", 32, "-M", 8,
           "-w", run, "-Y", run, "-P", run / "kamailio.pid",
           "-A", f'TLS_CERT="{pki / "server.pem"}"', "-A", f'TLS_KEY="{pki / "server.key"}"',
           "-l", f"udp:{V4}:{udp}", "-l", f"tcp:{V4}:{ws}", "-l", f"tls:{V4}:{wss}"]
    log = run / "kamailio.log"
    ready = lambda: all(port_taken(V4, p, k) for p, k in
                        ((udp, socket.SOCK_DGRAM), (ws, socket.SOCK_STREAM), (wss, socket.SOCK_STREAM)))
    with server(cmd, log, ready) as proc:
        end = time.monotonic() + 5   # the TCP workers get the sockets a moment after the listener
        while True:
            try:
                status = http_status(ws)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        assert status == "HTTP/1.1 404 Not Found", (status, log.read_text(errors="replace")[-2000:])
        yield Proxy(udp, ws, wss, log), proc


@pytest.fixture
def kamailio_ws(kamailio_ws_process):
    """The module's Kamailio, still running (test_probe.server bounds it to 120 s)."""
    proxy, proc = kamailio_ws_process
    if proc.poll() is not None:
        pytest.fail(f"Kamailio has ended (exit {proc.returncode}): {proxy.log.read_text(errors='replace')[-2000:]}")
    return proxy


# --------------------------------------------------------------------------- running the probe

def probe(*args):
    r = CliRunner().invoke(main, ["probe", *map(str, args)])
    return r.exit_code, r.stdout, r.stderr


def tls_args(transport, pki):
    return ["--ca", pki / "ca.pem"] if transport == "wss" else []


def sip_target(kam, transport):
    return f"sip:{V4}:{kam.port(transport)};transport={transport}"


def url_target(kam, transport, path="/"):
    return f"{transport}://{V4}:{kam.port(transport)}{path}"


def trace(err):
    """The messages -v printed on standard error: [(">" or "<", text)]."""
    parts = re.split(r"^(--> sent|<-- received)\n", err, flags=re.M)
    return [(">" if head.startswith("-->") else "<", body) for head, body in zip(parts[1::2], parts[2::2])]


def header(text, name, compact):
    m = re.search(rf"^(?:{name}|{compact})[ \t]*:[ \t]*(.*)$", text, re.M | re.I)
    return m.group(1).strip() if m else None


def check_websocket_via(via, transport):
    """RFC 7118: Via SIP/2.0/WS (WSS over TLS) with a made-up *.invalid host."""
    m = re.match(r"SIP/2\.0/(\S+)\s+([^;:\s]+)", via or "")
    assert m, via
    assert m.group(1).upper() == transport.upper() and m.group(2).lower().endswith(".invalid"), via


def check_websocket_contact(contact, ob=True):
    """RFC 7118: the Contact URI says ;transport=ws (for ws and wss alike); a REGISTER's also ;ob
    (RFC 5626 outbound: reach me over this connection)."""
    uri = re.search(r"<([^>]*)>", contact or "")
    assert uri, contact
    assert re.search(r";transport=ws(?=[;?]|$)", uri.group(1), re.I), contact
    assert not ob or re.search(r";ob(?=[;=?]|$)", uri.group(1)), contact


# --------------------------------------------------------------------------- OPTIONS

@pytest.mark.parametrize("form", ["sip", "url"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_over_websocket_gets_200_and_times_the_upgrade(kamailio_ws, pki, transport, form):
    target = sip_target(kamailio_ws, transport) if form == "sip" else url_target(kamailio_ws, transport)
    since = kamailio_ws.mark()
    code, out, err = probe("options", target, *tls_args(transport, pki), "--format", "json", "--timeout", 5)
    assert code == ProbeExit.OK, (out, err)
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert (row["outcome"], row["status"], row["transport"]) == ("up", 200, transport), row
    assert row["remote"] == f"{V4}:{kamailio_ws.port(transport)}"
    assert row["connect"] > 0 and row["handshake"] > 0, row     # TCP (+TLS) connect, then the upgrade
    assert "kamailio" in (row["server"] or "").lower()
    (line,) = kamailio_ws.seen(row["call_id"], "OPTIONS", since=since)
    assert f"proto={transport} " in line, line


@pytest.mark.parametrize("form", ["sip", "url"])
def test_wss_without_the_test_ca_fails_the_certificate_check(kamailio_ws, form):
    target = sip_target(kamailio_ws, "wss") if form == "sip" else url_target(kamailio_ws, "wss")
    code, out, err = probe("options", target, "--format", "nagios", "--timeout", 5)
    assert code == 2 and out.startswith("SIP CRITICAL"), (out, err)
    assert "certificate" in out.lower(), out


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_upgrade_is_critical_with_its_status(kamailio_ws, pki, transport):
    target = url_target(kamailio_ws, transport, "/refuse")
    code, out, err = probe("options", target, *tls_args(transport, pki), "--format", "nagios", "--timeout", 5)
    assert code == 2, (out, err)
    assert out.startswith("SIP CRITICAL") and "403" in out and "upgrade" in out.lower(), out
    code, out, err = probe("options", target, *tls_args(transport, pki), "--format", "json", "--timeout", 5)
    (row,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code != ProbeExit.OK and row["outcome"] == "error" and row["upgrade_status"] == 403, (row, err)


# --------------------------------------------------------------------------- REGISTER

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_and_unregister_over_websocket_with_digest(kamailio_ws, pki, transport):
    since = kamailio_ws.mark()
    code, out, err = probe("register", "sip:alice@sipflow.test", "--proxy", sip_target(kamailio_ws, transport),
                           "--password", PASSWORD, "--unregister", *tls_args(transport, pki),
                           "--format", "json", "-v", "--timeout", 10)
    assert code == ProbeExit.OK, (out, err)
    r = json.loads(out)
    assert (r["outcome"], r["transport"], r["registered"], r["unregistered"]) == ("up", transport, True, True), r
    assert r["challenges"] >= 1 and r["auth_realm"] == "sipflow.test" and r["auth_algorithm"] == "MD5"
    assert PASSWORD not in err
    # what the probe sent (-v) ...
    registers = [text for d, text in trace(err) if d == ">" and text.startswith("REGISTER ")]
    assert len(registers) >= 3, err      # challenged, registered, unregistered
    for text in registers:
        check_websocket_via(header(text, "Via", "v"), transport)
        check_websocket_contact(header(text, "Contact", "m"))
    # ... is what Kamailio got, over the WebSocket
    seen = kamailio_ws.seen(r["call_id"], "REGISTER", count=len(registers), since=since)
    assert len(seen) == len(registers), seen
    for line in seen:
        assert f"proto={transport} " in line, line
        check_websocket_via(re.search(r" via=(.*?) contact=", line).group(1), transport)
        check_websocket_contact(re.search(r" contact=(.*?) callid=", line).group(1))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_register_over_websocket_keeps_the_binding(kamailio_ws, pki, transport):
    code, out, err = probe("register", "sip:carol@sipflow.test", "--proxy", sip_target(kamailio_ws, transport),
                           "--password", PASSWORD, "--expires", 30, *tls_args(transport, pki),
                           "--format", "json", "--timeout", 10)
    assert code == ProbeExit.OK, (out, err)
    r = json.loads(out)
    assert (r["outcome"], r["registered"], r["unregistered"]) == ("up", True, None), r   # None: not asked
    assert r["challenges"] >= 1 and 0 < r["expires"] <= 30 and r["bindings"], r


def test_register_with_a_wrong_password_over_websocket_is_an_auth_failure(kamailio_ws):
    code, out, err = probe("register", "sip:alice@sipflow.test", "--proxy", sip_target(kamailio_ws, "ws"),
                           "--password", "wrong", "--format", "json", "--timeout", 10)
    assert code == ProbeExit.AUTH_FAILURE and json.loads(out)["outcome"] == "auth failure", (out, err)


# --------------------------------------------------------------------------- MESSAGE

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_message_over_websocket_is_challenged_then_accepted(kamailio_ws, pki, transport):
    since = kamailio_ws.mark()
    code, out, err = probe("message", "sip:bob@sipflow.test", "--text", "hello from sipflow",
                           "--proxy", sip_target(kamailio_ws, transport), "--user", "bob", "--password", PASSWORD,
                           *tls_args(transport, pki), "--format", "json", "--timeout", 10)
    assert code == ProbeExit.OK, (out, err)
    r = json.loads(out)
    assert (r["outcome"], r["status"], r["transport"]) == ("up", 200, transport), r
    assert r["challenges"] >= 1, r
    seen = kamailio_ws.seen(r.get("call_id"), "MESSAGE", count=2, since=since)
    assert len(seen) == 2 and all(f"proto={transport} " in line for line in seen), seen


# --------------------------------------------------------------------------- INVITE through the proxy

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_call_through_the_websocket_proxy_to_a_udp_uas(kamailio_ws, pki, tmp_path, transport):
    since = kamailio_ws.mark()
    with sipp(tmp_path, "uas_call.xml", extra=["-rtp_echo"]) as (port, _proc, messages):
        code, out, err = probe("call", f"sip:uas@{V4}:{port}", "--proxy", sip_target(kamailio_ws, transport),
                               *tls_args(transport, pki), "--duration", 0.5, "--format", "json", "-v",
                               "--timeout", 15)
        log = messages(wait_for=r"received \[\d+\] bytes :\s*\n\s*BYE ")
    r = json.loads(out)
    assert (r["outcome"], r["transport"]) == ("answered", transport), (r, err)
    assert r["ack_sent"] and r["bye_status"] == 200, r
    assert code == ProbeExit.OK, (out, err)
    # the route set is Kamailio's double Record-Route: its WebSocket side first, then its UDP side
    assert len(r["route_set"]) == 2, r["route_set"]
    assert f"{V4}:{kamailio_ws.port(transport)}" in r["route_set"][0] and f"{V4}:{kamailio_ws.udp}" in r["route_set"][1]
    sent = {text.split(" ", 1)[0]: text for d, text in trace(err) if d == ">"}
    for method in ("INVITE", "ACK", "BYE"):
        check_websocket_via(header(sent[method], "Via", "v"), transport)
    check_websocket_contact(header(sent["INVITE"], "Contact", "m"), ob=False)
    # Kamailio received them over the WebSocket ...
    for method in ("INVITE", "ACK", "BYE"):
        seen = kamailio_ws.seen(r["call_id"], method, since=since)
        assert seen and all(f"proto={transport} " in line for line in seen), (method, seen)
    # ... and relayed them to SIPp over UDP: Kamailio's Via on top of the client's WebSocket Via
    for method in ("INVITE", "ACK", "BYE"):
        (got,) = received(log, method)
        vias = re.findall(r"^Via:\s*SIP/2\.0/(\S+)\s+([^;\s]+)", got, re.M | re.I)
        assert len(vias) == 2 and vias[0] == ("UDP", f"{V4}:{kamailio_ws.udp}"), got
        assert vias[1][0].upper() == transport.upper(), got
        assert vias[1][1].rsplit(":", 1)[0].lower().endswith(".invalid"), got
