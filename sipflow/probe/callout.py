"""What ``sipflow probe call`` prints: its result as text, JSON, a Nagios line and Prometheus metrics.

Owns the call result's formats (``probe.call`` measures, this writes): one line per phase with its time,
the media figures per direction, the verdict, and the exit states Nagios reads.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from sipflow.probe.call import CallOptions, CallOutcome, CallResult
from sipflow.probe.common import (NagiosRange, NagiosState, failure_text, nagios_line, perf_value, phases_perf,
                                  prom_label, prometheus_text, thresholds)


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f} ms"


PHASES = ("first_response", "pdd", "answer", "setup", "duration", "bye", "cancel", "challenge", "total")


def call_header(target: str, options: CallOptions) -> str:
    parts = [f"INVITE {target}", f"--duration {options.duration:g} s"]
    if options.ring_timeout is not None:
        parts.append(f"--ring-timeout {options.ring_timeout:g} s")
    if options.dtmf:
        parts.append(f"--dtmf {options.dtmf}")
    if options.audio:
        parts.append(f"--audio {options.audio}")
    parts.append(f"--timeout {options.run_timeout:g} s")
    return ", ".join(parts) + (f", via {options.proxy}" if options.proxy else "")


def call_text(r: CallResult) -> str:
    lines = [f"--- {r.target} from {r.from_uri} ({r.transport} {r.remote}" + (f" from {r.local}" if r.local else "")
             + ")"]
    if r.provisional:
        lines.append("provisional: " + ", ".join(str(p) for p in r.provisional))
    verdict = f"result: {r.outcome.value}"
    if r.status is not None and r.outcome is not CallOutcome.ANSWERED:
        verdict += f" ({r.status})"
    verdict += f": {r.reason}"
    lines.append(verdict)
    steps = []
    if r.ack_sent:
        steps.append("ACK sent")
    if r.cancel_sent:
        steps.append(f"CANCEL {r.cancel_status or 'no answer'}")
    if r.bye_sent:
        steps.append(f"BYE {r.bye_status or 'no answer'}")
    if r.hung_up_by == "them":
        steps.append("the far end hung up")
    if r.pracks:
        steps.insert(0, f"PRACK x{r.pracks} {r.prack_status or 'no answer'}")
    if steps:
        lines.append("dialog: " + ", ".join(steps) + (f", route {' '.join(r.route_set)}" if r.route_set else ""))
    shown = [f"{k.replace('_', ' ')} {_ms(getattr(r, k))}" for k in PHASES if getattr(r, k) is not None]
    if shown:
        lines.append("timings: " + ", ".join(shown))
    if r.rtp:
        m = r.rtp
        line = (f"media: {m['codec'] or '-'} {m['local']} -> {m['remote'] or '-'}: sent {m['sent']}, received "
                f"{m['received']}, lost {m['lost']}, jitter "
                + (f"{m['jitter_ms']:.3f} ms" if m["jitter_ms"] is not None else "-"))
        if m["one_way_audio"]:
            line += " -- ONE-WAY AUDIO (nothing came back)"
        lines.append(line)
        if m["dtmf_sent"]:
            lines.append(f"dtmf: sent {m['dtmf_sent']} ({m['dtmf_packets_sent']} RFC 4733 packets), "
                         f"{m['dtmf_packets_received']} telephone-event packets received")
        if m["problem"]:
            lines.append(f"media problem: {m['problem']}")
    if r.auth_algorithm:
        lines.append(f"auth: digest {r.auth_algorithm}, realm \"{r.auth_realm}\"")
    if r.retransmissions:
        lines.append(f"retransmissions: {r.retransmissions}")
    if r.server:
        lines.append(f"Server: {r.server}")
    return "\n".join(lines)



def call_nagios(r: CallResult, warning: Optional[NagiosRange] = None,
                critical: Optional[NagiosRange] = None) -> Tuple[NagiosState, str]:
    """OK when the call was answered with audio both ways; -w/-c on the setup time (INVITE to ACK).
    One-way audio and every other outcome are CRITICAL."""
    rtp = r.rtp or {}
    if r.outcome is CallOutcome.ANSWERED:
        state = NagiosState.OK
        what = f"call answered ({r.reason}), setup {perf_value(r.setup)}s"
        if rtp:
            what += f", RTP {rtp['sent']} sent/{rtp['received']} received, {rtp['lost']} lost"
        if rtp.get("one_way_audio"):
            state, what = NagiosState.CRITICAL, "one-way audio: " + what
        else:
            state, what = thresholds(state, what, r.setup, warning, critical)
    else:
        state, what = NagiosState.CRITICAL, failure_text(r)
    perf = phases_perf(r, "setup", warning, critical, ("first_response", "pdd", "answer", "bye"), keep_missing=True)
    if rtp:
        perf += [f"'rtp_sent'={rtp['sent']};;;0;", f"'rtp_received'={rtp['received']};;;0;",
                 f"'rtp_lost'={max(0, rtp['lost'])};;;0;"]
        if rtp["jitter_ms"] is not None:
            perf.append(f"'jitter'={perf_value(rtp['jitter_ms'])}ms;;;0;")
    return nagios_line(state, what, perf)


def call_prometheus(r: CallResult) -> str:
    labels = f'{{target="{prom_label(r.target)}",transport="{r.transport}"}}'

    def lab(**extra):
        return labels[:-1] + "".join(f',{k}="{v}"' for k, v in extra.items()) + "}"
    rtp = r.rtp or {}
    nan = math.nan
    rows = [
        ("probe_success", "1 if the call was answered with audio both ways, else 0.", [(labels, 1 if r.up else 0)]),
        ("probe_duration_seconds", "How long the whole probe run took, in seconds.", [(labels, r.elapsed or 0.0)]),
        ("probe_sip_status_code", "Status code of the INVITE's final response (0 if none).",
         [(labels, r.status or 0)]),
        ("probe_sip_phase_seconds", "Seconds per phase from the first INVITE (first response, PDD, answer, setup), "
                                    "the call's duration, and the BYE and CANCEL round trips (NaN if none).",
         [(lab(phase=k), getattr(r, k) if getattr(r, k) is not None else nan) for k in PHASES]),
        ("probe_sip_retransmissions", "Requests retransmitted during the run (Timers A and E).",
         [(labels, r.retransmissions)]),
        ("probe_sip_call_outcome", "1 for the call's outcome.",
         [(lab(outcome=o.value), 1 if r.outcome is o else 0) for o in CallOutcome]),
        ("probe_rtp_packets", "RTP packets sent and received.",
         [(lab(direction="sent"), rtp.get("sent", 0)), (lab(direction="received"), rtp.get("received", 0))]),
        ("probe_rtp_lost_packets", "RFC 3550 cumulative loss of the received RTP.", [(labels, rtp.get("lost", 0))]),
        ("probe_rtp_jitter_seconds", "RFC 3550 interarrival jitter of the received RTP (NaN if none).",
         [(labels, rtp["jitter_ms"] / 1000 if rtp.get("jitter_ms") is not None else nan)]),
        ("probe_rtp_one_way_audio", "1 if we sent RTP and (almost) none came back.",
         [(labels, 1 if rtp.get("one_way_audio") else 0)]),
    ]
    return prometheus_text(rows)
