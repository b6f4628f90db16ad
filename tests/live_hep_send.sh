#!/usr/bin/env bash
# Run inside `unshare --net` by tests/test_live_capture.py: `sipflow hep-send SAMPLE` replays a capture's
# SIP messages (with its RTCP and stream reports) as HEP to `sipflow live --hep-listen` on 127.0.0.1:9060 of this private namespace, while
# tcpdump records the HEP traffic. Every step is bounded in time.
set -u
OUT=$1; SAMPLE=$2; PY=$3
ip link set lo up
cd "$OUT"
timeout -k 2 120 tcpdump -i lo -n -U --immediate-mode -s 65535 -B 16384 -w "$OUT/hep.pcap" udp port 9060 > "$OUT/tcpdump.log" 2>&1 &
DUMP=$!
for _ in $(seq 300); do grep -q "listening on" "$OUT/tcpdump.log" 2>/dev/null && break; sleep 0.1; done
"$PY" -m sipflow live --hep-listen udp:127.0.0.1:9060 --format ndjson --duration 100 \
    > "$OUT/sent-events.ndjson" 2> "$OUT/sent-live.err" &
LIVE=$!
for _ in $(seq 300); do grep -q "capturing on" "$OUT/sent-live.err" 2>/dev/null && break; sleep 0.1; done
timeout -k 2 60 "$PY" -m sipflow hep-send "$SAMPLE" --to udp:127.0.0.1:9060 --hep-node lab1 --no-progress \
    > "$OUT/hep-send.out" 2>&1
echo "send $?"
kill -INT "$LIVE"; wait "$LIVE"; echo "live $?"
# tcpdump writes each packet as it reads it (-U): stop it once it has all that was sent (at most 20 s)
# "N SIP messages, R RTCP packets and S stream reports sent to ...": N + R + S packets
SENT=$(awk '{print $1 + $4 + $8; exit}' "$OUT/hep-send.out")
for _ in $(seq 200); do
    [ "$(tcpdump -r "$OUT/hep.pcap" -n 2>/dev/null | wc -l)" -ge "$SENT" ] && break
    sleep 0.1
done
kill -INT "$DUMP"; wait "$DUMP"
