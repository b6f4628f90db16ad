"""The ``sipflow`` command group, exit codes, and the helpers every command shares.

Owns the top-level group and its options, output files, the terminal width, and the analysis commands'
error boundary. The commands live by family in ``cli.analysis`` and ``cli.probe``; importing this
package registers them. Library errors become one clear line and an exit code here and in
``cli.probe``'s boundary, nowhere else.
"""
from __future__ import annotations

import datetime as _dt
import enum
import functools
import gc
import os
import re
import sys
from typing import Callable, List, Optional, Tuple, Union

import click

from sipflow import __version__
from sipflow.render.safe import printable


class Exit(enum.IntEnum):
    """Exit codes of the analysis commands."""
    OK = 0
    ERROR = 1        # unreadable input: missing file, not a capture, unknown link type
    USAGE = 2        # bad command line (click's own code)
    INTERNAL = 70    # a bug in sipflow, not in the input (sysexits.h EX_SOFTWARE)
    INTERRUPTED = 130


def internal_error(e: BaseException) -> str:
    """The one line a bug gets: what broke, that it is sipflow's fault, and how to report it."""
    return (f"sipflow: internal error ({type(e).__name__}: {e}). This is a bug in sipflow, not a problem "
            f"with your input: please report it with the output of the same command run with --traceback "
            f"(and the capture, if you can share it)")


# The methods --method takes (RFC 3261, 3262, 3265, 3311, 3428, 3515, 3903, 6086, 6665).
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
           "INFO", "REFER", "MESSAGE", "UPDATE")
_TIME_OF_DAY = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?")


def _parse_time(value: Optional[str]) -> Union[None, float, Tuple[str, float]]:
    """Epoch seconds, an ISO 8601 date-time (UTC unless it carries an offset), or a time of day
    (``20:49:20``, UTC) returned as ("time", seconds since midnight): the capture's date is added once
    it is known."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    m = _TIME_OF_DAY.fullmatch(value.strip())
    if m:
        h, mi, sec = int(m.group(1)), int(m.group(2)), float(m.group(3) or 0)
        if h < 24 and mi < 60 and sec < 60:
            return ("time", h * 3600 + mi * 60 + sec)
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time: give epoch seconds, an ISO time like "
                                 f"2024-05-01T10:00:00, or a time of day like 20:49:20 (UTC)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _time_option(ctx, param, value):
    return _parse_time(value)


def _status_option(ctx, param, value):
    if value is None or re.fullmatch(r"[1-6](\d\d|xx)", value.lower()):
        return value.lower() if value else value
    raise click.BadParameter(f"{value!r} is not a SIP status: give a code (486) or a class (4xx)")


def output_option(ctx, param, value):
    """-o: a file that can be written, checked before any work (a long analysis must not end in an error
    about the output)."""
    if value is None or value == "-":
        return value
    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"the folder {folder} does not exist: create it first (mkdir -p {folder})")
    if os.path.isdir(value):
        raise click.BadParameter(f"{value} is a folder: give a file name")
    if not os.access(folder, os.W_OK) or (os.path.exists(value) and not os.access(value, os.W_OK)):
        raise click.BadParameter(f"cannot write {value}: permission denied")
    return value


def _method_option(ctx, param, value):
    if value is None or value.upper() in METHODS:
        return value.upper() if value else value
    raise click.BadParameter(f"{value!r} is not a SIP method sipflow knows ({', '.join(METHODS)})")


SELECTORS = ("call_id", "call_index", "user", "method", "status", "since", "until")   # the filter options


def selected(filters: dict) -> bool:
    """Whether any filter option was given (the others: --engine, --keep-calls... select nothing)."""
    return any(filters.get(k) is not None for k in SELECTORS)


def analysis_options(formats: List[str]) -> Callable:
    """Options every analysis command shares: files, format, output and the filters."""
    def deco(f):
        f = click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))(f)
        f = click.option("--format", "fmt", type=click.Choice(formats), default=formats[0], show_default=True,
                         help="Output format.")(f)
        f = click.option("-o", "--output", default="-", callback=output_option, metavar="FILE",
                         help="Write here instead of standard output.")(f)
        f = click.option("--call-id", help="Only this Call-ID (or the one call whose Call-ID contains this).")(f)
        f = click.option("--call", "call_index", type=click.IntRange(min=1), metavar="N",
                         help="Only call number N of the calls table (# column).")(f)
        f = click.option("--user", help="Only calls/messages whose From or To user contains this text.")(f)
        f = click.option("--method", callback=_method_option,
                         help="Only this SIP method: its messages, and the calls that have one (BYE, REFER...).")(f)
        f = click.option("--status", callback=_status_option,
                         help="Only this final status: a code (486) or a class (4xx).")(f)
        f = click.option("--since", callback=_time_option,
                         help="Only from this time: epoch seconds, ISO 8601, or a time of day (UTC; the capture's "
                              "date).")(f)
        f = click.option("--until", callback=_time_option, help="Only up to this time.")(f)
        f = click.option("--width", type=int, default=None, help="Table width (default: terminal width, max 160).")(f)
        f = click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")(f)
        f = click.option("--tls-keylog", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
                         help="Read SIP over TLS too: tshark decrypts it with this key log (SSLKEYLOGFILE).")(f)
        f = click.option("--engine", type=click.Choice(["native", "tshark"]), default="native", show_default=True,
                         help="Who cuts SIP out of the packets: sipflow's own decoder, or tshark's dissectors "
                              "(SIP over anything Wireshark reads; a cross-check). RTP is always sipflow's.")(f)
        f = click.option("--keep-calls", type=click.IntRange(min=0), metavar="N",
                         help="Keep the records of the N most recent finished calls only; older ones are "
                              "summarised (still in every total and KPI). Default: keep everything.")(f)
        f = click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
                         help="Age out calls and transactions with no message for S capture seconds "
                              "(reported as aged_out).")(f)
        return f
    return deco


def run_analysis(files, no_progress: bool, keep_calls: Optional[int] = None, idle_timeout: Optional[float] = None,
                 tls_keylog: Optional[str] = None, engine: str = "native", on_rtcp=None, **filters):
    """Open and analyse the captures with a progress bar on a terminal; return the filtered Analysis.
    The filters' values were checked by their options (usage errors before any work)."""
    from sipflow.analysis.analyzer import Analyzer, Filter
    from sipflow.analysis.options import AnalyzerOptions
    from sipflow.capture.files import open_captures

    # The analysis keeps millions of small objects alive until the process exits: the cyclic collector
    # would walk them all again and again for nothing (measured: a third of the run on big captures).
    if keep_calls is None:
        gc.disable()
    _check_times(filters)
    sizes = 0
    for p in files:
        if p != "-" and os.path.isfile(p):
            sizes += os.path.getsize(p)
    show = not no_progress and sys.stderr.isatty() and sizes > 16 << 20
    bar = None
    if show:
        bar = click.progressbar(length=sizes, label="Reading", file=sys.stderr, show_eta=True, width=30)
        bar.__enter__()
    try:
        caps = open_captures(list(files), progress=bar.update if bar else None)
        notes: List[str] = []
        if tls_keylog or engine == "tshark":
            from sipflow.capture.tshark import exported
            caps += exported(list(files), tls_keylog, everything=engine == "tshark", warnings=notes)
        an = Analyzer(AnalyzerOptions(keep_calls=keep_calls, idle_timeout=idle_timeout, sip_from=engine))
        an.on_rtcp = on_rtcp
        an.run(caps)
        result = an.result()
    finally:
        if bar:
            bar.__exit__(None, None, None)
    for w in notes + list(result.warnings):
        say(f"warning: {w}", err=True, fg="yellow")
    since, until = (_on_capture_day(filters.get(k), result, "--" + k) for k in ("since", "until"))
    if since is not None and until is not None and since > until:
        raise click.BadParameter("it is later than --until: nothing can match", param_hint="--since")
    f = Filter(call_id=_resolve_call(result, filters.get("call_id"), filters.get("call_index")),
               user=filters.get("user"), method=filters.get("method"), status=filters.get("status"),
               since=since, until=until)
    return result.filtered(f)


def _check_times(filters: dict) -> None:
    """Before any work: --since later than --until (both absolute) is a usage error."""
    since, until = filters.get("since"), filters.get("until")
    if isinstance(since, float) and isinstance(until, float) and since > until:
        raise click.BadParameter("it is later than --until: nothing can match", param_hint="--since")


def _on_capture_day(value, result, option: str) -> Optional[float]:
    """A time of day on the date (UTC) of the capture's first SIP message (or RTP packet)."""
    if not isinstance(value, tuple):
        return value
    firsts = [e.ts for e in result.messages[:1]] + [s.first_ts for s in result.streams]
    if not firsts:
        raise click.BadParameter("a time of day needs a date, and the capture has no SIP or RTP to take it from; "
                                 "give an ISO date-time", param_hint=option)
    day = min(firsts) // 86400 * 86400
    return day + value[1]


def _resolve_call(result, call_id: Optional[str], index: Optional[int]) -> Optional[str]:
    """--call N (the calls table's numbering), or --call-id: a whole Call-ID, or a part of exactly one
    call's. A part that several calls have is a usage error that lists them; one no call has is kept
    as given (the view then says that nothing matches)."""
    calls = result.calls
    if index is not None:
        if call_id is not None:
            raise click.BadParameter("give --call or --call-id, not both", param_hint="--call")
        if index > len(calls):
            raise click.BadParameter(f"there is no call {index}: the capture has {len(calls)} call(s)",
                                     param_hint="--call")
        return calls[index - 1].call_id
    if call_id is None:
        return None
    known = {c.call_id for c in calls} | {r.call_id for r in result.registrations}
    if call_id in known or any(e.call_id == call_id for e in result.messages):
        return call_id
    matches = sorted({c.call_id for c in calls if call_id in c.call_id})
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise click.BadParameter(f"{len(matches)} calls have {call_id!r} in their Call-ID ({shown}); give more of it "
                                 f"or use --call N", param_hint="--call-id")
    return matches[0] if matches else call_id


def pick_call(result, call_id: Optional[str], index: Optional[int] = None):
    """The one call a command works on (``audio``, ``export``): --call N (the calls table's numbering),
    or --call-id: a whole Call-ID, or a part that only one call has. Anything else is a usage error
    naming the option."""
    calls = result.calls
    if index is not None:
        if index > len(calls):
            raise click.BadParameter(f"there is no call {index}: the capture has {len(calls)} call(s)",
                                     param_hint="--call")
        return calls[index - 1]
    matches = [c for c in calls if c.call_id == call_id] or [c for c in calls if call_id in c.call_id]
    if not matches:
        raise click.BadParameter(f"no call in the capture has a Call-ID containing {call_id!r} "
                                 f"({len(calls)} calls; `sipflow calls` lists them)", param_hint="--call-id")
    if len(matches) > 1:
        names = ", ".join(c.call_id for c in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise click.BadParameter(f"{len(matches)} calls match {call_id!r}: {names}; give more of it",
                                 param_hint="--call-id")
    return matches[0]


def say(text: str, err: bool = False, nl: bool = True, fg: Optional[str] = None) -> None:
    """Print one piece of output or diagnostics with control characters escaped (``render.safe``):
    server headers, file names and capture text never reach the terminal raw."""
    click.secho(printable(text, lines=True), err=err, nl=nl, fg=fg)


def emit_text(text: str, output: str) -> None:
    """Write a text or CSV output. The renderers escape capture text themselves (render.safe); this is
    the last guard: no control character but newline and tab leaves sipflow, to a terminal or a file."""
    text = printable(text, lines=True)
    if output == "-":
        click.echo(text)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")


def emit_stream(write: Callable, output: str) -> None:
    """Let ``write(file)`` write the output piece by piece (big JSON documents are never one string)."""
    if output == "-":
        write(sys.stdout)
        sys.stdout.flush()
    else:
        with open(output, "w", encoding="utf-8") as fh:
            write(fh)


def terminal_width(width: Optional[int]) -> int:
    if width:
        return width
    try:
        return max(60, min(160, os.get_terminal_size(sys.stdout.fileno()).columns))
    except OSError:
        return 80


def handle_errors(f):
    """Turn sipflow's own errors into one line and an exit code (the one boundary that does this)."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from sipflow.errors import SipflowError
        ctx = click.get_current_context()
        try:
            return f(*args, **kwargs)
        except SipflowError as e:
            if ctx.find_root().params.get("traceback"):
                raise
            say(f"sipflow: {e}", err=True, fg="red")
            ctx.exit(Exit.ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(Exit.INTERRUPTED)
        except BrokenPipeError:
            # `sipflow calls x.pcap | head`: the reader went away; not an error.
            sys.stderr.close()
            ctx.exit(Exit.OK)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:   # anything else is a bug: its own exit code, one line, --traceback to see it
            if ctx.find_root().params.get("traceback"):
                raise
            say(internal_error(e), err=True, fg="red")
            ctx.exit(Exit.INTERNAL)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=True)
@click.version_option(__version__, prog_name="sipflow")
@click.option("--traceback", is_flag=True, help="Show the Python traceback on errors (for bug reports).")
@click.pass_context
def main(ctx, traceback):
    """Read SIP and RTP from packet captures and show what happened.

    \b
    Examples:
      sipflow calls samples/basic-call-rtp.pcap
      sipflow summary capture.pcap.gz other.pcapng
      sipflow analyze capture.pcap --format json -o result.json
      sipflow rtp capture.pcap
      sipflow calls capture.pcap --events --call 2; sipflow ladder capture.pcap --call 2
      sipflow dialogs capture.pcap; sipflow show capture.pcap --frame 17
      tcpdump -i any -c 2000 -w - port 5060 | sipflow calls -
      sipflow probe options sip:127.0.0.1:5060
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())




# The commands register themselves on ``main`` when their modules are imported (at the end, so that
# ``main`` and the helpers above exist by then).
from sipflow.cli import analysis as _analysis_commands  # noqa: E402,F401
from sipflow.cli import probe as _probe_commands  # noqa: E402,F401
