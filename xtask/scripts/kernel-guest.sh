#!/bin/bash
# The kernel matrix's smoke suite (xtask/src/kernels.rs), run by virtme-ng as root inside a guest whose root is
# the host's, read-only, with OUT shared read-write. It only runs things and writes what it saw into OUT; the host
# judges the files after the guest is gone (virtme-ng's exit status says nothing: 255 even on success).
# Usage: kernel-guest.sh OUT LEAKPROBE FIXTURES
OUT=$1 LP=$2 FIX=$3
exec >"$OUT/guest.log" 2>&1
# Each traced command with the time (no fork: bash's clock variable), to tell where an emulated guest's time goes.
PS4='+ ${EPOCHREALTIME} '
set -x
uname -r >"$OUT/release"
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
# A cgroup2 hierarchy of our own for the memory limit (the guest's /sys/fs/cgroup may be a tmpfs of v1 mounts).
CG=/sys/fs/cgroup
if [ "$(stat -fc %T $CG)" != cgroup2fs ]; then CG=/tmp/cgroup2; mkdir -p $CG; mount -t cgroup2 nodev $CG; fi
T=$(mktemp -d)
# A timestamped line in the trace, between steps: where an emulated guest's minutes go.
stamp() { echo "== $(date +%T.%N | cut -c1-12) $*"; }
# The kernel's messages as they come, into OUT (the console, console.log, ends when the guest does: a guest that
# ends abruptly leaves its last messages here too).
cat /dev/kmsg >"$OUT/kmsg.log" 2>/dev/null &

# Starts a daemon named $1 with the remaining arguments; its pid in $D once `status` answers.
start() {
    name=$1; shift
    "$LP" run --socket "$T/$name.sock" --state-dir "$T/$name.state" --no-metrics "$@" >"$OUT/$name.log" 2>&1 &
    D=$!
    for _ in $(seq 600); do "$LP" status --socket "$T/$name.sock" >/dev/null 2>&1 && break; sleep 0.2; done
    "$LP" status --json --socket "$T/$name.sock" >"$OUT/$name-status.json"
    # The eBPF programs and links it holds, by id, to look for after the stop.
    cat /proc/$D/fdinfo/* 2>/dev/null | sed -n 's/^\(prog_id\|link_id\):[[:space:]]*/\1 /p' | sort -u >"$OUT/$name-held"
}
# Stops the daemon $D named $1 with SIGTERM; writes its exit status and the ids still present afterwards.
stop() {
    kill -TERM "$D"; wait "$D"; echo $? >"$OUT/$1-exit"
    # Every program and link still on the system, listed once each: a bpftool call per held id (over 200 in
    # full mode) took about 100 s under emulation. A listing that fails counts as something left.
    : >"$OUT/$1-left"
    if bpftool prog list >"$T/progs" 2>&1 && bpftool link list >"$T/links" 2>&1; then
        { sed -n 's/^\([0-9][0-9]*\):.*/prog_id \1/p' "$T/progs"
          sed -n 's/^\([0-9][0-9]*\):.*/link_id \1/p' "$T/links"; } >"$T/present"
        grep -Fx -f "$T/present" "$OUT/$1-held" >"$OUT/$1-left" || true
    else
        echo "bpftool failed: $(cat "$T/progs" "$T/links" 2>/dev/null | head -c 300)" >"$OUT/$1-left"
    fi
}
# Polls `$@` for up to $1 seconds (by the clock: each emulated call takes seconds) until its output contains
# the pattern $2; saves it to $3.
poll() {
    secs=$1 pattern=$2 file=$3; shift 3
    end=$(($(date +%s) + secs))
    while [ "$(date +%s)" -le "$end" ]; do
        "$@" >"$file" 2>&1 && grep -q "$pattern" "$file" && return 0
        sleep 0.5
    done
    echo "poll: no $pattern within $secs s"
    return 1
}

# 1. Defaults (sampled, malloc probes auto), escalating fast: a steady leak of the tier0 fixture is escalated to
#    tier 1 by tier 0 alone, without `trace`. The CPU budgets at the guest's two whole cores: emulated, the
#    probes' cost exceeds the default budget at once, which detached them within a second, at times before
#    `top` had seen a sample.
stamp "1. Defaults"
start defaults --interval 200ms --window 6s --escalate-only tier0 --cpu-budget-process 200 --cpu-budget-host 200
"$FIX/tier0" leakloop 20 >"$T/tier0.out" 2>&1 &
P=$!
echo "$P" >"$OUT/tier0-pid"
poll 90 loop_leak "$OUT/escalated-top.txt" "$LP" top --socket "$T/defaults.sock" --pid "$P"
"$LP" status --json --socket "$T/defaults.sock" >"$OUT/escalated-status.json"
kill "$P"
stamp "stopping the defaults daemon"
stop defaults

# 2. --mode full --malloc-probes all: the leaker's leaks exactly, then a real OOM kill in a 64 MiB memory cgroup.
stamp "2. --mode full --malloc-probes all"
start full --mode full --malloc-probes all --interval 500ms
mkfifo "$T/in"
"$FIX/leaker" basic <"$T/in" >"$T/leaker.out" 2>&1 &
P=$!
exec 3>"$T/in"
echo "$P" >"$OUT/leaker-pid"
poll 60 4321 "$OUT/leaker-top.json" "$LP" top --socket "$T/full.sock" --pid "$P" --json
exec 3>&-
stamp "OOM kill in a memory cgroup"
mkdir -p $CG/leakprobe-oom
echo +memory >$CG/cgroup.subtree_control
echo 64M >$CG/leakprobe-oom/memory.max
echo 0 >$CG/leakprobe-oom/memory.swap.max
mkfifo "$T/oom-in"
"$FIX/leaker" oom <"$T/oom-in" >"$T/oom.out" 2>&1 &
P=$!
echo "$P" >"$OUT/oom-pid"
echo "$P" >$CG/leakprobe-oom/cgroup.procs
echo go >"$T/oom-in"
# The kill comes within seconds, even emulated; never wait for the guest's own RAM to run out.
for _ in $(seq 240); do kill -0 "$P" 2>/dev/null || break; sleep 0.5; done
kill -0 "$P" 2>/dev/null && { echo "no OOM kill within 2 minutes"; kill -9 "$P"; }
wait "$P"; echo "oom leaker exit $?"
poll 60 leak_until_killed "$OUT/oom-list.json" "$LP" oom --socket "$T/full.sock" --json
ID=$(sed -n 's/.*"id": *"\([0-9]*-[0-9]*\)".*/\1/p' "$OUT/oom-list.json" | head -1)
"$LP" oom show "$ID" --socket "$T/full.sock" --json >"$OUT/oom-report.json" 2>&1
# The counters after the run (events lost to a full ring buffer, processes first seen gone), for a failed check.
"$LP" status --json --socket "$T/full.sock" >"$OUT/full-status-end.json" 2>&1
stamp "stopping the full daemon"
stop full
stamp done
echo done >"$OUT/done"
