#!/usr/bin/env bash
# build-box.sh ROW... — make a vagrant-libvirt box of a Debian row of the
# kernel matrix from its image (built by build-image.sh if needed):
#   $AARSM_VM_CACHE/boxes/aarsm-debian-ROW.box
# The box has no boot loader: the Vagrantfile boots the image's kernel and
# initrd ($AARSM_VM_CACHE/images/ROW/) directly. Add it with
#   vagrant box add --name aarsm/debian-ROW $AARSM_VM_CACHE/boxes/aarsm-debian-ROW.box
# (vagrant-test.sh does).
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
LOG_TAG=box

[ $# -gt 0 ] || die "usage: $0 ROW... (rows: ${AARSM_ALL_ROWS% host})"
need tar qemu-img
for row in "$@"; do
	[ "$row" = host ] && continue
	row_def "$row"
	"$AARSM_VAGRANT_DIR/build-image.sh" "$row"
	img=$AARSM_VM_CACHE/images/$row
	box=$AARSM_VM_CACHE/boxes/aarsm-debian-$row.box
	if [ -f "$box" ] && [ "$box" -nt "$img/manifest" ]; then
		log "$row: box up to date: $box"
		continue
	fi
	mkdir -p "$(dirname "$box")"
	tmp=$(mktemp -d "$AARSM_VM_CACHE/boxes/.box-$row.XXXXXX")
	size_gb=$(qemu-img info --output=json "$img/disk.qcow2" |
		python3 -c 'import json,sys; print(-(-json.load(sys.stdin)["virtual-size"] // 2**30))')
	cp "$img/disk.qcow2" "$tmp/box.img"
	printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$size_gb" >"$tmp/metadata.json"
	cat >"$tmp/Vagrantfile" <<-'VF'
		# The AARSM matrix box: root login with the matrix key, no boot loader
		# (the project's Vagrantfile sets kernel, initrd and cmd_line).
		Vagrant.configure("2") do |config|
		  config.ssh.username = "root"
		  config.ssh.insert_key = false
		  config.ssh.sudo_command = "%c"
		  config.vm.synced_folder ".", "/vagrant", disabled: true
		end
	VF
	tar -C "$tmp" -cf "$box.tmp" metadata.json Vagrantfile box.img
	mv "$box.tmp" "$box"
	rm -rf "$tmp"
	log "$row: $box ($(du -h "$box" | cut -f1))"
done
