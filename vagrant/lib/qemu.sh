# shellcheck shell=bash
# Boot, reach and stop a VM of the kernel matrix under qemu (TCG). Source after
# common.sh.

VM_MEMORY=${VM_MEMORY:-1536}
VM_CPUS=${VM_CPUS:-1}
VM_BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-300}

# vm_start ROW DIR [EXTRA_QEMU_ARGS...]: boots a copy-on-write overlay of the
# row's image; state (overlay, pid, port, console log) in DIR. Sets VM_PORT.
vm_start() {
	local row=$1 dir=$2
	shift 2
	local img=$AARSM_VM_CACHE/images/$row
	[ -f "$img/disk.qcow2" ] || die "$row: no image in $img (run vagrant/build-image.sh $row)"
	mkdir -p "$dir"
	qemu-img create -q -f qcow2 -F qcow2 -b "$img/disk.qcow2" "$dir/disk.qcow2"
	VM_PORT=$(free_port)
	echo "$VM_PORT" >"$dir/port"
	# restrict=on: the guest reaches no network; the 127.0.0.1 forward to its
	# sshd still works.
	qemu-system-x86_64 -name "aarsm-$row" \
		-accel tcg,thread=multi -cpu max -smp "$VM_CPUS" -m "$VM_MEMORY" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=false" \
		-drive "file=$dir/disk.qcow2,if=virtio,format=qcow2,discard=unmap" \
		-netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$VM_PORT-:22" \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
		-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
		"$@" \
		-display none -serial "file:$dir/console.log" -monitor none \
		-daemonize -pidfile "$dir/qemu.pid" ||
		die "$row: qemu failed to start"
}

# vm_ssh DIR CMD...: runs CMD in the VM as root.
vm_ssh() {
	local dir=$1
	shift
	ssh "${SSH_OPTS[@]}" -i "$(ssh_key)" -p "$(cat "$dir/port")" root@127.0.0.1 "$@"
}

# vm_wait_ssh ROW DIR: waits until sshd answers.
vm_wait_ssh() {
	local row=$1 dir=$2 deadline=$((SECONDS + VM_BOOT_TIMEOUT))
	while ! vm_ssh "$dir" true 2>/dev/null; do
		if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$dir/qemu.pid" 2>/dev/null)" 2>/dev/null; then
			tail -n 20 "$dir/console.log" >&2 || true
			die "$row: no SSH after ${VM_BOOT_TIMEOUT} s (console: $dir/console.log)"
		fi
		sleep 2
	done
}

# vm_stop DIR: powers the VM off, and kills its qemu (by pid) if it lingers.
vm_stop() {
	local dir=$1 pid i
	[ -f "$dir/qemu.pid" ] || return 0
	pid=$(cat "$dir/qemu.pid")
	kill -0 "$pid" 2>/dev/null || return 0
	vm_ssh "$dir" 'systemctl poweroff' >/dev/null 2>&1 || true
	for ((i = 0; i < 60; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.5
	done
	kill "$pid" 2>/dev/null || true
	sleep 1
	kill -9 "$pid" 2>/dev/null || true
}
