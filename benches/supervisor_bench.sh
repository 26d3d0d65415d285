#!/usr/bin/env bash
# Supervisor benchmarks (issue 3), printed as figures:
#  1. crash-to-restart latency, median and p99 over RESTARTS crashes (default 200), of the
#     Strata agent (backoff_initial 0) and of Debian's supervisord (startsecs=0), both running
#     the same crashing program (tests/src/bin/strata-crasher.rs), which logs when it starts
#     and exits; latency = next start - previous exit.
#  2. agent CPU and RSS with IDLE (default 50) idle instances, each HTTP-health-checked every
#     second, over MEASURE seconds (default 60); the shims' memory too, as PSS (shared pages
#     of the strata-shim binary divided among the processes that map them).
#     benches/shim_memory.sh measures one shim in more detail.
# Goals: restart latency under 10 ms median and well below supervisord's; agent CPU < 1% of a core.
set -euo pipefail
cd "$(dirname "$0")/.."
RESTARTS=${RESTARTS:-200}
IDLE=${IDLE:-50}
MEASURE=${MEASURE:-60}

if ! command -v supervisord >/dev/null 2>&1; then
    echo "== installing supervisor (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
    fi
    apt-get install -y -qq --no-install-recommends supervisor
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

cargo build --release --quiet --bin strata-agent --bin strata-shim --bin strata --bin strata-crasher --bin strata-test-server
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # services outlive their agent: stop what it recorded, by pid and start time
    [ -d "$work/agent" ] && "$bin/strata-agent" stop-services --data-dir "$work/agent" --timeout 0s >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

latency_report() { # file label
    python3 - "$1" "$2" "$RESTARTS" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
n = int(sys.argv[3])
rows = rows[: n + 1]
gaps = sorted((rows[i + 1][0] - rows[i][1]) / 1e6 for i in range(len(rows) - 1))
if not gaps:
    print(f"{sys.argv[2]:14} no restarts recorded"); sys.exit(0)
p = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))]
print(f"{sys.argv[2]:14} restarts {len(gaps):4}  median {p(0.5):8.2f} ms  p99 {p(0.99):8.2f} ms  max {gaps[-1]:8.2f} ms")
PY
}

wait_lines() { # file count timeout_s
    for _ in $(seq $(( $3 * 20 ))); do
        [ -f "$1" ] && [ "$(wc -l < "$1")" -gt "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

echo "== crash-to-restart latency over $RESTARTS crashes"
"$bin/strata-agent" run --dev --data-dir "$work/agent" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!; pids+=($agent_pid)
for _ in $(seq 100); do grep -q "strata-agent ready" "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' "$work/agent.out")
cat >"$work/crasher.toml" <<SPEC
name = "crasher"
command = ["$bin/strata-crasher"]
env = { CRASH_LOG = "$work/strata-crashes.log" }
[restart]
backoff_initial = "0s"
backoff_max = "0s"
crashloop_after = 1000
crashloop_window = "1s"
SPEC
"$bin/strata" --agent "$grpc" apply "$work/crasher.toml" >/dev/null
wait_lines "$work/strata-crashes.log" "$RESTARTS" 120 || echo "strata: fewer restarts than asked"
"$bin/strata" --agent "$grpc" remove crasher >/dev/null
latency_report "$work/strata-crashes.log" "strata-agent"

cat >"$work/supervisord.conf" <<CONF
[supervisord]
nodaemon=true
logfile=$work/supervisord.log
pidfile=$work/supervisord.pid
[program:crasher]
command=$bin/strata-crasher
environment=CRASH_LOG="$work/supervisord-crashes.log"
startsecs=0
autorestart=true
startretries=1000000
stdout_logfile=$work/crasher.out
redirect_stderr=true
CONF
supervisord -c "$work/supervisord.conf" >/dev/null 2>&1 &
sup_pid=$!; pids+=($sup_pid)
wait_lines "$work/supervisord-crashes.log" "$RESTARTS" 600 || echo "supervisord: fewer restarts than asked in 600 s"
kill "$sup_pid" 2>/dev/null || true
latency_report "$work/supervisord-crashes.log" "supervisord"

echo "== $IDLE idle instances, HTTP health check every second, for $MEASURE s"
cat >"$work/idle.toml" <<SPEC
name = "idle"
command = ["$bin/strata-test-server"]
instances = $IDLE
[ports.http]
[health]
http = "/health"
interval = "1s"
timeout = "500ms"
SPEC
"$bin/strata" --agent "$grpc" apply "$work/idle.toml" >/dev/null
for _ in $(seq 600); do
    n=$("$bin/strata" --agent "$grpc" service idle -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["passing"])')
    [ "$n" -ge "$IDLE" ] && break
    sleep 0.1
done
echo "passing instances: $n"
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ split($0, a, ") "); split(a[2], f, " "); printf "%.3f", (f[12] + f[13]) / hz }' "/proc/$1/stat"; }
c0=$(cpu "$agent_pid")
sleep "$MEASURE"
c1=$(cpu "$agent_pid")
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")
shim_rss=0
# each instance's shim is its service's parent
for p in $("$bin/strata" --agent "$grpc" service idle -o json | python3 -c 'import json,sys; print(" ".join(str(i["pid"]) for i in json.load(sys.stdin)["instances"]))'); do
    sp=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
    r=$(awk '/^Pss:/ { print $2 }' "/proc/$sp/smaps_rollup" 2>/dev/null || echo 0)
    shim_rss=$((shim_rss + r))
done
python3 - "$c0" "$c1" "$MEASURE" "$rss" "$hwm" "$shim_rss" "$IDLE" <<'PY'
import sys
c0, c1, dur = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
rss, hwm, shim, n = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
print(f"agent CPU {c1 - c0:.2f} s over {dur:.0f} s = {100 * (c1 - c0) / dur:.2f}% of a core (goal < 1%)")
print(f"agent RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB); {n} shims {shim / 1024:.1f} MiB PSS in all, {shim / max(n, 1):.0f} KiB each")
PY
"$bin/strata" --agent "$grpc" remove idle >/dev/null
