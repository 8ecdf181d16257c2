#!/usr/bin/env bash
# Build the argoctl lab's Vagrant box for vagrant-libvirt from Debian's packages
# alone (docs/vagrant.md): debootstrap a Debian 12 root with everything argoctl
# needs in a VM that has no internet (bcc, nftables bindings, kernel headers for
# bcc, python3-venv), copy it into an ext4 image, convert to qcow2, and pack it
# with the kernel and initrd (the box boots them directly: no bootloader in the
# image). Then `vagrant box add` it into $VAGRANT_HOME. Root (debootstrap, chroot).
#
#   scripts/vagrant-box.sh OUT_DIR            env VAGRANT_HOME, ARGOCTL_BOX_NAME
#
# Cached: OUT_DIR/argoctl-bookworm.box is built only when missing, and added
# only when `vagrant box list` lacks it.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: vagrant-box.sh OUT_DIR}")
NAME=${ARGOCTL_BOX_NAME:-argoctl/bookworm}
BOX=$OUT/argoctl-bookworm.box
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
: "${VAGRANT_HOME:?set VAGRANT_HOME (the Makefile does)}"
export VAGRANT_CHECKPOINT_DISABLE=1 DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" = 0 ] || { echo "vagrant-box: must run as root (debootstrap)" >&2; exit 1; }

# Everything a lab VM runs, from Debian: the rest (argoctl and its PyPI
# dependencies) comes as wheels built on the host at provisioning time.
PKGS=(linux-image-amd64 linux-headers-amd64 systemd-sysv udev dbus openssh-server sudo
      rsync iproute2 iputils-ping procps kmod nftables wireguard-tools netbase less iperf3
      python3 python3-venv python3-pip python3-bpfcc python3-nftables)

build() {
    local work=$OUT/box-work root
    # An interrupted debootstrap can leave /proc or /sys mounted in the root.
    { grep -o " $work/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work"
    root=$work/root
    mkdir -p "$root" "$OUT/debs"
    local t0=$SECONDS
    echo "vagrant-box: debootstrap bookworm (${#PKGS[@]} packages and their dependencies)"
    debootstrap --variant=minbase --cache-dir="$OUT/debs" \
        --include="$(IFS=,; echo "${PKGS[*]}")" bookworm "$root" "$MIRROR" \
        > "$OUT/debootstrap.log" 2>&1 || { tail -30 "$OUT/debootstrap.log" >&2; exit 1; }
    echo "vagrant-box: debootstrap took $((SECONDS - t0)) s"

    # -- the guest's configuration ---------------------------------------------
    echo argoctl-box > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 argoctl-box\n' > "$root/etc/hosts"
    echo 'LABEL=argoctl-root / ext4 defaults,noatime 0 1' > "$root/etc/fstab"
    # The first NIC is Vagrant's management network (DHCP); Vagrant writes
    # networkd files for the private networks itself (its Debian guest
    # plugin does, when systemd-networkd is active).
    cat > "$root/etc/systemd/network/99-management.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4

[DHCPv4]
# Every VM of a box starts alike: ask by MAC, not by a machine-derived DUID.
ClientIdentifier=mac
EOF
    # Each VM makes its own machine-id at first boot (DHCP leases, journal).
    : > "$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
    # Nothing waits for links Vagrant has not configured yet.
    chroot "$root" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
    # Each VM gets its own host keys, made at first boot (not shared by all boxes).
    rm -f "$root"/etc/ssh/ssh_host_*
    cat > "$root/etc/systemd/system/ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
RequiredBy=ssh.service
EOF
    chroot "$root" systemctl enable ssh-hostkeys.service >/dev/null 2>&1
    echo 'UseDNS no' > "$root/etc/ssh/sshd_config.d/vagrant.conf"
    # The vagrant user with Vagrant's well-known key (replaced on first `vagrant up`).
    chroot "$root" useradd -m -s /bin/bash vagrant
    install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
    install -m 0600 -o 1000 -g 1000 "$(vagrant_pub)" "$root/home/vagrant/.ssh/authorized_keys"
    echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$root/etc/sudoers.d/vagrant"
    chmod 0440 "$root/etc/sudoers.d/vagrant"
    # No network to update from; do not try.
    chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
    # Minutes of a TCG boot for nothing a lab VM needs.
    chroot "$root" systemctl mask e2scrub_reap.service e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

    # -- image ------------------------------------------------------------------
    local kver
    kver=$(basename "$(ls -d "$root"/lib/modules/* | sort -V | tail -n1)")
    cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
    cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
    echo "vagrant-box: ext4 image (kernel $kver)"
    local size_mb=$(( $(du -sm "$root" | cut -f1) * 3 / 2 + 512 ))
    mkfs.ext4 -q -L argoctl-root -d "$root" "$work/root.raw" "${size_mb}M"
    qemu-img convert -O qcow2 "$work/root.raw" "$work/box.img"
    rm -f "$work/root.raw"
    local vsize_gb=$(( (size_mb + 1023) / 1024 ))
    printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$vsize_gb" \
        > "$work/metadata.json"
    # The box's own Vagrantfile: boot its kernel directly (no bootloader),
    # under plain qemu (TCG) unless the user's Vagrantfile says kvm.
    cat > "$work/Vagrantfile" <<'EOF'
# argoctl lab box (scripts/vagrant-box.sh): Debian 12, direct kernel boot.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    dir = File.dirname(__FILE__)
    lv.kernel = File.join(dir, "vmlinuz")
    lv.initrd = File.join(dir, "initrd.img")
    lv.cmd_line = "root=LABEL=argoctl-root rw console=ttyS0 net.ifnames=0 mitigations=off"
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
EOF
    tar -C "$work" -cf "$BOX.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img
    mv "$BOX.tmp" "$BOX"
    rm -rf "$work"
    echo "vagrant-box: $BOX ($(du -h "$BOX" | cut -f1)), built in $((SECONDS - t0)) s"
}

vagrant_pub() {
    # Debian's vagrant package ships Vagrant's insecure public key with the gem.
    ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub | sort -V | tail -n1
}

mkdir -p "$OUT"
built=0
if [ -f "$BOX" ]; then
    echo "vagrant-box: $BOX present (cached; delete it to rebuild)"
else
    build
    built=1
fi
if [ $built = 0 ] && vagrant box list 2>/dev/null | grep -q "^$NAME "; then
    echo "vagrant-box: $NAME already added to $VAGRANT_HOME"
else
    vagrant box add --force --name "$NAME" "$BOX"
fi
