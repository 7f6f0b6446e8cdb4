#!/usr/bin/env bash
# journal-test.sh — proves the role's journal forwarding with two VMs of one
# row (default bookworm): "central" gets aarsm_journal_remote (collector,
# plain http on the private link), "agent" gets the agent and
# aarsm_journal_upload. On "agent", aarsm.service (started by the role,
# enforcing: test-vars.yml) blocks the backdoored mail of scenario.sh's
# postmark scenario; the test reads the agent's real verdict back on the
# central VM with journalctl -D /var/log/journal/remote.
#
# The two VMs share a private link: qemu's UDP socket netdev between two
# 127.0.0.1 ports (no host interface, no route out), with link-local
# addresses 169.254.77.1 (agent) and 169.254.77.2 (central). Their first NIC
# is restrict=on user networking for SSH only.
#
# Environment: ROW (default bookworm), VM_PACKAGE, VM_KEEP, AARSM_VM_CACHE.
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
. "$AARSM_VAGRANT_DIR/lib/qemu.sh"
LOG_TAG=journal-test

ROW=${ROW:-bookworm}
row_def "$ROW"
if [ -z "${VM_PACKAGE:-}" ]; then
	VM_PACKAGE=$(ls -t "$AARSM_REPO_DIR"/dist/aarsm_*_amd64.deb 2>/dev/null | head -n1 || true)
fi
[ -n "$VM_PACKAGE" ] && [ -f "$VM_PACKAGE" ] || die "no package: build it with 'make packages' or set VM_PACKAGE"
VM_PACKAGE=$(cd "$(dirname "$VM_PACKAGE")" && pwd)/$(basename "$VM_PACKAGE")
need qemu-system-x86_64 qemu-img ssh ansible-playbook python3
export VM_CPUS=${VM_CPUS:-1}

RUN=$(mktemp -d "${TMPDIR:-/tmp}/aarsm-journal-test.XXXXXX")
cleanup() {
	vm_stop "$RUN/agent" || true
	vm_stop "$RUN/central" || true
	if [ "${VM_KEEP:-0}" = 1 ]; then log "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$SECONDS
"$AARSM_VAGRANT_DIR/build-image.sh" "$ROW"
PA=$(free_port) PB=$(free_port)
vm_start "$ROW" "$RUN/agent" -netdev "socket,id=link,udp=127.0.0.1:$PB,localaddr=127.0.0.1:$PA" \
	-device virtio-net-pci,netdev=link,mac=52:54:00:aa:77:01
vm_start "$ROW" "$RUN/central" -netdev "socket,id=link,udp=127.0.0.1:$PA,localaddr=127.0.0.1:$PB" \
	-device virtio-net-pci,netdev=link,mac=52:54:00:aa:77:02
vm_wait_ssh "$ROW" "$RUN/agent"
vm_wait_ssh "$ROW" "$RUN/central"
log "both VMs up in $((SECONDS - T0)) s"

# link_up DIR NAME N: hostname NAME, 169.254.77.N on the NIC with MAC ...:0N.
link_up() {
	vm_ssh "$1" bash -s "$2" "$3" <<-'SH'
		set -euo pipefail
		hostnamectl set-hostname "$1"
		cat >/etc/systemd/network/05-aarsm-link.network <<NET
		[Match]
		MACAddress=52:54:00:aa:77:0$2
		[Network]
		Address=169.254.77.$2/16
		LinkLocalAddressing=no
		NET
		networkctl reload
		dev=$(ip -o link | awk -v m="52:54:00:aa:77:0$2" '$0 ~ m {sub(":", "", $2); print $2}')
		networkctl reconfigure "$dev"
		for i in $(seq 50); do ip -4 -o addr show dev "$dev" | grep -q 169.254.77 && exit 0; sleep 0.2; done
		echo "no address on $dev" >&2; exit 1
	SH
}
link_up "$RUN/agent" aarsm-agent 1
link_up "$RUN/central" aarsm-central 2

inv=$RUN/inventory.ini
common="ansible_host=127.0.0.1 ansible_user=root ansible_ssh_private_key_file=$(ssh_key) ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes'"
cat >"$inv" <<INV
[agents]
agent ansible_port=$(cat "$RUN/agent/port") $common aarsm_journal_upload=true aarsm_journal_upload_url=http://169.254.77.2:19532

[journal_central]
central ansible_port=$(cat "$RUN/central/port") $common aarsm_manage_agent=false aarsm_journal_remote=true aarsm_journal_remote_listen=http
INV

playbook() {
	ANSIBLE_CONFIG=$AARSM_REPO_DIR/ansible/ansible.cfg ANSIBLE_NOCOLOR=1 \
		ansible-playbook -i "$inv" "$AARSM_REPO_DIR/ansible/site.yml" \
		-e "@$AARSM_VAGRANT_DIR/test-vars.yml" -e "aarsm_package_file=$VM_PACKAGE" >"$RUN/ansible-$1.log" 2>&1 ||
		{ tail -n 40 "$RUN/ansible-$1.log" >&2; die "playbook failed ($RUN/ansible-$1.log)"; }
	sed -n '/^PLAY RECAP/,$p' "$RUN/ansible-$1.log" | grep 'ok=' >&2
}
t=$SECONDS
playbook apply
log "playbook in $((SECONDS - t)) s"
t=$SECONDS
playbook again
grep -A3 '^PLAY RECAP' "$RUN/ansible-again.log" | grep -q 'changed=[1-9]' && die "second run changed something ($RUN/ansible-again.log)"
log "second run: changed=0 ($((SECONDS - t)) s)"

log "agent: the postmark scenario (the agent blocks the backdoored mail)"
scp -q "${SSH_OPTS[@]}" -i "$(ssh_key)" -P "$(cat "$RUN/agent/port")" "$AARSM_VAGRANT_DIR/scenario.sh" root@127.0.0.1:/root/scenario.sh
vm_ssh "$RUN/agent" "bash /root/scenario.sh postmark" >"$RUN/scenario.out" 2>"$RUN/scenario.err" || {
	cat "$RUN/scenario.out" "$RUN/scenario.err" >&2
	die "the postmark scenario failed on the agent VM"
}
grep -E '^(leaked|delivered|verdict_found)=' "$RUN/scenario.out" | tr '\n' ' ' >&2
echo >&2
t=$SECONDS
found=""
query="journalctl -D /var/log/journal/remote _HOSTNAME=aarsm-agent AARSM_VERDICT=block -o json --no-pager"
while [ $((SECONDS - t)) -lt 90 ]; do
	found=$(vm_ssh "$RUN/central" "$query" 2>/dev/null | grep 'phan@giftshop.club' || true)
	[ -n "$found" ] && break
	sleep 2
done
[ -n "$found" ] || {
	vm_ssh "$RUN/agent" 'systemctl status systemd-journal-upload --no-pager; journalctl -u systemd-journal-upload --no-pager | tail -20' >&2 || true
	vm_ssh "$RUN/central" 'systemctl status systemd-journal-remote.socket systemd-journal-remote --no-pager; ls -la /var/log/journal/remote' >&2 || true
	die "the verdict did not reach the collector within 90 s"
}
log "found on the collector after $((SECONDS - t)) s:"
vm_ssh "$RUN/central" "journalctl -D /var/log/journal/remote AARSM_VERDICT=block -o verbose --no-pager --output-fields=_HOSTNAME,_SYSTEMD_UNIT,MESSAGE,AARSM_VERDICT,AARSM_ACTIONS,AARSM_ACTION_DETAILS,AARSM_POLICY,AARSM_RULES,AARSM_VIOLATIONS,AARSM_UNIT; ls /var/log/journal/remote" >&2
printf 'forwarded=yes\nsource_host=%s\nseconds_to_collector=%s\ntotal_seconds=%s\n' \
	"$(printf '%s\n' "$found" | head -n1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["_HOSTNAME"])')" \
	"$((SECONDS - t))" "$((SECONDS - T0))"
