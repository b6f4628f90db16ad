"""Compare sipflow's JSON output with tshark, capture by capture.

Captures: samples/*.pcap* (made by SIPp/Kamailio) and every capture in ../shared/captures/
(public captures, described in its SOURCES.md). sipflow is run through its CLI
(`python -m sipflow analyze FILE --format json`), so these tests only depend on the JSON
contract in docs/json.md. tshark runs and sipflow runs are cached: once per file each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

try:
    import tshark_oracle as oracle
except ImportError:  # tests/ made a package
    from tests import tshark_oracle as oracle

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "captures"
SHARED_SOURCES = SHARED / "SOURCES.md"

# Captures where sipflow is right and tshark is wrong: {file name: why}.
# Marks test_sip_messages_found, test_no_extra_sip_messages and test_no_extra_rtp_streams
# as expected failures (non-strict) for that file, with the reason shown in the report.
KNOWN_DIFFERENCES: dict[str, str] = {}

# Single calls whose final status legitimately differs: {(file name, Call-ID): why}.
# Those calls are left out of test_invite_final_status.
KNOWN_CALL_DIFFERENCES: dict[tuple, str] = {
    ("heplify__ipip0.pcap", "4sHr4rbxLEYDZTMZ3ulI4f..@179.43.150.26"):
        "the 403 carries another Call-ID than its INVITE (the capture was anonymised) but the same Via "
        "branch and CSeq: sipflow matches responses by branch (RFC 3261 §17.1.3), tshark's call list by Call-ID",
}

# A call challenged with 407 and then answered is an answered call: final_status follows the caller's
# re-sent (authenticated) INVITE, so it reports 200, not the 407 of the first INVITE transaction.
FINAL_STATUS_FOLLOWS_AUTH_RETRY = True

# tshark options some captures need (sipflow finds SIP by content and needs none).
# Options written in a SOURCES.md "notes" cell next to the capture are added to these.
TSHARK_EXTRA_ARGS: dict[str, tuple] = {
    "heplify__sip_ipv4_tcp_fragmented.pcap": ("-d", "tcp.port==6060,sip"),
}

# Fields that must agree for a SIP message to count as found (ts is compared separately).
COMPARED_FIELDS = ("frame", "src", "dst", "transport", "method", "status",
                   "call_id", "cseq", "cseq_method")
TS_TOLERANCE = 1e-6 + 1e-9          # 1 µs, plus float slack
JITTER_ABS_MS = 0.1
JITTER_REL = 0.05
DIFF_LIMIT = 8
SIPFLOW_TIMEOUT = float(os.environ.get("SIPFLOW_TEST_TIMEOUT", "900"))

pytestmark = pytest.mark.skipif(not oracle.tshark_available(), reason="tshark is not installed")


# --------------------------------------------------------------------------- captures

def _captures():
    files = []
    if SAMPLES.is_dir():
        files += sorted(p for p in SAMPLES.glob("*.pcap*") if p.is_file())
    if SHARED.is_dir():
        files += sorted(p for p in SHARED.glob("*.pcap*") if p.is_file())
    return files


def _sources_rows(path):
    try:
        return oracle.parse_sources_md(path)
    except OSError:
        return []


def _notes_by_file():
    notes = {}
    for folder in (SAMPLES, SHARED):
        for row in _sources_rows(folder / "SOURCES.md"):
            name = row.get("file", "")
            text = " ".join(v for k, v in row.items() if "note" in k.lower() or "option" in k.lower())
            notes[(folder, name)] = text
    return notes


_NOTES = _notes_by_file()


def tshark_args(path: Path) -> tuple:
    args = list(TSHARK_EXTRA_ARGS.get(path.name, ()))
    args += oracle.extra_args_from_notes(_NOTES.get((path.parent, path.name), ""))
    out, seen = [], set()
    i = 0
    while i < len(args):          # de-duplicate "-d X" pairs
        pair = tuple(args[i:i + 2]) if args[i] == "-d" else (args[i],)
        if pair not in seen:
            seen.add(pair)
            out += pair
        i += len(pair)
    return tuple(out)


def _cid(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _params(known_differences_apply: bool):
    params = []
    for p in _captures():
        marks = []
        if known_differences_apply and p.name in KNOWN_DIFFERENCES:
            marks.append(pytest.mark.xfail(reason=f"known difference: {KNOWN_DIFFERENCES[p.name]}",
                                           strict=False))
        params.append(pytest.param(p, id=_cid(p), marks=marks))
    if not params:
        params.append(pytest.param(None, id="no-captures",
                                   marks=pytest.mark.skip(reason="no samples/*.pcap* and no ../shared/captures/")))
    return params


CAPTURES = _params(known_differences_apply=False)
CAPTURES_KD = _params(known_differences_apply=True)


# --------------------------------------------------------------------------- runs (cached)

_SIPFLOW: dict = {}


def _stat(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        pytest.skip(f"{path} disappeared")
    return (st.st_size, st.st_mtime_ns)


def sipflow_doc(path: Path) -> dict:
    """sipflow's JSON document for one capture; the run (or its failure) is cached
    per version of the file (size, mtime)."""
    key = (str(path), _stat(path))
    if key not in _SIPFLOW:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "sipflow", "analyze", str(path), "--format", "json"]
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=SIPFLOW_TIMEOUT)
            if proc.returncode != 0:
                result = f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            else:
                try:
                    result = json.loads(proc.stdout)
                except ValueError as e:
                    result = f"sipflow output is not JSON ({e}): {proc.stdout[:500]!r}"
        except subprocess.TimeoutExpired:
            result = f"sipflow took more than {SIPFLOW_TIMEOUT:.0f}s on {path}"
        if (str(path), _stat(path)) != key:     # rewritten while sipflow read it: try again
            return sipflow_doc(path)
        _SIPFLOW[key] = result
    result = _SIPFLOW[key]
    if isinstance(result, str):
        pytest.fail(result, pytrace=False)
    return result


def consistent(path: Path, *getters):
    """Call every getter on the same version of `path` (samples/ may be regenerated while
    the tests run; without this tshark and sipflow could read different files)."""
    for _ in range(5):
        before = _stat(path)
        results = [g(path) for g in getters]
        if _stat(path) == before:
            return results
        time.sleep(1)
    pytest.fail(f"{path} keeps changing while being tested", pytrace=False)


def tshark_messages(path: Path):
    return oracle.sip_messages(path, tshark_args(path))


def tshark_streams(path: Path):
    return oracle.rtp_streams(path, tshark_args(path))


def sipflow_messages(path: Path):
    doc = sipflow_doc(path)
    return [m for m in doc.get("messages", []) if m.get("file", 0) == 0]


# --------------------------------------------------------------------------- comparing

def _key(m):
    return tuple(m.get(k) for k in COMPARED_FIELDS)


def _ts(m):
    try:
        return float(m.get("ts"))
    except (TypeError, ValueError):
        return None


def _unmatched(records, pool_records):
    """Records of `records` with no partner in `pool_records` (multiset match: same
    COMPARED_FIELDS and ts within TS_TOLERANCE; each partner used once)."""
    pool = defaultdict(list)
    for r in pool_records:
        pool[_key(r)].append(_ts(r))
    left = []
    for r in records:
        cands = pool.get(_key(r))
        ts = _ts(r)
        if cands and ts is not None:
            best = min(range(len(cands)),
                       key=lambda i: abs(cands[i] - ts) if cands[i] is not None else float("inf"))
            if cands[best] is not None and abs(cands[best] - ts) <= TS_TOLERANCE:
                cands.pop(best)
                continue
        left.append(r)
    return left


def _describe(m):
    what = m.get("method") if m.get("method") is not None else m.get("status")
    ts = _ts(m)
    return (f"frame {m.get('frame')} {m.get('src')} -> {m.get('dst')} {m.get('transport')} {what} "
            f"call_id={m.get('call_id')!r} CSeq={m.get('cseq')!r} {m.get('cseq_method')} "
            f"ts={'%.6f' % ts if ts is not None else None}")


def _field_diffs(a, b):
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in COMPARED_FIELDS if a.get(k) != b.get(k)]
    ta, tb = _ts(a), _ts(b)
    if ta is None or tb is None or abs(ta - tb) > TS_TOLERANCE:
        diffs.append(f"ts: {ta!r} vs {tb!r}")
    return diffs


def _diff_report(title, unmatched, this_name, other, other_name):
    by_frame = defaultdict(list)
    for o in other:
        by_frame[o.get("frame")].append(o)
    lines = [f"{len(unmatched)} {title}:"]
    for r in unmatched[:DIFF_LIMIT]:
        lines.append(f"  {this_name}: {_describe(r)}")
        cands = by_frame.get(r.get("frame"), [])
        if not cands:
            lines.append(f"      {other_name}: no message at frame {r.get('frame')}")
        else:
            best = min(cands, key=lambda o: len(_field_diffs(r, o)))
            lines.append(f"      {other_name} closest at that frame ({this_name} vs {other_name}): "
                         + "; ".join(_field_diffs(r, best)))
    if len(unmatched) > DIFF_LIMIT:
        lines.append(f"  ... and {len(unmatched) - DIFF_LIMIT} more")
    return "\n".join(lines)


def _close(a, b):
    if a is None or b is None:
        return False
    d = abs(float(a) - float(b))
    return d <= JITTER_ABS_MS or d <= JITTER_REL * abs(float(b))


def _ssrc_int(value):
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 16)
    except (TypeError, ValueError):
        return None


def _stream_key(s):
    return (s.get("src"), s.get("dst"), _ssrc_int(s.get("ssrc")))


def _describe_stream(s):
    return (f"{s.get('src')} -> {s.get('dst')} ssrc={s.get('ssrc')} pt={s.get('payload_type')} "
            f"packets={s.get('packets')} lost={s.get('lost')}")


# --------------------------------------------------------------------------- tests

def _source_rows_params():
    rows = _sources_rows(SHARED_SOURCES)
    params = [pytest.param(r, id=r.get("file", "?")) for r in rows if r.get("file")]
    if not params:
        params.append(pytest.param(None, id="no-SOURCES.md",
                                   marks=pytest.mark.skip(reason=f"{SHARED_SOURCES} not found")))
    return params


@pytest.mark.parametrize("row", _source_rows_params())
def test_tshark_counts_match_sources(row):
    """Self-check of the oracle: tshark_oracle reproduces the counts SOURCES.md lists."""
    path = SHARED / row["file"]
    if not path.is_file():
        pytest.fail(f"{path} is listed in SOURCES.md but missing", pytrace=False)
    msgs = tshark_messages(path)
    call_ids = {m["call_id"] for m in msgs if m["call_id"] is not None}
    problems = []
    if len(msgs) != int(row["SIP msgs"]):
        problems.append(f"{len(msgs)} SIP messages, SOURCES.md says {row['SIP msgs']}")
    if len(call_ids) != int(row["Call-IDs"]):
        problems.append(f"{len(call_ids)} Call-IDs, SOURCES.md says {row['Call-IDs']}")
    if row.get("RTP streams", "").strip().isdigit():
        n = len(tshark_streams(path))
        if n != int(row["RTP streams"]):
            problems.append(f"{n} RTP streams, SOURCES.md says {row['RTP streams']}")
    for m in msgs:
        if (m["method"] is None) == (m["status"] is None):
            problems.append(f"frame {m['frame']}: neither/both method and status: {m}")
        if m["src"] is None or m["dst"] is None or m["transport"] is None:
            problems.append(f"frame {m['frame']}: incomplete addressing: {m}")
    if problems:
        pytest.fail(f"{path.name} (tshark args {tshark_args(path)}):\n  " + "\n  ".join(problems),
                    pytrace=False)


@pytest.mark.parametrize("capture", CAPTURES_KD)
def test_sip_messages_found(capture):
    """Every SIP message tshark dissects is in sipflow's messages, same frame, ts (1 µs),
    src, dst, transport, method/status, Call-ID and CSeq."""
    expected, got = consistent(capture, tshark_messages, sipflow_messages)
    missing = _unmatched(expected, got)
    if missing:
        pytest.fail(f"{capture.name}: tshark {len(expected)} messages, sipflow {len(got)}\n"
                    + _diff_report("tshark messages not found in sipflow", missing, "tshark", got, "sipflow"),
                    pytrace=False)


@pytest.mark.parametrize("capture", CAPTURES_KD)
def test_no_extra_sip_messages(capture):
    """sipflow reports no SIP message tshark does not (see KNOWN_DIFFERENCES)."""
    expected, got = consistent(capture, tshark_messages, sipflow_messages)
    extra = _unmatched(got, expected)
    if extra:
        pytest.fail(f"{capture.name}: tshark {len(expected)} messages, sipflow {len(got)}\n"
                    + _diff_report("sipflow messages tshark does not have", extra, "sipflow", expected, "tshark"),
                    pytrace=False)


@pytest.mark.parametrize("capture", CAPTURES)
def test_invite_final_status(capture):
    """calls[].final_status equals the final response to the initial INVITE as the caller
    received it (tshark_oracle.final_status_from_messages; see FINAL_STATUS_FOLLOWS_AUTH_RETRY
    and KNOWN_CALL_DIFFERENCES)."""
    messages, doc = consistent(capture, tshark_messages, sipflow_doc)
    expected = oracle.final_status_from_messages(
        messages, follow_auth_retry=FINAL_STATUS_FOLLOWS_AUTH_RETRY)
    if not expected:
        pytest.skip("no initial INVITE in this capture")
    got = defaultdict(list)
    for call in doc.get("calls", []):
        got[call.get("call_id")].append(call.get("final_status"))
    problems = []
    for call_id, status in expected.items():
        if (capture.name, call_id) in KNOWN_CALL_DIFFERENCES:
            continue
        if call_id not in got:
            problems.append(f"{call_id!r}: no call in sipflow (tshark final status {status})")
        elif got[call_id] != [status]:
            problems.append(f"{call_id!r}: sipflow final_status {got[call_id]}, tshark {status}")
    if problems:
        pytest.fail(f"{capture.name}: {len(problems)} of {len(expected)} calls differ:\n  "
                    + "\n  ".join(problems[:DIFF_LIMIT])
                    + (f"\n  ... and {len(problems) - DIFF_LIMIT} more" if len(problems) > DIFF_LIMIT else ""),
                    pytrace=False)


def compare_streams(expected, doc, taken_as_t38=None):
    """Match tshark's streams to sipflow's (by src, dst, SSRC) and compare packets, lost and jitter.
    Returns (problems, sipflow streams tshark does not have, by key).

    ``taken_as_t38``: {(src, dst): packets} of RTP that tshark decodes as T.38 after a refused T.38
    re-INVITE (``oracle.rtp_taken_as_t38``): RFC 3264 §8 leaves the session as it was when an offer is
    rejected, so they are RTP, and the stream's packets are tshark's RTP plus those. Its jitter figures
    then cover only the part before the re-INVITE and are not compared."""
    taken_as_t38 = taken_as_t38 or {}
    got = defaultdict(list)
    for s in doc.get("streams", []):
        got[_stream_key(s)].append(s)
    problems = []
    for e in expected:
        cands = got.get(_stream_key(e))
        if not cands:
            problems.append(f"missing in sipflow: {_describe_stream(e)}")
            continue
        s = cands.pop(0)
        where = f"{e['src']} -> {e['dst']} ssrc={e['ssrc']}"
        if s.get("ssrc") != e["ssrc"]:
            problems.append(f"{where}: ssrc written {s.get('ssrc')!r}, expected {e['ssrc']!r}")
        t38 = taken_as_t38.get((e["src"], e["dst"]), 0)
        if s.get("packets") != e["packets"] + t38:
            problems.append(f"{where}: packets sipflow {s.get('packets')!r}, tshark {e['packets']}"
                            + (f" + {t38} it decoded as T.38" if t38 else ""))
        if s.get("lost") != e["lost"]:
            problems.append(f"{where}: lost sipflow {s.get('lost')!r}, tshark {e['lost']}")
        if e["jitter_known"] and "telephone-event" not in e["payload_names"] and not t38:
            for k in _jitter_fields(e):
                if not _close(s.get(k), e[k]):
                    problems.append(f"{where}: {k} sipflow {s.get(k)!r}, tshark {e[k]}")
    return problems, got


def _jitter_fields(e):
    """The jitter figures to compare with tshark's for one of its streams.

    Where tshark is wrong, the test says why instead of comparing:
    - a stream that carries RFC 4733 telephone-events (left out by the caller): tshark keeps the
      event packets' RTP timestamp (frozen at the key press's start, RFC 4733 §2.5.1.2) as the
      reference for the next audio packet, so its jitter jumps by the key press's length (19 ms max
      on call-av-dtmf.pcap's audio where the audio has none); sipflow leaves event packets out;
    - video, where the marker bit ends every frame: tshark skips marked packets but its running mean
      divides by every packet, (mean x (n - 1) + J) / n with n counting the skipped ones too, so it
      overstates the mean (0.331 ms against 0.174 for the true mean of the same estimates on
      call-av-dtmf.pcap's video, recomputed from tshark's own per-packet fields). The maximum is
      compared; sipflow's mean is the mean."""
    if e["marker_packets"] * 10 > e["packets"]:
        return ("jitter_max_ms",)
    return ("jitter_max_ms", "jitter_mean_ms")


@pytest.mark.parametrize("capture", CAPTURES)
def test_rtp_streams(capture):
    """Every RTP stream of tshark's rtp,streams is in sipflow's streams with the same packets
    and lost counts, and jitter max/mean within 0.1 ms or 5 %."""
    expected, doc = consistent(capture, tshark_streams, sipflow_doc)
    if not expected:
        pytest.skip("tshark finds no RTP stream")
    problems, _ = compare_streams(expected, doc, oracle.rtp_taken_as_t38(capture, tshark_args(capture)))
    if problems:
        pytest.fail(f"{capture.name}:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.mark.parametrize("capture", CAPTURES)
def test_streams_join_the_call_whose_sdp_set_them_up(capture):
    """Each stream tshark ties to an SDP (``rtp.setup-frame`` of its first packet) belongs, in
    sipflow, to the call of that SDP's message, and names that frame as its setup."""
    expected, doc = consistent(capture, tshark_streams, sipflow_doc)
    with_setup = [e for e in expected if e["setup_frame"] is not None]
    if not with_setup:
        pytest.skip("tshark ties no RTP stream to an SDP")
    call_of_frame = {m["frame"]: m.get("call_id") for m in doc.get("messages", [])}
    got = defaultdict(list)
    for st in doc.get("streams", []):
        got[_stream_key(st)].append(st)
    problems = []
    for e in with_setup:
        where = f"{e['src']} -> {e['dst']} ssrc={e['ssrc']}"
        cands = got.get(_stream_key(e))
        if not cands:
            problems.append(f"missing in sipflow: {where}")
            continue
        st = cands.pop(0)
        want = call_of_frame.get(e["setup_frame"])
        if st.get("call_id") != want:
            problems.append(f"{where}: call {st.get('call_id')!r}, tshark's SDP (frame {e['setup_frame']}) is in "
                            f"{want!r}")
    if problems:
        pytest.fail(f"{capture.name}:\n  " + "\n  ".join(problems[:DIFF_LIMIT]), pytrace=False)


@pytest.mark.parametrize("capture", CAPTURES_KD)
def test_no_extra_rtp_streams(capture):
    """sipflow reports no RTP stream that tshark's rtp,streams (heuristic RTP on) does not."""
    streams, doc = consistent(capture, tshark_streams, sipflow_doc)
    expected = Counter(_stream_key(e) for e in streams)
    extra = []
    for s in doc.get("streams", []):
        k = _stream_key(s)
        if expected[k] > 0:
            expected[k] -= 1
        else:
            extra.append(s)
    if extra:
        pytest.fail(f"{capture.name}: {len(extra)} sipflow streams tshark does not have:\n  "
                    + "\n  ".join(_describe_stream(s) for s in extra[:DIFF_LIMIT]), pytrace=False)


_DIALOGS = {}


def sipflow_dialogs(path: Path):
    """`sipflow dialogs --format json` on one capture (cached like sipflow_doc)."""
    key = (str(path), _stat(path))
    if key not in _DIALOGS:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.run([sys.executable, "-m", "sipflow", "dialogs", str(path), "--format", "json"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=SIPFLOW_TIMEOUT)
        if proc.returncode != 0:
            pytest.fail(f"sipflow dialogs exited {proc.returncode}: {proc.stderr[-2000:]}", pytrace=False)
        _DIALOGS[key] = json.loads(proc.stdout)
    return _DIALOGS[key]


@pytest.mark.parametrize("capture", CAPTURES)
def test_dialogs_are_tsharks_call_ids_with_their_messages(capture):
    """`sipflow dialogs` has one row per Call-ID tshark finds, with as many SIP messages (sngrep's
    call list, checked against the reference dissector), and the first request's method."""
    expected, rows = consistent(capture, tshark_messages, sipflow_dialogs)
    if not expected:
        pytest.skip("no SIP in this capture")
    counts, first = Counter(), {}
    for m in expected:
        counts[m["call_id"]] += 1
        if m["method"] and m["method"] != "ACK":
            first.setdefault(m["call_id"], m["method"])
    got = {r["call_id"]: r for r in rows}
    assert set(got) == set(counts), f"{capture.name}: Call-IDs differ"
    wrong = [f"{cid}: sipflow {got[cid]['messages']} messages, tshark {n}" for cid, n in counts.items()
             if got[cid]["messages"] != n]
    wrong += [f"{cid}: first request {got[cid]['method']}, tshark {m}" for cid, m in first.items()
              if got[cid]["method"] != m]
    assert not wrong, f"{capture.name}:\n  " + "\n  ".join(wrong[:DIFF_LIMIT])
