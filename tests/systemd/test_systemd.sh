#!/usr/bin/env bash
# The real-systemd test: boot a minimal Debian 12 with systemd-nspawn (private network),
# install clusterd's .deb there and drive it with systemctl.
#
#   tests/systemd/test_systemd.sh DEB [CLUSTERD_NEXT]
#
# CLUSTERD_NEXT (or the environment variable of that name) is a clusterd binary that reports
# another version: the package upgrade section repacks DEB with it and installs that over the
# running service, which must be upgraded in place. Without it that section is skipped.
# Exits 77 (ctest: skipped) with the reason when this machine cannot run it (not root, no
# systemd-nspawn, no debootstrap cache and no mirror). Ends with "N passed, N failed".
set -uo pipefail
deb=${1:?usage: test_systemd.sh DEB [CLUSTERD_NEXT]}
next=${2:-${CLUSTERD_NEXT:-}}
here=$(cd "$(dirname "$0")" && pwd)

skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not installed (apt-get install systemd-container)"
command -v nsenter >/dev/null || skip "nsenter not installed"
[ -f "$deb" ] || { echo "no package at $deb"; exit 1; }
[ -z "$next" ] || [ -f "$next" ] || { echo "no clusterd binary at $next"; exit 1; }

name=clusterd-test-$$
work=$(mktemp -d /var/tmp/clusterd-systemd.XXXXXX)
root=$work/root
passed=0
failed=0
nspawn_pid=
leader=

cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null
    fi
    for c in /sys/fs/cgroup/systemd/$name /sys/fs/cgroup/unified/$name; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT

check() {  # check "what" command...
    local what=$1
    shift
    if "$@"; then
        echo "ok: $what"
        passed=$((passed + 1))
    else
        echo "FAILED: $what"
        failed=$((failed + 1))
    fi
}

# Signal a process of the container; never pid 0 or 1 (kill 0 would hit this script).
ckill() {
    case "$2" in '' | 0 | 1) echo "refusing to kill pid '$2'"; return 1 ;; esac
    ct kill "$1" "$2"
}
# Run a command inside the container, with a clean environment.
ct() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
wait_until() {  # wait_until SECONDS command...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}
http_ok() { ct curl -fsS -m 5 -o /dev/null http://127.0.0.1:8080/; }
main_pid() { ct systemctl show -P MainPID clusterd.service; }
workers() { ct pgrep -P "$(main_pid)" 2>/dev/null | sort; }
generation() { ct clusterd status --json | tail -1 | grep -o '"generation":[0-9]*' | head -1; }

"$here/rootfs.sh" "$root" || skip "could not build or unpack the Debian rootfs"
cp "$deb" "$root/opt/clusterd.deb"  # the container's /tmp is a fresh tmpfs
# D-Bus cannot set up inotify in this sandbox and would hold the boot in "starting" (and
# logind with it); systemctl as root talks to systemd's private socket without it.
for unit in dbus.service dbus.socket systemd-logind.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# nspawn with no systemd on the host needs a cgroup of its own (shared/notes).
for c in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
    [ -d "$c" ] && mkdir -p "$c/$name"
done
(
    for c in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
        [ -d "$c/$name" ] && echo $BASHPID >"$c/$name/cgroup.procs"
    done
    exec unshare --mount --propagation private systemd-nspawn -q -D "$root" -M "$name" \
        --boot --private-network --register=no --keep-unit
) >"$work/nspawn.log" 2>&1 </dev/null &
nspawn_pid=$!
wait_until 30 sh -c "[ -n \"\$(cat /proc/$nspawn_pid/task/$nspawn_pid/children 2>/dev/null)\" ]" ||
    skip "systemd-nspawn did not start: $(tail -3 "$work/nspawn.log")"
leader=$(cut -d' ' -f1 "/proc/$nspawn_pid/task/$nspawn_pid/children")
booted() {
    state=$(ct systemctl is-system-running 2>/dev/null)
    [ "$state" = running ] || [ "$state" = degraded ]
}
wait_until 60 booted || skip "the container's systemd did not come up ($state)"
echo "container $name booted ($state), PID 1 = host pid $leader"
# Nested in another container, systemd may fail to bring up the private network's
# loopback: nothing below could be reached, so that is a machine limit, not a failure.
lo_up() { [ $(($(ct cat /sys/class/net/lo/flags 2>/dev/null || echo 0) & 1)) -eq 1 ]; }
wait_until 10 lo_up ||
    skip "the container's loopback did not come up (nested container without network rights?)"

# ---- install: enabled, not started ----
check "dpkg -i installs the package" ct dpkg -i /opt/clusterd.deb
check "the service is enabled" test "$(ct systemctl is-enabled clusterd.service)" = enabled
check "the service is not started by the install" \
    test "$(ct systemctl is-active clusterd.service)" = inactive
check "the config is a conffile" ct grep -qx /etc/clusterd/clusterd.yaml \
    /var/lib/dpkg/info/clusterd.conffiles

write_config() {  # write_config RELEASE [extra yaml for the program]
    ct sh -c "cat > /etc/clusterd/clusterd.yaml" <<EOF
daemon:
  shutdown_timeout: 10s
programs:
  web:
    cores: 2
    env: {RELEASE: "$1"}
    listen:
      - {name: http, address: "127.0.0.1:8080"}
$2
EOF
}
write_config 1 ""

# ---- start blocks until READY; status shows the STATUS line ----
check "systemctl start returns once clusterd is ready" ct systemctl start clusterd.service
check "it is active right after start" test "$(ct systemctl is-active clusterd.service)" = active
check "it serves HTTP" http_ok
status=$(ct systemctl show -P StatusText clusterd.service)
check "StatusText is the master's STATUS= ($status)" test "$status" = "web 2/2 ready"
check "systemctl status shows it" sh -c "nsenter -t $leader -a env -i PATH=/usr/bin:/bin \
    systemctl status clusterd.service --no-pager | grep -q 'Status: \"web 2/2 ready\"'"

# ---- reload: applied; a broken config fails the reload and keeps the workers ----
before=$(workers)
write_config 2 ""
check "systemctl reload applies a changed config" ct systemctl reload clusterd.service
check "the workers were rolled to generation 2" test "$(generation)" = '"generation":2'
check "they are new processes" test "$(workers)" != "$before"
rolled=$(workers)
ct sh -c 'echo "    bogus: [" >> /etc/clusterd/clusterd.yaml'
check "systemctl reload of a broken config fails" bash -c "! nsenter -t $leader -a env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin systemctl reload clusterd.service"
check "the old workers keep serving" test "$(workers)" = "$rolled"
check "and answer" http_ok
write_config 2 ""

# ---- kill -9 of a worker is healed ----
victim=$(workers | head -1)
ckill -9 "$victim"
check "a killed worker is replaced" wait_until 10 sh -c "[ \$(nsenter -t $leader -a pgrep -P \
    \$(nsenter -t $leader -a systemctl show -P MainPID clusterd.service) | grep -vcx $victim) -eq 2 ]"

# ---- kill -9 of the master: systemd restarts it, no orphan worker is left ----
master=$(main_pid)
old_workers=$(workers)
ckill -9 "$master"
check "systemd restarts a killed master" wait_until 15 sh -c "p=\$(nsenter -t $leader -a \
    systemctl show -P MainPID clusterd.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $master ] && \
    [ \"\$(nsenter -t $leader -a systemctl is-active clusterd.service)\" = active ]"
orphans=0
for p in $old_workers; do ct kill -0 "$p" 2>/dev/null && orphans=$((orphans + 1)); done
check "no worker of the killed master is left ($orphans)" test "$orphans" -eq 0
check "the new master serves" wait_until 10 http_ok

# ---- watchdog: a stalled master loop is killed and restarted by systemd ----
ct mkdir -p /run/systemd/system/clusterd.service.d
ct sh -c 'printf "[Service]\nWatchdogSec=2\n" > /run/systemd/system/clusterd.service.d/watchdog.conf'
ct systemctl daemon-reload
ct systemctl restart clusterd.service
master=$(main_pid)
ckill -STOP "$master"
check "the watchdog fires on a stalled master" wait_until 15 sh -c "nsenter -t $leader -a \
    journalctl -u clusterd.service --no-pager | grep -q 'Watchdog timeout'"
check "and the service comes back" wait_until 15 sh -c "p=\$(nsenter -t $leader -a systemctl \
    show -P MainPID clusterd.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $master ]"
ct rm -rf /run/systemd/system/clusterd.service.d
ct systemctl daemon-reload
check "it serves again" wait_until 10 http_ok

# ---- socket activation: connections wait in systemd's socket across a master restart ----
ct systemctl stop clusterd.service
check "clusterd.socket starts" ct systemctl start clusterd.socket
check "the first connection starts the service" http_ok
check "which uses systemd's socket" sh -c "nsenter -t $leader -a journalctl -u clusterd.service \
    --no-pager | grep -q 'passed by systemd: used instead of binding'"
master=$(main_pid)
ckill -9 "$master"
ct sh -c 'curl -fsS -m 20 -o /dev/null -w "%{http_code}" http://127.0.0.1:8080/ > /tmp/queued.out' &
curl_pid=$!
check "a connection made while no master runs is served by the next one" wait $curl_pid
check "with 200" test "$(ct cat /tmp/queued.out)" = 200

# ---- package upgrade in place: same master pid, same workers, no failed request ----
# Package B is package A with clusterd-next as /usr/bin/clusterd, version A's + "+next": its
# postinst (this tree's) runs `clusterd upgrade` on the active service instead of restarting it.
if [ -z "$next" ]; then
    echo "package upgrade: skipped (no clusterd-next)"
elif ! command -v dpkg-deb >/dev/null; then
    echo "package upgrade: skipped (no dpkg-deb on this machine)"
else
    t0=$(date +%s%N)
    nextver="$(dpkg-deb -f "$deb" Version)+next"
    pkg=$work/next
    dpkg-deb -R "$deb" "$pkg"
    if command -v strip >/dev/null; then
        strip -o "$pkg/usr/bin/clusterd" "$next"
    else
        cp "$next" "$pkg/usr/bin/clusterd"
    fi
    sed -i "s/^Version: .*/Version: $nextver/" "$pkg/DEBIAN/control"
    sum=$(cd "$pkg" && md5sum usr/bin/clusterd)
    sed -i "s|^[0-9a-f]*  usr/bin/clusterd\$|$sum|" "$pkg/DEBIAN/md5sums"
    dpkg-deb -b "$pkg" "$root/opt/clusterd-next.deb" >/dev/null
    rm -rf "$pkg"

    master=$(main_pid)
    before=$(workers)
    # Requests during the whole dpkg run (at most 3000, one at a time); counts in /tmp/load.out.
    ct rm -f /tmp/dpkg.done
    ct sh -c 'ok=0; bad=0; while [ ! -e /tmp/dpkg.done ] && [ $((ok + bad)) -lt 3000 ]; do
        if curl -fsS -m 5 -o /dev/null http://127.0.0.1:8080/ 2>>/tmp/load.err; then
            ok=$((ok + 1)); else bad=$((bad + 1)); fi
        done; echo "$ok $bad" > /tmp/load.out' &
    load_pid=$!
    t1=$(date +%s%N)
    ct dpkg -i /opt/clusterd-next.deb >"$work/dpkg-next.log" 2>&1
    dpkg_rc=$?
    t2=$(date +%s%N)
    ct touch /tmp/dpkg.done
    wait $load_pid
    echo "package upgrade: repack $(((t1 - t0) / 1000000)) ms," \
        "dpkg -i $(((t2 - t1) / 1000000)) ms; $(grep -h 'upgraded from' "$work/dpkg-next.log")"
    check "dpkg -i of version $nextver succeeds" test "$dpkg_rc" -eq 0
    [ "$dpkg_rc" -eq 0 ] || cat "$work/dpkg-next.log"
    check "its postinst upgraded in place (no restart)" bash -c "grep -q 'upgraded from' \
        '$work/dpkg-next.log' && ! grep -q 'in-place upgrade failed' '$work/dpkg-next.log'"
    check "the master keeps its pid ($master -> $(main_pid))" \
        test "$master" != 0 -a "$(main_pid)" = "$master"
    check "the workers keep theirs (${before//$'\n'/ })" \
        test -n "$before" -a "$(workers)" = "$before"
    daemon=$(ct clusterd status --json | tail -1 | grep -o '"daemon":{[^}]*}')
    check "status: the daemon runs $nextver" grep -qF "\"version\":\"$nextver\"" <<<"$daemon"
    check "status: after one upgrade" grep -q '"upgrades":1[,}]' <<<"$daemon"
    check "the service is active" test "$(ct systemctl is-active clusterd.service)" = active
    # READY=1 reaches systemd before the reply reaches `clusterd upgrade`, but is read apart.
    running() {
        state=$(ct systemctl show -P ActiveState clusterd.service)/$(ct systemctl show -P \
            SubState clusterd.service)
        [ "$state" = active/running ]
    }
    wait_until 5 running
    check "and running, not reloading ($state)" test "$state" = active/running
    status=$(ct systemctl show -P StatusText clusterd.service)
    check "StatusText is the master's again, not the upgrade's ($status)" \
        test "$status" = "web 2/2 ready"
    check "it serves HTTP" http_ok
    check "clusterd version: the daemon says $nextver" \
        test "$(ct clusterd version | tail -1)" = "clusterd $nextver"
    read -r load_ok load_bad < <(ct cat /tmp/load.out)
    check "no request failed during the upgrade ($load_ok ok, $load_bad failed)" \
        test "${load_ok:-0}" -gt 0 -a "${load_bad:-1}" -eq 0
    [ "${load_bad:-1}" -eq 0 ] || ct head -5 /tmp/load.err
fi

# ---- stop leaves nothing ----
ct systemctl stop clusterd.socket clusterd.service
left=$(ct pgrep -c -f 'clusterd' || true)
check "systemctl stop leaves no clusterd process ($left)" test "$left" -eq 0

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
