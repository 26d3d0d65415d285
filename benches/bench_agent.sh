# Sourced by the bench scripts that start an agent of their own: how they find its processes
# and how they end it and everything it started. Uses the caller's $agent_pid, $shims (the
# agent's shims, once known), $work (the bench's temp dir) and $cgroup_root.

children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# The agent first (its services outlive it by design), then each service's process group: its
# shim records the exit and ends. A shim still there after that is killed by pid, if it is
# still one of ours (its instance dir is under $work). Then the cgroups and $work go.
stop_bench_agent() {
    if [ -n "$agent_pid" ]; then
        [ -n "$shims" ] || shims=$(children "$agent_pid")
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    for shim in $shims; do
        for service in $(children "$shim"); do kill -KILL -- "-$service" 2>/dev/null || true; done
    done
    sleep 0.5
    for shim in $shims; do
        if tr '\0' ' ' <"/proc/$shim/cmdline" 2>/dev/null | grep -qF "$work/"; then
            kill -KILL "$shim" 2>/dev/null || true
        fi
    done
    for dir in /sys/fs/cgroup/*/"$cgroup_root" /sys/fs/cgroup/"$cgroup_root"; do
        [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "$work"
}
