#!/usr/bin/env bash
# Per-instance memory of the shim (issue 12): a real agent on loopback with a temp data dir
# runs INSTANCES (default 10) instances of a trivial service (`sleep 1000`); the script prints
# VmRSS (/proc/PID/status) and PSS and private memory (/proc/PID/smaps_rollup) of each shim,
# then stops everything it started, by pid.
#
# BIN=DIR measures the strata-agent in DIR (and whatever shim that agent runs) instead of this
# tree's release build. To compare with an older agent that ran `strata-agent shim DIR`, build
# it in a separate worktree:
#   git worktree add --detach /tmp/strata-old OLD_COMMIT
#   (cd /tmp/strata-old && cargo build --release --bin strata-agent)
#   BIN=/tmp/strata-old/target/release benches/shim_memory.sh
#   benches/shim_memory.sh
# PSS divides shared pages among the processes that map them, so it depends on INSTANCES:
# compare figures taken with the same count.
set -euo pipefail
cd "$(dirname "$0")/.."
INSTANCES=${INSTANCES:-10}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin strata-agent --bin strata-shim
    BIN=$PWD/target/release
fi

work=$(mktemp -d)
cgroup_root="strata-shim-bench-$$"
agent_pid=""
shims=""

# shellcheck source=bench_agent.sh
. "$(dirname "$0")/bench_agent.sh"

trap stop_bench_agent EXIT

mkdir -p "$work/services.d"
cat >"$work/agent.toml" <<CONF
cgroup_root = "$cgroup_root"
port_range = "25500-25599"
CONF
cat >"$work/services.d/sleeper.toml" <<SPEC
name = "sleeper"
command = ["/bin/sleep", "1000"]
instances = $INSTANCES
SPEC

"$BIN/strata-agent" run --dev --config "$work/agent.toml" --data-dir "$work/data" \
    --services-dir "$work/services.d" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --gossip-addr 127.0.0.1:0 --dns-addr 127.0.0.1:0 >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!

# The agent's children are the shims; each has its service as its child once it runs.
running=0
for _ in $(seq 600); do
    shims=$(children "$agent_pid")
    running=0
    for shim in $shims; do [ -n "$(children "$shim")" ] && running=$((running + 1)); done
    [ "$running" -ge "$INSTANCES" ] && break
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        echo "the agent exited:"; cat "$work/agent.log"; exit 1
    fi
    sleep 0.1
done
if [ "$running" -lt "$INSTANCES" ]; then
    echo "only $running of $INSTANCES instances run after 60 s:"; tail -5 "$work/agent.log"; exit 1
fi
# Let every shim settle into its poll loop.
sleep 1

first=${shims%% *}
echo "agent:    $(readlink "/proc/$agent_pid/exe")"
echo "shim:     $(tr '\0' ' ' <"/proc/$first/cmdline" | sed "s|$work|\$TMP|")"
exe=$(readlink "/proc/$first/exe")
echo "shim exe: $exe ($(stat -c %s "$exe") bytes)"
for shim in $shims; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$shim/status")
    awk -v pid="$shim" -v rss="$rss" '
        /^Pss:/ { pss = $2 } /^Private_Clean:/ { pc = $2 } /^Private_Dirty:/ { pd = $2 }
        END { print pid, rss, pss, pc + pd }' "/proc/$shim/smaps_rollup"
done | python3 -c '
import sys
rows = [list(map(int, l.split())) for l in sys.stdin if l.strip()]
n = len(rows)
def col(i, name):
    vals = [r[i] for r in rows]
    print(f"{name:8} per shim: mean {sum(vals) / n:7.0f} KiB  min {min(vals):6} KiB  max {max(vals):6} KiB")
print(f"{n} shims, each running /bin/sleep 1000:")
col(1, "VmRSS")
col(2, "PSS")
col(3, "Private")
'
