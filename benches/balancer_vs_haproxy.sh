#!/usr/bin/env bash
# The same nginx backend (Debian nginx-light, one worker, a 1 KiB static file) and the same
# load generator (Debian wrk) on loopback, measured on three paths in one run: direct, through
# Debian's HAProxy (mode tcp, balance roundrobin) and through the Strata balancer (copy and
# splice), each for DURATION seconds (default 10) with CONNS connections (default 64).
# Then the RSS of the balancer (and of HAProxy) with IDLE idle connections open (default 10000),
# and bulk throughput of the copy and splice paths.
# Goal: Strata requests/s >= HAProxy's and Strata p99 <= HAProxy's.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
IDLE=${IDLE:-10000}

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing ${need[*]} (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; created_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${need[@]}"
    [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# A proxy holds two descriptors per connection; raise the limit as far as this host allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_idle=$(( ($(ulimit -n) - 500) / 2 ))
if [ "$IDLE" -gt "$max_idle" ]; then
    echo "== RLIMIT_NOFILE is $(ulimit -n) here (hard limit): $max_idle idle connections, not $IDLE"
    IDLE=$max_idle
fi
cargo build --release --quiet -p strata-registry --example balancer_bench
bench=./target/release/examples/balancer_bench
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open"; exit 1; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

NGINX_PORT=$(free_port); HAPROXY_PORT=$(free_port); STRATA_PORT=$(free_port); SPLICE_PORT=$(free_port)
mkdir -p "$work/www" "$work/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/index.html"
chmod -R a+rX "$work/www"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$NGINX_PORT; root $work/www; }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
cat > "$work/haproxy.cfg" <<CONF
global
    maxconn $(( ($(ulimit -n) - 200) / 2 ))
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nginx
backend nginx
    balance roundrobin
    server s1 127.0.0.1:$NGINX_PORT
CONF
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!); haproxy_pid=$!
"$bench" serve --frontend "$STRATA_PORT" --backend "127.0.0.1:$NGINX_PORT" --mode copy --log-dir "$work/logs" >"$work/strata.out" &
pids+=($!); strata_pid=$!
"$bench" serve --frontend "$SPLICE_PORT" --backend "127.0.0.1:$NGINX_PORT" --mode splice --log-dir "$work/logs-splice" >"$work/splice.out" &
pids+=($!)
for p in "$NGINX_PORT" "$HAPROXY_PORT" "$STRATA_PORT" "$SPLICE_PORT"; do wait_port "$p"; done

run_wrk() {
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/index.html" > "$work/wrk-$1.txt"
}
echo "== wrk -t1 -c$CONNS -d${DURATION}s --latency, 1 KiB file, keep-alive; direct, haproxy, strata (copy), strata (splice)"
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/index.html" >/dev/null   # warm-up
run_wrk direct "$NGINX_PORT"
run_wrk haproxy "$HAPROXY_PORT"
run_wrk strata "$STRATA_PORT"
run_wrk splice "$SPLICE_PORT"

echo "== $IDLE idle connections each through strata (copy) and haproxy"
idle_rss() {
    "$bench" idle --addr "127.0.0.1:$2" --count "$IDLE" --hold 30 > "$work/idle-$1.out" &
    local idle_pid=$!
    for _ in $(seq 600); do grep -q opened "$work/idle-$1.out" 2>/dev/null && break; sleep 0.1; done
    sleep 1
    echo "$(rss_kib "$3") $(cat "$work/idle-$1.out")" > "$work/rss-$1.txt"
    kill "$idle_pid" 2>/dev/null || true; wait "$idle_pid" 2>/dev/null || true
}
strata_rss0=$(rss_kib "$strata_pid"); haproxy_rss0=$(rss_kib "$haproxy_pid")
idle_rss strata "$STRATA_PORT" "$strata_pid"
idle_rss haproxy "$HAPROXY_PORT" "$haproxy_pid"

echo "== bulk throughput through the balancer, one connection, 2000 MiB per run"
"$bench" stream --mb 2000 | tee "$work/stream.txt"

python3 - "$work" "$strata_rss0" "$haproxy_rss0" <<'PY'
import re, sys
work, s0, h0 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def secs(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
def parse(name):
    t = open(f"{work}/wrk-{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    p50 = secs(re.search(r"\s50%\s+(\S+)", t).group(1))
    p99 = secs(re.search(r"\s99%\s+(\S+)", t).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", t)
    return rps, p50, p99, errors.group(0) if errors else ""
rows = {n: parse(n) for n in ["direct", "haproxy", "strata", "splice"]}
label = {"direct": "direct (nginx)", "haproxy": "haproxy mode tcp", "strata": "strata (copy)", "splice": "strata (splice)"}
print(f"{'':20}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
for n, (rps, p50, p99, err) in rows.items():
    print(f"{label[n]:20}{rps:>12.0f}{p50*1e3:>10.3f}{p99*1e3:>10.3f}  {err}")
for n in ["strata", "splice"]:
    rps, _, p99, _ = rows[n]
    print(f"{label[n]}/haproxy: req/s {rps/rows['haproxy'][0]:.2f} (goal >= 1.00), p99 {p99/rows['haproxy'][2]:.2f} (goal <= 1.00); "
          f"/direct: req/s {rps/rows['direct'][0]:.2f}, p99 {p99/rows['direct'][2]:.2f}")
for name, base in [("strata", s0), ("haproxy", h0)]:
    rss, *rest = open(f"{work}/rss-{name}.txt").read().split()
    print(f"RSS {name:8} before {base/1024:7.1f} MiB, with idle connections ({' '.join(rest)}) {int(rss)/1024:7.1f} MiB")
PY
