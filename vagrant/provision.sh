#!/bin/sh
# Provision one VM of the argoctl Vagrant lab (run as root by the Vagrantfile).
#
#   provision.sh HOST ROLE TUNNEL LOOPBACK ROUTES LAN_ADDR
#     ROLE      client | edge | relay | origin
#     TUNNEL    gre | wireguard
#     LOOPBACK  this host's underlay /32 (tunnel endpoint), or "-"
#     ROUTES    "prefix via nexthop,..." static routes (the direct paths)
#     LAN_ADDR  the edge's client-LAN address (finds the steered interface), or "-"
#   env ARGOCTL_LAB_SEED: lab secret; keys derive from it so hosts agree.
#   env ARGOCTL_RELAYS: the relay VMs of this lab (default relay1,relay2).
#   env ARGOCTL_CLIENT_NETNS=1 (edge): no client VM; the LAN's clients are
#       namespaces in this VM (vagrant/lab-clients.sh).
#
# Offline boxes (scripts/vagrant-box.sh) already hold every Debian package, and
# argoctl comes from the wheels in $SRC/vagrant/.wheels when present (built on
# the host by scripts/vagrant-lab.sh): then nothing is downloaded.
#
# Idempotent: `vagrant provision` again converges to the same state.
set -eu

HOST=$1 ROLE=$2 TUNNEL=$3 LOOPBACK=$4 ROUTES=$5 LAN_ADDR=$6
SRC=/opt/argoctl/src            # the repository, rsynced by the Vagrantfile
VENV=/opt/argoctl/venv
ETC=/etc/argoctl

export DEBIAN_FRONTEND=noninteractive

# -- packages: the same list as the Makefile's set-up -------------------------
pkgs="iproute2 iperf3 python3-venv"
if [ "$ROLE" != client ]; then
    pkgs="$pkgs python3-bpfcc python3-nftables nftables wireguard-tools"
fi
missing=
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
if [ "$ROLE" != client ] && [ ! -e "/lib/modules/$(uname -r)/build" ]; then
    # bcc compiles against /lib/modules/$(uname -r)/build. A box older than the
    # archive runs a kernel whose headers were superseded: then take the
    # current headers (fine for networking programs, which use stable UAPI
    # structs), as the host set-up does.
    kver=$(uname -r)
    if ! apt-get install -y -q --no-install-recommends "linux-headers-$kver"; then
        apt-get install -y -q --no-install-recommends linux-headers-amd64
        if [ ! -e "/lib/modules/$kver/build" ]; then
            ln -s "$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n1)" "/lib/modules/$kver/build"
        fi
    fi
fi

# -- network: loopback address, static routes, forwarding ---------------------
# A oneshot unit, so it survives reboots (Vagrant only configures link addresses).
sh "$SRC/vagrant/lab-net.sh" "$ROLE" "$LOOPBACK" "$ROUTES" > /usr/local/sbin/argoctl-lab-net
chmod 755 /usr/local/sbin/argoctl-lab-net
cat > /etc/systemd/system/argoctl-lab-net.service <<'UNIT'
[Unit]
Description=argoctl lab underlay addresses and routes
After=network-online.target
Wants=network-online.target
Before=argoctl.service argoctl-responder.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/argoctl-lab-net

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable argoctl-lab-net.service
systemctl restart argoctl-lab-net.service

[ "$ROLE" = client ] && exit 0

if [ "${ARGOCTL_CLIENT_NETNS:-0}" = 1 ]; then
    sh "$SRC/vagrant/lab-clients.sh" "$LAN_ADDR" > /usr/local/sbin/argoctl-lab-clients
    chmod 755 /usr/local/sbin/argoctl-lab-clients
    cat > /etc/systemd/system/argoctl-lab-clients.service <<'UNIT'
[Unit]
Description=argoctl lab clients (namespaces on edge's LAN)
Before=argoctl.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/argoctl-lab-clients

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable argoctl-lab-clients.service
    systemctl restart argoctl-lab-clients.service
fi

# -- argoctl into a venv (bcc and nftables come from Debian's packages) -------
[ -x $VENV/bin/python ] || python3 -m venv --system-site-packages $VENV
if ls "$SRC"/vagrant/.wheels/argoctl-*.whl >/dev/null 2>&1; then
    $VENV/bin/pip install -q --upgrade --force-reinstall --no-deps --no-index "$SRC"/vagrant/.wheels/argoctl-*.whl
    $VENV/bin/pip install -q --no-index --find-links "$SRC/vagrant/.wheels" argoctl
else
    $VENV/bin/pip install -q --upgrade "$SRC"
fi
ln -sf $VENV/bin/argoctl /usr/local/bin/argoctl
install -d -m 0755 /etc/iproute2/rt_protos.d
install -m 0644 "$SRC/contrib/rt_protos.d/argoctl.conf" /etc/iproute2/rt_protos.d/argoctl.conf

# -- this host's config: the same generator the tests run ---------------------
lanif=-
if [ "$LAN_ADDR" != - ]; then
    lanif=$(ip -o -4 addr show to "$LAN_ADDR/32" | awk '{print $2; exit}')
    [ -n "$lanif" ] || { echo "no interface holds $LAN_ADDR" >&2; exit 1; }
fi
ARGOCTL_RELAYS=${ARGOCTL_RELAYS:-} sh "$SRC/vagrant/lab-config.sh" "$HOST" "$TUNNEL" "$lanif" $ETC

if [ "$ROLE" = origin ]; then
    # The responder answers edge's probes; the echo service is the lab's
    # traffic target (vagrant/lab_vm.py, what `make demo` runs on its origin).
    install -m 0644 "$SRC/vagrant/argoctl-responder.service" "$SRC/vagrant/argoctl-lab-echo.service" \
        /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable argoctl-responder.service argoctl-lab-echo.service
    systemctl restart argoctl-responder.service argoctl-lab-echo.service
else
    install -m 0644 "$SRC/contrib/argoctl.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable argoctl.service
    systemctl restart argoctl.service
fi
