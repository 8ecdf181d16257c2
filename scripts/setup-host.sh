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
# gcc, libc6-dev and python3-dev build the compiled probe path (argoctl/_echo.c);
# ethtool turns on the lab's threaded veth receive for `bench control`.
pkgs="python3-bpfcc python3-nftables python3-venv nftables iproute2 iputils-ping
      iperf3 tcpdump socat wireguard-tools kmod procps qemu-system-x86 busybox-static
      file gcc libc6-dev python3-dev ethtool make python3 systemd nats-server $kernel_pkgs"
# vagrant-libvirt recommends an NFS server and libguestfs: not needed to validate.
lean_pkgs="vagrant vagrant-libvirt"

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
    case " $missing " in
    *" nats-server "*)
        # fleet mode's tests and the lab start their own nats-server (loopback,
        # free ports) and stop it: the package's system service is not wanted
        if [ -d /run/systemd/system ]; then
            systemctl disable --now nats-server >/dev/null 2>&1 || true
        fi ;;
    esac
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
