#!/usr/bin/env bash
# Run inside `unshare --net` by tests/test_live_capture.py: `sipflow live -i lo` while SIPp places
# CALLS calls one after the other (each with 2.5 s of RTP both ways) to a SIPp UAS, all on 127.0.0.1 of
# this private namespace; then SIGINT to sipflow. MODE ndjson (or dumpcap: through a dumpcap pipe): events
# to events.ndjson and the capture to live.pcap (MODE sdponly: with --media sdp-only, while RTP-like noise
# goes to port 7000 and tcpdump writes it to noise.pcap); MODE view: sipflow draws its terminal view on this script's standard output (a pseudo-
# terminal). Steps' exit statuses go to OUT/status. Every step is bounded in time; nothing leaves loopback.
set -u
OUT=$1; SCEN=$2; PY=$3; CALLS=$4; MODE=${5:-ndjson}
ip link set lo up
cd "$OUT"
if [ "$MODE" = view ]; then
    "$PY" -m sipflow live -i lo -f "udp" --duration 150 -w "$OUT/rot.pcap" --rotate 40KB --keep-files 2 \
        --report "$OUT/live.html" 2> "$OUT/live.err" &
elif [ "$MODE" = sdponly ]; then   # SIP and the media SDP announced only; tcpdump sees the noise sent
    timeout -k 2 200 tcpdump -i lo -n -U -w "$OUT/noise.pcap" "udp port 7000" 2> "$OUT/tcpdump.err" &
    TCPDUMP=$!
    for _ in $(seq 300); do grep -q "listening on" "$OUT/tcpdump.err" 2>/dev/null && break; sleep 0.1; done
    "$PY" -m sipflow live -i lo --via pcap -f "udp portrange 5060-5099" --media sdp-only --format ndjson \
        -w "$OUT/live.pcap" --stats-every 1 --duration 150 > "$OUT/events.ndjson" 2> "$OUT/live.err" &
else   # MODE ndjson (libpcap in-process) or dumpcap (the dumpcap pipe)
    VIA=pcap; [ "$MODE" = dumpcap ] && VIA=dumpcap
    "$PY" -m sipflow live -i lo --via $VIA -f "udp" --format ndjson -w "$OUT/live.pcap" --stats-every 1 \
        --duration 150 > "$OUT/events.ndjson" 2> "$OUT/live.err" &
fi
LIVE=$!
for _ in $(seq 300); do grep -q "capturing on" "$OUT/live.err" 2>/dev/null && break; sleep 0.1; done
cp "$SCEN/uas_call.xml" "$SCEN/uac_call.xml" "$OUT/"
timeout -k 2 90 sipp -sf uas_call.xml -t u1 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6100 -s bob -m "$CALLS" \
    -nostdin -timeout 80s > "$OUT/uas.log" 2>&1 &
UAS=$!
for _ in $(seq 100); do ss -lun | grep -q "127.0.0.1:5070 " && break; sleep 0.1; done
# one SIPp run per call, each from its own SIP and media ports: SIPp replays the same RTP (same SSRC)
# in every call, so calls on the same ports would be one stream to any analyzer
if [ "$MODE" = sdponly ]; then   # RTP-like noise no SDP announces: 1,500 packets over about 3 s, during the calls
    timeout -k 2 30 "$PY" -c '
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 7002))
for i in range(1500):
    s.sendto(struct.pack("!BBHII", 0x80, 0, i, i * 160, 0xDEADBEEF) + bytes(160), ("127.0.0.1", 7000))
    time.sleep(0.002)
' &
    NOISE=$!
fi
FAILED=0
for n in $(seq "$CALLS"); do
    timeout -k 2 60 sipp 127.0.0.1:5070 -sf uac_call.xml -t u1 -i 127.0.0.1 -p $((5060 + 2 * n)) -mi 127.0.0.1 \
        -mp $((6000 + 10 * n)) -s bob -m 1 -nostdin -timeout 50s -timeout_error >> "$OUT/uac.log" 2>&1 || FAILED=1
done
echo "uac $FAILED" >> "$OUT/status"
wait "$UAS"; echo "uas $?" >> "$OUT/status"
kill -INT "$LIVE"
wait "$LIVE"; echo "live $?" >> "$OUT/status"
if [ "$MODE" = sdponly ]; then
    wait "$NOISE"; echo "noise $?" >> "$OUT/status"
    kill -INT "$TCPDUMP"; wait "$TCPDUMP"
fi
