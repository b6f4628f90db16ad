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
import sys
from typing import Callable, List, Optional

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


def _parse_time(value: Optional[str]) -> Optional[float]:
    """Epoch seconds, or an ISO 8601 date-time (UTC unless it carries an offset)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither epoch seconds nor an ISO time like 2024-05-01T10:00:00")
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def analysis_options(formats: List[str]) -> Callable:
    """Options every analysis command shares: files, format, output and the filters."""
    def deco(f):
        f = click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))(f)
        f = click.option("--format", "fmt", type=click.Choice(formats), default=formats[0], show_default=True,
                         help="Output format.")(f)
        f = click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
                         help="Write here instead of standard output.")(f)
        f = click.option("--call-id", help="Only this Call-ID.")(f)
        f = click.option("--user", help="Only calls/messages whose From or To user contains this text.")(f)
        f = click.option("--method", help="Only this SIP method (INVITE, REGISTER, OPTIONS...).")(f)
        f = click.option("--status", help="Only this final status: a code (486) or a class (4xx).")(f)
        f = click.option("--since", help="Only from this time (epoch seconds or ISO 8601, UTC by default).")(f)
        f = click.option("--until", help="Only up to this time.")(f)
        f = click.option("--width", type=int, default=None, help="Table width (default: terminal width, max 160).")(f)
        f = click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")(f)
        f = click.option("--keep-calls", type=click.IntRange(min=0), metavar="N",
                         help="Keep the records of the N most recent finished calls only; older ones are "
                              "summarised (still in every total and KPI). Default: keep everything.")(f)
        f = click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), metavar="S",
                         help="Age out calls and transactions with no message for S capture seconds "
                              "(reported as aged_out).")(f)
        return f
    return deco


def run_analysis(files, no_progress: bool, keep_calls: Optional[int] = None, idle_timeout: Optional[float] = None,
                 **filters):
    """Open and analyse the captures with a progress bar on a terminal; return the filtered Analysis."""
    from sipflow.analysis.analyzer import Analyzer, Filter
    from sipflow.analysis.options import AnalyzerOptions
    from sipflow.capture.files import open_captures

    # The analysis keeps millions of small objects alive until the process exits: the cyclic collector
    # would walk them all again and again for nothing (measured: a third of the run on big captures).
    if keep_calls is None:
        gc.disable()
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
        an = Analyzer(AnalyzerOptions(keep_calls=keep_calls, idle_timeout=idle_timeout))
        an.run(caps)
        result = an.result()
    finally:
        if bar:
            bar.__exit__(None, None, None)
    for w in result.warnings:
        say(f"warning: {w}", err=True, fg="yellow")
    f = Filter(call_id=filters.get("call_id"), user=filters.get("user"), method=filters.get("method"),
                   status=filters.get("status"), since=_parse_time(filters.get("since")),
                   until=_parse_time(filters.get("until")))
    return result.filtered(f)


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
      tcpdump -i any -c 2000 -w - port 5060 | sipflow calls -
      sipflow probe options sip:127.0.0.1:5060
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())




# The commands register themselves on ``main`` when their modules are imported (at the end, so that
# ``main`` and the helpers above exist by then).
from sipflow.cli import analysis as _analysis_commands  # noqa: E402,F401
from sipflow.cli import probe as _probe_commands  # noqa: E402,F401
