#!/usr/bin/env bash
# vm-test.sh — run the kernel matrix: for each row, boot the row's image under
# qemu (TCG, direct kernel boot, a qcow2 overlay, no network but a 127.0.0.1
# SSH forward), roll the aarsm role out with ansible-playbook (check mode on
# the fresh VM, the real run, a second run that must change nothing), run
# vagrant/scenario.sh inside and print one row per kernel. The "host" row runs
# the scenario on this machine's kernel, without a VM and without Ansible.
#
# Environment (vagrant/vm.mk passes them through):
#   KERNELS         rows to run (default: every row: bullseye bookworm bookworm-6.12 trixie host)
#   VM_PACKAGE      the .deb to install (default: the newest dist/aarsm_*_amd64.deb)
#   VM_JOBS         rows run at once (default 1)
#   VM_SERVICE      started (default: the role enables and starts aarsm.service) or stopped
#   VM_SCENARIO     the scenario.sh scenario (default postmark; trace needs no service)
#   VM_IDEMPOTENCE  1 (default): also the check-mode run and the second run
#   VM_KEEP         1: leave the run directory (logs, overlays) in place
#   AARSM_VM_CACHE  images, key and runs (default ~/.cache/aarsm-vm)
set -euo pipefail
. "$(dirname "$0")/lib/common.sh"
. "$AARSM_VAGRANT_DIR/lib/qemu.sh"
LOG_TAG=vm-test

KERNELS=${KERNELS:-$AARSM_ALL_ROWS}
VM_JOBS=${VM_JOBS:-1}
VM_SERVICE=${VM_SERVICE:-started}
VM_SCENARIO=${VM_SCENARIO:-postmark}
VM_IDEMPOTENCE=${VM_IDEMPOTENCE:-1}
# One row alone gets both CPUs; rows in parallel one each.
if [ "$VM_JOBS" -gt 1 ]; then VM_CPUS=${VM_CPUS:-1}; else VM_CPUS=${VM_CPUS:-2}; fi
export VM_CPUS

if [ -z "${VM_PACKAGE:-}" ]; then
	VM_PACKAGE=$(ls -t "$AARSM_REPO_DIR"/dist/aarsm_*_amd64.deb 2>/dev/null | head -n1 || true)
fi
[ -n "$VM_PACKAGE" ] && [ -f "$VM_PACKAGE" ] || die "no package: build it with 'make packages' or set VM_PACKAGE=path/to/aarsm_VERSION_amd64.deb"
VM_PACKAGE=$(cd "$(dirname "$VM_PACKAGE")" && pwd)/$(basename "$VM_PACKAGE")
case $VM_SERVICE in started | stopped) ;; *) die "VM_SERVICE must be started or stopped" ;; esac
[ "$(id -u)" = 0 ] || die "run as root (image builds, the host row's probes)"
need qemu-system-x86_64 qemu-img ssh ansible-playbook python3 dpkg-deb

RUN=$(mktemp -d "${TMPDIR:-/tmp}/aarsm-vm-test.XXXXXX")
cleanup() {
	local d
	for d in "$RUN"/*/; do [ -d "$d" ] && vm_stop "$d"; done
	if [ "${VM_KEEP:-0}" = 1 ]; then log "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# recap LOG: "changed failed" summed over the PLAY RECAP lines of LOG.
recap() {
	awk '/^PLAY RECAP/ {r=1; next} r && /ok=/ {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "changed") c += kv[2];
		if (kv[1] == "failed" || kv[1] == "unreachable") f += kv[2] } }
		END { printf "%d %d\n", c, f }' "$1"
}

# playbook ROW DIR NAME [ARGS...]: one ansible-playbook run; prints "changed failed".
playbook() {
	local row=$1 dir=$2 name=$3
	shift 3
	ANSIBLE_CONFIG=$AARSM_REPO_DIR/ansible/ansible.cfg ANSIBLE_NOCOLOR=1 \
		ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks PROFILE_TASKS_SORT_ORDER=none \
		ansible-playbook -i "$dir/inventory.ini" "$AARSM_REPO_DIR/ansible/site.yml" \
		-e "@$AARSM_VAGRANT_DIR/test-vars.yml" -e "aarsm_package_file=$VM_PACKAGE" \
		-e "aarsm_service_state=$VM_SERVICE" -e "aarsm_service_enabled=$([ "$VM_SERVICE" = started ] && echo true || echo false)" \
		"$@" >"$dir/ansible-$name.log" 2>&1 || true
	recap "$dir/ansible-$name.log"
}

# agent_journal DIR: the agent's journal of this boot into DIR/aarsm-journal.log.
agent_journal() {
	vm_ssh "$1" 'journalctl -u aarsm.service -b --no-pager -o short-monotonic' >"$1/aarsm-journal.log" 2>&1 || true
}

# agent_error DIR: "; agent: LINE" with the agent's last fatal line (e.g. a
# verifier error's last line), or nothing.
agent_error() {
	local l
	l=$(grep -E 'aarsm run: |unknown func|invalid argument|permission denied' "$1/aarsm-journal.log" 2>/dev/null | tail -n1 | sed 's/^.*aarsm\[[0-9]*\]: //' | cut -c1-200)
	[ -z "$l" ] || printf '; agent: %s (aarsm-journal.log)' "$l"
}

# run_vm_row ROW: writes $RUN/ROW/result (key=value).
run_vm_row() {
	local row=$1 dir=$RUN/$1 t0=$SECONDS t c f
	local LOG_TAG=$row
	mkdir -p "$dir"
	local res=$dir/result
	{
		echo "row=$row"
		echo "result=fail"
	} >"$res"
	t=$SECONDS
	"$AARSM_VAGRANT_DIR/build-image.sh" "$row" 2>"$dir/image.log" || { log "image build failed: $dir/image.log"; cat "$dir/image.log" >&2; echo "reason=image build failed" >>"$res"; return 1; }
	echo "t_image=$((SECONDS - t))" >>"$res"
	t=$SECONDS
	vm_start "$row" "$dir"
	(vm_wait_ssh "$row" "$dir") || { echo "reason=no ssh" >>"$res"; vm_stop "$dir"; return 1; }
	echo "t_boot=$((SECONDS - t))" >>"$res"
	log "booted in $((SECONDS - t)) s (port $(cat "$dir/port"))"
	cat >"$dir/inventory.ini" <<-INV
		[agents]
		$row ansible_host=127.0.0.1 ansible_port=$(cat "$dir/port") ansible_user=root ansible_ssh_private_key_file=$(ssh_key) ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes' ansible_python_interpreter=/usr/bin/python3
		[journal_central]
	INV
	t=$SECONDS
	if [ "$VM_IDEMPOTENCE" = 1 ]; then
		read -r c f < <(playbook "$row" "$dir" check --check --diff)
		echo "check_changed=$c check_failed=$f" | tr ' ' '\n' >>"$res"
		log "check mode: changed=$c failed=$f"
		[ "$f" = 0 ] || { echo "reason=check mode failed (ansible-check.log)" >>"$res"; tail -n 30 "$dir/ansible-check.log" >&2; }
	fi
	local t1=$SECONDS
	read -r c f < <(playbook "$row" "$dir" apply)
	printf 'apply_changed=%s\napply_failed=%s\nt_playbook=%s\n' "$c" "$f" "$((SECONDS - t1))" >>"$res"
	log "playbook: changed=$c failed=$f in $((SECONDS - t1)) s"
	if [ "$f" != 0 ]; then
		tail -n 40 "$dir/ansible-apply.log" >&2
		agent_journal "$dir"
		echo "reason=playbook failed (ansible-apply.log)$(agent_error "$dir")" >>"$res"
		vm_stop "$dir"
		return 1
	fi
	if [ "$VM_IDEMPOTENCE" = 1 ]; then
		read -r c f < <(playbook "$row" "$dir" again)
		printf 'again_changed=%s\nagain_failed=%s\n' "$c" "$f" >>"$res"
		log "second run: changed=$c failed=$f"
		[ "$c" = 0 ] && [ "$f" = 0 ] || { echo "reason=second run not idempotent (ansible-again.log)" >>"$res"; grep -B2 -E '^(changed|failed)' "$dir/ansible-again.log" >&2 || true; }
	fi
	echo "t_ansible=$((SECONDS - t))" >>"$res"
	t=$SECONDS
	scp -q "${SSH_OPTS[@]}" -i "$(ssh_key)" -P "$(cat "$dir/port")" "$AARSM_VAGRANT_DIR/scenario.sh" root@127.0.0.1:/root/scenario.sh
	vm_ssh "$dir" "bash /root/scenario.sh $VM_SCENARIO" >"$dir/scenario.out" 2>"$dir/scenario.err" || true
	echo "t_scenario=$((SECONDS - t))" >>"$res"
	agent_journal "$dir"
	log "scenario: $(grep -E '^(result|reason)=' "$dir/scenario.out" | tr '\n' ' ')"
	t=$SECONDS
	vm_stop "$dir"
	echo "t_stop=$((SECONDS - t))" >>"$res"
	finish_row "$res" "$dir/scenario.out" "$t0"
}

# finish_row RESULT SCENARIO_OUT T0: merges the scenario's keys; the row
# passes when the scenario and every playbook check passed.
finish_row() {
	local res=$1 out=$2 t0=$3 ok=1
	grep -v '^result=' "$res" >"$res.tmp" || true
	grep -E '^[a-z_]+=' "$out" | sed 's/^result=/scenario_result=/; s/^reason=/scenario_reason=/' >>"$res.tmp" || true
	grep -qx 'scenario_result=pass' "$res.tmp" || ok=0
	grep -q '^reason=' "$res.tmp" && ok=0
	echo "t_total=$((SECONDS - t0))" >>"$res.tmp"
	echo "result=$([ $ok = 1 ] && echo pass || echo fail)" >>"$res.tmp"
	mv "$res.tmp" "$res"
}

run_host_row() {
	local dir=$RUN/host t0=$SECONDS
	local LOG_TAG=host
	mkdir -p "$dir/pkg"
	printf 'row=host\nresult=fail\n' >"$dir/result"
	dpkg-deb -x "$VM_PACKAGE" "$dir/pkg"
	# The same scenario, on this kernel, with the packaged binary; no systemd
	# and no Ansible here (PID 1 is not systemd).
	AARSM=$dir/pkg/usr/bin/aarsm bash "$AARSM_VAGRANT_DIR/scenario.sh" "$VM_SCENARIO" >"$dir/scenario.out" 2>"$dir/scenario.err" || true
	log "scenario: $(grep -E '^(result|reason)=' "$dir/scenario.out" | tr '\n' ' ')"
	finish_row "$dir/result" "$dir/scenario.out" "$t0"
}

run_row() {
	if [ "$1" = host ]; then run_host_row; else run_vm_row "$1"; fi
}

log "rows: $KERNELS; package $(basename "$VM_PACKAGE"); cache $AARSM_VM_CACHE; $VM_JOBS at once"
for row in $KERNELS; do
	[ "$row" = host ] || row_def "$row"
done
T0=$SECONDS
running=0
for row in $KERNELS; do
	if [ "$VM_JOBS" -le 1 ]; then
		(run_row "$row") || true
	else
		(run_row "$row") &
		running=$((running + 1))
		if [ $running -ge "$VM_JOBS" ]; then
			wait -n || true
			running=$((running - 1))
		fi
	fi
done
wait || true

get() { sed -n "s/^$2=//p" "$1" | tail -n1; }
failed=0
printf '\n%-14s %-22s %-6s %-9s %-6s %-9s %-7s %-11s %-6s %s\n' ROW KERNEL PROBES PLAINTEXT LEAKED DELIVERED VERDICT ANSIBLE TIME RESULT
for row in $KERNELS; do
	r=$RUN/$row/result
	[ -f "$r" ] || { printf '%-14s (no result)\n' "$row"; failed=1; continue; }
	ans=n/a
	[ "$row" = host ] || ans="$(get "$r" apply_changed)/$(get "$r" again_changed)"
	printf '%-14s %-22s %-6s %-9s %-6s %-9s %-7s %-11s %-6s %s\n' "$row" "$(get "$r" kernel)" \
		"$(get "$r" probes_attached)" "$(get "$r" plaintext_seen)" "$(get "$r" leaked)" "$(get "$r" delivered)" \
		"$(get "$r" verdict_found)" "$ans" "$(get "$r" t_total)s" "$(get "$r" result)"
	if [ "$(get "$r" result)" != pass ]; then
		failed=1
		reason=$(get "$r" reason)$(get "$r" scenario_reason)
		printf '    %s\n' "${reason:-see $RUN/$row}"
	fi
done
printf '(ANSIBLE: changed tasks in the first run / in the second run, which must be 0)\n'
for row in $KERNELS; do
	[ "$row" = host ] && continue
	r=$RUN/$row/result
	[ -f "$r" ] && printf 'timing %s: image %ss, boot %ss, ansible %ss (apply %ss), scenario %ss, stop %ss\n' "$row" \
		"$(get "$r" t_image)" "$(get "$r" t_boot)" "$(get "$r" t_ansible)" "$(get "$r" t_playbook)" "$(get "$r" t_scenario)" "$(get "$r" t_stop)"
done
log "total $((SECONDS - T0)) s"
if [ $failed != 0 ]; then VM_KEEP=1; fi
exit $failed
