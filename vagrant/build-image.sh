#!/usr/bin/env bash
# build-image.sh ROW... — build (or reuse) the disk image of a row of the
# kernel matrix: a Debian root file system made by mmdebstrap from the mirror
# this machine's apt uses, as a qcow2 without a boot loader, plus the kernel
# and initrd copied out of it for direct kernel boot.
#
#   $AARSM_VM_CACHE/images/ROW/disk.qcow2  vmlinuz  initrd.img  manifest
#
# An image is reused while the manifest's recipe hash matches this script;
# AARSM_VM_REBUILD=1 forces a new build. Needs root (mmdebstrap --mode=root).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
LOG_TAG=image

# Packages of every image: what Ansible needs (python3, python3-apt for
# apt deb=), the journal forwarding (systemd-journal-remote: the VMs are
# offline, so whatever the role installs must already be there) and the
# end-to-end scenario (curl, openssl).
PACKAGES=systemd,systemd-sysv,dbus,udev,iproute2,procps,openssh-server,python3,python3-apt,initramfs-tools,zstd,systemd-journal-remote,curl,openssl,ca-certificates
DISK_SIZE=${AARSM_VM_DISK_SIZE:-4G}

recipe_hash() {
	{
		cat "$0" "$AARSM_VAGRANT_DIR/lib/customize.sh"
		echo "$SUITE $KERNEL_PKG $SECURITY $PACKAGES $DISK_SIZE"
	} | sha256sum | cut -c1-16
}

build_one() {
	local row=$1
	row_def "$row"
	local dir=$AARSM_VM_CACHE/images/$row hash
	hash=$(recipe_hash)
	if [ "${AARSM_VM_REBUILD:-0}" != 1 ] && [ -f "$dir/manifest" ] && grep -qx "recipe=$hash" "$dir/manifest"; then
		log "$row: cached image $dir ($(sed -n 's/^kernel=//p' "$dir/manifest"))"
		return 0
	fi
	[ "$(id -u)" = 0 ] || die "building an image needs root (mmdebstrap --mode=root, mkfs.ext4 -d)"
	need mmdebstrap mkfs.ext4 qemu-img ssh-keygen
	mirrors
	local key tmp start
	key=$(ssh_key)
	start=$(date +%s)
	mkdir -p "$AARSM_VM_CACHE/images"
	tmp=$(mktemp -d "$AARSM_VM_CACHE/images/.build-$row.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	local sources=("deb $MIRROR $SUITE main")
	[ "$SECURITY" = yes ] && sources+=("deb $SECURITY_MIRROR $SUITE-security main")
	log "$row: mmdebstrap $SUITE + $KERNEL_PKG from $MIRROR (security suite: $SECURITY)"
	mmdebstrap --mode=root --variant=apt --format=directory \
		--include="$PACKAGES,$KERNEL_PKG" \
		--aptopt='Acquire::Languages "none"' \
		--aptopt='APT::Install-Recommends "false"' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook="$AARSM_VAGRANT_DIR/lib/customize.sh \"\$1\" $row $key.pub" \
		"$SUITE" "$tmp/root" "${sources[@]}" \
		>"$tmp/mmdebstrap.log" 2>&1 || { tail -n 30 "$tmp/mmdebstrap.log" >&2; die "$row: mmdebstrap failed"; }

	local vmlinuz initrd kver
	vmlinuz=$(find "$tmp/root/boot" -name 'vmlinuz-*' | sort -V | tail -n1)
	initrd=$(find "$tmp/root/boot" -name 'initrd.img-*' | sort -V | tail -n1)
	[ -n "$vmlinuz" ] && [ -n "$initrd" ] || die "$row: no kernel or initrd in the image"
	kver=${vmlinuz##*/vmlinuz-}
	cp "$vmlinuz" "$tmp/vmlinuz"
	cp "$initrd" "$tmp/initrd.img"
	log "$row: kernel $kver; making the disk"
	mkfs.ext4 -q -F -L aarsm-root -d "$tmp/root" "$tmp/disk.raw" "$DISK_SIZE"
	qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$tmp/disk.qcow2"
	rm -rf "$tmp/root" "$tmp/disk.raw"
	cat >"$tmp/manifest" <<-MANIFEST
		row=$row
		suite=$SUITE
		kernel=$kver
		kernel_package=$KERNEL_PKG
		recipe=$hash
		built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
		build_seconds=$(($(date +%s) - start))
	MANIFEST
	rm -rf "$dir"
	mkdir -p "$dir"
	mv "$tmp/disk.qcow2" "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/manifest" "$dir/"
	rm -rf "$tmp"
	trap - EXIT
	log "$row: built $dir in $(($(date +%s) - start)) s"
}

[ $# -gt 0 ] || die "usage: $0 ROW... (rows: ${AARSM_ALL_ROWS% host})"
failed=""
for row in "$@"; do
	[ "$row" = host ] && continue
	(build_one "$row") || failed="$failed $row"
done
[ -z "$failed" ] || die "failed:$failed"
