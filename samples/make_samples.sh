#!/bin/bash
# Regenerate the sipflow sample captures (samples/*.pcap).
#
#   sudo samples/make_samples.sh [NAME ...]     # NAME = capture without .pcap
#   sudo samples/make_samples.sh --out DIR [NAME ...]   # write them to DIR, not samples/
#   (every argument is passed on to make_samples.py; see its --help)
#
# Needs root (network namespace, tcpdump) and, on Debian 12:
#   apt-get install sip-tester kamailio kamailio-websocket-modules tcpdump \
#                   tshark ethtool iproute2 python3
# and for call-rtcp / call-rtcp-mux (only those fail without it):
#   apt-get install --no-install-recommends baresip-core
# All traffic stays on the loopback interface of a private network namespace
# (unshare -n): nothing is sent anywhere else. Takes about a minute and a half.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "$(id -u)" -ne 0 ]; then
    echo "make_samples.sh: must run as root (try: sudo $0)" >&2
    exit 1
fi

for tool in sipp kamailio tcpdump ethtool ip unshare timeout python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "make_samples.sh: $tool not found" >&2; exit 1; }
done

if [ -z "${SIPFLOW_SAMPLES_NETNS:-}" ]; then
    # re-exec inside a fresh network namespace that only has lo; the whole run
    # is bounded in time
    export SIPFLOW_SAMPLES_NETNS=1
    exec timeout -k 10 300 unshare --net --fork -- "$0" "$@"
fi

# --- inside the namespace -------------------------------------------------
ip link set lo up
ip link set lo mtu 1500                          # real IP fragmentation on lo
ethtool -K lo tso off gso off gro off >/dev/null 2>&1 || true   # real TCP segments
if [ "$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6)" != 0 ]; then
    sysctl -qw net.ipv6.conf.lo.disable_ipv6=0
fi
ip -6 addr show dev lo | grep -q '::1/128' || ip -6 addr add ::1/128 dev lo

exec python3 "$here/make_samples.py" "$@"
