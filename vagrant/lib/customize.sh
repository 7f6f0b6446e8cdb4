#!/usr/bin/env bash
# customize.sh ROOT ROW PUBKEY — mmdebstrap customize hook: make the root file
# system bootable under qemu/libvirt (direct kernel boot, /dev/vda), reachable
# by SSH as root with PUBKEY, with DHCP on the first NIC and nothing slow at boot.
set -euo pipefail
root=$1 row=$2 pubkey=$3

echo "aarsm-${row//./-}" >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "aarsm-${row//./-}" >"$root/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' >"$root/etc/fstab"

# Every VM gets its own machine id at first boot (the journal files of the
# fleet are told apart by it).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

mkdir -p "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/50-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
NET

install -d -m 700 "$root/root/.ssh"
install -m 600 "$pubkey" "$root/root/.ssh/authorized_keys"
mkdir -p "$root/var/log/journal"

chroot "$root" systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# Nothing in the VMs reaches a network: keep timers and waits from trying.
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
	systemd-networkd-wait-online.service systemd-timesyncd.service; do
	chroot "$root" systemctl mask "$u" >/dev/null 2>&1 || true
done
# journal-remote's socket is enabled by the package; the role turns it on
# where wanted.
chroot "$root" systemctl disable systemd-journal-remote.socket >/dev/null 2>&1 || true
# Clean apt lists: the VMs are offline and install only local packages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
