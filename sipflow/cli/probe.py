"""Probe commands: ``sipflow probe options|register|call|message``, their exit codes and their error boundary.

The work is done by ``sipflow.probe``; this module parses options and maps results to exit codes.
"""
from __future__ import annotations

import enum
import functools
import os
import sys
from typing import List, Optional

import click

from sipflow.cli.app import internal_error, main, say, terminal_width


# ---------------------------------------------------------------------------------------------------
# sipflow probe: active tests against one server (sipflow.probe does the work)


def _ladder_of(path: Optional[str]) -> Optional[str]:
    """The ladder of a probe's own recording (empty when nothing was recorded)."""
    from sipflow.analysis.analyzer import analyze
    from sipflow.render.ladder import layout, render_text
    if not path or not os.path.exists(path):
        return None
    return render_text(layout(analyze(path).messages), terminal_width(None))


class ProbeExit(enum.IntEnum):
    """Exit codes of ``sipflow probe`` (``--format nagios`` exits with the plugin codes 0-3 instead, and
    ``--format prometheus`` with 0 once the metrics are written: probe_success carries the verdict)."""
    OK = 0
    ERROR = 1            # the probe could not run: bad target, unknown name, --bind not usable
    USAGE = 2            # bad command line
    TIMEOUT = 3          # no final response (Timer F, or --timeout ended the run)
    REFUSED = 4          # nothing listens there: ICMP port unreachable, TCP reset
    UNREACHABLE = 5      # no route to the host or network
    TRANSPORT_ERROR = 6  # the connection was reset or closed, or sending failed
    UNEXPECTED = 7       # a 2xx or 3xx final response that --expect does not name
    CLIENT_ERROR = 8     # a 4xx that --expect does not name
    SERVER_ERROR = 9     # a 5xx that --expect does not name
    GLOBAL_FAILURE = 10  # a 6xx that --expect does not name
    AUTH_FAILURE = 11    # credentials rejected (probe register, probe call)
    BUSY = 12            # probe call: 486 Busy Here or 600 Busy Everywhere
    NO_ANSWER = 13       # probe call: still ringing at --ring-timeout, cancelled
    ONE_WAY_AUDIO = 14   # probe call: answered, we sent RTP and (almost) none came back
    INTERNAL = 70        # a bug in sipflow (sysexits.h EX_SOFTWARE)
    INTERRUPTED = 130


NAGIOS_UNKNOWN = 3


def _probe_exit(run) -> ProbeExit:
    """The one mapping from a probe run to an exit code: the first probe that was not up decides."""
    from sipflow.probe.common import Outcome
    bad = run.first_failure
    if bad is None:
        return ProbeExit.OK if run.results else ProbeExit.TIMEOUT
    if bad.status is not None:
        return {4: ProbeExit.CLIENT_ERROR, 5: ProbeExit.SERVER_ERROR,
                6: ProbeExit.GLOBAL_FAILURE}.get(bad.status // 100, ProbeExit.UNEXPECTED)
    return {Outcome.TIMEOUT: ProbeExit.TIMEOUT, Outcome.REFUSED: ProbeExit.REFUSED,
            Outcome.UNREACHABLE: ProbeExit.UNREACHABLE}.get(bad.outcome, ProbeExit.TRANSPORT_ERROR)


def _wants_nagios(args: List[str]) -> bool:
    return "--format=nagios" in args or any(a == "--format" and b == "nagios" for a, b in zip(args, args[1:]))


class _ProbeCommand(click.Command):
    """With ``--format nagios`` a bad command line is UNKNOWN (3), said on standard output, as the
    plugin guidelines want; otherwise click's usual usage error (2)."""

    def parse_args(self, ctx, args):
        nagios = _wants_nagios(list(args))
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if not nagios:
                raise
            say(f"SIP UNKNOWN - {e.format_message()}".replace("\n", " "))
            raise click.exceptions.Exit(NAGIOS_UNKNOWN)


def handle_probe_errors(f):
    """The probe commands' one error boundary: sipflow's errors become one line and ProbeExit.ERROR,
    or, for Nagios, one ``SIP UNKNOWN`` status line and exit 3 (the check could not run)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from sipflow.errors import SipflowError
        ctx = click.get_current_context()
        nagios = kwargs.get("fmt") == "nagios"
        try:
            return f(*args, **kwargs)
        except SipflowError as e:
            if ctx.find_root().params.get("traceback"):
                raise
            if nagios:
                say(f"SIP UNKNOWN - {e}")
                ctx.exit(NAGIOS_UNKNOWN)
            say(f"sipflow: {e}", err=True, fg="red")
            ctx.exit(ProbeExit.ERROR)
        except KeyboardInterrupt:
            say("interrupted", err=True)
            ctx.exit(NAGIOS_UNKNOWN if nagios else ProbeExit.INTERRUPTED)
        except BrokenPipeError:
            sys.stderr.close()
            ctx.exit(ProbeExit.OK)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:   # a bug: its own exit code (UNKNOWN for Nagios), one line, --traceback to see it
            if ctx.find_root().params.get("traceback"):
                raise
            if nagios:
                say(f"SIP UNKNOWN - {internal_error(e)}")
                ctx.exit(NAGIOS_UNKNOWN)
            say(internal_error(e), err=True, fg="red")
            ctx.exit(ProbeExit.INTERNAL)
    return wrapper


def _parsed(parse):
    """A click callback turning a library parser's ValueError into a usage error."""
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as e:
            raise click.BadParameter(str(e))
    return callback


def _parse_range(text):
    from sipflow.probe.common import parse_range
    return parse_range(text)


def _parse_expect(text):
    from sipflow.probe.common import parse_expect
    return parse_expect(text)


@main.group()
def probe():
    """Active tests against the one SIP server you name, with monitoring-friendly results.

    \b
    Examples:
      sipflow probe options sip:127.0.0.1
      sipflow probe options 'sip:pbx.example.com:5070;transport=tcp' --count 5
      sipflow probe options 'sip:[::1]' --format nagios -w 0.5 -c 1
      sipflow probe options 'sip:pbx.example.com;transport=tls' --ca my-ca.pem
      sipflow probe register sip:alice@127.0.0.1 --password s3cret --unregister
      sipflow probe register sip:alice@example.com --proxy ws://127.0.0.1:5066 --password s3cret
      sipflow probe call sip:bob@127.0.0.1:5070 --duration 2 --format json
      sipflow probe message sip:bob@127.0.0.1 --text hello

    Transports: udp, tcp, tls (sips:), and SIP over WebSocket (RFC 7118) as web phones use it:
    'sip:host:port;transport=ws|wss' or ws://host:port/path and wss://host:port/path, as the target
    or as --proxy. Over WebSocket the Via host is a random .invalid name and Contact carries
    ;transport=ws;ob, as SIP.js sends; the upgrade is timed as its own phase (handshake), and a
    refused upgrade is reported with its HTTP status (exit 6, Nagios CRITICAL).
    """


def probe_recording_and_tls_options(f):
    """Options every probe command shares: --pcap/--keep-secrets and the TLS certificate checks."""
    f = click.option("--tls-keylog", "tls_keylog", metavar="FILE", type=click.Path(dir_okay=False),
                     help="TLS and wss: append the session secrets to FILE (NSS key log format) so Wireshark "
                          "can decrypt the probe's own traffic. SSLKEYLOGFILE in the environment does the "
                          "same.")(f)
    f = click.option("--insecure", "tls_insecure", is_flag=True,
                     help="TLS: do not verify the server certificate or its name (encryption without "
                          "authentication).")(f)
    f = click.option("--ca", "tls_ca", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
                     help="TLS: verify the server certificate against the CA certificate(s) in this PEM file "
                          "instead of the system CA store.")(f)
    f = click.option("--keep-secrets", is_flag=True, help="With --pcap: keep the digest responses as sent.")(f)
    f = click.option("--pcap", "pcap", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
                     help="Write the probe's own traffic (SIP and RTP, sent and received) to FILE as a pcap. "
                          "TCP is written as a handshake, then one segment per SIP message with consistent "
                          "sequence numbers. TLS is written as its SIP cleartext in TCP segments on the TLS "
                          "port (no TLS records). Digest responses are redacted (same length) unless "
                          "--keep-secrets.")(f)
    return f


def proxy_option(default: str = ""):
    """--proxy, one meaning on every probe command: where the request goes first, with a Route to it."""
    return click.option("--proxy", metavar="URI", help="Send through this outbound proxy (a Route to it is "
                        "added; the target stays the Request-URI): sip:host[:port][;transport=...] or "
                        "ws(s)://host:port/path." + (f"  [default: {default}]" if default else ""))


def credential_options(user_default: str):
    """--user and --password (digest credentials for a 401/407), as probe register, message and call take
    them."""
    def deco(f):
        f = click.option("--password", metavar="P", envvar="SIPFLOW_PASSWORD", show_envvar=True,
                         help="Digest password for a 401/407 (the environment variable keeps it out of the "
                              "process list). Never printed.")(f)
        return click.option("--user", metavar="U", help=f"Digest username.  [default: {user_default}]")(f)
    return deco


def single_run_options(timeout_default: str, measured: str):
    """Options probe register, message and call share: the run's bound, where it leaves from, the
    result's format with the Nagios thresholds on the one time that decides, and -v."""
    def deco(f):
        f = click.option("-v", "--verbose", is_flag=True,
                         help="Print every SIP message sent and received on standard error (digest responses "
                              "and the password redacted).")(f)
        f = click.option("-c", "--critical", metavar="RANGE", callback=_parsed(_parse_range),
                         help=f"Nagios: CRITICAL when {measured} in seconds is outside RANGE (e.g. 1).")(f)
        f = click.option("-w", "--warning", metavar="RANGE", callback=_parsed(_parse_range),
                         help=f"Nagios: WARNING when {measured} in seconds is outside RANGE (e.g. 0.5).")(f)
        f = click.option("--format", "fmt", type=click.Choice(["text", "json", "nagios", "prometheus"]),
                         default="text", show_default=True,
                         help="text, one JSON object, a Nagios plugin line, or a Prometheus textfile.")(f)
        f = click.option("-6", "family", flag_value=6, help="Use IPv6 (when the target is a name).")(f)
        f = click.option("-4", "family", flag_value=4, help="Use IPv4 (when the target is a name).")(f)
        f = click.option("--bind", metavar="IP[:PORT]", help="Send from this local address (and port).")(f)
        return click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                            help=f"Seconds the whole run may take, whatever happens.  [default: {timeout_default}]")(f)
    return deco


@probe.command("options", cls=_ProbeCommand)
@click.argument("target")
@proxy_option()
@click.option("--count", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Probes to send (at most 1000).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds from one probe to the next (probes may overlap).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds the whole run may take, whatever happens.  [default: 10 after the last probe "
                   "is sent]")
@click.option("--expect", metavar="CODES", callback=_parsed(_parse_expect),
              help="Final responses that count as up, e.g. 200,404 or 2xx.  [default: any final response; "
                   "1xx never]")
@click.option("--bind", metavar="IP[:PORT]", help="Send from this local address (and port).")
@click.option("-4", "family", flag_value=4, help="Use IPv4 (when the target is a name).")
@click.option("-6", "family", flag_value=6, help="Use IPv6 (when the target is a name).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "nagios", "prometheus"]), default="text",
              show_default=True, help="text, JSON lines (one object per probe), a Nagios plugin line, or a "
                                      "Prometheus textfile.")
@click.option("-w", "--warning", metavar="RANGE", callback=_parsed(_parse_range),
              help="Nagios: WARNING when the round trip in seconds is outside RANGE (e.g. 0.5).")
@click.option("-c", "--critical", metavar="RANGE", callback=_parsed(_parse_range),
              help="Nagios: CRITICAL when the round trip in seconds is outside RANGE (e.g. 1).")
@probe_recording_and_tls_options
@handle_probe_errors
def probe_options(target, count, interval, timeout, expect, bind, family, fmt, warning, critical, pcap=None,
                  keep_secrets=False, tls_ca=None, tls_insecure=False, tls_keylog=None, proxy=None):
    """Send OPTIONS to sip:host[:port][;transport=udp|tcp|tls|ws|wss] (or sips:host, ws://host:port) and
    report status, round trip and server.

    Over UDP the request is retransmitted per RFC 3261 (0.5 s doubling to 4 s, given up after 32 s);
    over TCP and TLS it is not. TLS (port 5061 unless given) checks the server certificate against the
    system CA store and the target's host name (also sent as SNI); --ca FILE trusts that CA instead,
    --insecure skips the check. A failed check is reported as "TLS certificate verify failed: ..."
    (exit 6, Nagios CRITICAL). A closed UDP port is reported as refused at once (ICMP port unreachable). Any
    final response means the server is up unless --expect says which. With --count, the worst probe
    decides; Nagios thresholds (-w/-c, in the plugin range syntax) apply to the largest round trip.

    \b
    Examples:
      sipflow probe options sip:127.0.0.1:5060
      sipflow probe options 'sip:[::1]:5070;transport=tcp' --count 3
      sipflow probe options sips:pbx.example.com --ca my-ca.pem
      sipflow probe options sip:pbx.example.com --expect 200 --format json
      sipflow probe options ws://192.0.2.10:5066/ --format json
      sipflow probe options sip:192.0.2.10 --format nagios -w 0.5 -c 1
      sipflow probe options sip:192.0.2.10 --format prometheus > sip.prom

    \b
    Exit codes (text and json):
      0 every probe was up    5 unreachable            10 6xx not expected
      1 could not run         6 reset, TLS, upgrade    11 auth failure
      2 bad command line      7 2xx/3xx not expected   70 sipflow bug (report it)
      3 timeout               8 4xx not expected       130 interrupted
      4 refused               9 5xx not expected
      probe call only: 12 busy, 13 no answer, 14 one-way audio
    --format nagios: 0 OK, 1 WARNING, 2 CRITICAL (no answer, refused, timeout,
    unexpected code), 3 UNKNOWN (could not run).
    --format prometheus: 0 once the metrics are written.
    """
    from sipflow.probe import options as p
    from sipflow.probe.common import Expect, TlsOptions, parse_target
    ctx = click.get_current_context()
    tgt = parse_target(target)
    opts = p.ProbeOptions(count=count, interval=interval, timeout=timeout, expect=expect or Expect(),
                          bind=bind, family=family, proxy=proxy,
                          tls=TlsOptions(ca=tls_ca, insecure=tls_insecure, keylog=tls_keylog))
    on_result = None
    if fmt == "text":
        def on_result(r, started=[]):
            if not started:   # a header once the probe runs (not before a bad --bind, say)
                started.append(say(p.run_header(tgt, opts)))
            say(p.result_text(r))
    elif fmt == "json":
        on_result = lambda r: say(r.to_json())  # noqa: E731
    from sipflow.probe.recorder import recording
    with recording(pcap, keep_secrets) as recorder:
        run = p.probe_options(tgt, opts, on_result=on_result, recorder=recorder)
    if fmt == "text":
        say(p.run_text(run))
    elif fmt == "nagios":
        state, line = p.nagios(run, warning, critical)
        say(line)
        ctx.exit(int(state))
    elif fmt == "prometheus":
        say(p.prometheus(run), nl=False)
        ctx.exit(ProbeExit.OK)
    ctx.exit(_probe_exit(run))


def _register_exit(result) -> ProbeExit:
    """``probe register``'s exit code: rejected credentials first, then the same mapping as options."""
    from sipflow.probe.common import Outcome
    if result.outcome is Outcome.AUTH_FAILURE:
        return ProbeExit.AUTH_FAILURE
    return _probe_exit(result)


@probe.command("register", cls=_ProbeCommand)
@click.argument("aor")
@credential_options("the AOR's user")
@click.option("--expires", type=click.IntRange(0, 2 ** 32 - 1), default=60, show_default=True,
              help="Seconds the binding is asked for (the Expires header); 0 only removes it.")
@click.option("--unregister", is_flag=True, help="Once registered, remove the binding again (Expires: 0).")
@proxy_option("the AOR's domain")
@single_run_options(timeout_default="10", measured="the total time")
@probe_recording_and_tls_options
@handle_probe_errors
def probe_register(aor, user, password, expires, unregister, proxy, timeout, bind, family, fmt, warning, critical,
                   verbose, pcap=None, keep_secrets=False, tls_ca=None, tls_insecure=False, tls_keylog=None):
    """Register sip:user@domain[:port][;transport=udp|tcp|tls|ws|wss] (or sips:) and report what the registrar
    granted.

    The REGISTER goes to the AOR's domain (or --proxy), with our real address and port in Contact
    and Via (rport). A 401/407 is answered with digest credentials (RFC 7616/8760: SHA-512-256,
    SHA-256 or MD5, the strongest offered; qop=auth, a random cnonce, nc counting per nonce,
    digest-uri = the Request-URI) on a new request with CSeq + 1, once; stale=true is retried once
    more; a second challenge means the credentials were rejected (auth failure, as is a 403 to them).
    The result says the expiry granted to our binding, every binding the AOR has, the algorithm used
    and the timings (first response, challenge round trip, register, unregister, total). TLS is as for
    probe options (--ca, --insecure; a failed certificate check is exit 6).

    \b
    Examples:
      sipflow probe register sip:alice@pbx.example.com --password s3cret
      SIPFLOW_PASSWORD=s3cret sipflow probe register \\
          'sip:alice@[::1]:5070;transport=tcp' --unregister
      sipflow probe register sip:alice@example.com --user 1001 \\
          --proxy sip:192.0.2.10:5060 --expires 300
      sipflow probe register sip:alice@example.com --proxy wss://192.0.2.10:7443
      sipflow probe register sip:alice@pbx.example.com --format nagios -w 0.5 -c 2

    \b
    Exit codes (text and json):
      0 registered (and unregistered)  5 unreachable          10 6xx
      1 could not run                  6 reset, TLS, upgrade  11 auth failure
      2 bad command line               7 other final response 70 sipflow bug
      3 timeout                        8 4xx (not 401/407)    130 interrupted
      4 refused                        9 5xx
    --format nagios: 0 OK, 1 WARNING, 2 CRITICAL (auth failure, no answer,
    refused, timeout, other code), 3 UNKNOWN (could not run).
    --format prometheus: 0 once the metrics are written.
    """
    from sipflow.probe import register as p
    from sipflow.probe.common import TlsOptions
    opts = p.RegisterOptions(user=user, password=password, expires=expires, unregister=unregister, proxy=proxy,
                             timeout=timeout, bind=bind, family=family,
                             tls=TlsOptions(ca=tls_ca, insecure=tls_insecure, keylog=tls_keylog))
    _probe_and_report(lambda cb, rec: p.probe_register(aor, opts, on_message=cb, recorder=rec), fmt, warning,
                      critical, verbose, password, pcap, keep_secrets,
                      header=lambda r: p.register_header(r.target, opts),
                      text=p.register_text, as_json=lambda r: r.to_json(), nagios=p.register_nagios,
                      prometheus=p.register_prometheus, exit_code=_register_exit)


@probe.command("message", cls=_ProbeCommand)
@click.argument("target")
@click.option("--text", default="sipflow probe", show_default=True, metavar="TEXT",
              help="The message text, sent as text/plain (UTF-8, at most 1300 bytes).")
@click.option("--from", "from_uri", metavar="URI", help="From URI, e.g. sip:alice@example.com.  "
                                                        "[default: sip:sipflow@OUR-ADDRESS]")
@credential_options("the From user")
@proxy_option()
@single_run_options(timeout_default="10", measured="the total time")
@probe_recording_and_tls_options
@handle_probe_errors
def probe_message(target, text, from_uri, user, password, proxy, timeout, bind, family, fmt, warning, critical,
                  verbose, pcap=None, keep_secrets=False, tls_ca=None, tls_insecure=False, tls_keylog=None):
    """Send one SIP MESSAGE (RFC 3428, text/plain) to sip:user@host[:port][;transport=...] and report
    the status and timings, as a web phone's chat does.

    A 401/407 is answered with digest credentials on a new request with CSeq + 1 (per realm, the
    strongest algorithm offered; stale=true retried once); a second challenge means the credentials
    were rejected (auth failure, as is a 403 to them). Any 2xx (200, 202 Accepted) is delivered.
    Timings: connect and WebSocket handshake (when this probe opened them), first response, the
    challenge round trip, the round trip of the MESSAGE that got the final answer, total. Every
    transport of probe options works here, WebSocket included.

    \b
    Examples:
      sipflow probe message sip:bob@127.0.0.1 --text "hello"
      sipflow probe message sip:bob@example.com --proxy ws://192.0.2.10:5066 \\
          --user alice --password s3cret
      sipflow probe message 'sip:bob@example.com;transport=wss' --ca ca.pem
      sipflow probe message sip:bob@192.0.2.10 --format nagios -w 0.5 -c 2

    \b
    Exit codes (text and json):
      0 delivered (2xx)   4 refused          8 4xx (not 401/407)  11 auth failure
      1 could not run     5 unreachable      9 5xx                70 sipflow bug
      2 bad command line  6 reset, TLS,      10 6xx               130 interrupted
      3 timeout             refused upgrade  7 3xx
    --format nagios: 0 OK, 1 WARNING, 2 CRITICAL (anything but a 2xx),
    3 UNKNOWN (could not run).  --format prometheus: 0 once written.
    """
    from sipflow.probe import message as pm
    from sipflow.probe.common import TlsOptions
    opts = pm.MessageOptions(text=text, from_uri=from_uri, user=user, password=password, proxy=proxy,
                             timeout=timeout, bind=bind, family=family,
                             tls=TlsOptions(ca=tls_ca, insecure=tls_insecure, keylog=tls_keylog))
    _probe_and_report(lambda cb, rec: pm.probe_message(target, opts, on_message=cb, recorder=rec), fmt, warning,
                      critical, verbose, password, pcap, keep_secrets,
                      header=lambda r: pm.message_header(r.target, opts), text=pm.message_text,
                      as_json=lambda r: r.to_json(), nagios=pm.message_nagios, prometheus=pm.message_prometheus,
                      exit_code=_register_exit)


def _probe_and_report(run, fmt, warning, critical, verbose, password, pcap, keep_secrets, *, header, text,
                      as_json, nagios, prometheus, exit_code, show_ladder: bool = False) -> None:
    """What ``probe register`` and ``probe call`` share: the -v trace (secrets redacted), the --pcap
    recording, one renderer per --format, --ladder, and the exit code (Nagios and Prometheus have
    their own)."""
    import tempfile

    from sipflow.probe.common import trace_text
    from sipflow.probe.recorder import recording
    ctx = click.get_current_context()
    on_message = None
    if verbose:
        def on_message(direction, data):
            say(trace_text(direction, data, password), err=True)
    with tempfile.TemporaryDirectory(prefix="sipflow-probe-") as tmp:
        # The ladder is drawn by the analyzer from the probe's own recording, like any capture.
        record = pcap or (os.path.join(tmp, "probe.pcap") if show_ladder else None)
        with recording(record, keep_secrets) as recorder:
            result = run(on_message, recorder)
        drawing = _ladder_of(record) if show_ladder else None
    if fmt == "text":
        say(header(result))
        say(text(result))
        if drawing:
            say("\n" + drawing)
    elif drawing:
        say(drawing, err=True)
    if fmt == "json":
        say(as_json(result))
    elif fmt == "nagios":
        state, line = nagios(result, warning, critical)
        say(line)
        ctx.exit(int(state))
    elif fmt == "prometheus":
        say(prometheus(result), nl=False)
        ctx.exit(ProbeExit.OK)
    ctx.exit(exit_code(result))



def _call_exit(result) -> ProbeExit:
    """``probe call``'s exit code: one per outcome, a rejection by its status class."""
    from sipflow.probe.call import CallOutcome as C
    o = result.outcome
    if o is C.ANSWERED:
        return ProbeExit.ONE_WAY_AUDIO if (result.rtp or {}).get("one_way_audio") else ProbeExit.OK
    if o is C.REJECTED and result.status is not None:
        return {4: ProbeExit.CLIENT_ERROR, 5: ProbeExit.SERVER_ERROR,
                6: ProbeExit.GLOBAL_FAILURE}.get(result.status // 100, ProbeExit.UNEXPECTED)
    return {C.BUSY: ProbeExit.BUSY, C.NO_ANSWER: ProbeExit.NO_ANSWER, C.AUTH_FAILURE: ProbeExit.AUTH_FAILURE,
            C.TIMEOUT: ProbeExit.TIMEOUT, C.REFUSED: ProbeExit.REFUSED,
            C.UNREACHABLE: ProbeExit.UNREACHABLE}.get(o, ProbeExit.TRANSPORT_ERROR)


@probe.command("call", cls=_ProbeCommand)
@click.argument("target")
@click.option("--from", "from_uri", metavar="URI", help="From URI, e.g. sip:alice@example.com.  "
                                                        "[default: sip:sipflow@OUR-ADDRESS]")
@credential_options("the From user")
@click.option("--ring-timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="CANCEL the call when it is not answered S seconds after the first provisional response.")
@click.option("--duration", type=click.FloatRange(0, 3600), default=5.0, show_default=True, metavar="S",
              help="Seconds from the ACK to our BYE, sending the tone meanwhile.")
@click.option("--dtmf", metavar="DIGITS", default="", help="Send these digits (0-9 * # A-D) as RFC 4733 "
                                                            "events once the call is up.")
@proxy_option()
@single_run_options(timeout_default="--duration + --ring-timeout + 30", measured="the setup time (INVITE to ACK)")
@click.option("--audio", metavar="tone|FILE.wav", default="tone", show_default=True,
              help="What to send: the 1 kHz tone, or a WAV file (8000 Hz mono 16-bit PCM, anything else is "
                   "refused) encoded as the answer's G.711 codec and looped for --duration.")
@probe_recording_and_tls_options
@click.option("--ladder", "show_ladder", is_flag=True,
              help="Also draw the ladder of the probe's own messages (after the result; on standard error "
                   "unless --format text).")
@handle_probe_errors
def probe_call(target, from_uri, user, password, ring_timeout, duration, dtmf, proxy, timeout, bind, family, fmt,
               warning, critical, verbose, pcap=None, keep_secrets=False, audio="tone", show_ladder=False,
               tls_ca=None, tls_insecure=False, tls_keylog=None):
    """Place a test call to sip:user@host[:port][;transport=udp|tcp|tls|ws|wss], send a tone, hang up, report.

    The INVITE offers PCMU, PCMA and telephone-event (SDP on our own address, IPv4 or IPv6) and is
    retransmitted over UDP per RFC 3261 (Timer A from 0.5 s doubling, Timer B 32 s). A 401/407 is
    ACKed and answered once with digest credentials (CSeq + 1). Once answered: ACK (through the
    Record-Route route set, to the Contact), a 1 kHz G.711 tone every 20 ms to the answer's address,
    the far end's RTP counted (packets, RFC 3550 loss and jitter; nothing back is one-way audio), and
    BYE after --duration. --ring-timeout cancels a call that rings too long (CANCEL, then 487 is
    ACKed; a 200 OK that crosses the CANCEL is ACKed and hung up). Timings are from the first INVITE:
    first response, PDD (first 18x), answer, setup (ACK sent); then the call's duration and the BYE
    round trip. Signalling over TLS or WebSocket (ws/wss) is as for probe options (--ca, --insecure);
    RTP is plain RTP/AVP on our own address: DTLS-SRTP and ICE, what browsers use, are out of scope.

    \b
    Examples:
      sipflow probe call sip:bob@127.0.0.1:5060 --duration 2
      sipflow probe call 'sip:bob@[::1]:5070;transport=tcp' --dtmf 123#
      sipflow probe call sip:bob@example.com --proxy sip:192.0.2.10 \\
          --from sip:alice@example.com --user alice --password s3cret \\
          --ring-timeout 15 --format json
      sipflow probe call sip:bob@example.com --proxy ws://192.0.2.10:5066
      sipflow probe call sip:echo@192.0.2.10 --format nagios -w 0.5 -c 2

    \b
    Exit codes (text and json):
      0 answered, audio both ways  5 unreachable          10 6xx
      1 could not run              6 reset, TLS, upgrade  11 auth failure
      2 bad command line           7 3xx (redirected)     12 busy (486/600)
      3 timeout                    8 other 4xx            13 no answer (cancelled)
      4 refused                    9 5xx                  14 one-way audio
      70 sipflow bug (please report)    130 interrupted
    --format nagios: 0 OK, 1 WARNING, 2 CRITICAL (anything but a call answered
    with audio both ways), 3 UNKNOWN (could not run).
    --format prometheus: 0 once the metrics are written.
    """
    from sipflow.probe import call as pc
    from sipflow.probe import callout
    from sipflow.probe.common import TlsOptions
    opts = pc.CallOptions(from_uri=from_uri, user=user, password=password, ring_timeout=ring_timeout,
                          duration=duration, dtmf=dtmf, proxy=proxy, timeout=timeout, bind=bind, family=family,
                          audio=None if audio == "tone" else audio,
                          tls=TlsOptions(ca=tls_ca, insecure=tls_insecure, keylog=tls_keylog))
    _probe_and_report(lambda cb, rec: pc.probe_call(target, opts, on_message=cb, recorder=rec), fmt, warning,
                      critical, verbose, password, pcap, keep_secrets,
                      header=lambda r: callout.call_header(r.target, opts),
                      text=callout.call_text, as_json=lambda r: r.to_json(), nagios=callout.call_nagios,
                      prometheus=callout.call_prometheus, exit_code=_call_exit, show_ladder=show_ladder)


if __name__ == "__main__":  # pragma: no cover
    main()
