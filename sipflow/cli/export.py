"""The ``export`` command: a call's own frames as a capture file, or one file per call (``--split``).

Checks the command line before any work, analyses the captures once (``run_analysis``), picks the
calls (``pick_call``, the same rule as ``audio``) and hands them to ``render.export``, which reads the
captures a second time and writes the files; then one line per file says what it holds.
"""
from __future__ import annotations

import os

import click

from sipflow.cli.app import handle_errors, main, output_option, pick_call, run_analysis, say
from sipflow.errors import SipflowError


def _write_option(ctx, param, value):
    """-w: a capture file that can be written (standard output would mix the capture with the report)."""
    if value == "-":
        raise click.BadParameter("give a file name: the capture is binary and the report goes to standard output")
    return output_option(ctx, param, value)


def _check_usage(files, call_id, call_index, output, split_dir) -> None:
    """Every usage error, before any file is read."""
    if "-" in files:
        raise click.BadParameter("standard input cannot be read twice (export analyses the capture, then "
                                 "copies its frames): save it to a file first", param_hint="FILES")
    if split_dir is not None:
        if output is not None:
            raise click.UsageError("give -w FILE (one call) or --split DIR (every call), not both")
        if call_id is not None or call_index is not None:
            raise click.UsageError("--split writes every call; to write one, give -w FILE with --call N or "
                                   "--call-id ID")
        if os.path.exists(split_dir) and not os.path.isdir(split_dir):
            raise click.BadParameter(f"{split_dir} is a file, not a folder", param_hint="--split")
        return
    if output is None:
        raise click.UsageError("say where to write: -w FILE with --call N or --call-id ID, or --split DIR for "
                               "one file per call")
    if any(os.path.exists(f) and os.path.samefile(f, output) for f in files if os.path.exists(output)):
        raise click.BadParameter(f"{output} is one of the captures being read: write somewhere else",
                                 param_hint="-w")
    if call_id is not None and call_index is not None:
        raise click.BadParameter("give --call or --call-id, not both", param_hint="--call")
    if call_id is None and call_index is None:
        raise click.UsageError("say which call: --call N (the # column of `sipflow calls`) or --call-id ID")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--call-id", help="The call: its Call-ID, or a part of it that only one call has.")
@click.option("--call", "call_index", type=click.IntRange(min=1), metavar="N",
              help="Call number N of the calls table (# column).")
@click.option("-w", "--write", "output", metavar="FILE", callback=_write_option,
              help="Write the chosen call here (with --call or --call-id).")
@click.option("--split", "split_dir", metavar="DIR",
              help="Write every call to a file of its own in DIR (created if missing): NNNN_CALL-ID.pcap.")
@click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")
@handle_errors
def export(files, call_id, call_index, output, split_dir, no_progress):
    """Write a call's own packets as a capture: its SIP messages (every TCP segment and IP fragment
    that carried them) and its RTP, RTCP and T.38 packets, with their original bytes and timestamps,
    in time order.

    The output is a classic pcap when every input is one with a single link type (microseconds or
    nanoseconds, as the input), pcapng otherwise. Standard input cannot be used: the capture is read
    twice.

    \b
    Examples:
      sipflow export samples/basic-call-rtp.pcap --call-id 1-21263@127.0.0.1 -w call.pcap
      sipflow export samples/transfer-hold.pcap --call 2 -w carol.pcap
      sipflow export capture.pcap.gz --call-id a84b4c76 -w /tmp/a84b.pcap
      sipflow export day1.pcap day2.pcapng --split calls/      # calls/0001_<Call-ID>.pcapng, ...
    """
    from sipflow.render.export import export_calls, prepare_folder, split_name
    _check_usage(files, call_id, call_index, output, split_dir)
    a = run_analysis(files, no_progress)
    if split_dir is not None:
        calls = list(a.calls)
        if not calls:
            raise SipflowError("no call in the capture, so nothing was written (`sipflow dialogs` lists what "
                               "it holds)")
        prepare_folder(split_dir)

        def target(i: int, fmt: str) -> str:
            return os.path.join(split_dir, split_name(a.number(calls[i]), calls[i], fmt))
    else:
        calls = [pick_call(a, call_id, call_index)]

        def target(i: int, fmt: str) -> str:
            return output
    written = export_calls(list(files), calls, target)
    for r in written:
        say(f"{r.path}: {r.messages} SIP message{'s' if r.messages != 1 else ''}, "
            f"{r.media_packets} RTP/RTCP packet{'s' if r.media_packets != 1 else ''}")
        if r.messages < len(r.call.events):
            say(f"warning: {r.path}: {len(r.call.events) - r.messages} of the call's {len(r.call.events)} SIP "
                f"messages were not found on the second reading (did the file change?)", err=True, fg="yellow")
    if output is not None and written[0].fmt == "pcapng" and not output.lower().endswith(".pcapng"):
        say(f"note: {output} is a pcapng (an input is pcapng, or the inputs' link types differ)", err=True)
