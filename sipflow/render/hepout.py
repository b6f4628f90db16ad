"""What sipflow tells a HEP collector such as HOMER (``--hep-send``, ``sipflow hep-send``): SIP
messages, RTCP, and its own quality report of each RTP stream, as HEP v3 packets.

Owns the three kinds of packet:

- a SIP message (type 1): its bytes as received (after reassembly), the addresses, ports and
  transport it travelled with, its capture time, the Call-ID as correlation id;
- an RTCP datagram (type 5), as HOMER stores RTCP: JSON in heplify's shape (``sender_information``,
  ``report_blocks``, ``report_blocks_xr``, ``ssrc``, ``type``, ...), correlated with the Call-ID of
  the call whose SDP announced the port;
- sipflow's report of an RTP stream when its call ends (type 34, HOMER's RTP-agent QoS report):
  JSON with HOMER's field names (``CORRELATION_ID``, ``TOTAL_PK``, ``PACKET_LOSS``, ``MEAN_JITTER``,
  ``MOS``, ``RFACTOR``, ``CODEC_NAME``, ...; ``TYPE`` "FINAL"), the figures of ``media.stats`` and the
  E-model of ``media.emodel``;

each with the agent's capture id, password and node name. A packet too big for HEP (over 64 KiB) is
left out and counted.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator, Optional, Tuple

from sipflow.media import rtcp as rtcp_wire
from sipflow.net import hep

PROTO_QOS_REPORT = 34    # HOMER's "RTP agent" QoS report (JSON)

IP_PROTO = {"udp": 17, "tcp": 6, "tls": 6, "ws": 6, "wss": 6, "sctp": 132, "hep": 17}


def message_packets(messages: Iterable, capture_id: Optional[int] = None, password: Optional[str] = None,
                    node: Optional[str] = None) -> Iterator[Tuple[object, Optional[bytes]]]:
    """(message, its HEP packet or None when it cannot be one) for each message with its bytes."""
    for e in messages:
        raw = e.raw
        if not raw:
            continue
        yield e, _packet(e.ts, e.src, e.sport, e.dst, e.dport, raw, IP_PROTO.get(e.transport, 17), hep.PROTO_SIP,
                         e.call_id, capture_id, password, node)


def rtcp_json(payload: bytes) -> Optional[bytes]:
    """A compound RTCP packet as heplify writes it for HOMER (one object: the sender information of
    its SR, every report block, the first XR VoIP-metrics block, the SDES source), or None when it is
    not RTCP that can be read (SRTCP, damaged)."""
    try:
        packets = rtcp_wire.parse(payload)
    except rtcp_wire.RtcpError:
        return None
    if not packets:
        return None
    first = next((p for p in packets if p.pt in (200, 201)), packets[0])
    out = {"type": first.pt, "ssrc": first.ssrc, "report_count": first.count, "report_blocks": []}
    for p in packets:
        if p.sender is not None:
            out["sender_information"] = {"ntp_timestamp_sec": p.sender.ntp >> 32,
                                         "ntp_timestamp_usec": p.sender.ntp & 0xFFFFFFFF,
                                         "rtp_timestamp": p.sender.rtp_ts, "packets": p.sender.packets,
                                         "octets": p.sender.octets}
        out["report_blocks"] += [{"source_ssrc": b.ssrc, "fraction_lost": b.fraction_lost,
                                  "packets_lost": b.cumulative_lost, "highest_seq_no": b.highest_seq,
                                  "ia_jitter": b.jitter, "lsr": b.lsr, "dlsr": b.dlsr} for b in p.blocks]
        if p.pt == 202 and "sdes_ssrc" not in out:
            out["sdes_ssrc"] = p.ssrc
        if p.voip and "report_blocks_xr" not in out:
            v = p.voip[0]
            out["report_blocks_xr"] = {"type": 7, "id": v.ssrc, "fraction_lost": round(v.loss_rate * 256),
                                       "fraction_discard": round(v.discard_rate * 256),
                                       "burst_density": round(v.burst_density * 256),
                                       "gap_density": round(v.gap_density * 256),
                                       "burst_duration": v.burst_duration_ms, "gap_duration": v.gap_duration_ms,
                                       "round_trip_delay": v.round_trip_ms,
                                       "end_system_delay": v.end_system_delay_ms}
    return json.dumps(out, separators=(",", ":")).encode()


def rtcp_packet(ts: float, src: str, sport: int, dst: str, dport: int, payload: bytes, call_id: str,
                capture_id: Optional[int] = None, password: Optional[str] = None,
                node: Optional[str] = None) -> Optional[bytes]:
    """The HEP packet of one RTCP datagram (type 5, JSON), or None when it cannot be one."""
    body = rtcp_json(payload)
    if body is None:
        return None
    return _packet(ts, src, sport, dst, dport, body, 17, hep.PROTO_RTCP, call_id, capture_id, password, node)


def stream_report(s, call_id: str, end_ts: float) -> dict:
    """sipflow's figures of one RTP stream (a ``StreamRecord``) under HOMER's QoS-report names."""
    q = s.quality
    jitter = [v for v in (s.jitter_mean, s.jitter_max) if v is not None]
    return {
        "CORRELATION_ID": call_id, "RTP_SIP_CALL_ID": call_id, "REPORT_TS": int(end_ts),
        "REPORT_START": int(s.first_ts), "REPORT_END": int(s.last_ts), "TYPE": "FINAL",
        "REPORT_NAME": "sipflow", "SRC_IP": s.src, "SRC_PORT": s.sport, "DST_IP": s.dst, "DST_PORT": s.dport,
        "SSRC": f"0x{s.ssrc:08X}", "CODEC_PT": s.pt, "CODEC_NAME": s.codec or f"PT{s.pt}", "CLOCK": s.rate,
        "TOTAL_PK": s.packets, "EXPECTED_PK": s.expected, "PACKET_LOSS": max(0, s.lost),
        "OUT_ORDER": s.out_of_order, "MAX_DELTA": round(s.max_delta * 1000, 3),
        "JITTER": round(s.jitter, 3) if s.jitter is not None else 0.0,
        "MEAN_JITTER": round(s.jitter_mean, 3) if s.jitter_mean is not None else 0.0,
        "MAX_JITTER": round(max(jitter), 3) if jitter else 0.0,
        "MOS": round(q.mos, 2) if q else 0.0, "MIN_MOS": round(q.mos, 2) if q else 0.0,
        "MEAN_MOS": round(q.mos, 2) if q else 0.0, "RFACTOR": round(q.r, 1) if q else 0.0,
        "MIN_RFACTOR": round(q.r, 1) if q else 0.0, "MEAN_RFACTOR": round(q.r, 1) if q else 0.0,
    }


def report_packets(call, end_ts: float, capture_id: Optional[int] = None, password: Optional[str] = None,
                   node: Optional[str] = None) -> Iterator[Tuple[object, Optional[bytes]]]:
    """(stream, its QoS-report HEP packet or None) for each RTP stream of an ended call (a ``CallRecord``)."""
    for s in call.streams:
        body = json.dumps(stream_report(s, call.call_id, end_ts), separators=(",", ":")).encode()
        yield s, _packet(end_ts, s.src, s.sport, s.dst, s.dport, body, 17, PROTO_QOS_REPORT, call.call_id,
                         capture_id, password, node)


def _packet(ts: float, src: str, sport: int, dst: str, dport: int, body: bytes, ip_proto: int, proto: int,
            call_id: str, capture_id, password, node) -> Optional[bytes]:
    sec = int(ts)
    usec = min(999_999, round((ts - sec) * 1e6))
    try:
        return hep.encode(hep.HepPacket(src, dst, sport, dport, body, ip_proto, sec, usec, proto, capture_id,
                                        call_id, node, password))
    except (hep.HepError, OSError, ValueError):
        return None
