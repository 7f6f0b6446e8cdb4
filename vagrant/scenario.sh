#!/usr/bin/env bash
# scenario.sh [trace] — the end-to-end check, run inside a VM of the kernel
# matrix (or on the host for the host row). It prints machine-readable
# key=value lines on stdout (progress goes to stderr) and exits 0 when the
# scenario passed.
#
# Scenario "trace" (today): `aarsm trace --comm curl` attaches its probes;
# curl sends two HTTPS requests to openssl s_server on 127.0.0.1 inside the
# machine: a "suspicious" one and a benign one. Expected: probes attached,
# the plaintext of both requests seen in the trace output, both delivered
# (trace only observes), no verdict (trace writes none to the journal).
#
# Keys: scenario kernel btf probes_attached plaintext_seen leaked delivered
#       verdict_found result [reason]
#   leaked         the suspicious request reached the server
#   delivered      the benign request got its answer
#   verdict_found  an AARSM_VERDICT journal entry for this run (n/a when the
#                  scenario writes none)
#
# Environment: AARSM (the binary, default /usr/bin/aarsm), SCENARIO_TIMEOUT
# (seconds to wait for the probes, default 120: loading is slow under TCG).
#
# Extending: add a scenario_NAME function that fills the R_* variables and
# call it as `scenario.sh NAME` (e.g. the postmark e2e once `aarsm run`
# enforces: start the service, send mail through the fake API, look the
# verdict up with journal_verdicts).
set -euo pipefail

AARSM=${AARSM:-/usr/bin/aarsm}
TIMEOUT=${SCENARIO_TIMEOUT:-120}
WORK=$(mktemp -d /tmp/aarsm-scenario.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '[scenario] %s\n' "$*" >&2; }

# Results, printed at the end.
R_SCENARIO=${1:-trace}
R_KERNEL=$(uname -r)
R_BTF=no
[ -r /sys/kernel/btf/vmlinux ] && R_BTF=yes
R_PROBES=0 R_PLAINTEXT=no R_LEAKED=no R_DELIVERED=no R_VERDICT=n/a R_RESULT=fail R_REASON=""

report() {
	printf 'scenario=%s\nkernel=%s\nbtf=%s\nprobes_attached=%s\nplaintext_seen=%s\nleaked=%s\ndelivered=%s\nverdict_found=%s\nresult=%s\n' \
		"$R_SCENARIO" "$R_KERNEL" "$R_BTF" "$R_PROBES" "$R_PLAINTEXT" "$R_LEAKED" "$R_DELIVERED" "$R_VERDICT" "$R_RESULT"
	[ -z "$R_REASON" ] || printf 'reason=%s\n' "$R_REASON"
}

# wait_for FILE PATTERN SECONDS: true once PATTERN (grep -E) is in FILE.
wait_for() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		grep -qE "$1" "$3" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

free_port() {
	local p
	for p in $(shuf -i 20000-40000 -n 20); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# tls_server: openssl s_server on 127.0.0.1 with a throwaway certificate;
# sets SERVER_PORT. -www answers every GET with a status page.
tls_server() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
	SERVER_PORT=$(free_port)
	openssl s_server -accept "127.0.0.1:$SERVER_PORT" -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
		-www -quiet </dev/null >"$WORK/server.log" 2>&1 &
	PIDS+=($!)
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$SERVER_PORT") 2>/dev/null && return 0
		sleep 0.1
	done
	say "s_server did not start: $(cat "$WORK/server.log")"
	return 1
}

# request PATH: one HTTPS GET through libssl (curl); true on HTTP 200.
request() {
	local code
	code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 20 "https://127.0.0.1:$SERVER_PORT$1") || true
	say "GET $1 -> ${code:-none}"
	[ "$code" = 200 ]
}

# journal_verdicts SINCE [FIELD=VALUE...]: how many AARSM_VERDICT entries the
# journal has since SINCE (a journalctl --since time) matching the filters.
journal_verdicts() {
	local since=$1
	shift
	journalctl --since "$since" -o export "$@" 2>/dev/null | grep -c '^AARSM_VERDICT=' || true
}

scenario_trace() {
	[ -x "$AARSM" ] || { R_REASON="no aarsm binary at $AARSM"; return 1; }
	local marker
	marker=aarsm-e2e-$$-$RANDOM
	"$AARSM" trace --comm curl >"$WORK/trace.out" 2>"$WORK/trace.err" &
	PIDS+=($!)
	if ! wait_for 'tracing TLS writes' "$TIMEOUT" "$WORK/trace.err"; then
		R_REASON="trace did not attach: $(tr '\n' ' ' <"$WORK/trace.err" | cut -c1-300)"
		return 1
	fi
	R_PROBES=$(sed -n 's/.*tracing TLS writes.*libraries=\([0-9]\+\).*/\1/p' "$WORK/trace.err" | head -n1)
	R_PROBES=${R_PROBES:-0}
	say "probes attached to $R_PROBES libraries"
	[ "$R_PROBES" -gt 0 ] || { R_REASON="no library probed"; return 1; }

	tls_server || { R_REASON="openssl s_server failed"; return 1; }
	request "/$marker/exfil?to=attacker@example.net" && R_LEAKED=yes
	request "/$marker/benign" && R_DELIVERED=yes
	if wait_for "GET [^ ]+ /$marker/exfil" 15 "$WORK/trace.out" &&
		wait_for "GET [^ ]+ /$marker/benign" 5 "$WORK/trace.out"; then
		R_PLAINTEXT=yes
	fi
	say "trace output: $(grep -c "$marker" "$WORK/trace.out" || true) matching line(s)"
	if [ "$R_PLAINTEXT" = yes ] && [ "$R_LEAKED" = yes ] && [ "$R_DELIVERED" = yes ]; then
		R_RESULT=pass
	else
		R_REASON="plaintext_seen=$R_PLAINTEXT leaked=$R_LEAKED delivered=$R_DELIVERED"
	fi
}

case $R_SCENARIO in
trace) scenario_trace || true ;;
*)
	R_REASON="unknown scenario $R_SCENARIO"
	;;
esac
report
[ "$R_RESULT" = pass ]
