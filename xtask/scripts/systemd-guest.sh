#!/bin/sh
# Runs inside the Debian 12 root booted with `systemd-nspawn --boot` (xtask/src/ship.rs), as a oneshot unit once
# the system is up: installs the .deb, then starts, queries and stops the daemon under systemd. Writes its
# transcript to /ship/out/transcript and `ok` or `failed` to /ship/out/result, then powers the container off.
OUT=/ship/out
exec >"$OUT/transcript" 2>&1
fail() { echo "FAILED: $*"; echo failed >"$OUT/result"; systemctl poweroff; exit 1; }
echo "# uname -r: $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
echo '$ apt-get install ./leakprobe.deb'
cp /ship/leakprobe.deb /tmp/leakprobe.deb
DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/leakprobe.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt-get install"; }
grep -E '^(Unpacking|Setting up|Created symlink)' /tmp/apt.log
# The package starts the unit (enable and start, as Debian packages do): stop it, then time a start of our own.
systemctl stop leakprobe
echo '$ systemctl start leakprobe'
start=$(date +%s%N)
systemctl start leakprobe || { journalctl -u leakprobe --no-pager | tail -30; fail "systemctl start"; }
end=$(date +%s%N)
echo "# returned after $(( (end - start) / 1000000 )) ms"
# Type=notify: right after `start` returns, the socket must answer (no polling here).
echo '$ leakprobe status'
leakprobe status >"$OUT/status" 2>&1 || { cat "$OUT/status"; fail "leakprobe status right after start"; }
head -20 "$OUT/status"
echo '$ systemctl status leakprobe'
systemctl status --no-pager --lines 8 leakprobe
journalctl -u leakprobe --no-pager | grep -q 'sd_notify: READY=1' || fail "no READY=1 in the journal"
PID=$(systemctl show -p MainPID --value leakprobe)
echo "# the daemon (pid $PID) as $(stat -c %U /proc/"$PID")"
# The eBPF programs and links the daemon holds, by id (from its fd table), to look for after the stop.
PROGS=$(cat /proc/"$PID"/fdinfo/* 2>/dev/null | sed -n 's/^prog_id:[[:space:]]*//p' | sort -u)
LINKS=$(cat /proc/"$PID"/fdinfo/* 2>/dev/null | sed -n 's/^link_id:[[:space:]]*//p' | sort -u)
echo "# holds $(echo $PROGS | wc -w) programs, $(echo $LINKS | wc -w) links"
[ -n "$LINKS" ] || fail "the daemon holds no eBPF link"
echo '$ systemctl stop leakprobe'
systemctl stop leakprobe || fail "systemctl stop"
systemctl is-active leakprobe && fail "still active after stop"
left=0
for id in $LINKS; do bpftool link show id "$id" >/dev/null 2>&1 && { echo "link $id still attached"; left=$((left + 1)); }; done
for id in $PROGS; do bpftool prog show id "$id" >/dev/null 2>&1 && { echo "program $id still loaded"; left=$((left + 1)); }; done
[ "$left" = 0 ] || fail "$left eBPF objects left after stop"
echo "# after stop: none of its $(echo $LINKS | wc -w) links and $(echo $PROGS | wc -w) programs remain (bpftool)"
journalctl -u leakprobe --no-pager | grep -E 'sd_notify|probes detached|Started|Stopped' | tail -6
echo ok >"$OUT/result"
systemctl poweroff
