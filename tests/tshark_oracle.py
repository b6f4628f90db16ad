"""tshark as an independent oracle for sipflow's tests.

Everything here asks tshark (Wireshark's CLI, written against 4.0) and returns plain
dicts shaped like sipflow's JSON document (docs/json.md), so tests can compare the two
without knowing anything about sipflow's internals.

Public API
----------
tshark_available() -> bool
tshark_version() -> str | None
sip_messages(path, extra_args=()) -> list[dict]
    {frame, ts, src, dst, transport, method, status, call_id, cseq, cseq_method, to_tag}
rtp_streams(path, extra_args=()) -> list[dict]
    {src, dst, ssrc, payload_type, packets, lost, max_delta_ms, jitter_max_ms, jitter_mean_ms, ...}
final_status_by_call(path, extra_args=(), messages=None, follow_auth_retry=False)
    -> {call_id: status | None}
final_status_from_messages(messages, follow_auth_retry=False) -> {call_id: status | None}
parse_sources_md(path) -> list[dict]         (the table of ../shared/captures/SOURCES.md)
extra_args_from_notes(text) -> tuple[str, ...]

Results are cached per (file, size, mtime, extra_args); callers get fresh copies.

tshark behaviour this module copes with (found on the public captures, tshark 4.0.17):
* one frame can carry several SIP messages (several PDUs in one TCP segment, several
  WebSocket frames in one segment). `-E occurrence=a` then aggregates every sip.* field.
  The protocol field `sip` itself has one occurrence per message, labelled
  "Session Initiation Protocol (INVITE)" / "(200)", in wire order; requests take the
  sip.Method values and responses the sip.Status-Code values in that order. Header fields
  (Call-ID, CSeq, To tag) are only zipped with the messages when every message has exactly
  one; otherwise (e.g. one of them has no Call-ID) the frame is re-read with -T pdml,
  which keeps each message's fields under its own <proto name="sip">.
* `frame.protocols` lists "sip" once for several messages in one TCP segment, but once per
  message behind WebSocket ("...:websocket:sip:sip"): it cannot be used to count them.
* tunnels (IP-in-IP, GRE/ERSPAN, VXLAN, 6in4) repeat ip.src/ip.dst/udp.srcport...: the
  innermost is the last occurrence; the address family is the last ip/ipv6 layer before
  "sip" in frame.protocols.
* SIP quoted inside ICMP/ICMPv6 errors matches `-Y sip` too; those are not messages sent on
  the wire and are dropped.
* reassembled messages (TCP segments, IP/IPv6 fragments, WebSocket) are reported once, on
  the frame that completes them, with that frame's timestamp and addresses.
* CRLF keep-alives are not reported as sip by tshark 4.0 (nothing to filter).
* compact header forms (i:, l:) are reported under the long field names (sip.Call-ID...).
* a message without Call-ID/CSeq (zeek__sip-junk-before-request) gives call_id/cseq None.
* tshark 4.0 has no HEP dissector: HEP-encapsulated SIP is invisible to it.
"""

from __future__ import annotations

import atexit
import copy
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = [
    "BASE_OPTIONS",
    "TsharkError",
    "tshark_available",
    "tshark_version",
    "sip_messages",
    "rtp_streams",
    "final_status_by_call",
    "final_status_from_messages",
    "parse_sources_md",
    "extra_args_from_notes",
]

TSHARK = os.environ.get("TSHARK") or shutil.which("tshark")

BASE_OPTIONS = (
    "-n",
    "-o", "ip.defragment:TRUE",
    "-o", "ipv6.defragment:TRUE",
    "-o", "tcp.desegment_tcp_streams:TRUE",
    "--enable-heuristic", "sip_udp",
    "--enable-heuristic", "sip_tcp",
)

# Unit separator: cannot occur in any field value we read (Call-IDs may contain commas).
_AGG = "\x1f"

_SIP_FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "frame.protocols",
    "ip.src", "ip.dst",
    "ipv6.src", "ipv6.dst",
    "udp.srcport", "udp.dstport",
    "tcp.srcport", "tcp.dstport",
    "sctp.srcport", "sctp.dstport",
    "sip",                      # one occurrence per SIP message: "Session Initiation Protocol (X)"
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "sip.CSeq.seq",
    "sip.CSeq.method",
    "sip.to.tag",
)

# per-message header fields: name in tshark -> key in our record
_HEADER_FIELDS = {
    "sip.Call-ID": "call_id",
    "sip.CSeq.seq": "cseq",
    "sip.CSeq.method": "cseq_method",
    "sip.to.tag": "to_tag",
}

_LABEL_RE = re.compile(r"^Session Initiation Protocol \((.*)\)$")

_TRANSPORT_TOKENS = {
    "udp": "udp", "tcp": "tcp", "sctp": "sctp",
    "websocket": "ws",
    "hep": "hep", "hep3": "hep", "eep": "hep",   # none exists in tshark 4.0; kept for later versions
}
_QUOTING_TOKENS = {"icmp", "icmpv6"}

_cache: dict = {}
_config_dir = None


class TsharkError(RuntimeError):
    pass


# --------------------------------------------------------------------------- running tshark

def tshark_available() -> bool:
    """True when a working tshark binary is on PATH (or in $TSHARK)."""
    return tshark_version() is not None


def tshark_version():
    key = ("version",)
    if key not in _cache:
        version = None
        if TSHARK:
            try:
                out = subprocess.run([TSHARK, "-v"], capture_output=True, text=True, timeout=60)
                m = re.search(r"TShark \(Wireshark\) (\S+)", out.stdout)
                if out.returncode == 0 and m:
                    version = m.group(1).rstrip(".")
            except (OSError, subprocess.SubprocessError):
                version = None
        _cache[key] = version
    return _cache[key]


def _env():
    """Run tshark with an empty personal configuration so local Wireshark profiles
    (disabled protocols, preferences, decode-as) cannot change the oracle's answers."""
    global _config_dir
    if _config_dir is None:
        _config_dir = tempfile.mkdtemp(prefix="sipflow-tshark-conf-")
        atexit.register(shutil.rmtree, _config_dir, True)
    env = dict(os.environ)
    env["WIRESHARK_CONFIG_DIR"] = _config_dir
    env["LC_ALL"] = "C"
    return env


def _run(args, timeout=1800) -> str:
    if not TSHARK:
        raise TsharkError("tshark not found")
    cmd = [TSHARK, *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=_env())
    stdout = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace")
        # A capture cut short in the middle of a packet makes tshark exit 2 after printing
        # everything it could read; keep that output. Anything else is an error.
        if not ("cut short" in stderr or "appears to be damaged" in stderr) or not stdout:
            raise TsharkError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-2000:]}")
    return stdout


def _cache_key(kind, path, extra_args):
    p = Path(path).resolve()
    st = p.stat()
    return (kind, str(p), st.st_size, st.st_mtime_ns, tuple(extra_args))


def _cached(kind, path, extra_args, compute):
    for _ in range(5):
        key = _cache_key(kind, path, extra_args)
        if key in _cache:
            break
        value = compute()
        if _cache_key(kind, path, extra_args) == key:   # file not rewritten meanwhile
            _cache[key] = value
            break
    else:
        raise TsharkError(f"{path} keeps changing while tshark reads it")
    return copy.deepcopy(_cache[key])


# --------------------------------------------------------------------------- helpers

def _split(value: str):
    return value.split(_AGG) if value != "" else []


def _fmt_addr(ip, port, family):
    if ip is None:
        return None
    try:
        ip = ipaddress.ip_address(ip).compressed
    except ValueError:
        pass
    host = f"[{ip}]" if family == "ipv6" or ":" in ip else ip
    return f"{host}:{port}" if port is not None else host


def _layers(protocols: str, upper: str):
    """Return (family, l4, transport, quoted) for the innermost layers below `upper`."""
    tokens = protocols.split(":") if protocols else []
    before = tokens[: tokens.index(upper)] if upper in tokens else tokens
    family = l4 = transport = None
    for tok in reversed(before):
        if transport is None and tok in _TRANSPORT_TOKENS:
            transport = _TRANSPORT_TOKENS[tok]
        if l4 is None and tok in ("udp", "tcp", "sctp"):
            l4 = tok
        if family is None and tok in ("ip", "ipv6"):
            family = tok
        if family and l4 and transport:
            break
    quoted = any(tok in _QUOTING_TOKENS for tok in before)
    return family, l4, transport, quoted


def _last(values):
    return values[-1] if values else None


def _int(value):
    if value is None or value == "":
        return None
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None


def _frame_endpoints(row, upper):
    family, l4, transport, quoted = _layers(row["frame.protocols"], upper)
    if family is None:  # fall back to whatever is there
        family = "ipv6" if row["ipv6.src"] and not row["ip.src"] else "ip"
    src_ip = _last(_split(row[f"{family}.src"]))
    dst_ip = _last(_split(row[f"{family}.dst"]))
    sport = dport = None
    if l4:
        sport = _int(_last(_split(row[f"{l4}.srcport"])))
        dport = _int(_last(_split(row[f"{l4}.dstport"])))
    return (_fmt_addr(src_ip, sport, family), _fmt_addr(dst_ip, dport, family),
            transport, quoted)


# --------------------------------------------------------------------------- SIP

def sip_messages(path, extra_args=()):
    """Every SIP message tshark dissects in `path`, in wire order.

    Each is {frame, ts, src, dst, transport, method, status, call_id, cseq, cseq_method,
    to_tag}: frame 1-based, ts epoch float, src/dst "ip:port" or "[v6]:port", transport
    udp|tcp|sctp|ws|hep, method str (requests) or None, status int (responses) or None,
    cseq int or None. to_tag (None when absent) is extra: it tells initial INVITEs apart.
    """
    extra_args = tuple(extra_args)
    return _cached("sip", path, extra_args, lambda: _sip_messages(path, extra_args))


def _sip_messages(path, extra_args):
    args = ["-r", str(path), *BASE_OPTIONS, *extra_args, "-Y", "sip",
            "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", f"aggregator={_AGG}", "-E", "quote=n", "-E", "header=n"]
    for f in _SIP_FIELDS:
        args += ["-e", f]
    out = _run(args)

    records = []
    ambiguous = {}          # frame -> (frame-level info, position in records)
    for line in out.splitlines():
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < len(_SIP_FIELDS):
            cols += [""] * (len(_SIP_FIELDS) - len(cols))
        row = dict(zip(_SIP_FIELDS, cols))
        frame = int(row["frame.number"])
        src, dst, transport, quoted = _frame_endpoints(row, "sip")
        if quoted:
            continue
        base = {
            "frame": frame,
            "ts": float(row["frame.time_epoch"]),
            "src": src,
            "dst": dst,
            "transport": transport,
        }
        msgs = _split_frame(row)
        if msgs is None:
            ambiguous[frame] = (base, len(records))
            continue
        for m in msgs:
            records.append({**base, **m})

    if ambiguous:
        per_frame = _pdml_messages(path, extra_args, sorted(ambiguous))
        # insert in frame order
        extra = []
        for frame, (base, _) in ambiguous.items():
            for m in per_frame.get(frame, []):
                extra.append({**base, **m})
        records.extend(extra)
        records.sort(key=lambda r: r["frame"])   # stable: keeps order inside a frame
    return records


def _label_kind(label):
    """('request', method) / ('response', code) / (None, None) for a `sip` label."""
    m = _LABEL_RE.match(label)
    if not m:
        return None, None
    inner = m.group(1)
    if inner.isdigit():
        return "response", int(inner)
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9._!%*+`'~-]*", inner):
        return "request", inner
    return None, None           # "Continuation" and the like


def _split_frame(row):
    """Per-message dicts for one -T fields row, or None when the fields cannot be aligned."""
    labels = _split(row["sip"])
    methods = _split(row["sip.Method"])
    statuses = _split(row["sip.Status-Code"])
    headers = {k: _split(row[k]) for k in _HEADER_FIELDS}

    if len(labels) <= 1:
        # one message (or tshark gave no label): take first occurrences
        method = methods[0] if methods else None
        status = _int(statuses[0]) if statuses else None
        if method is None and status is None:
            return []           # not a message (e.g. continuation data)
        if method is not None and status is not None:
            return None         # both a request and a status line: let PDML sort it out
        msg = {"method": method, "status": status}
        for f, key in _HEADER_FIELDS.items():
            v = headers[f][0] if headers[f] else None
            msg[key] = _int(v) if key == "cseq" else v
        return [msg]

    kinds = [_label_kind(lab) for lab in labels]
    if any(k is None for k, _ in kinds):
        return None
    n_req = sum(1 for k, _ in kinds if k == "request")
    n_resp = len(kinds) - n_req
    if len(methods) != n_req or len(statuses) != n_resp:
        return None
    if any(len(v) != len(labels) for f, v in headers.items() if f != "sip.to.tag"):
        return None
    to_tags = headers["sip.to.tag"]
    if len(to_tags) not in (0, len(labels)):
        return None             # some messages have a To tag and some not
    mi = si = 0
    msgs = []
    for i, (kind, _) in enumerate(kinds):
        if kind == "request":
            method, status = methods[mi], None
            mi += 1
        else:
            method, status = None, _int(statuses[si])
            si += 1
        msgs.append({
            "method": method,
            "status": status,
            "call_id": headers["sip.Call-ID"][i],
            "cseq": _int(headers["sip.CSeq.seq"][i]),
            "cseq_method": headers["sip.CSeq.method"][i],
            "to_tag": to_tags[i] if to_tags else None,
        })
    return msgs


def _pdml_messages(path, extra_args, frames):
    """Per-message fields for `frames`, from -T pdml (keeps each message's fields apart)."""
    result = {}
    for start in range(0, len(frames), 500):
        chunk = frames[start:start + 500]
        filt = "sip && frame.number in {%s}" % ",".join(str(f) for f in chunk)
        out = _run(["-r", str(path), *BASE_OPTIONS, *extra_args, "-Y", filt, "-T", "pdml"])
        root = ET.fromstring(out)
        for packet in root.iter("packet"):
            frame = None
            for field in packet.iter("field"):
                if field.get("name") == "frame.number":
                    frame = int(field.get("show"))
                    break
            if frame is None:
                continue
            names = [p.get("name") for p in packet.iter("proto")]
            if "sip" in names and any(n in _QUOTING_TOKENS for n in names[:names.index("sip")]):
                continue            # SIP quoted inside an ICMP error
            msgs = []
            for proto in packet.iter("proto"):
                if proto.get("name") != "sip":
                    continue
                vals = {}
                for field in proto.iter("field"):
                    name = field.get("name")
                    if name in ("sip.Method", "sip.Status-Code", *_HEADER_FIELDS) and name not in vals:
                        vals[name] = field.get("show")
                method = vals.get("sip.Method")
                status = _int(vals.get("sip.Status-Code"))
                if method is None and status is None:
                    continue
                msgs.append({
                    "method": method if status is None else None,
                    "status": status,
                    "call_id": vals.get("sip.Call-ID"),
                    "cseq": _int(vals.get("sip.CSeq.seq")),
                    "cseq_method": vals.get("sip.CSeq.method"),
                    "to_tag": vals.get("sip.to.tag"),
                })
            result[frame] = msgs
    return result


# --------------------------------------------------------------------------- calls

def _host(addr):
    if addr is None:
        return None
    if addr.startswith("["):
        return addr[1:addr.index("]")]
    return addr.rsplit(":", 1)[0]


def final_status_from_messages(messages, follow_auth_retry=False):
    """{call_id: final status of the initial INVITE as the caller received it, or None}.

    Only Call-IDs with an initial INVITE (an INVITE without To tag) appear. The initial
    INVITE is the first such INVITE in the capture; its source is the caller. The answer is
    the first final (>= 200) response with CSeq <n> INVITE of that INVITE sent to the
    caller's ip:port (or, when none is, to the caller's IP on any port: SCTP/UDP responses
    go to the Via port, which need not be the source port, e.g. heplify__sip_sctp).

    Responses are tied to the INVITE by Call-ID + CSeq, not by Via branch: a response whose
    Call-ID differs from its request's (heplify__ipip0, an anonymised capture) is not counted.

    follow_auth_retry: when the answer is 401/407 and the caller then sends another INVITE
    without To tag (same Call-ID, higher CSeq), report that INVITE's final status instead
    (repeatedly), i.e. the outcome of the call attempt rather than of its first transaction.

    Why not "the INVITE with the lowest CSeq": a B2BUA/proxy leg keeps its own CSeq space
    (heplify__erspan_sip_ipv4_udp: Call-ID ddd141f1... starts at CSeq 1709929692, and the
    proxy's later re-INVITE towards the caller has CSeq 10). In the usual cases (401/407
    challenge then INVITE CSeq+1) both rules pick the same INVITE.
    """
    by_call = {}
    for m in messages:
        if m.get("call_id") is not None:
            by_call.setdefault(m["call_id"], []).append(m)
    result = {}
    for call_id, msgs in by_call.items():
        initial = next((m for m in msgs if m["method"] == "INVITE" and not m.get("to_tag")), None)
        if initial is None:
            continue
        caller = initial["src"]
        invite, final = initial, None
        while invite is not None:
            final = _final_response(msgs, invite, caller)
            invite = None
            if follow_auth_retry and final is not None and final["status"] in (401, 407):
                invite = next((m for m in msgs
                               if m["method"] == "INVITE" and not m.get("to_tag")
                               and m["src"] == caller and m["frame"] > final["frame"]
                               and m["cseq"] is not None and final["cseq"] is not None
                               and m["cseq"] > final["cseq"]), None)
        result[call_id] = final["status"] if final is not None else None
    return result


def _final_response(msgs, invite, caller):
    finals = [m for m in msgs
              if m["status"] is not None and m["status"] >= 200
              and m["cseq_method"] == "INVITE" and m["cseq"] == invite["cseq"]
              and m["frame"] >= invite["frame"]]
    exact = [m for m in finals if m["dst"] == caller]
    if not exact:
        exact = [m for m in finals if _host(m["dst"]) == _host(caller)]
    return exact[0] if exact else None


def final_status_by_call(path, extra_args=(), messages=None, follow_auth_retry=False):
    """final_status_from_messages(sip_messages(path, extra_args)), or of `messages` if given."""
    if messages is None:
        messages = sip_messages(path, extra_args)
    return final_status_from_messages(messages, follow_auth_retry=follow_auth_retry)


# --------------------------------------------------------------------------- RTP

_STREAM_RE = re.compile(
    r"^\s*(?P<start>-?[\d.]+)\s+(?P<end>-?[\d.]+)\s+"
    r"(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.*?)\s+"
    r"(?P<packets>\d+)\s+(?P<lost>-?\d+)\s+\((?P<lost_pct>-?[\d.]+|nan|-?inf)%\)\s+"
    r"(?P<min_delta>-?[\d.]+)\s+(?P<mean_delta>-?[\d.]+)\s+(?P<max_delta>-?[\d.]+)\s+"
    r"(?P<min_jitter>-?[\d.]+)\s+(?P<mean_jitter>-?[\d.]+)\s+(?P<max_jitter>-?[\d.]+)"
    r"\s*(?P<problem>X)?\s*$"
)

_RTP_FIELDS = (
    "frame.protocols",
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
    "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport", "sctp.srcport", "sctp.dstport",
    "rtp.ssrc", "rtp.p_type", "rtp.marker", "rtp.setup-frame",
)


def rtp_streams(path, extra_args=()):
    """RTP streams as tshark's `-z rtp,streams` sees them (rtp.heuristic_rtp on).

    Each is {src, dst, ssrc ('0x%08X'), payload_type (int, of the stream's first packet),
    payload_names (tshark's text, e.g. "g711A, CN"), packets, lost, lost_pct,
    min/mean/max_delta_ms, jitter_min_ms, jitter_mean_ms, jitter_max_ms, problems (bool),
    start_rel, end_rel (seconds from the first frame), setup_frame (``rtp.setup-frame`` of its first
    packet: the SDP that announced it, None without one), marker_packets}.

    tshark 4.0 prints, after a "=== RTP Streams ===" banner and a header line, one row per
    stream:  start end src sport dst dport SSRC payload-names pkts lost (pct%) min/mean/max
    delta, min/mean/max jitter, and "X" under Problems?. Payload names may contain spaces
    and commas ("g711A, CN"), so the row is parsed with a regular expression. When the clock
    rate is unknown (dynamic payload type without SDP) tshark prints min jitter -1.000 and
    jitter 0: jitter_known is False then.
    """
    extra_args = tuple(extra_args)
    return _cached("rtp", path, extra_args, lambda: _rtp_streams(path, extra_args))


def _rtp_streams(path, extra_args):
    args = ["-r", str(path), *BASE_OPTIONS, "-o", "rtp.heuristic_rtp:TRUE", *extra_args,
            "-Y", "rtp", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
            "-E", f"aggregator={_AGG}", "-E", "quote=n", "-z", "rtp,streams"]
    for f in _RTP_FIELDS:
        args += ["-e", f]
    out = _run(args)
    lines = out.splitlines()
    try:
        banner = next(i for i, line in enumerate(lines) if "RTP Streams" in line and line.startswith("="))
    except StopIteration:
        raise TsharkError("no rtp,streams table in tshark output") from None

    first_pt, setup, markers = {}, {}, {}
    for line in lines[:banner]:
        cols = line.split("\t")
        if len(cols) < len(_RTP_FIELDS):
            continue
        row = dict(zip(_RTP_FIELDS, cols))
        src, dst, _, quoted = _frame_endpoints(row, "rtp")
        if quoted:
            continue
        ssrc = _int(_last(_split(row["rtp.ssrc"])))
        pt = _int(_last(_split(row["rtp.p_type"])))
        first_pt.setdefault((src, dst, ssrc), pt)
        key = (src, dst, ssrc)
        setup.setdefault(key, _int(_last(_split(row["rtp.setup-frame"]))))
        markers[key] = markers.get(key, 0) + (_last(_split(row["rtp.marker"])) in ("1", "True"))

    streams = []
    for line in lines[banner + 1:]:
        if line.startswith("="):
            break
        if not line.strip() or "Src IP addr" in line:
            continue
        m = _STREAM_RE.match(line)
        if not m:
            raise TsharkError(f"cannot parse rtp,streams row: {line!r}")
        g = m.groupdict()
        family = "ipv6" if ":" in g["src"] else "ip"
        src = _fmt_addr(g["src"], int(g["sport"]), family)
        dst = _fmt_addr(g["dst"], int(g["dport"]), family)
        ssrc = int(g["ssrc"], 16)
        min_jitter = float(g["min_jitter"])
        streams.append({
            "src": src,
            "dst": dst,
            "ssrc": "0x%08X" % ssrc,
            "payload_type": first_pt.get((src, dst, ssrc)),
            "setup_frame": setup.get((src, dst, ssrc)),        # of the stream's first packet (None: no SDP)
            "marker_packets": markers.get((src, dst, ssrc), 0),
            "payload_names": g["payload"].strip(),
            "packets": int(g["packets"]),
            "lost": int(g["lost"]),
            "lost_pct": float(g["lost_pct"]),
            "min_delta_ms": float(g["min_delta"]),
            "mean_delta_ms": float(g["mean_delta"]),
            "max_delta_ms": float(g["max_delta"]),
            "jitter_min_ms": min_jitter,
            "jitter_mean_ms": float(g["mean_jitter"]),
            "jitter_max_ms": float(g["max_jitter"]),
            "jitter_known": min_jitter >= 0,
            "problems": bool(g["problem"]),
            "start_rel": float(g["start"]),
            "end_rel": float(g["end"]),
        })
    return streams


def rtp_taken_as_t38(path, extra_args=()):
    """{(src, dst): packets} of UDP packets tshark decodes as T.38 whose payload has an RTP version 2
    header (first byte 0x80) with a payload type below 64: RTP that tshark took for T.38 because a
    re-INVITE *offered* T.38 on its port, although the offer was refused (tshark sets the T.38
    conversation up from the offer and does not undo it on a 488). UDPTL's first byte is the high
    byte of its sequence number, 0x80 only after 32 768 packets."""
    extra_args = tuple(extra_args)
    return _cached("t38rtp", path, extra_args, lambda: _rtp_taken_as_t38(path, extra_args))


def _rtp_taken_as_t38(path, extra_args):
    args = ["-r", str(path), *BASE_OPTIONS, *extra_args, "-Y", "t38", "-T", "fields", "-E", "separator=/t",
            "-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.dstport",
            "-e", "udp.payload"]
    counts = {}
    for line in _run(args).splitlines():
        cols = line.split("\t")
        if len(cols) < 7 or len(cols[6]) < 4:
            continue
        payload = bytes.fromhex(cols[6].replace(":", ""))
        if payload[0] != 0x80 or payload[1] & 0x7F >= 64:
            continue
        family = "ipv6" if cols[1] else "ip"
        src = _fmt_addr(cols[0] or cols[1], int(cols[2]), family)
        dst = _fmt_addr(cols[3] or cols[4], int(cols[5]), family)
        counts[(src, dst)] = counts.get((src, dst), 0) + 1
    return counts


# --------------------------------------------------------------------------- SOURCES.md

def parse_sources_md(path):
    """Rows of the markdown table in a SOURCES.md, as {column header: cell text}."""
    rows, header = [], None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def extra_args_from_notes(text):
    """tshark options named in a SOURCES.md note: `-d proto.port==N,sip` as written, and
    "--sip-port N" (the oracle's shorthand) as -d tcp.port==N,sip -d udp.port==N,sip."""
    args = []
    for m in re.finditer(r"`(-d\s+[^`]+)`", text or ""):
        parts = m.group(1).split()
        args += parts
    for m in re.finditer(r"--sip-port\s+(\d+)", text or ""):
        n = m.group(1)
        for a in ("-d", f"tcp.port=={n},sip", "-d", f"udp.port=={n},sip"):
            args.append(a)
    # de-duplicate "-d X" pairs, keeping order
    out, seen = [], set()
    for i in range(0, len(args) - 1, 2):
        pair = (args[i], args[i + 1])
        if pair not in seen:
            seen.add(pair)
            out += pair
    return tuple(out)
