#!/usr/bin/env bash
# Agent memory while `strata logs -f` follows a service that logs as fast as it can (issue 13):
# a real agent (release build) on loopback with a temp data dir runs one instance of `yes`
# (rotation by the spec's [logs], default 10MiB x 5 files); FOLLOWERS (default 8) followers run
# `strata logs -f` for DURATION seconds (default 30): half print text, half JSON (-o json), and
# every other one reads slowly (a reader that sleeps between lines, as a person's terminal or a
# slow pipe would). The agent's VmRSS and VmHWM (/proc/PID/status) are sampled every 0.2 s.
# Prints the peak and final RSS, each follower's lines and the gap markers it saw (with the
# lines they say were skipped), then stops everything it started, by pid.
#
# Goal: agent peak RSS under 64 MiB with 8 followers.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLLOWERS=${FOLLOWERS:-8}
DURATION=${DURATION:-30}
MAX_BYTES=${MAX_BYTES:-10MiB}
KEEP=${KEEP:-5}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin strata-agent --bin strata-shim --bin strata
    BIN=$PWD/target/release
fi

work=$(mktemp -d)
cgroup_root="strata-logbench-$$"
agent_pid=""
followers=""
shims=""

# shellcheck source=bench_agent.sh
. "$(dirname "$0")/bench_agent.sh"

cleanup() {
    for pid in $followers; do kill -TERM "$pid" 2>/dev/null || true; done
    stop_bench_agent
}
trap cleanup EXIT

mkdir -p "$work/services.d"
cat >"$work/agent.toml" <<CONF
cgroup_root = "$cgroup_root"
port_range = "25600-25699"
[api]
rate_per_client = 1000
burst_per_client = 1000
CONF
cat >"$work/services.d/chatty.toml" <<SPEC
name = "chatty"
command = ["/usr/bin/yes", "a line from a service that logs as fast as it can"]
[logs]
max_bytes = "$MAX_BYTES"
keep = $KEEP
SPEC

# Reads a follower's output: counts lines and gap markers (text or JSON) and the lines the
# markers say were skipped; with a delay, sleeps that long every 100 lines (a slow reader).
cat >"$work/reader.py" <<'PY'
import json, re, signal, sys
delay, out = float(sys.argv[1]), sys.argv[2]
lines = gaps = skipped = uncounted = 0
def report(*_):
    with open(out, "w") as f:
        f.write(f"{lines} {gaps} {skipped} {uncounted}\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
count = re.compile(r"… (?:more than )?([\d,]+) lines? skipped")
import time
for raw in sys.stdin.buffer:
    line = raw.decode("utf-8", "replace")
    if line.startswith("{"):
        gap = json.loads(line).get("gap")
        if gap is not None:
            gaps += 1
            skipped += int(gap.get("lines", 0))
            uncounted += bool(gap.get("uncounted"))
            continue
    elif "lines skipped" in line or "line skipped" in line:
        gaps += 1
        m = count.search(line)
        skipped += int(m.group(1).replace(",", "")) if m else 0
        uncounted += "deleted before" in line
        continue
    lines += 1
    if delay and lines % 100 == 0:
        time.sleep(delay)
report()
PY

"$BIN/strata-agent" run --dev --config "$work/agent.toml" --data-dir "$work/data" \
    --services-dir "$work/services.d" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
    --gossip-addr 127.0.0.1:0 --dns-addr 127.0.0.1:0 >"$work/agent.out" 2>"$work/agent.log" &
agent_pid=$!
grpc=""
for _ in $(seq 300); do
    grpc=$(sed -n 's/.*strata-agent ready .* grpc=\([^ ]*\) .*/\1/p' "$work/agent.out")
    [ -n "$grpc" ] && break
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        echo "the agent exited:"; cat "$work/agent.log"; exit 1
    fi
    sleep 0.1
done
[ -n "$grpc" ] || { echo "the agent did not get ready"; exit 1; }
for _ in $(seq 300); do
    [ -s "$work/data/logs/chatty/1/output.log" ] && break
    sleep 0.1
done
[ -s "$work/data/logs/chatty/1/output.log" ] || { echo "chatty does not log"; exit 1; }
idle_rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")

readers=""
for i in $(seq "$FOLLOWERS"); do
    format=table; [ $((i % 4)) -ge 2 ] && format=json
    delay=0; [ $((i % 2)) -eq 0 ] && delay=0.005
    "$BIN/strata" --agent "$grpc" -o "$format" logs chatty -f --lines 10 2>"$work/f$i.err" |
        python3 "$work/reader.py" "$delay" "$work/f$i.result" &
    readers="$readers $!"
    echo "$i $format $delay" >>"$work/followers"
done
sleep 1
# The strata processes (each is the parent shell's child piping into its reader).
followers=$(pgrep -P $$ -x strata || true)

peak=0
end=$(($(date +%s) + DURATION))
while [ "$(date +%s)" -lt "$end" ]; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.2
done
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$agent_pid/status")
final=$(awk '/^VmRSS:/ { print $2 }' "/proc/$agent_pid/status")
cpu=$(awk '{ print $14 + $15 }' "/proc/$agent_pid/stat")
for pid in $followers; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in $readers; do wait "$pid" 2>/dev/null || true; done
written=$(cat "$work/data/logs/chatty/1/"output.log* | wc -c)

echo "agent: $(readlink "/proc/$agent_pid/exe"), $FOLLOWERS followers of \`yes\` for ${DURATION}s (rotation $MAX_BYTES x $KEEP)"
echo "agent RSS: idle $((idle_rss / 1024)) MiB, peak sampled $((peak / 1024)) MiB, VmHWM $((hwm / 1024)) MiB, at the end $((final / 1024)) MiB; CPU $((cpu / $(getconf CLK_TCK))) s"
echo "log on disk at the end: $((written / 1048576)) MiB (the newest $KEEP rotated files + current)"
while read -r i format delay; do
    read -r lines gaps skipped uncounted <"$work/f$i.result" || { echo "follower $i: no result"; continue; }
    speed=fast; [ "$delay" != 0 ] && speed=slow
    printf 'follower %d (%-5s %s): %9d lines, %5d gap markers, %11d lines skipped (%d markers with uncounted loss)\n' \
        "$i" "$format" "$speed" "$lines" "$gaps" "$skipped" "$uncounted"
done <"$work/followers"
if [ "$hwm" -lt $((64 * 1024)) ]; then echo "OK: VmHWM under 64 MiB"; else echo "OVER: VmHWM is 64 MiB or more"; fi
