#!/usr/bin/env bash
# vagrant-test.sh [ROW...] — the Vagrant proof: build the row's box, then
# `vagrant up ROW` (vagrant-libvirt: create, boot, provision with the aarsm
# role, run scenario.sh) and `vagrant destroy -f ROW`, timing each step.
# Default row: bookworm.
#
# libvirtd and virtlogd are started by this script (PID 1 need not be
# systemd) inside private network and mount namespaces: a copy of
# /etc/libvirt, private /run/libvirt, /var/lib/libvirt and /var/log/libvirt,
# and a qemu.conf that runs qemu as root (the images live under the cache in
# $HOME). Nothing is left on the host's libvirt configuration; the daemons,
# dnsmasq and any qemu are killed by PID at the end. Needs root and the
# packages vagrant, vagrant-libvirt, libvirt-daemon-system, dnsmasq-base.
#
# Environment: AARSM_PACKAGE or VM_PACKAGE (.deb; default newest dist/aarsm_*_amd64.deb),
# AARSM_VM_CACHE, VM_KEEP=1 (keep the private libvirt state directory).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
LOG_TAG=vagrant-test

ROWS=${*:-bookworm}
if [ "${AARSM_IN_NETNS:-}" != 1 ]; then
	[ "$(id -u)" = 0 ] || die "run as root"
	need vagrant virsh libvirtd virtlogd dnsmasq unshare qemu-system-x86_64 ansible-playbook
	vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt || die "the vagrant-libvirt plugin is missing (apt-get install vagrant-libvirt)"
	PKG=${AARSM_PACKAGE:-${VM_PACKAGE:-$(ls -t "$AARSM_REPO_DIR"/dist/aarsm_*_amd64.deb 2>/dev/null | head -n1 || true)}}
	[ -n "$PKG" ] && [ -f "$PKG" ] || die "no package: build it with 'make packages' or set AARSM_PACKAGE"
	export AARSM_PACKAGE
	AARSM_PACKAGE=$(cd "$(dirname "$PKG")" && pwd)/$(basename "$PKG")
	T=$SECONDS
	# Outside the namespaces: building needs the mirror.
	# shellcheck disable=SC2086
	"$AARSM_VAGRANT_DIR/build-box.sh" $ROWS
	log "boxes ready in $((SECONDS - T)) s"
	export AARSM_IN_NETNS=1 AARSM_VM_CACHE
	exec unshare --net --mount --propagation private -- "$0" "$@"
fi

# Inside the private namespaces from here on.
STATE=$(mktemp -d "${TMPDIR:-/tmp}/aarsm-vagrant.XXXXXX")
PIDS=()
stop_all() {
	local f p
	if [ -S /run/libvirt/libvirt-sock ]; then
		for d in $(virsh list --name 2>/dev/null); do virsh destroy "$d" >/dev/null 2>&1 || true; done
		for n in $(virsh net-list --name 2>/dev/null); do virsh net-destroy "$n" >/dev/null 2>&1 || true; done
	fi
	# dnsmasq and qemu started by libvirtd, then the daemons themselves.
	for f in /run/libvirt/network/*.pid /var/lib/libvirt/dnsmasq/*.pid /run/libvirt/qemu/*.pid "$STATE"/libvirtd.pid "$STATE"/virtlogd.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f" 2>/dev/null || true)
		[ -n "$p" ] && kill "$p" 2>/dev/null && log "stopped pid $p ($(basename "$f"))"
	done
	sleep 1
	if [ "${VM_KEEP:-0}" = 1 ]; then log "libvirt state kept in $STATE"; else rm -rf "$STATE"; fi
}
trap stop_all EXIT

ip link set lo up
# Private libvirt configuration and state.
mkdir -p "$STATE/etc" "$STATE/run" "$STATE/lib" "$STATE/log"
cp -a /etc/libvirt "$STATE/etc/libvirt"
rm -f "$STATE"/etc/libvirt/qemu/networks/autostart/*.xml
cat >>"$STATE/etc/libvirt/qemu.conf" <<'CONF'

# aarsm vagrant-test.sh: the images are under $HOME; run qemu as root.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
CONF
mount --bind "$STATE/etc/libvirt" /etc/libvirt
mount --bind "$STATE/run" /run/libvirt 2>/dev/null || { mkdir -p /run/libvirt && mount --bind "$STATE/run" /run/libvirt; }
mkdir -p /var/lib/libvirt /var/log/libvirt
cp -a /var/lib/libvirt/. "$STATE/lib/" 2>/dev/null || true
mount --bind "$STATE/lib" /var/lib/libvirt
mount --bind "$STATE/log" /var/log/libvirt

T0=$SECONDS
virtlogd --daemon --pid-file "$STATE/virtlogd.pid"
libvirtd --daemon --pid-file "$STATE/libvirtd.pid"
for ((i = 0; i < 100; i++)); do
	virsh -c qemu:///system version >/dev/null 2>&1 && break
	sleep 0.2
done
virsh -c qemu:///system version >/dev/null 2>&1 || die "libvirtd did not start"
log "libvirtd and virtlogd up in $((SECONDS - T0)) s"

pool=aarsm
mkdir -p "$AARSM_VM_CACHE/libvirt-pool"
virsh pool-define-as "$pool" dir --target "$AARSM_VM_CACHE/libvirt-pool" >/dev/null
virsh pool-start "$pool" >/dev/null
export AARSM_VAGRANT_POOL=$pool VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt

cd "$AARSM_VAGRANT_DIR"
status=0
for row in $ROWS; do
	box=aarsm/debian-$row
	t=$SECONDS
	vagrant box add --force --name "$box" "$AARSM_VM_CACHE/boxes/aarsm-debian-$row.box" >/dev/null
	# A box re-added must not reuse the pool's stale copy of the old one.
	for v in $(virsh vol-list "$pool" | awk -v b="aarsm-VAGRANTSLASH-debian-$row" '$1 ~ "^" b "_vagrant_box_image" {print $1}'); do
		virsh vol-delete --pool "$pool" "$v" >/dev/null
	done
	log "$row: box added in $((SECONDS - t)) s"
	t=$SECONDS
	if vagrant up "$row" --provider=libvirt 2>&1 | tee "$STATE/up-$row.log" | sed "s/^/[$row] /"; then
		up=$((SECONDS - t))
		if grep -q '^ *result=pass' "$STATE/up-$row.log" || grep -q 'result=pass' "$STATE/up-$row.log"; then
			res=pass
		else
			res=fail status=1
		fi
	else
		up=$((SECONDS - t)) res=fail status=1
	fi
	t=$SECONDS
	vagrant destroy -f "$row" >/dev/null 2>&1 || status=1
	log "$row: vagrant up (create + boot + provision + check) ${up} s, destroy $((SECONDS - t)) s, result=$res"
	printf 'row=%s\nvagrant_up_seconds=%s\ndestroy_seconds=%s\nresult=%s\n' "$row" "$up" "$((SECONDS - t))" "$res"
done
log "total $((SECONDS - T0)) s (after the boxes)"
exit $status
