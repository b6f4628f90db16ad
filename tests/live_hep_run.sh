#!/usr/bin/env bash
# Run inside `unshare --net` by tests/test_live_capture.py: `sipflow live --hep-listen` as the HEP
# collector of a Kamailio proxy whose siptrace mirrors every SIP message it receives and sends, while
# SIPp places CALLS calls through the proxy to a SIPp UAS; all on 127.0.0.1 of this private namespace.
# Every step is bounded in time.
set -u
OUT=$1; SCEN=$2; PY=$3; CALLS=$4; MPATH=$5
ip link set lo up
cd "$OUT"
"$PY" -m sipflow live --hep-listen udp:127.0.0.1:9060 --format ndjson --stats-every 1 --duration 150 \
    > "$OUT/hep-events.ndjson" 2> "$OUT/hep-live.err" &
LIVE=$!
for _ in $(seq 300); do grep -q "capturing on" "$OUT/hep-live.err" 2>/dev/null && break; sleep 0.1; done
mkdir -p "$OUT/kam"
timeout -k 2 120 kamailio -f "$SCEN/../../tests/scenarios/kamailio_proxy.cfg" -L "$MPATH" -A WITH_HEP -DD -E \
    -m 32 -M 4 -w "$OUT/kam" -Y "$OUT/kam" -P "$OUT/kam/kamailio.pid" -l udp:127.0.0.1:5060 \
    > "$OUT/kamailio.log" 2>&1 &
KAM=$!
for _ in $(seq 100); do ss -lun | grep -q "127.0.0.1:5060 " && break; sleep 0.1; done
cp "$SCEN/uas_call.xml" "$SCEN/uac_call.xml" "$OUT/"
timeout -k 2 90 sipp -sf uas_call.xml -t u1 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6100 -s bob -m "$CALLS" \
    -nostdin -timeout 80s > "$OUT/hep-uas.log" 2>&1 &
UAS=$!
for _ in $(seq 100); do ss -lun | grep -q "127.0.0.1:5070 " && break; sleep 0.1; done
FAILED=0
for n in $(seq "$CALLS"); do
    timeout -k 2 60 sipp 127.0.0.1:5070 -rsa 127.0.0.1:5060 -sf uac_call.xml -t u1 -i 127.0.0.1 -p $((5060 + 2 * n)) \
        -mi 127.0.0.1 -mp $((6000 + 10 * n)) -s bob -m 1 -nostdin -timeout 50s -timeout_error \
        >> "$OUT/hep-uac.log" 2>&1 || FAILED=1
done
echo "uac $FAILED"
wait "$UAS"; echo "uas $?"
kill -TERM "$KAM"; wait "$KAM"
kill -INT "$LIVE"
wait "$LIVE"; echo "live $?"
