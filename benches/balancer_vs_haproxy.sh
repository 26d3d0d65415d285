#!/usr/bin/env bash
# The same nginx backend (Debian nginx-light, one worker, a 1 KiB static file) and the same
# load generator (Debian wrk) on loopback, measured on three paths in one run: direct, through
# Debian's HAProxy (mode tcp, balance roundrobin) and through the Strata balancer (copy and
# splice), each for DURATION seconds (default 10) with CONNS connections (default 64).
# Then the RSS of the balancer (and of HAProxy) with IDLE idle connections open (default 10000),
# and bulk throughput of the copy and splice paths.
# Goal: Strata requests/s >= HAProxy's and Strata p99 <= HAProxy's.
#
# Then overload, for each algorithm (Strata round_robin, least_conn, p2c_ewma against HAProxy
# roundrobin, leastconn, random(2)): two nginx backends with a listen backlog of BACKLOG
# (default 8), and OVER_CONNS wrk connections (default "20 256": the issue's wrk -c20, and far
# more than the backends accept) that each make one request per TCP connection
# (Connection: close), so every request is a new backend connect and the backends' accept
# queues overflow. HAProxy runs with retries 3, option redispatch, timeout connect 1s,
# timeout queue 10s; Strata with its default [balance] settings. Printed: client errors (wrk's
# socket errors and non-2xx; wrk counts a request unanswered after 2 s as a "timeout" error),
# p99 latency, requests per backend (from the backends' own access logs) and the
# kernel's listen-queue overflows during the run. Goal: 0 errors where HAProxy has 0, and each
# backend within 10% of an even share. OVERLOAD_ONLY=1 runs only this part.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
IDLE=${IDLE:-10000}
BACKLOG=${BACKLOG:-8}
OVER_CONNS=${OVER_CONNS:-20 256}
OVERLOAD_ONLY=${OVERLOAD_ONLY:-0}

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

# HAProxy's global and defaults sections, shared by every configuration here.
haproxy_head() {
    cat <<CONF
global
    maxconn $(( ($(ulimit -n) - 200) / 2 ))
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
CONF
}

# The kernel's count of connections dropped because an accept queue was full (host-wide).
listen_overflows() {
    awk '/^TcpExt:/ { if (!seen) { split($0, names); seen = 1 } else { split($0, values); for (i in names) if (names[i] == "ListenOverflows") print values[i] } }' /proc/net/netstat
}

overload() {
    local b1 b2 hp=() sp=()
    b1=$(free_port); b2=$(free_port)
    mkdir -p "$work/over"
    for b in "$b1" "$b2"; do
        mkdir -p "$work/over/$b"
        cat > "$work/over/$b/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $work/over/$b/nginx.pid;
error_log $work/over/$b/error.log;
events { worker_connections 8192; }
http {
    log_format one '\$status';
    access_log $work/over/$b/access.log one buffer=64k flush=1s;
    client_body_temp_path $work/over/$b/body;
    proxy_temp_path $work/over/$b/proxy;
    fastcgi_temp_path $work/over/$b/fastcgi;
    uwsgi_temp_path $work/over/$b/uwsgi;
    scgi_temp_path $work/over/$b/scgi;
    server { listen 127.0.0.1:$b backlog=$BACKLOG; root $work/www; }
}
CONF
        nginx -c "$work/over/$b/nginx.conf" -g 'daemon off;' &
        pids+=($!)
    done
    local algorithms=(round_robin least_conn p2c_ewma)
    local haproxy_balance=(roundrobin leastconn "random(2)")
    {
        haproxy_head
        printf '    timeout queue 10s\n    retries 3\n    option redispatch 1\n'
        for i in 0 1 2; do
            hp[$i]=$(free_port)
            printf 'listen over%s\n    bind 127.0.0.1:%s\n    balance %s\n    server b1 127.0.0.1:%s\n    server b2 127.0.0.1:%s\n' \
                "$i" "${hp[$i]}" "${haproxy_balance[$i]}" "$b1" "$b2"
        done
    } > "$work/over/haproxy.cfg"
    haproxy -f "$work/over/haproxy.cfg" -db &
    pids+=($!)
    for i in 0 1 2; do
        sp[$i]=$(free_port)
        "$bench" serve --frontend "${sp[$i]}" --backend "127.0.0.1:$b1" --backend "127.0.0.1:$b2" \
            --algorithm "${algorithms[$i]}" > "$work/over/strata-$i.out" &
        pids+=($!)
    done
    for p in "$b1" "$b2" "${hp[@]}" "${sp[@]}"; do wait_port "$p"; done
    lines() { wc -l < "$work/over/$1/access.log" 2>/dev/null || echo 0; }
    for conns in $OVER_CONNS; do
    echo "== overload: 2 nginx backends with listen backlog $BACKLOG, wrk -t1 -c$conns -d${DURATION}s, one request per connection"
    : > "$work/over/results.txt"
    for i in 0 1 2; do
        for who in haproxy strata; do
            local port=${hp[$i]} label="haproxy ${haproxy_balance[$i]}"
            if [ "$who" = strata ]; then port=${sp[$i]}; label="strata ${algorithms[$i]}"; fi
            sleep 2   # nginx flushes its access log every second
            local n1 n2 o
            n1=$(lines "$b1"); n2=$(lines "$b2"); o=$(listen_overflows)
            wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H 'Connection: close' "http://127.0.0.1:$port/index.html" > "$work/over/wrk.txt" || true
            sleep 2
            printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$(( $(lines "$b1") - n1 ))" "$(( $(lines "$b2") - n2 ))" \
                "$(( $(listen_overflows) - o ))" "$(tr '\n' ' ' < "$work/over/wrk.txt")" >> "$work/over/results.txt"
        done
    done
    python3 - "$work/over/results.txt" <<'PY'
import re, sys
def secs(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
print(f"{'':24}{'requests':>10}{'errors':>8}{'p99 ms':>9}{'backend 1':>11}{'backend 2':>11}{'off even':>10}{'overflows':>11}")
for line in open(sys.argv[1]):
    label, n1, n2, overflows, wrk = line.rstrip("\n").split("\t")
    n1, n2 = int(n1), int(n2)
    requests = int(re.search(r"(\d+) requests in", wrk).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk)
    errors = sum(map(int, sock.groups())) if sock else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
    errors += int(non2xx.group(1)) if non2xx else 0
    total = max(n1 + n2, 1)
    off = abs(n1 - n2) / total
    p99 = secs(re.search(r"\s99%\s+(\S+)", wrk).group(1))
    detail = f"  ({sock.group(0)})" if sock else ""
    print(f"{label:24}{requests:>10}{errors:>8}{p99*1e3:>9.1f}{n1/total:>10.1%}{n2/total:>11.1%}{off:>10.1%}{int(overflows):>11}{detail}")
print("off even: |backend 1 - backend 2| / both (goal <= 10%); overflows: SYNs the kernel dropped at full accept queues (host-wide)")
PY
    done
}

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
{ haproxy_head; cat <<CONF
frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend nginx
backend nginx
    balance roundrobin
    server s1 127.0.0.1:$NGINX_PORT
CONF
} > "$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db &
pids+=($!); haproxy_pid=$!
"$bench" serve --frontend "$STRATA_PORT" --backend "127.0.0.1:$NGINX_PORT" --mode copy --log-dir "$work/logs" >"$work/strata.out" &
pids+=($!); strata_pid=$!
"$bench" serve --frontend "$SPLICE_PORT" --backend "127.0.0.1:$NGINX_PORT" --mode splice --log-dir "$work/logs-splice" >"$work/splice.out" &
pids+=($!)
for p in "$NGINX_PORT" "$HAPROXY_PORT" "$STRATA_PORT" "$SPLICE_PORT"; do wait_port "$p"; done
if [ "$OVERLOAD_ONLY" = 1 ]; then overload; exit 0; fi

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
overload
