#!/usr/bin/env python3
"""How sipflow's peak RSS grows: per SIP message and per RTP packet.

    python bench/slopes.py [--signalling 10000,40000] [--rtp 1000000,3000000] [--rtp-calls N] [--keep]

Runs `python -m sipflow analyze FILE --format json --output /dev/null` (and with
--summary also `python -m sipflow summary FILE --output /dev/null`) on two sizes
of each workload and prints the difference quotient of the peak RSS:

* signalling: (RSS(big) - RSS(small)) / (SIP messages(big) - SIP messages(small)),
  in bytes per SIP message.  The captures are make_capture.py --workload
  signalling with the given numbers of calls.
* rtp: (RSS(big) - RSS(small)) / (RTP packets(big) - RTP packets(small)), in bytes
  per RTP packet.  A bigger RTP capture also has more SIP messages and more
  streams, so the quotient is printed raw and, when the signalling slope is
  known, with the SIP share (signalling slope x extra SIP messages) taken out.
  With --rtp-calls N both rtp captures have about N calls (so about the same
  streams) and only the talk time grows: the quotient is then the cost of the
  packets themselves.

Captures come from bench/out/ when an earlier --keep run left them there, else
they are generated (and deleted at the end unless --keep is given).  Peak RSS
and time are measured as in run.py (GNU time around the child when installed).
Always exits 0 unless the arguments are wrong.
"""

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as bench  # noqa: E402

MIB = 1024 * 1024


def sizes(text, what):
    try:
        vals = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit("slopes.py: --%s wants two integers like 10000,40000" % what)
    if len(vals) != 2 or vals[0] <= 0 or vals[0] >= vals[1]:
        raise SystemExit("slopes.py: --%s wants two increasing sizes like 10000,40000" % what)
    return vals


def capture(workload, size, seed, keep, generated, rtp_calls=None):
    """(path, ground truth) of a cached or freshly generated capture."""
    packets, calls = (None, size) if workload == "signalling" else (size, None)
    path = bench.capture_path(workload, seed, packets, calls)
    extra = ()
    if workload == "rtp" and rtp_calls:   # the calls are in the name: a capture of its own
        path = path.replace("-s%d.pcap" % seed, "-c%d-s%d.pcap" % (rtp_calls, seed))
        extra = ("--calls", str(rtp_calls))
    meta = bench.cached_truth(path, workload, packets, calls)
    if meta is None:
        meta = bench.make_capture(packets, seed, path, workload, calls, extra=extra)
        if not keep:
            generated.append(path)
    else:
        print("using cached %s" % os.path.relpath(path))
    return path, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--signalling", default="10000,40000", metavar="CALLS,CALLS",
                    help="the two signalling captures, in calls (default 10000,40000)")
    ap.add_argument("--rtp-calls", type=int, default=None, metavar="N",
                    help="rtp: about N calls in both captures, so that only the packets per stream grow")
    ap.add_argument("--rtp", default="1000000,3000000", metavar="PACKETS,PACKETS",
                    help="the two rtp captures, in packets (default 1000000,3000000)")
    ap.add_argument("--workloads", default="signalling,rtp",
                    help="comma-separated subset of signalling,rtp (default both)")
    ap.add_argument("--summary", action="store_true",
                    help="also measure `sipflow summary` on the signalling captures")
    ap.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each command N times and keep the highest peak RSS (default 1)")
    ap.add_argument("--keep", action="store_true",
                    help="keep generated captures under bench/out/ for later runs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run (default 1800)")
    ap.add_argument("--json", metavar="PATH", help="also write the measurements and slopes as JSON")
    args = ap.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in workloads:
        if w not in ("signalling", "rtp"):
            ap.error("unknown workload %r" % w)
    if args.rtp_calls is not None and args.rtp_calls < 1:
        ap.error("--rtp-calls must be positive")
    plan = {"signalling": sizes(args.signalling, "signalling"), "rtp": sizes(args.rtp, "rtp")}

    env = bench.child_env()
    reason = bench.sipflow_ready(env)
    if reason:
        print("sipflow: CLI not ready (%s); nothing to measure" % reason)
        return 0
    commands = [("analyze", bench.sipflow_cmd)]
    if args.summary and "signalling" in workloads:
        reason = bench.sipflow_ready(env, "summary", ("--output",))
        if reason:
            print("sipflow summary: CLI not ready, skipped (%s)" % reason)
        else:
            commands.append(("summary", bench.sipflow_summary_cmd))
    print("rss/cpu   %s" % ("GNU time (%s) around each run" % bench.TIME if bench.TIME else
                               "os.wait4 rusage (GNU time not installed)"))

    generated = []
    rows = []
    logdir = tempfile.mkdtemp(prefix="sipflow-slopes-")
    try:
        for workload in workloads:
            for size in plan[workload]:
                path, meta = capture(workload, size, args.seed, args.keep, generated, args.rtp_calls)
                bench.warm(path)
                for cname, make_cmd in commands:
                    if cname == "summary" and workload != "signalling":
                        continue
                    cmd = make_cmd(path)
                    rss, best = 0.0, None
                    for k in range(max(1, args.repeat)):
                        print("running   %s ..." % " ".join(cmd), flush=True)
                        r = bench.measure(cmd, os.path.join(logdir, "%s%d" % (cname, k)), args.timeout, env)
                        if r["rc"] != 0:
                            best = r
                            break
                        rss = max(rss, r["rss_mb"])
                        if best is None or r["seconds"] < best["seconds"]:
                            best = r
                    row = {"workload": workload, "command": cname, "size": size,
                           "unit": "calls" if workload == "signalling" else "packets",
                           "sip_messages": meta["sip_messages"], "rtp_packets": meta["rtp_packets"],
                           "rtp_streams": meta["rtp_streams"], "ok": best["rc"] == 0}
                    if best["rc"] == 0:
                        row.update(seconds=round(best["seconds"], 3), peak_rss_mib=round(rss, 1))
                    else:
                        why = ("timed out after %.0f s" % args.timeout if best.get("timed_out")
                               else "exit status %s" % best["rc"])
                        print("  FAILED (%s)\n%s" % (why, bench.tail(best["stderr"] or best["stdout"])))
                    rows.append(row)
    finally:
        if generated:
            bench.remove_captures(generated)
        shutil.rmtree(logdir, ignore_errors=True)

    print()
    print("%-10s %-8s %16s %12s %12s %8s %9s %9s" % ("workload", "command", "size", "SIP msgs",
                                                      "RTP packets", "streams", "seconds", "RSS MiB"))
    print("-" * 91)
    for r in rows:
        print("%-10s %-8s %16s %12s %12s %8d %9s %9s" % (
            r["workload"], r["command"], "{:,} {}".format(r["size"], r["unit"]),
            "{:,}".format(r["sip_messages"]), "{:,}".format(r["rtp_packets"]), r["rtp_streams"],
            "%.2f" % r["seconds"] if r["ok"] else "FAILED", "%.1f" % r["peak_rss_mib"] if r["ok"] else "-"))

    def pair(workload, cname):
        got = [r for r in rows if r["workload"] == workload and r["command"] == cname and r["ok"]]
        return got if len(got) == 2 else None

    slopes = {}
    print()
    print("peak RSS growth (difference quotient between the two sizes):")
    for cname, _ in commands:
        p = pair("signalling", cname)
        if not p:
            continue
        a, b = p
        dm = b["sip_messages"] - a["sip_messages"]
        slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) * MIB / dm
        base = a["peak_rss_mib"] - slope * a["sip_messages"] / MIB
        slopes["signalling_%s_bytes_per_sip_message" % cname] = round(slope)
        print("  signalling, sipflow %-8s %8.0f bytes per SIP message  (%.1f -> %.1f MiB over %s more "
              "messages; %.0f MiB at 0 messages by extrapolation)" % (
                  cname, slope, a["peak_rss_mib"], b["peak_rss_mib"], "{:,}".format(dm), base))
    p = pair("rtp", "analyze")
    if p:
        a, b = p
        dp = b["rtp_packets"] - a["rtp_packets"]
        dm = b["sip_messages"] - a["sip_messages"]
        dr = (b["peak_rss_mib"] - a["peak_rss_mib"]) * MIB
        raw = dr / dp
        slopes["rtp_analyze_bytes_per_rtp_packet_raw"] = round(raw, 2)
        print("  rtp, sipflow analyze        %8.2f bytes per RTP packet   (%.1f -> %.1f MiB over %s more "
              "RTP packets, raw)" % (raw, a["peak_rss_mib"], b["peak_rss_mib"], "{:,}".format(dp)))
        sig = slopes.get("signalling_analyze_bytes_per_sip_message")
        if sig is not None:
            net = (dr - sig * dm) / dp
            slopes["rtp_analyze_bytes_per_rtp_packet_net_of_sip"] = round(net, 2)
            print("  rtp, sipflow analyze        %8.2f bytes per RTP packet   (after taking out %s more "
                  "SIP messages x %d bytes)" % (net, "{:,}".format(dm), sig))
        else:
            print("  (the rtp captures also differ by %s SIP messages and %d streams; measure the "
                  "signalling slope too to take the SIP share out)"
                  % ("{:,}".format(dm), b["rtp_streams"] - a["rtp_streams"]))
    if not slopes:
        print("  (need two successful runs of a workload)")

    if args.json:
        bench.save_json(args.json, {"seed": args.seed, "repeat": args.repeat, "runs": rows, "slopes": slopes})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
