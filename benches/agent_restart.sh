#!/usr/bin/env bash
# What an agent restart costs a local client of the node's own frontend (services calling each
# other through the balancer on this host). Runs one agent with a 2-instance HTTP service
# behind a frontend port, a client loop (one request after another, 1 s timeout each)
# through that frontend, and for each scenario prints the requests, the failed ones, and the
# gap (first to last failure, and the longest run of failures):
#   a) `strata-agent upgrade` (the supported path; goal: 0 failed)
#   b) SIGTERM, then a new agent started at once (a `systemctl restart` without the fd store)
#   c) kill -9, then a new agent after RESTART_SEC (the unit's RestartSec, as systemd would)
# PROFILE=debug uses the debug build (faster to build, slower to start).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
UNIT=assets/systemd/strata-agent.service.in
RESTART_SEC=${RESTART_SEC:-$(sed -n 's/^RestartSec=\([0-9.]*\)s$/\1/p' "$UNIT")}
AROUND=${AROUND:-2}   # seconds of client loop before and after each event

if [ "$PROFILE" = release ]; then
    cargo build --release --quiet --bin strata-agent --bin strata-shim --bin strata-test-server
else
    cargo build --quiet --bin strata-agent --bin strata-shim --bin strata-test-server
fi
bin=target/$PROFILE
work=$(mktemp -d)
agent_pid=
client_pid=
cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    # An upgraded agent is not our child: the lock names it.
    if [ -s "$work/data/agent.lock" ]; then kill "$(cat "$work/data/agent.lock")" 2>/dev/null || true; fi
    sleep 1
    "$bin/strata-agent" stop-services --data-dir "$work/data" --timeout 0s >/dev/null 2>&1 || true
    for c in /sys/fs/cgroup/*/"strata-bench-restart-$$" /sys/fs/cgroup/unified/"strata-bench-restart-$$"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
FRONTEND=$(free_port)
BALANCER=127.0.77.1
mkdir -p "$work/data/services.d"
cat >"$work/agent.toml" <<EOF
cgroup_root = "strata-bench-restart-$$"
port_range = "42000-42099"
services_dir = "$work/data/services.d"
insecure_gossip = true
gossip_addr = "127.0.0.1:0"
dns_addr = "127.0.0.1:0"
balancer_addr = "$BALANCER"
EOF
cat >"$work/data/services.d/web.toml" <<EOF
name = "web"
command = ["$PWD/$bin/strata-test-server"]
instances = 2
[ports.http]
frontend = $FRONTEND
[health]
http = "/"
interval = "500ms"
timeout = "400ms"
rise = 1
EOF

start_agent() {
    : >"$work/agent.out"
    "$bin/strata-agent" run --data-dir "$work/data" --config "$work/agent.toml" \
        --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >>"$work/agent.out" 2>>"$work/agent.log" &
    agent_pid=$!
    for _ in $(seq 300); do grep -q "strata-agent ready" "$work/agent.out" && return 0; sleep 0.05; done
    echo "agent did not start"; tail -20 "$work/agent.log"; exit 1
}

# The client loop: writes one line per request, "<unix time> ok|fail".
cat >"$work/client.py" <<'EOF'
import socket, sys, time
host, port, out = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w", buffering=1)
while True:
    t = time.time()
    try:
        s = socket.create_connection((host, port), timeout=1)
        s.settimeout(1)
        s.sendall(b"GET /bench HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0] + b" "
    except OSError:
        ok = False
    out.write(f"{t:.4f} {'ok' if ok else 'fail'}\n")
EOF

# Prints: requests, failed, gap from first to last failure, longest run of failures.
summarize() {
    awk -v name="$1" '
        { n++ }
        $2 == "fail" { f++; if (!first) first = $1; last = $1; if (!runstart) runstart = $1; runend = $1 }
        $2 == "ok" { if (runstart && runend - runstart > longest) longest = runend - runstart; runstart = 0 }
        END {
            if (runstart && runend - runstart > longest) longest = runend - runstart
            gap = f ? (last - first) * 1000 : 0
            printf "%-44s requests %6d  failed %5d  gap %7.0f ms  longest failing run %7.0f ms\n", name, n, f, gap, longest * 1000
        }' "$2"
}

wait_serving() {
    for _ in $(seq 200); do
        curl -fs -m 1 "http://$BALANCER:$FRONTEND/" >/dev/null 2>&1 && return 0; sleep 0.1
    done
    echo "the frontend does not serve"; tail -20 "$work/agent.log"; exit 1
}

run_scenario() {
    local name=$1 action=$2
    wait_serving
    python3 "$work/client.py" "$BALANCER" "$FRONTEND" "$work/$action.log" &
    client_pid=$!
    sleep "$AROUND"
    "$action"
    wait_serving
    sleep "$AROUND"
    kill "$client_pid"; wait "$client_pid" 2>/dev/null || true; client_pid=
    summarize "$name" "$work/$action.log"
}

# Waits until process $1 is gone: reaped when it is our child, else polled by its pid (an
# upgraded agent is not our child).
wait_gone() {
    wait "$1" 2>/dev/null || true
    while kill -0 "$1" 2>/dev/null; do sleep 0.01; done
}
do_upgrade() {
    "$bin/strata-agent" upgrade --data-dir "$work/data" >/dev/null
    wait "$agent_pid" 2>/dev/null || true
    agent_pid=$(cat "$work/data/agent.lock")
}
do_term_restart() {
    local old=$agent_pid
    kill -TERM "$old"
    wait_gone "$old"
    start_agent
}
do_kill_restart() {
    local old=$agent_pid
    kill -KILL "$old"
    wait_gone "$old"
    sleep "$RESTART_SEC"
    start_agent
}

start_agent
echo "== $PROFILE build; frontend $BALANCER:$FRONTEND; RestartSec=${RESTART_SEC}s (from $UNIT)"
run_scenario "a) strata-agent upgrade" do_upgrade
run_scenario "b) SIGTERM + immediate restart" do_term_restart
run_scenario "c) kill -9 + restart after RestartSec" do_kill_restart
