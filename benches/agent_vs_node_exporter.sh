#!/usr/bin/env bash
# Runs the Strata agent (collecting every second) and Debian's prometheus-node-exporter
# side by side for DURATION seconds (default 60), scrapes each /metrics once a second, and
# prints each one's peak RSS and CPU seconds, and the ratios.
# Goal (issue 2): agent peak RSS <= half of node_exporter's, agent CPU <= node_exporter's.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}

if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
    echo "== installing prometheus-node-exporter (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
    fi
    apt-get install -y -qq --no-install-recommends prometheus-node-exporter curl
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# the agent refuses to start without the strata-shim beside it
cargo build --release --quiet --bin strata-agent --bin strata-shim
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NE_PORT=$(free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$NE_PORT" >"$work/ne.log" 2>&1 &
pids+=($!); ne_pid=$!
./target/release/strata-agent run --dev --data-dir "$work/agent" --grpc-addr 127.0.0.1:0 \
    --http-addr 127.0.0.1:0 >"$work/agent.out" 2>"$work/agent.log" &
pids+=($!); agent_pid=$!

for _ in $(seq 100); do grep -q "strata-agent ready" "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
agent_http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' "$work/agent.out")
[ -n "$agent_http" ] || { echo "agent did not start"; cat "$work/agent.log"; exit 1; }
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$NE_PORT/metrics" >/dev/null && break; sleep 0.1; done

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ split($0, a, ") "); split(a[2], f, " "); printf "%.3f", (f[12] + f[13]) / hz }' "/proc/$1/stat"; }
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# Measure from here on: the start-up cost of each is excluded by a baseline taken now.
a0=$(cpu_secs "$agent_pid"); n0=$(cpu_secs "$ne_pid")
echo "== $DURATION s: agent $agent_pid on $agent_http, node_exporter $ne_pid on 127.0.0.1:$NE_PORT, one scrape/s each"
agent_bytes=0; ne_bytes=0
for _ in $(seq "$DURATION"); do
    agent_bytes=$(curl -fs "http://$agent_http/metrics" | wc -c)
    ne_bytes=$(curl -fs "http://127.0.0.1:$NE_PORT/metrics" | wc -c)
    sleep 1
done
a1=$(cpu_secs "$agent_pid"); n1=$(cpu_secs "$ne_pid")
a_rss=$(peak_rss_kib "$agent_pid"); n_rss=$(peak_rss_kib "$ne_pid")

python3 - "$a_rss" "$n_rss" "$a0" "$a1" "$n0" "$n1" "$agent_bytes" "$ne_bytes" "$DURATION" <<'PY'
import sys
a_rss, n_rss = int(sys.argv[1]), int(sys.argv[2])
a_cpu = float(sys.argv[4]) - float(sys.argv[3])
n_cpu = float(sys.argv[6]) - float(sys.argv[5])
dur = int(sys.argv[9])
print(f"{'':22}{'peak RSS':>12}{'CPU s':>10}{'CPU %':>8}{'/metrics bytes':>16}")
print(f"{'strata-agent':22}{a_rss/1024:>9.1f} MiB{a_cpu:>10.2f}{100*a_cpu/dur:>7.2f}%{int(sys.argv[7]):>16}")
print(f"{'node_exporter':22}{n_rss/1024:>9.1f} MiB{n_cpu:>10.2f}{100*n_cpu/dur:>7.2f}%{int(sys.argv[8]):>16}")
rss_ratio = a_rss / n_rss if n_rss else float('nan')
cpu_ratio = a_cpu / n_cpu if n_cpu else float('nan')
print(f"ratio agent/node_exporter: RSS {rss_ratio:.2f} (goal <= 0.50), CPU {cpu_ratio:.2f} (goal <= 1.00)")
PY
