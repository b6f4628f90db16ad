#!/usr/bin/env bash
# When does `sipflow live --media sdp-only` help? A busy link, measured on the loopback of a private
# network namespace: NOISE RTP-like packets that no SDP announces, sent as fast as one Python loop
# can, while SIPp makes one call with 2.5 s of RTP both ways. sipflow listens three ways:
#   all        -f udp                                  (everything UDP reaches Python)
#   sdp-only   -f "udp portrange 5060-5099" --media sdp-only
# and the script prints, for each, sipflow's CPU seconds, the packets it read, the kernel's drops and
# what it measured of the call's two streams.
#
#   sudo unshare --net bash bench/live_filter.sh [NOISE]     (default 300000 packets)
#
# Root (libpcap, the namespace), sipp, pkill and GNU time. Nothing leaves 127.0.0.1 of the namespace; every
# step is bounded in time and the noise in count.
set -u
NOISE=${1:-300000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
OUT=$(mktemp -d /tmp/sipflow-live-filter-XXXXXX)
ip link set lo up
cd "$OUT"
"$PY" - <<EOF
import importlib.util
spec = importlib.util.spec_from_file_location("m", "$REPO/samples/make_samples.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
m.write_rtp_pcap("rtp-uac.pcap", freq=440, pt=8, ssrc=0x11223344, seq0=1000, ts0=16000, npkts=125, sport=6000, dport=6100)
m.write_rtp_pcap("rtp-uas.pcap", freq=880, pt=8, ssrc=0x55667788, seq0=5000, ts0=48000, npkts=125, sport=6100, dport=6000)
EOF
cp "$REPO/samples/scenarios/uas_call.xml" "$REPO/samples/scenarios/uac_call.xml" .

one_run() {   # $1: name, the rest: sipflow's filter options
    name=$1; shift
    PYTHONPATH=$REPO /usr/bin/time -f "%U %S" -o "$name.time" "$PY" -m sipflow live -i lo --via pcap "$@" \
        --format ndjson --duration 120 > "$name.ndjson" 2> "$name.err" &
    live=$!
    for _ in $(seq 300); do grep -q "capturing on" "$name.err" 2>/dev/null && break; sleep 0.1; done
    timeout -k 2 60 sipp -sf uas_call.xml -t u1 -i 127.0.0.1 -p 5070 -mi 127.0.0.1 -mp 6100 -s bob -m 1 \
        -nostdin -timeout 50s > uas.log 2>&1 &
    uas=$!
    for _ in $(seq 100); do ss -lun | grep -q "127.0.0.1:5070 " && break; sleep 0.1; done
    timeout -k 2 60 "$PY" -c "
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', 7002))
for i in range($NOISE):
    s.sendto(struct.pack('!BBHII', 0x80, 0, i & 0xFFFF, i * 160, 0xDEADBEEF) + bytes(160), ('127.0.0.1', 7000))
" &
    noise=$!
    timeout -k 2 60 sipp 127.0.0.1:5070 -sf uac_call.xml -t u1 -i 127.0.0.1 -p 5062 -mi 127.0.0.1 -mp 6010 \
        -s bob -m 1 -nostdin -timeout 50s > uac.log 2>&1
    wait "$uas" "$noise"
    sleep 1
    pkill -INT -P "$live" -f "sipflow live"; wait "$live"   # sipflow is GNU time's child
    "$PY" - "$name" <<'EOF'
import json, sys
name = sys.argv[1]
lines = [json.loads(l) for l in open(name + ".ndjson")]
c = lines[-1]["counters"]
ended = [e for e in lines if e.get("event") == "ended"]
user, system = map(float, open(name + ".time").read().split()[-2:])
print(f"{name:9} CPU {user + system:6.2f} s  read {c['packets']:8,} packets  kernel dropped {c['kernel_dropped']:8,}"
      f"  RTP {c['rtp_packets']:7,}  call streams {ended[0]['streams'] if ended else 0}")
EOF
}

echo "noise: $NOISE packets to 127.0.0.1:7000; one call, 2 x 125 RTP packets"
one_run all -f udp
one_run sdp-only -f "udp portrange 5060-5099" --media sdp-only
rm -rf "$OUT"
