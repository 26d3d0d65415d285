#!/usr/bin/env bash
# How many panels of Grafana's "Node Exporter Full" dashboard (grafana.com 1860) have data for
# a Strata agent, and how many for Debian's prometheus-node-exporter on the same host (issue 15).
# A real Prometheus (temp config and storage, loopback) scrapes one agent (release build, --dev,
# temp data dir, loopback ports it picks) and node_exporter (a free loopback port) every 5 s as
# two jobs for DURATION seconds (default 75: enough samples for RATE_INTERVAL, default 1m, which
# stands for the dashboard's $__rate_interval). Then node_exporter_full_panels.py evaluates
# every panel's queries once per job, as Grafana would with that job and its node selected, and
# prints the counts and the panels with data on one side only, with the metrics they read.
# A measurement, not a check: exits non-zero only when the setup fails.
# Goal: Strata's count at least node_exporter's.
#
# usage: benches/node_exporter_full_panels.sh DASHBOARD.json
#   (download the dashboard's JSON from https://grafana.com/grafana/dashboards/1860)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-75}
RATE_INTERVAL=${RATE_INTERVAL:-1m}
PYTHON=/usr/bin/python3

if [ $# -ne 1 ]; then
    echo "usage: $0 DASHBOARD.json  (the \"Node Exporter Full\" JSON, https://grafana.com/grafana/dashboards/1860)" >&2
    exit 2
fi
dashboard=$(realpath -e -- "$1" 2>/dev/null) || { echo "$0: no such dashboard file: $1" >&2; exit 2; }
[ -f "$dashboard" ] || { echo "$0: no such dashboard file: $1" >&2; exit 2; }
for program in prometheus prometheus-node-exporter curl; do
    command -v "$program" >/dev/null 2>&1 || {
        echo "$0: $program is missing (Debian: apt-get install prometheus prometheus-node-exporter curl)" >&2
        exit 2
    }
done
if [ -z "${BIN:-}" ]; then
    # the agent refuses to start without the strata-shim beside it
    cargo build --release --quiet -p strata-agent -p strata-shim
    BIN=$PWD/target/release
fi

work=$(mktemp -d)
cgroup_root="strata-panelsbench-$$"
agent_pid=""
shims=""
other_pids=()

# shellcheck source=bench_agent.sh
. "$(dirname "$0")/bench_agent.sh"

cleanup() {
    for pid in "${other_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${other_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_bench_agent
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # DESCRIPTION PID COMMAND...: up to 30 s for COMMAND to succeed while PID runs
    local what=$1 pid=$2; shift 2
    for _ in $(seq 300); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "$what exited"; return 1; }
        sleep 0.1
    done
    echo "$what did not start within 30 s"; return 1
}

printf 'cgroup_root = "%s"\n' "$cgroup_root" >"$work/agent.toml"
"$BIN/strata-agent" run --dev --config "$work/agent.toml" --data-dir "$work/agent" \
    --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --gossip-addr 127.0.0.1:0 \
    --dns-addr 127.0.0.1:0 >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!
wait_for "the agent" "$agent_pid" grep -q "strata-agent ready" "$work/agent.out" || { cat "$work/agent.log"; exit 1; }
agent_http=$(sed -n 's/.*strata-agent ready .* http=\([^ ]*\).*/\1/p' "$work/agent.out")

ne_port=$(free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >"$work/ne.log" 2>&1 &
other_pids+=($!)
wait_for "node_exporter" "$!" curl -fs "http://127.0.0.1:$ne_port/metrics" || { cat "$work/ne.log"; exit 1; }

prom_port=$(free_port)
cat >"$work/prometheus.yml" <<CONF
global:
  scrape_interval: 5s
  scrape_timeout: 5s
scrape_configs:
  - job_name: strata
    static_configs:
      - targets: ['$agent_http']
  - job_name: node
    static_configs:
      - targets: ['127.0.0.1:$ne_port']
CONF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
other_pids+=($!)
wait_for "prometheus" "$!" curl -fs "http://127.0.0.1:$prom_port/-/ready" || { cat "$work/prometheus.log"; exit 1; }

echo "== $DURATION s of scrapes every 5 s: strata-agent on $agent_http, node_exporter on 127.0.0.1:$ne_port, prometheus on 127.0.0.1:$prom_port"
sleep "$DURATION"
up=$(curl -fsG "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=sum by (job) (up)')
for job in strata node; do
    grep -q "\"job\":\"$job\"},\"value\":\[[0-9.]*,\"1\"\]" <<<"$up" || {
        echo "Prometheus cannot scrape job $job: $up"; exit 1
    }
done

"$PYTHON" "$(dirname "$0")/node_exporter_full_panels.py" "http://127.0.0.1:$prom_port" \
    "$dashboard" "$RATE_INTERVAL" "node_exporter=node=127.0.0.1:$ne_port" "strata=strata=$agent_http"
