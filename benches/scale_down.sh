#!/usr/bin/env bash
# Scale-down benchmark (issue 12): the wall time of `strata scale web 1` from INSTANCES
# instances (default 20) of a service with a frontend port (so each instance drains for the
# default 2 s before it is signalled) that exits at once on SIGTERM, and how long a read
# (`strata services`) issued in the middle of that scale-down waits for its answer.
# Before the one-owner-per-service supervisor, the stops ran one after another under the
# services lock, so both took about INSTANCES x 2 s.
#
# BIN names a directory holding strata-agent, strata and strata-test-server (to measure another
# build); by default this tree is built in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
INSTANCES=${INSTANCES:-20}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bins
    BIN=$PWD/target/release
fi
work=$(mktemp -d)
agent_pid=
grpc=
cleanup() {
    if [ -n "$grpc" ]; then "$BIN/strata" --agent "$grpc" remove web >/dev/null 2>&1 || true; fi
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$BIN/strata-agent" run --dev --data-dir "$work/agent" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 300); do grep -q "strata-agent ready" "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
grpc=$(sed -n 's/.* grpc=\([^ ]*\).*/\1/p' "$work/agent.out")
[ -n "$grpc" ] || { echo "the agent did not start:"; cat "$work/agent.log"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/web.toml" <<SPEC
name = "web"
command = ["$BIN/strata-test-server"]
instances = $INSTANCES
[ports.http]
frontend = $port
SPEC
"$BIN/strata" --agent "$grpc" apply "$work/web.toml" --wait --timeout 120s >/dev/null
echo "== scale-down of $INSTANCES instances to 1 (drain 2 s each, SIGTERM exits at once)"
start=$(date +%s.%N)
"$BIN/strata" --agent "$grpc" scale web 1 >/dev/null &
scale_pid=$!
sleep 1
read_start=$(date +%s.%N)
"$BIN/strata" --agent "$grpc" services >/dev/null
read_end=$(date +%s.%N)
wait "$scale_pid"
end=$(date +%s.%N)
python3 - "$start" "$end" "$read_start" "$read_end" "$INSTANCES" <<'PY'
import sys
start, end, r0, r1, n = map(float, sys.argv[1:])
print(f"scale {int(n)} -> 1: {end - start:.2f} s")
print(f"`strata services` during the scale-down: answered in {(r1 - r0) * 1000:.0f} ms")
PY
