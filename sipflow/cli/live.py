"""``sipflow live``: sniff an interface and tell calls and registrations as they happen.

Wires ``capture.live`` (the interface) and ``capture.hep`` (HEP from capture agents) to the analyzer
(``Analyzer.feed``, ``snapshot``) and ``analysis.watch`` (what changed), printing events as text lines
or NDJSON, and the counters (with libpcap's drop counts) every few seconds. Memory stays flat:
completed calls beyond ``--keep-calls`` are summarised and silent dialogs aged out (the core's bounds).
Ctrl-C, SIGTERM, ``--duration`` or ``--count`` stop it cleanly: the last events, the final summary, a
valid ``-w`` capture, exit 0.
"""
from __future__ import annotations

import signal
import sys
import time

import click

from sipflow.cli.app import emit_text, handle_errors, main, output_option, say, terminal_width
from sipflow.errors import SipflowError


def _open_interfaces(ifaces, via, bpf, snaplen, dumpcap, libpcap):
    """libpcap for one interface when it can (root), else dumpcap; dumpcap for several."""
    from sipflow.errors import CaptureError
    if via == "dumpcap" or len(ifaces) > 1:
        if via == "pcap":
            raise click.BadParameter("libpcap here takes one interface: use --via dumpcap (or auto) for "
                                     "several", param_hint="--via")
        return dumpcap(ifaces, bpf, snaplen)
    try:
        return libpcap(ifaces[0], bpf, snaplen)
    except CaptureError as e:
        if via == "auto" and "ermission" in str(e):
            say("sipflow: no capture rights for libpcap here; trying dumpcap", err=True)
            return dumpcap(ifaces, bpf, snaplen)
        raise


def stop_by_count(stop) -> bool:
    """--count was reached: nothing more is taken, not even what is still buffered."""
    return "count" in stop


def _rotate_option(ctx, param, value):
    if value is None:
        return None
    from sipflow.capture.writer import parse_rotation
    try:
        return parse_rotation(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _hep_option(ctx, param, value):
    from sipflow.capture.hep import parse_spec
    for spec in ((value,) if isinstance(value, str) else value or ()):
        try:
            parse_spec(spec)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter("must be more than 0")
    return value


@main.command()
@click.option("-i", "--interface", "ifaces", metavar="IFACE", multiple=True,
              help="An interface to sniff (any: every one). Repeat for several (through dumpcap).")
@click.option("--via", type=click.Choice(["auto", "pcap", "dumpcap"]), default="auto", show_default=True,
              help="libpcap in-process (pcapy-ng, one interface, root), or a dumpcap pipe (several interfaces, "
                   "or the wireshark group's rights); auto picks libpcap when it can.")
@click.option("-f", "--filter", "bpf", metavar="BPF", default=None,
              help='A capture filter in tcpdump syntax, e.g. "port 5060 or udp portrange 10000-20000" '
                   '(with --media sdp-only: where SIP is).')
@click.option("--duration", type=float, callback=_positive, metavar="S", help="Stop after S seconds.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N packets.")
@click.option("--snaplen", type=click.IntRange(min=64, max=262144), default=262144, show_default=True,
              help="Bytes kept of each packet.")
@click.option("-w", "--write", "write", metavar="FILE", callback=output_option,
              help="Also write every captured packet to this pcap (valid however the capture stops).")
@click.option("--rotate", metavar="SIZE|TIME", callback=_rotate_option,
              help="With -w: start a new file every SIZE (100MB) or TIME (1h): FILE-0001.pcap, FILE-0002.pcap...")
@click.option("--keep-files", type=click.IntRange(min=1), metavar="N",
              help="With --rotate: keep only the N most recent files.")
@click.option("--format", "fmt", type=click.Choice(["text", "ndjson"]), default="text", show_default=True,
              help="One line per event, or one JSON object per line (docs/live.md).")
@click.option("--view", type=click.Choice(["auto", "table", "lines"]), default="auto", show_default=True,
              help="text on a terminal: a call table that updates in place (auto), or plain lines.")
@click.option("--keep-calls", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Keep the records of the N most recent finished calls; older ones stay in the totals.")
@click.option("--idle-timeout", type=float, default=3600.0, show_default=True, callback=_positive, metavar="S",
              help="Age out calls and transactions silent for S seconds (reported as aged_out).")
@click.option("--stats-every", type=float, default=10.0, show_default=True, callback=_positive, metavar="S",
              help="Print the counters (packets, SIP, RTP, drops) every S seconds.")
@click.option("--hep-listen", "hep_specs", multiple=True, metavar="udp|tcp:HOST:PORT", callback=_hep_option,
              help="Also (or only) take HEP v2/v3 from capture agents (Kamailio siptrace, FreeSWITCH, heplify) "
                   "on this address, e.g. udp:127.0.0.1:9060. Repeatable.")
@click.option("--hep-send", "hep_to", metavar="udp|tcp:HOST:PORT", callback=_hep_option,
              help="Forward every SIP message to a HEP collector (HOMER), e.g. udp:192.0.2.5:9060.")
@click.option("--hep-id", type=click.IntRange(min=0, max=2 ** 32 - 1), default=2002, show_default=True,
              help="Capture agent id sent with --hep-send.")
@click.option("--hep-password", default=None, help="HEP authentication key sent with --hep-send.")
@click.option("--hep-node", default=None, help="Node name sent with --hep-send.")
@click.option("--tls-keylog", "tls_keylog", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also read SIP over TLS: tshark decrypts it with this key log (SSLKEYLOGFILE) as it is captured.")
@click.option("--engine", type=click.Choice(["native", "tshark"]), default="native", show_default=True,
              help="Who cuts SIP out of the packets: sipflow's decoder, or tshark's dissectors (a pipe from "
                   "dumpcap into tshark); RTP is always sipflow's.")
@click.option("--tls-port", "tls_ports", metavar="PORT", multiple=True, type=click.IntRange(1, 65535),
              help="With --tls-keylog: a port SIP over TLS is served on (5061 if none given). Repeatable.")
@click.option("--report", "report_path", metavar="FILE", callback=output_option,
              help="At the end, also write the HTML report of what was seen (as `sipflow report`).")
@click.option("--media", type=click.Choice(["all", "sdp-only"]), default="all", show_default=True,
              help="sdp-only: the interface's filter lets through SIP (-f, or port 5060 or 5061) and only the "
                   "UDP ports that calls in progress announced in SDP, changed as calls come and go: other "
                   "traffic on a busy link stays out of Python. libpcap, one interface.")
@click.option("--list-interfaces", is_flag=True, help="List the interfaces that can be sniffed, and exit.")
@handle_errors
def live(ifaces, via, bpf, duration, count, snaplen, write, rotate, keep_files, fmt, view, keep_calls,
         idle_timeout, stats_every, hep_specs, hep_to, hep_id, hep_password, hep_node, tls_keylog, engine,
         tls_ports, report_path, media, list_interfaces):
    """Sniff an interface and report calls and registrations as they happen: each call's start,
    ringing, answer, hold/resume, transfer and end (outcome, duration, loss, MOS), registration
    results, anomalies, and the counters with the kernel's drop count. Ctrl-C ends it with the
    summary. Needs root, or the capture rights Debian gives the wireshark group.

    \b
    Examples:
      sipflow live -i eth0 -f "port 5060"
      sipflow live -i any --duration 60 -w /tmp/sip.pcap
      sipflow live -i eth0 -w /var/tmp/sip.pcap --rotate 100MB --keep-files 24
      sipflow live -i eth0 -i eth1 -f "port 5060"     # two interfaces: dumpcap
      sipflow live -i lo --format ndjson | jq -c 'select(.event == "ended")'
      sipflow live --hep-listen udp:127.0.0.1:9060   # HEP from Kamailio, heplify
      sipflow live -i eth0 --hep-send udp:192.0.2.5:9060 --hep-node sbc1  # HOMER
      sipflow live -i eth0 --duration 3600 --report reports/last-hour.html
      sipflow live -i eth0 --media sdp-only    # SIP, and only its calls' RTP
      sipflow live -i eth0 --tls-keylog keys.txt    # SSLKEYLOGFILE of the phone
      sipflow live --list-interfaces
    """
    from sipflow.analysis.options import AnalyzerOptions
    from sipflow.analysis.session import LiveSession
    from sipflow.capture.live import interfaces
    from sipflow.render import live as out

    if list_interfaces:
        for name, about in interfaces():
            say(f"{name:<20} {about}".rstrip())
        return
    _check_sources(ifaces, hep_specs, write, rotate, keep_files, tls_keylog, tls_ports, engine)
    media_only = None
    if media == "sdp-only":
        media_only = _MediaFilter(ifaces, via, bpf)
        via = "pcap"
    sources = _Sources(ifaces, via, bpf, snaplen, hep_specs, tls_keylog, tls_ports, engine, media_only)
    session = LiveSession(AnalyzerOptions(keep_calls=keep_calls, idle_timeout=idle_timeout, sip_from=engine))
    try:
        hep = _HepForwarder(hep_to, hep_id, hep_password, hep_node, session) if hep_to else None
    except Exception:
        sources.close()
        raise
    writer = sources.writer(write, rotate, keep_files) if write else None
    stop = []
    previous = {s: signal.signal(s, lambda *_: stop.append(s)) for s in (signal.SIGINT, signal.SIGTERM)}

    table = None
    if fmt == "text" and (view == "table" or (view == "auto" and sys.stdout.isatty())):
        from sipflow.render.liveview import LiveView
        table = LiveView(", ".join(sources.names))

    def emit(events):
        if table is not None:
            return
        for e in events:
            click.echo(out.ndjson(e.as_dict()) if fmt == "ndjson" else out.event_line(e))

    def counters(a):
        return {"packets": session.packets, "sip_messages": a.stats["sip_messages"],
                "rtp_packets": a.stats["rtp_packets"], "calls": len(a.calls) + len(a.summarised),
                "malformed": len(a.malformed), **sources.counters(), "hep_sent": hep.sender.sent if hep else 0,
                **(media_only.counters() if media_only else {})}

    def take(records, sniffed=False):
        for ts, fi, frame, lt, buf, off, caplen in records:
            data = bytes(buf[off:off + caplen])
            if writer is not None and sniffed:
                writer.write(round(ts * 1e6) * 1000, lt, data)
            session.feed(ts, fi, frame, lt, data)

    say(f"sipflow: capturing on {', '.join(sources.where)}; Ctrl-C stops", err=True)
    start = time.monotonic()
    next_look, next_stats = start + 0.5, start + stats_every
    a = None
    if table is not None:
        table.start()
    try:
        while not stop:
            for rec, sniffed in sources.arrived():
                take([rec], sniffed)
                if count is not None and session.packets >= count:
                    stop.append("count")
                    break
            if media_only is not None:
                media_only.follow(session.analyzer, sources.cap)
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            if now >= next_look:
                a, events = session.look()
                emit(events)
                if hep:
                    hep.forward(a, events)
                next_look = now + 0.5
                if table is not None:
                    table.update(a, events, counters(a))
                elif now >= next_stats:
                    c = counters(a)
                    if fmt == "ndjson":
                        click.echo(out.ndjson(out.stats_dict(a.end_ts, c)))
                    else:
                        say(out.stats_line(c), err=True)
                    next_stats = now + stats_every
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sources.drain(take, interface=not stop_by_count(stop))   # what was on its way at the stop
        if writer is not None:
            writer.close()
        sources.close()      # before the last counters: dumpcap tells its drops when it stops
        a, events = session.finish()
        emit(events)
        if hep:
            hep.forward(a, events)
            hep.close()
        c = counters(a)
        if table is not None:
            table.update(a, events, c)
            table.stop()
    if fmt == "ndjson":
        from sipflow.render.tables import summary_dict
        click.echo(out.ndjson({"type": "summary", "ts": a.end_ts, "counters": c, **summary_dict(a)}))
    else:
        from sipflow.render.tables import summary_text
        click.echo("")
        emit_text(summary_text(a, terminal_width(None)), "-")
        say(out.stats_line(c))
    if report_path:
        from sipflow.render.report import write as write_report
        size = write_report(a, [sources.where[0] if sources.where else "live"], report_path)
        say(f"{report_path}: {size / 1e6:.1f} MB, {len(a.calls)} calls", err=True)
    if write:
        files = getattr(writer, "paths", [write])
        say(f"{files[0] if len(files) == 1 else files[0] + ' ... ' + files[-1]}: {session.packets} packets"
            + (f" in {len(files)} files kept" if len(files) > 1 else ""), err=True)


def _check_sources(ifaces, hep_specs, write, rotate, keep_files, tls_keylog, tls_ports, engine) -> None:
    """Usage errors between the options that name where packets come from, before anything opens."""
    if not ifaces and not hep_specs:
        raise click.UsageError("say where from: -i IFACE (sipflow live --list-interfaces lists them) or "
                               "--hep-listen udp:HOST:PORT")
    if write and not ifaces:
        raise click.UsageError("-w writes what the interface captured: give -i IFACE too")
    if (tls_keylog or tls_ports) and not ifaces:
        raise click.UsageError("--tls-keylog decrypts what the interface captures: give -i IFACE too")
    if engine == "tshark" and not ifaces:
        raise click.UsageError("--engine tshark reads what the interface captures: give -i IFACE too")
    if tls_ports and not tls_keylog:
        raise click.UsageError("--tls-port names where SIP over TLS is, for --tls-keylog: give --tls-keylog too")
    if (rotate or keep_files) and not write:
        raise click.UsageError("--rotate and --keep-files cut the -w capture: give -w FILE too")
    if keep_files and not rotate:
        raise click.UsageError("--keep-files keeps the last N files of --rotate: give --rotate too")


class _MediaFilter:
    """--media sdp-only: the interface's capture filter, SIP and the media ports of the calls in
    progress, set again whenever those ports change (after each read, so a stream's first packets
    are missed only for the time one read takes)."""

    def __init__(self, ifaces, via, bpf) -> None:
        from sipflow.capture.live import SIP_FILTER, media_filter
        if not ifaces:
            raise click.UsageError("--media sdp-only narrows the interface's filter: give -i IFACE too")
        if via == "dumpcap" or len(ifaces) > 1:
            raise click.BadParameter("it changes the capture filter while capturing, which libpcap can do and a "
                                     "dumpcap pipe cannot: one interface, --via pcap (or auto)",
                                     param_hint="--media")
        self.sip = bpf or SIP_FILTER
        self.make = media_filter
        self.ports: frozenset = frozenset()
        self.changes = 0
        self.widened = False
        self.sip_seen = 0          # the analyzer's SIP count when the ports were last read
        self.bpf = media_filter(self.sip, ())[0]   # what the interface opens with

    def follow(self, analyzer, cap) -> None:
        """After a read: the ports change only with SIP (an SDP, a call's end, calls aged out as SIP
        time passes), so they are read again only when SIP came; the filter is set when they changed."""
        if analyzer.sip_count == self.sip_seen:
            return
        self.sip_seen = analyzer.sip_count
        ports = analyzer.media_ports()
        if ports == self.ports:
            return
        bpf, widened = self.make(self.sip, ports)
        if widened and not self.widened:
            say(f"sipflow: the calls in progress use {len(ports)} media ports, more than a capture filter "
                "holds well; all UDP goes through until fewer are in use", err=True)
        cap.set_filter(bpf)
        self.ports, self.widened, self.bpf = ports, widened, bpf
        self.changes += 1

    def counters(self) -> dict:
        return {"media_ports": len(self.ports), "filter_changes": self.changes}


class _Sources:
    """Where packets come from: the interfaces (libpcap or dumpcap), HEP listeners, and tshark's
    reading of the interfaces (``--tls-keylog``, ``--engine tshark``). Opened together, read together,
    drained and closed together."""

    def __init__(self, ifaces, via, bpf, snaplen, hep_specs, tls_keylog, tls_ports, engine, media_only=None) -> None:
        from sipflow.capture.hep import HepListener
        from sipflow.capture.live import DumpcapCapture, LiveCapture
        self.heps: list = []
        self.cap = self.tshark = None
        self.tshark_done = False        # its last records taken (drain): closing it again is not needed
        try:
            if tls_keylog or engine == "tshark":
                from sipflow.capture.tshark import LiveTshark
                self.tshark = LiveTshark(list(ifaces), tls_keylog, list(tls_ports) or [5061],
                                         file_index=len(hep_specs) + 1, everything=engine == "tshark", bpf=bpf)
            for n, spec in enumerate(hep_specs):
                self.heps.append(HepListener(spec, file_index=n + 1))
            if ifaces:
                self.cap = _open_interfaces(list(ifaces), via, media_only.bpf if media_only else bpf, snaplen,
                                            DumpcapCapture, LiveCapture)
        except Exception:
            self.close()
            raise
        iface = ",".join(ifaces)
        self.names = ([iface] if ifaces else []) + [f"HEP {spec}" for spec in hep_specs]
        shown = f"SIP {media_only.sip} and the media its SDP announces" if media_only else bpf
        self.where = ([iface + (f" ({shown})" if shown else "")] if ifaces else []) + \
            [f"HEP {h.spec}" for h in self.heps]
        if self.tshark is not None:
            self.where.append("SIP through tshark" + (f" (TLS decrypted with {tls_keylog})" if tls_keylog else ""))

    def writer(self, path, rotate, keep_files):
        """The -w writer, in the interface capture's format."""
        from sipflow.capture.live import DumpcapCapture
        from sipflow.capture.writer import PCAP, PCAPNG, CaptureWriter, RotatingWriter
        fmt, linktype = (PCAPNG, None) if isinstance(self.cap, DumpcapCapture) else (PCAP, self.cap.linktype)
        return RotatingWriter(path, fmt, linktype, rotate[0], rotate[1], keep_files) if rotate else \
            CaptureWriter(path, fmt, linktype)

    def arrived(self):
        """(record, from the interface?): interface packets (the read waits up to 100 ms), then HEP
        packets (waiting only when there is no interface to wait on), then the SIP tshark read."""
        if self.cap is not None:
            for rec in self.cap.read():
                yield rec, True
        for i, h in enumerate(self.heps):
            for rec in h.read(0.1 if self.cap is None and i == 0 else 0.0):
                yield rec, False
        if self.tshark is not None:
            for rec in self.tshark.read(0.0):
                yield rec, False

    def drain(self, take, interface: bool) -> None:
        """At the stop, hand ``take`` what was still on its way: the interface's packets (unless the
        stop was --count's), what agents sent (bounded), and what tshark still had to say."""
        if self.cap is not None and interface:
            take(self.cap.drain(), sniffed=True)
        for h in self.heps:
            for _ in range(1000):
                recs = h.read(0.0)
                if not recs:
                    break
                take(recs)
        if self.tshark is not None and not self.tshark_done:
            take(self.tshark.close())
            self.tshark_done = True

    def counters(self) -> dict:
        drops = self.cap.drops() if self.cap is not None else None
        return {"kernel_dropped": drops.dropped if drops else 0, "interface_dropped": drops.interface if drops else 0,
                "hep_packets": sum(h.frames for h in self.heps),
                **({"tshark_messages": self.tshark.frames} if self.tshark is not None else {})}

    def close(self) -> None:
        if self.cap is not None:
            self.cap.close()
        for h in self.heps:
            h.close()
        if self.tshark is not None and not self.tshark_done:
            self.tshark.close()
            self.tshark_done = True


class _HepForwarder:
    """--hep-send: what the collector has not had yet, after each look: the snapshot's new messages
    (capture order), the RTCP read meanwhile, and a quality report of each RTP stream of the calls
    that ended."""

    def __init__(self, spec, capture_id, password, node, session) -> None:
        from sipflow.capture.hep import HepSender
        from sipflow.render import hepout
        self.hepout, self.session = hepout, session
        self.agent = (capture_id, password, node)
        self.sender = HepSender(spec)
        self.rtcp: list = []
        session.analyzer.on_rtcp = self._queue_rtcp

    def _queue_rtcp(self, ts, src, sport, dst, dport, payload, call_id) -> None:
        packet = self.hepout.rtcp_packet(ts, src, sport, dst, dport, payload, call_id, *self.agent)
        if packet is not None:
            self.rtcp.append(packet)

    def forward(self, a, events) -> None:
        for _, packet in self.hepout.message_packets(self.session.new_messages(a), *self.agent):
            if packet is not None:
                self.sender.send(packet)
        for packet in self.rtcp:
            self.sender.send(packet)
        self.rtcp.clear()
        ended = {e.data.get("call_id") for e in events if e.kind == "call" and e.what == "ended"}
        for c in (c for c in a.calls if c.call_id in ended):
            for _, packet in self.hepout.report_packets(c, a.end_ts, *self.agent):
                if packet is not None:
                    self.sender.send(packet)

    def close(self) -> None:
        self.sender.close()


@main.command("hep-send")
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--to", "hep_to", required=True, metavar="udp|tcp:HOST:PORT", callback=_hep_option,
              help="The HEP collector (HOMER's heplify-server listens on 9060).")
@click.option("--hep-id", type=click.IntRange(min=0, max=2 ** 32 - 1), default=2002, show_default=True,
              help="Capture agent id.")
@click.option("--hep-password", default=None, help="HEP authentication key.")
@click.option("--hep-node", default=None, help="Node name.")
@click.option("--rate", type=click.IntRange(min=1), default=5000, show_default=True, metavar="N",
              help="Send at most N messages per second (a collector's UDP buffer overflows on bigger bursts).")
@click.option("--no-progress", is_flag=True, help="No progress bar on standard error.")
@handle_errors
def hep_send(files, hep_to, hep_id, hep_password, hep_node, rate, no_progress):
    """Replay the SIP messages of captures into a HEP collector (HOMER) with their original
    timestamps, addresses, ports and transports, and the Call-ID as correlation id; with them the
    RTCP (type 5, as JSON, tied to its call by the SDP) and sipflow's quality report of each RTP stream
    as its call ends (type 34), in time order.

    \b
    Examples:
      sipflow hep-send samples/transfer-hold.pcap --to udp:127.0.0.1:9060
      sipflow hep-send yesterday.pcap.gz --to tcp:192.0.2.5:9061 --hep-node sbc1 --hep-password s3cret
    """
    from sipflow.capture.hep import HepSender
    from sipflow.cli.app import run_analysis
    from sipflow.render import hepout
    rtcp = []

    def keep_rtcp(ts, src, sport, dst, dport, payload, call_id):
        rtcp.append((ts, hepout.rtcp_packet(ts, src, sport, dst, dport, payload, call_id, hep_id, hep_password,
                                            hep_node)))
    a = run_analysis(files, no_progress, on_rtcp=keep_rtcp)
    queue = [(e.ts, "sip", packet) for e, packet in hepout.message_packets(a.messages, hep_id, hep_password,
                                                                          hep_node)]
    queue += [(ts, "rtcp", packet) for ts, packet in rtcp]
    for c in a.calls:
        end = max([c.start] + [e.ts for e in c.events[-1:]] + [s.last_ts for s in c.streams])
        queue += [(end, "report", packet) for _, packet in hepout.report_packets(c, end, hep_id, hep_password,
                                                                                hep_node)]
    queue.sort(key=lambda item: item[0])
    sender = HepSender(hep_to)
    skipped = 0
    sent = {"sip": 0, "rtcp": 0, "report": 0}
    start = time.monotonic()
    try:
        for _, kind, packet in queue:
            if packet is None:
                skipped += 1
                continue
            ahead = (sender.sent + sender.failed) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            before = sender.sent
            sender.send(packet)
            sent[kind] += sender.sent - before
    finally:
        sender.close()
    say(f"{sent['sip']} SIP messages, {sent['rtcp']} RTCP packets and {sent['report']} stream reports sent to "
        f"{hep_to}" + (f", {sender.failed} could not be sent" if sender.failed else "")
        + (f", {skipped} not sendable as HEP" if skipped else ""))
    if sender.failed:
        raise SipflowError(f"{sender.failed} messages could not be sent to {hep_to}")
