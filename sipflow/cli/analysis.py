"""Analysis commands: ``calls``, ``dialogs``, ``show``, ``summary``, ``analyze``, ``rtp``, ``ladder``, ``audio``.

Each opens the captures, runs the analyzer once and hands the filtered ``Analysis`` to a renderer.
"""
from __future__ import annotations

import functools
import os

import click

from sipflow.cli.app import (output_option, analysis_options, selected, emit_stream, emit_text, handle_errors, main,
                             pick_call, run_analysis, say, terminal_width)
from sipflow.errors import SipflowError


@main.command()
@analysis_options(["text", "json", "csv"])
@click.option("--events", is_flag=True, help="Under the table, what happened in each call: ringing, early media, "
              "answer, hold/resume, codec changes, DTMF, MESSAGE, transfer, T.38, hang-up.")
@click.option("--wide", is_flag=True, help="Also each side's User-Agent (or Server) and SDP media address; "
              "whole Call-IDs and parties (wider than the terminal unless --width).")
@handle_errors
def calls(files, fmt, output, width, no_progress, events, wide, **filters):
    """List the calls: start, parties, outcome, post-dial delay, duration, media.

    \b
    Examples:
      sipflow calls capture.pcap
      sipflow calls a.pcap b.pcapng --status 4xx --format csv -o failed.csv
      sipflow calls capture.pcap --user alice --since 2024-05-01T10:00:00
      sipflow calls capture.pcap --method BYE --since 20:49:20     # calls with a BYE, from 20:49:20 UTC
      sipflow calls capture.pcap --call 2 --events                 # what happened in call 2
    """
    from sipflow.render import tables as report
    a = run_analysis(files, no_progress, **filters)
    text = {"text": lambda: report.calls_text(a, width or (10_000 if wide else terminal_width(None)), events, wide),
            "json": lambda: report.calls_json(a), "csv": lambda: report.calls_csv(a)}[fmt]()
    emit_text(text, output)


@main.command()
@analysis_options(["text"])
@click.option("--frame", "frames", type=click.IntRange(min=1), multiple=True, metavar="N",
              help="The SIP message in frame N (repeat for several).")
@handle_errors
def show(files, fmt, output, width, no_progress, frames, **filters):
    """SIP messages as they were received: frame, time, endpoints, transport, headers and body (SDP,
    sipfrag, text). Give --frame N for one message, or a filter (--call N, --call-id ID, --method...)
    for a whole dialog.

    \b
    Examples:
      sipflow show samples/call-via-proxy.pcap --frame 1
      sipflow show capture.pcap --call 3                  # every message of call 3 of `sipflow calls`
      sipflow show capture.pcap --call-id a84b4c76 --method BYE
    """
    from sipflow.render.messages import show_text
    if not frames and not selected(filters):
        raise click.UsageError("say which messages: --frame N, or a filter such as --call N or --call-id ID")
    a = run_analysis(files, no_progress, **filters)
    picked = [e for e in a.messages if not frames or set(e.frames) & set(frames)]
    if not picked:
        what = " and ".join(filter(None, [f"frame {', '.join(map(str, frames))}" if frames else "",
                                          a.scope.description if a.scope else ""]))
        raise SipflowError(f"no SIP message in {what} (sipflow dialogs lists what the capture holds)")
    emit_text(show_text(picked), output)


@main.command()
@analysis_options(["text", "json", "csv"])
@handle_errors
def dialogs(files, fmt, output, width, no_progress, **filters):
    """Every dialog, as sngrep lists them: one line per Call-ID with its first method (INVITE, REGISTER,
    OPTIONS, MESSAGE, SUBSCRIBE...), parties, outcome and message count.

    \b
    Examples:
      sipflow dialogs samples/options-message-subscribe.pcap
      sipflow dialogs capture.pcap --method OPTIONS --format csv -o pings.csv
    """
    from sipflow.render import tables as report
    a = run_analysis(files, no_progress, **filters)
    text = {"text": lambda: report.dialogs_text(a, terminal_width(width)), "json": lambda: report.dialogs_json(a),
            "csv": lambda: report.dialogs_csv(a)}[fmt]()
    emit_text(text, output)


def _chart_option(ctx, param, value):
    """--chart: a .png, .svg or .pdf file that can be written (checked before any work)."""
    if value is None:
        return value
    if os.path.splitext(value)[1].lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"{value}: a chart is written as .png, .svg or .pdf (name the file so)")
    return output_option(ctx, param, value)


@main.command()
@analysis_options(["text", "json"])
@click.option("--chart", metavar="FILE", callback=_chart_option,
              help="Also draw the summary charts (.png, .svg or .pdf): responses per method, call outcomes, "
                   "calls and registrations over time, PDD and setup-time histograms, MOS.")
@handle_errors
def summary(files, fmt, output, width, no_progress, chart, **filters):
    """Response codes by method, call outcomes and KPIs (ASR, NER, SER, PDD), registrations, problems.

    \b
    Examples:
      sipflow summary capture.pcap
      sipflow summary day1.pcap day2.pcap --format json
      sipflow summary samples/transfer-hold.pcap --chart reports/summary.png
    """
    import json

    from sipflow.render import tables as report
    a = run_analysis(files, no_progress, **filters)
    if chart:
        from sipflow.render.charts import save_summary
        save_summary(a, chart)
        say(f"{chart}: summary charts", err=True)
    emit_text(report.summary_text(a, terminal_width(width)) if fmt == "text"
              else json.dumps(report.summary_dict(a), indent=1), output)


@main.command()
@analysis_options(["json", "ndjson", "text", "csv"])
@handle_errors
def analyze(files, fmt, output, width, no_progress, **filters):
    """Everything: messages, calls, registrations, streams, problems (JSON: see docs/json.md).

    \b
    Examples:
      sipflow analyze capture.pcap --format json -o result.json
      sipflow analyze capture.pcap --format ndjson | jq -c 'select(.type == "call")'
      sipflow analyze capture.pcap --call 3 --format text          # call 3 of `sipflow calls`
      sipflow analyze capture.pcap --format csv      # one row per SIP message
    """
    from sipflow.render import jsonout
    from sipflow.render import tables as report
    a = run_analysis(files, no_progress, **filters)
    if fmt in ("json", "ndjson"):
        emit_stream(functools.partial(jsonout.write_json if fmt == "json" else jsonout.write_ndjson, a), output)
        return
    text = report.analysis_text(a, terminal_width(width)) if fmt == "text" else report.analysis_csv(a)
    emit_text(text, output)


@main.command()
@analysis_options(["text", "json", "csv"])
@handle_errors
def rtp(files, fmt, output, width, no_progress, **filters):
    """RTP streams and their quality: packets, loss, jitter, largest gap, codec, call.

    Streams are keyed by source, destination and SSRC, joined to calls by the SDP that announced them
    (also through NAT, flagged). Filters select the streams of the matching calls.

    \b
    Examples:
      sipflow rtp capture.pcap
      sipflow rtp capture.pcap --call-id 1-2345@127.0.0.1
      sipflow rtp capture.pcap --format csv -o streams.csv
    """
    from sipflow.render import tables as report
    a = run_analysis(files, no_progress, **filters)
    text = {"text": lambda: report.streams_text(a, terminal_width(width)), "json": lambda: report.streams_json(a),
            "csv": lambda: report.streams_csv(a)}[fmt]()
    emit_text(text, output)


def _aliases(pairs, path) -> dict:
    """--alias ADDR=NAME (repeatable) and --aliases FILE (one "ADDR NAME" or "ADDR=NAME" a line, # comments)."""
    out = {}
    lines = [(p, "--alias") for p in pairs]
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                lines += [(line.split("#", 1)[0].strip(), "--aliases") for line in fh]
        except OSError as e:
            raise click.BadParameter(f"cannot read {path}: {e.strerror}", param_hint="--aliases") from None
    for text, option in lines:
        if not text:
            continue
        addr, sep, name = text.partition("=") if "=" in text else text.partition(" ")
        if not sep or not addr.strip() or not name.strip():
            raise click.BadParameter(f"{text!r}: give ADDRESS=NAME, e.g. 192.0.2.10=PBX or 192.0.2.10:5060=PBX",
                                     param_hint=option)
        out[addr.strip()] = name.strip()
    return out


MAX_PICTURE_LADDERS = 40     # Call-IDs in one SVG/PNG/PDF (beyond: choose with a filter, or --combine)


@main.command()
@analysis_options(["text", "mermaid", "plantuml"])
@click.option("--time", "time_mode", type=click.Choice(["rel", "abs", "delta"]), default="rel", show_default=True,
              help="Time column: since the first message, wall clock (UTC, the date once), or since the one before.")
@click.option("--group", type=click.Choice(["endpoint", "host"]), default="endpoint", show_default=True,
              help="One lane per ip:port, or per host (its ports merged).")
@click.option("--alias", "alias_pairs", multiple=True, metavar="ADDR=NAME",
              help="Name a lane: 192.0.2.10=PBX (a host) or 192.0.2.10:5060=PBX (an endpoint). Repeatable.")
@click.option("--aliases", "aliases_file", type=click.Path(dir_okay=False), default=None,
              help="A file of ADDR=NAME lines (or ADDR NAME), # comments.")
@click.option("--verbose", "-v", is_flag=True, help="Key headers and the SDP under each arrow.")
@click.option("--combine", is_flag=True, help="Draw every chosen Call-ID in one diagram (the legs of a call "
              "through a B2BUA), each leg marked by colour in a picture.")
@handle_errors
def ladder(files, fmt, output, width, no_progress, time_mode, group, alias_pairs, aliases_file, verbose, combine,
           **filters):
    """Ladder (sequence) diagram: one lane per address, one arrow per message, one diagram per Call-ID.

    Each line shows the time and the frame number, so any arrow can be found in Wireshark with
    frame.number == N. A call's events (hold, resume, transfer, DTMF, MESSAGE) are noted where they
    happen. Use the filters to draw one call (--call N from `sipflow calls`).

    -o FILE.svg, FILE.png or FILE.pdf paints a picture instead: arrows coloured by class,
    retransmissions dashed, SDP under its arrow, RTP streams with loss, jitter and MOS, the call's
    figures in the title (a PDF puts a long call on several pages). --format mermaid or plantuml
    writes a sequence diagram for a wiki or a ticket.

    \b
    Examples:
      sipflow ladder samples/transfer-hold.pcap --call 1
      sipflow ladder samples/transfer-hold.pcap --call 1 -o reports/call1.svg
      sipflow ladder capture.pcap --call-id 1-2345 --alias 192.0.2.10=PBX --group host --time abs
      sipflow ladder capture.pcap --status 486 --verbose      # every busy call, headers and SDP
      sipflow ladder capture.pcap --user alice --combine -o legs.pdf
      sipflow ladder capture.pcap --call 2 --format mermaid -o call2.mmd
    """
    from sipflow.render.ladder import layouts, merge, render_all
    names = _aliases(alias_pairs, aliases_file)
    picture = os.path.splitext(output)[1].lower().lstrip(".") if output != "-" else ""
    if picture not in ("svg", "png", "pdf"):
        picture = ""
    if picture and fmt != "text":
        raise click.UsageError(f"-o {output} writes a picture; --format {fmt} writes text: give one of them")
    a = run_analysis(files, no_progress, **filters)
    drawn = layouts(a, names, group == "host", verbose, media=bool(picture) or fmt != "text")
    if combine and len(drawn) > 1:
        drawn = [merge(drawn)]
    if picture:
        if not any(lad.arrows for lad in drawn):
            raise SipflowError("no SIP message to draw" + (" matches the filters" if selected(filters)
                                                           else " in the capture"))
        if len(drawn) > MAX_PICTURE_LADDERS:
            raise click.UsageError(f"{len(drawn)} Call-IDs would make one huge picture (at most "
                                   f"{MAX_PICTURE_LADDERS}): choose calls with --call, --call-id, --user, --status "
                                   "or --since/--until, or use the HTML report (sipflow report)")
        from sipflow.render.picture import save
        save(drawn, output, picture, time_mode)
        say(f"{output}: {len(drawn)} ladder{'s' if len(drawn) != 1 else ''}, "
            f"{sum(len(lad.arrows) for lad in drawn)} messages")
        return
    if fmt == "mermaid":
        from sipflow.render.diagram import mermaid
        emit_text(mermaid(drawn), output)
    elif fmt == "plantuml":
        from sipflow.render.diagram import plantuml
        emit_text(plantuml(drawn), output)
    else:
        emit_text(render_all(drawn, terminal_width(width), time_mode), output)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=False))
@click.option("--call-id", required=True, help="The call: its Call-ID, or a part of it that only one call has.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None,
              help="Write the WAV files here (default: reports/audio/CALL-ID/).")
@click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")
@handle_errors
def audio(files, call_id, output_dir, no_progress):
    """Write a call's audio as WAV: each G.711 direction, and both mixed.

    Lost packets are silence where they were (samples are placed by RTP timestamp). Streams in other
    codecs are listed as not decodable. Files are 8000 Hz mono 16-bit PCM.

    \b
    Examples:
      sipflow audio samples/basic-call-rtp.pcap --call-id 1-2345@127.0.0.1
      sipflow audio capture.pcap --call-id 9f3a -o /tmp/call-audio
    """
    import re

    from sipflow.render.audio import MAX_SECONDS, export_call
    call = pick_call(run_analysis(files, no_progress), call_id)
    if not call.streams:
        raise SipflowError(f"call {call.call_id} has no RTP stream in the capture: no audio to write")
    out = output_dir or os.path.join("reports", "audio", re.sub(r"[^A-Za-z0-9._-]", "_", call.call_id))
    tracks, mixed, skipped = export_call(files, call, out)
    for t in tracks:
        say(f"{t.path}: {t.seconds:.1f} s, {t.packets} packets"
            + (f", {t.silent_packets} silent (lost or not audio)" if t.silent_packets else "")
            + (f", {t.beyond} past {MAX_SECONDS // 3600} h dropped" if t.beyond else ""))
    if mixed:
        say(f"{mixed}: both directions mixed")
    for line in skipped:
        say(f"not written: {line}", fg="yellow")
    if not tracks:
        raise SipflowError(f"call {call.call_id}: no G.711 stream, so no WAV was written")


@main.command()
@analysis_options(["html"])
@click.option("--max-detail", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Put the ladder and raw messages of the first N calls in the page (every call is in the "
                   "table). A big capture stays a page a browser opens.")
@handle_errors
def report(files, fmt, output, width, no_progress, max_detail, **filters):
    """One self-contained HTML file: overview and KPIs, charts, a call table that sorts and filters,
    each call's ladder (click an arrow for the whole message, pin messages to compare), its RTP streams
    and events, registrations, other dialogs and problems. It opens offline: no network, no server.

    Written to reports/NAME.html unless -o says where.

    \b
    Examples:
      sipflow report samples/transfer-hold.pcap                 # reports/transfer-hold.html
      sipflow report capture.pcap -o /tmp/capture.html --status 4xx
      sipflow report big.pcap --max-detail 200
    """
    from sipflow.render import report as page
    path = output if output != "-" else page.default_path(list(files))
    if output == "-":
        os.makedirs(os.path.dirname(path), exist_ok=True)
    a = run_analysis(files, no_progress, **filters)
    size = page.write(a, list(files), path, max_detail)
    detailed = min(len(a.calls), max_detail)
    n = len(a.calls)
    say(f"{path}: {size / 1e6:.1f} MB, {n} call{'s' if n != 1 else ''} ({detailed} with "
        f"{'its' if n == 1 else 'their'} ladder), {len(a.registrations)} registrations, "
        f"{len(a.malformed) + len(a.anomalies)} problems", err=True)
