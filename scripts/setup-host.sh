#!/usr/bin/env bash
# Host set-up for argoctl's test bed: Debian/Ubuntu packages (installed only when
# missing) and kernel headers for bcc on the running kernel. Root, non-interactive.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "setup-host: must run as root (apt-get, /lib/modules)" >&2
    exit 1
fi

. /etc/os-release
case "${ID:-}:${ID_LIKE:-}" in
    ubuntu:*|*:*ubuntu*) kernel_pkgs="linux-image-generic linux-headers-generic" ;;
    *) kernel_pkgs="linux-image-amd64 linux-headers-amd64" ;;
esac

# bcc + nftables bindings, the tools tests drive, what virtme-ng needs to boot
# the distribution kernel, and vagrant (+ its libvirt plugin, systemd-analyze) for
# the tests that validate the Vagrant lab offline. virtme-ng boots the kernel with
# qemu and a static busybox for its initramfs, and runs `file` to check that busybox
# is static (minimal images lack it: vng then dies with FileNotFoundError).
# gcc, libc6-dev and python3-dev build the compiled probe path (argoctl/_echo.c),
# libssl-dev gives it OpenSSL's HMAC-SHA256;
# ethtool turns on the lab's threaded veth receive for `bench control`.
# babeld and bird2 are the peers `bench peers` runs beside argoctl (lab namespaces only).
pkgs="python3-bpfcc python3-nftables python3-venv nftables iproute2 iputils-ping
      iperf3 tcpdump socat wireguard-tools kmod procps qemu-system-x86 busybox-static
      file gcc libc6-dev python3-dev libssl-dev ethtool make python3 systemd nats-server babeld bird2 $kernel_pkgs"
# These packages enable and start a system service on install; the tests, the lab
# and the benches start their own (loopback or lab namespaces) and stop them. One we
# install here is stopped and disabled again (package:service).
own_services="nats-server:nats-server babeld:babeld bird2:bird"
# vagrant-libvirt recommends an NFS server and libguestfs: not needed to validate.
lean_pkgs="vagrant vagrant-libvirt"
# `make vagrant-box` / `make vagrant-lab` (ARGOCTL_SETUP_VAGRANT_LAB=1) also boot
# the lab: debootstrap builds the box; libvirtd (no -system package: it would
# add a default network and services to the host) runs in the lab's own
# namespaces, with dnsmasq for the management network's DHCP and iptables for
# libvirt's network rules there (and iptables-save for the root-namespace check).
if [ "${ARGOCTL_SETUP_VAGRANT_LAB:-0}" = 1 ]; then
    lean_pkgs="$lean_pkgs debootstrap libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
               dnsmasq-base iptables rsync openssh-client qemu-utils e2fsprogs"
fi

missing_of() {
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

# shellcheck disable=SC2086
missing=$(missing_of $pkgs)
# shellcheck disable=SC2086
missing_lean=$(missing_of $lean_pkgs)
if [ -n "$missing$missing_lean" ]; then
    echo "setup-host: installing:" $missing $missing_lean
    apt-get update -q </dev/null
    opts="-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
    # shellcheck disable=SC2086
    [ -z "$missing" ] || apt-get install $opts $missing </dev/null
    # shellcheck disable=SC2086
    [ -z "$missing_lean" ] || apt-get install $opts --no-install-recommends $missing_lean </dev/null
    for ps in $own_services; do
        case " $(echo $missing) " in
            *" ${ps%%:*} "*)
                svc=${ps#*:}
                if [ -d /run/systemd/system ]; then
                    systemctl disable --now "$svc" >/dev/null 2>&1 || true
                else
                    update-rc.d "$svc" disable >/dev/null 2>&1 || true
                    invoke-rc.d "$svc" stop >/dev/null 2>&1 || true
                fi ;;
        esac
    done
else
    echo "setup-host: all packages present"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. A kernel without its own
# headers package (a cloud/VM kernel) gets the distribution's headers: fine for the
# networking programs argoctl loads (they use stable UAPI structs).
kver=$(uname -r)
if [ ! -e "/lib/modules/$kver/build" ]; then
    build=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$build" ]; then
        echo "setup-host: no /usr/src/linux-headers-* found for bcc" >&2
        exit 1
    fi
    case "$build" in
        *-amd64) common="${build%-amd64}-common" ;;    # Debian: -amd64 + -common
        *-generic) common="${build%-generic}" ;;       # Ubuntu: -generic + plain
    esac
    mkdir -p "/lib/modules/$kver"
    ln -sfn "$build" "/lib/modules/$kver/build"
    [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$kver/source"
    echo "setup-host: /lib/modules/$kver/build -> $build"
fi
