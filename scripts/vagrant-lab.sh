#!/usr/bin/env bash
# `make vagrant-lab`: the Vagrant lab booted for real on this host (docs/vagrant.md).
#
# libvirtd, its networks and the VMs live in a network namespace of their own
# ($NS) and a private mount namespace (libvirt's /etc, /run, /var dirs are
# bind mounts of build/vagrant/libvirt), so the root namespace gets no link,
# address, route, rule or firewall rule: this script checks that, before and
# after, and fails if anything changed. qemu runs without KVM (TCG) at nice 10,
# one vCPU per VM, and every VM together capped at 2 CPUs (a cpu cgroup).
#
#   scripts/vagrant-lab.sh             the whole run: up, scenario, destroy, check
#   env ARGOCTL_MEMORY (edge=..,relay1=..,origin=.. MiB), ARGOCTL_LIBVIRT_DRIVER=kvm,
#       ARGOCTL_VAGRANT_KEEP=1
#       (leave the VMs and namespace up for a look; then run it with --down)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/build/vagrant
NS=${ARGOCTL_VLAB_NS:-argoctl-vlab}
CGROUP=/sys/fs/cgroup/cpu/$NS
STATE=$OUT/libvirt                       # libvirt's private /etc, /run, /var dirs
LIBVIRT_DIRS="/etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt"
TIMES=$OUT/timings.txt

export VAGRANT_HOME=$OUT/home VAGRANT_DOTFILE_PATH=$OUT/dot VAGRANT_CHECKPOINT_DISABLE=1
export VAGRANT_DEFAULT_PROVIDER=libvirt
export ARGOCTL_BOX=${ARGOCTL_BOX:-argoctl/bookworm}
export ARGOCTL_VMS=edge,relay1,origin ARGOCTL_MGMT_NET=192.0.2.192/26
export ARGOCTL_LIBVIRT_DRIVER=${ARGOCTL_LIBVIRT_DRIVER:-qemu}    # kvm where it works
export ARGOCTL_MEMORY=${ARGOCTL_MEMORY:-edge=768,relay1=768,origin=384}
export ARGOCTL_SERIAL_DIR=$OUT/serial
PY=$REPO/.venv/bin/python

step() {   # NAME CMD...: run, time, log
    local name=$1 t0=$SECONDS rc=0
    shift
    echo "vagrant-lab: == $name"
    "$@" || rc=$?
    printf '%-28s %5d s%s\n' "$name" $((SECONDS - t0)) "$([ $rc = 0 ] || echo "  (failed: $rc)")" >> "$TIMES"
    return $rc
}

# -- inside the lab's namespaces ---------------------------------------------------
inner() {
    mount --make-rprivate /
    # This mount namespace's own passwd/group with the users libvirt resolves at
    # start (libvirt-qemu, even when qemu.conf says root) and drops dnsmasq to;
    # libvirt-daemon-system would add them to the host's, and is not installed.
    cp /etc/passwd "$STATE/passwd"; cp /etc/group "$STATE/group"
    local id=64055 u
    for u in libvirt-qemu libvirt-dnsmasq; do
        getent passwd "$u" >/dev/null || {
            echo "$u:x:$id:$id:argoctl vagrant-lab:/var/lib/libvirt:/usr/sbin/nologin" >> "$STATE/passwd"
            echo "$u:x:$id:" >> "$STATE/group"; }
        id=$((id + 1))
    done
    mount --bind "$STATE/passwd" /etc/passwd
    mount --bind "$STATE/group" /etc/group
    for d in $LIBVIRT_DIRS; do
        mkdir -p "$STATE$d"
        mount --bind "$STATE$d" "$d"
    done
    mkdir -p /etc/libvirt/qemu /var/lib/libvirt/images /var/lib/libvirt/dnsmasq
    cat > /etc/libvirt/qemu.conf <<'EOF'
# argoctl's Vagrant lab (scripts/vagrant-lab.sh): qemu as root, no cgroups of
# libvirt's own (the VMs stay in the lab's cpu cgroup), logs to files.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
EOF
    cat > /etc/libvirt/libvirtd.conf <<'EOF'
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    ip link set lo up
    nice -n 10 /usr/sbin/libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid &
    local lv=$!
    for _ in $(seq 100); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.2; done
    [ -S /run/libvirt/libvirt-sock ] || { echo "vagrant-lab: libvirtd did not start" >&2; return 1; }
    local rc=0
    cd "$REPO/vagrant"
    step "vagrant up (3 VMs)" vagrant up --provider=libvirt || rc=$?
    if [ $rc = 0 ]; then
        # Evidence of the CPU limits: qemu's niceness and the cgroup it runs in.
        for pid in $(pgrep -x qemu-system-x86_64 || true); do
            grep -q "guest=vagrant_" "/proc/$pid/cmdline" 2>/dev/null || continue
            echo "pid $pid nice $(ps -o ni= -p "$pid") cpu cgroup $(grep ':cpu:' "/proc/$pid/cgroup")"
        done | tee "$OUT/qemu-limits.txt"
        step "outage scenario" "$PY" "$REPO/scripts/vagrant_lab.py" --json "$OUT/lab-result.json" || rc=$?
    fi
    # Keep libvirt's and the consoles' logs of this run.
    cp /var/log/libvirt/libvirtd.log "$OUT/libvirtd.log" 2>/dev/null || true
    mkdir -p "$OUT/qemu-logs" && cp /var/log/libvirt/qemu/*.log "$OUT/qemu-logs/" 2>/dev/null || true
    if [ "${ARGOCTL_VAGRANT_KEEP:-0}" = 1 ]; then
        echo "vagrant-lab: ARGOCTL_VAGRANT_KEEP=1: leaving the VMs up (pid $lv is libvirtd)"
        wait "$lv"
        return $rc
    fi
    step "vagrant destroy" vagrant destroy -f || rc=$?
    echo "vagrant-lab: after destroy: domains: $(virsh -q list --all --name | xargs) networks: $(virsh -q net-list --all --name | xargs)"
    kill "$lv" 2>/dev/null || true
    wait "$lv" 2>/dev/null || true
    return $rc
}

# -- the root namespace's state, before and after ----------------------------------
root_state() {
    echo "# links"; ip -o link show | sed -E 's/^[0-9]+: //; s/ state [A-Z]+//; s/qdisc [^ ]+ //' | awk '{print $1, $2}'
    echo "# addresses"; ip -o addr show | awk '{print $2, $3, $4}'
    echo "# routes"; ip route show table all; ip -6 route show table all
    echo "# rules"; ip rule show; ip -6 rule show
    echo "# nft"; nft list ruleset
    echo "# iptables"; { iptables-save; ip6tables-save; } | grep -v '^#' || true
    echo "# bridges"; ip -o link show type bridge | awk '{print $2}'
    echo "# our namespace"; ip netns list | grep -w "$NS" || true
    echo "# libvirt in the root mount namespace"; ls /run/libvirt 2>/dev/null || true
    return 0
}

cleanup_outer() {
    if ip netns list | grep -qw "$NS"; then
        # Only what runs in our namespace (libvirtd, qemu, dnsmasq we started).
        for pid in $(ip netns pids "$NS"); do kill "$pid" 2>/dev/null || true; done
        sleep 2
        for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NS"
    fi
    [ -d "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null || true
    for d in $LIBVIRT_DIRS; do
        [ -f "$OUT/created-$(echo "$d" | tr / _)" ] && rmdir "$d" 2>/dev/null && rm -f "$OUT/created-$(echo "$d" | tr / _)"
    done
    rm -rf "$STATE"
    return 0
}

if [ "${1:-}" = --inner ]; then
    inner
    exit
fi
if [ "${1:-}" = --down ]; then
    (cd "$REPO/vagrant" && ip netns exec "$NS" vagrant destroy -f) || true
    cleanup_outer
    exit
fi

[ "$(id -u)" = 0 ] || { echo "vagrant-lab: must run as root" >&2; exit 1; }
mkdir -p "$OUT" "$ARGOCTL_SERIAL_DIR"
: > "$TIMES"
T0=$SECONDS
root_state > "$OUT/root-before.txt"
cleanup_outer                     # a previous run's leftovers (ours only)
trap 'cleanup_outer' EXIT

# argoctl and its PyPI dependencies as wheels for the offline VMs (provision.sh).
# The versions this checkout's venv runs (the tests' versions), from PyPI's cache.
rm -rf "$REPO/vagrant/.wheels"
"$REPO/.venv/bin/pip" freeze --exclude-editable > "$OUT/constraints.txt"
step "wheels for the VMs" "$REPO/.venv/bin/pip" wheel -q -c "$OUT/constraints.txt" \
    -w "$REPO/vagrant/.wheels" "$REPO"

# Mount points for libvirt's private dirs (empty; removed again if we made them).
for d in $LIBVIRT_DIRS; do
    [ -d "$d" ] || { mkdir -p "$d"; touch "$OUT/created-$(echo "$d" | tr / _)"; }
done
mkdir -p "$STATE"
ip netns add "$NS"
mkdir -p "$CGROUP"
echo 200000 > "$CGROUP/cpu.cfs_quota_us"      # 2 CPUs' time for all VMs together
rc=0
# Run the inner part in the cgroup: libvirtd and every qemu inherit it.
bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CGROUP" \
    ip netns exec "$NS" unshare --mount --propagation private "$0" --inner || rc=$?
if [ "${ARGOCTL_VAGRANT_KEEP:-0}" = 1 ]; then trap - EXIT; exit $rc; fi
step "teardown (namespace)" cleanup_outer
trap - EXIT
root_state > "$OUT/root-after.txt"
echo
echo "vagrant-lab: step times (this host: TCG, 2 shared cores)"
cat "$TIMES"
echo "total                        $((SECONDS - T0)) s"
if ! diff -u "$OUT/root-before.txt" "$OUT/root-after.txt"; then
    echo "vagrant-lab: FAILED: the root namespace changed (diff above)" >&2
    exit 1
fi
echo "vagrant-lab: root namespace unchanged (links, addresses, routes, rules, nft, iptables)"
exit $rc
