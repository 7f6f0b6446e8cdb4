#!/usr/bin/env bash
# scenario.sh [postmark|trace] — the end-to-end check, run inside a VM of the
# kernel matrix (or on the host for the host row). It prints machine-readable
# key=value lines on stdout (progress goes to stderr) and exits 0 when the
# scenario passed.
#
# Scenario "postmark" (the default of vm-test): the postmark-mcp case. The
# agent enforces (in a VM: aarsm.service, started by the Ansible role with
# an enforcing policy, see test-vars.yml; on the host: `aarsm run` started
# here with hcl/policies/company.hcl, holding only a cgroup made for the
# test). A fake Postmark API (python3 http.server over TLS, throwaway
# certificate, 127.0.0.1) records every request it receives. Two mails are
# POSTed to /email with curl (Host api.postmarkapp.com): a benign one
# (To: ceo@company.com) and the backdoored one (the same plus
# "Bcc": "phan@giftshop.club"). In a VM each curl runs as a transient
# systemd service (an MCP server would be a service; the "terminate" response
# stops the sender's unit, which must not be the SSH session). Expected:
# probes attached, the backdoored mail never reaches the API, the benign one
# does, and a block verdict naming phan@giftshop.club is in the journal
# (`journalctl -u aarsm AARSM_VERDICT=block -o json`; on the host: the
# agent's JSON verdict lines).
#
# Scenario "trace": `aarsm trace --comm curl` attaches its probes;
# curl sends two HTTPS requests to openssl s_server on 127.0.0.1 inside the
# machine: a "suspicious" one and a benign one. Expected: probes attached,
# the plaintext of both requests seen in the trace output, both delivered
# (trace only observes), no verdict (trace writes none to the journal).
#
# Keys: scenario kernel btf probes_attached plaintext_seen leaked delivered
#       verdict_found result [reason] [t_ready]
#   probes_attached  libraries probed (trace: its log line; postmark: the
#                    agent's "probing TLS library" lines)
#   plaintext_seen   trace: both request lines in the trace output;
#                    postmark: the block verdict lists the recipients parsed
#                    from the request body (ceo@company.com with the Bcc)
#   leaked           the suspicious request (trace) / the backdoored mail
#                    (postmark) reached the server
#   delivered        the benign request got its answer (postmark: the API
#                    recorded the benign mail and answered 200)
#   verdict_found    an AARSM_VERDICT=block entry naming phan@giftshop.club
#                    (n/a for trace, which writes none)
#
# Environment: AARSM (the binary, default /usr/bin/aarsm), SCENARIO_TIMEOUT
# (seconds to wait for the probes / the service, default 180: loading is slow
# under TCG), SCENARIO_AGENT (postmark: "systemd" uses aarsm.service, default
# when systemd runs; "direct" starts `aarsm run` here), AARSM_POLICY_DIR
# (direct mode: the policies, default: a directory with the packaged
# company.hcl beside this script's repository).
#
# Extending: add a scenario_NAME function that fills the R_* variables and
# call it as `scenario.sh NAME`.
set -euo pipefail

AARSM=${AARSM:-/usr/bin/aarsm}
TIMEOUT=${SCENARIO_TIMEOUT:-180}
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
R_SCENARIO=${1:-postmark}
R_KERNEL=$(uname -r)
R_BTF=no
[ -r /sys/kernel/btf/vmlinux ] && R_BTF=yes
R_PROBES=0 R_PLAINTEXT=no R_LEAKED=no R_DELIVERED=no R_VERDICT=n/a R_RESULT=fail R_REASON="" R_READY=""

report() {
	printf 'scenario=%s\nkernel=%s\nbtf=%s\nprobes_attached=%s\nplaintext_seen=%s\nleaked=%s\ndelivered=%s\nverdict_found=%s\nresult=%s\n' \
		"$R_SCENARIO" "$R_KERNEL" "$R_BTF" "$R_PROBES" "$R_PLAINTEXT" "$R_LEAKED" "$R_DELIVERED" "$R_VERDICT" "$R_RESULT"
	[ -z "$R_REASON" ] || printf 'reason=%s\n' "$R_REASON"
	[ -z "$R_READY" ] || printf 't_ready=%s\n' "$R_READY"
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

# ---- postmark ---------------------------------------------------------------

# fake_api: a fake Postmark API over TLS on 127.0.0.1 (python3 http.server,
# throwaway certificate). Every POST is appended to $WORK/api.log as one line
# "PATH BODY"; it answers like Postmark. Sets API_PORT.
fake_api() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=api.postmarkapp.com \
		-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
	cat >"$WORK/api.py" <<-'PY'
		import http.server, json, ssl, sys
		workdir = sys.argv[1]
		class Handler(http.server.BaseHTTPRequestHandler):
		    protocol_version = "HTTP/1.1"
		    def do_POST(self):
		        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
		        with open(workdir + "/api.log", "ab") as f:
		            f.write(self.path.encode() + b" " + body.replace(b"\n", b" ") + b"\n")
		        out = json.dumps({"ErrorCode": 0, "Message": "OK", "MessageID": "e2e"}).encode()
		        self.send_response(200)
		        self.send_header("Content-Type", "application/json")
		        self.send_header("Content-Length", str(len(out)))
		        self.end_headers()
		        self.wfile.write(out)
		    def log_message(self, fmt, *args):
		        sys.stderr.write("api: " + (fmt % args) + "\n")
		srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		ctx.load_cert_chain(workdir + "/cert.pem", workdir + "/key.pem")
		srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
		with open(workdir + "/api.port.tmp", "w") as f:
		    f.write(str(srv.server_address[1]))
		import os
		os.rename(workdir + "/api.port.tmp", workdir + "/api.port")
		srv.serve_forever()
	PY
	: >"$WORK/api.log"
	python3 "$WORK/api.py" "$WORK" 2>"$WORK/api.err" &
	PIDS+=($!)
	local i
	for ((i = 0; i < 300; i++)); do
		[ -s "$WORK/api.port" ] && break
		sleep 0.1
	done
	API_PORT=$(cat "$WORK/api.port" 2>/dev/null || true)
	[ -n "$API_PORT" ] || { say "fake API did not start: $(cat "$WORK/api.err")"; return 1; }
	say "fake Postmark API on 127.0.0.1:$API_PORT"
}

# send_mail NAME JSON: POSTs JSON to the fake API's /email as Postmark's
# clients do; the HTTP status lands in $WORK/NAME.code. In systemd mode curl
# runs as a transient service (the sender's unit is what "terminate" stops);
# in direct mode it runs in the test's cgroup ($HOLD_CG), the one the agent
# holds.
send_mail() {
	local name=$1 json=$2
	local -a curl=(curl -sS -k --max-time 30 -o "$WORK/$name.resp" -w '%{http_code}'
		--resolve "api.postmarkapp.com:$API_PORT:127.0.0.1"
		-H 'Accept: application/json' -H 'Content-Type: application/json'
		-H 'X-Postmark-Server-Token: e2e-test-token'
		--data-binary "$json" "https://api.postmarkapp.com:$API_PORT/email")
	if [ "$MODE" = systemd ]; then
		systemd-run --quiet --wait --collect --unit "aarsm-e2e-$name-$$" \
			-p StandardOutput="file:$WORK/$name.code" -p StandardError="file:$WORK/$name.err" \
			-- "${curl[@]}" || true
	else
		(
			echo "$BASHPID" >"$HOLD_CG/cgroup.procs"
			exec "${curl[@]}" >"$WORK/$name.code" 2>"$WORK/$name.err"
		) || true
	fi
	say "mail $name -> HTTP $(cat "$WORK/$name.code" 2>/dev/null || echo none) $(head -c 200 "$WORK/$name.err" 2>/dev/null | tr '\n' ' ')"
}

# start_direct_agent: `aarsm run` on this machine (the host row: no
# systemd), holding only the processes of a cgroup made for the test, with
# its own pin and state directories; verdicts as JSON lines.
start_direct_agent() {
	local cg2
	cg2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	[ -n "$cg2" ] || { R_REASON="no cgroup2 mount"; return 1; }
	HOLD_CG=$cg2/aarsm-e2e-$$
	mkdir "$HOLD_CG"
	PIN_DIR=/sys/fs/bpf/aarsm-e2e-$$
	if [ -z "${AARSM_POLICY_DIR:-}" ]; then
		AARSM_POLICY_DIR=$WORK/policy.d
		mkdir -p "$AARSM_POLICY_DIR"
		cp "$(dirname "$0")/../hcl/policies/company.hcl" "$AARSM_POLICY_DIR/"
	fi
	"$AARSM" policy check "$AARSM_POLICY_DIR" >&2 || { R_REASON="policy check failed"; return 1; }
	mkdir -p "$WORK/state"
	"$AARSM" run --policy-dir "$AARSM_POLICY_DIR" --log-format json --hold-cgroup "$HOLD_CG" \
		--pin-dir "$PIN_DIR" --state-dir "$WORK/state" >"$WORK/verdicts.json" 2>"$WORK/agent.err" &
	AGENT_PID=$!
	PIDS+=($AGENT_PID)
	if ! wait_for 'msg=enforcing' "$TIMEOUT" "$WORK/agent.err"; then
		R_REASON="aarsm run did not start: $(grep -v 'probing TLS library' "$WORK/agent.err" | tr '\n' ' ' | cut -c1-400)"
		return 1
	fi
	R_PROBES=$(grep 'probing TLS library' "$WORK/agent.err" | sed -n 's/.* path=\([^ ]*\).*/\1/p' | sort -u | wc -l)
}

# stop_direct_agent: SIGTERM (the agent releases what it holds), then the
# test's cgroup and pins go.
stop_direct_agent() {
	[ -n "${AGENT_PID:-}" ] || return 0
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	[ -z "${HOLD_CG:-}" ] || rmdir "$HOLD_CG" 2>/dev/null || true
	[ -z "${PIN_DIR:-}" ] || rm -rf "$PIN_DIR"
}

# wait_service: the agent's unit is active (Type=notify: READY=1 was sent,
# so the probes are attached and the policies loaded).
wait_service() {
	local i state
	for ((i = 0; i < TIMEOUT; i++)); do
		state=$(systemctl is-active aarsm.service 2>/dev/null || true)
		case $state in
		active) return 0 ;;
		failed) break ;;
		esac
		sleep 1
	done
	say "aarsm.service is ${state:-unknown}:"
	systemctl status --no-pager -l aarsm.service >&2 || true
	journalctl -u aarsm.service -b --no-pager -o cat | grep -v 'probing TLS library' | tail -n 40 >&2 || true
	R_REASON="aarsm.service not active (${state:-unknown}): $(journalctl -u aarsm.service -b --no-pager -o cat | grep -v 'probing TLS library' | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
	return 1
}

scenario_postmark() {
	[ -x "$AARSM" ] || { R_REASON="no aarsm binary at $AARSM"; return 1; }
	MODE=${SCENARIO_AGENT:-}
	if [ -z "$MODE" ]; then
		if [ -d /run/systemd/system ]; then MODE=systemd; else MODE=direct; fi
	fi
	local t0=$SECONDS marker since inv benign backdoor
	marker=aarsm-e2e-$$-$RANDOM
	R_VERDICT=no
	if [ "$MODE" = systemd ]; then
		wait_service || return 1
		inv=$(systemctl show -p InvocationID --value aarsm.service)
		R_PROBES=$(journalctl "_SYSTEMD_INVOCATION_ID=$inv" -o cat --no-pager | grep 'probing TLS library' |
			sed -n 's/.* path=\([^ ]*\).*/\1/p' | sort -u | wc -l)
	else
		trap 'stop_direct_agent; cleanup' EXIT
		start_direct_agent || return 1
	fi
	R_READY=$((SECONDS - t0))
	say "agent ready after ${R_READY}s ($MODE); probes attached to $R_PROBES libraries"
	[ "$R_PROBES" -gt 0 ] || { R_REASON="no library probed"; return 1; }

	fake_api || { R_REASON="fake Postmark API failed"; return 1; }
	since=$(date '+%Y-%m-%d %H:%M:%S')
	benign='{"From":"assistant@company.com","To":"ceo@company.com","Subject":"Q3 numbers '"$marker"'-benign","TextBody":"Hi, the Q3 numbers are attached.","MessageStream":"outbound"}'
	backdoor='{"From":"assistant@company.com","To":"ceo@company.com","Bcc":"phan@giftshop.club","Subject":"Q3 numbers '"$marker"'-backdoor","TextBody":"Hi, the Q3 numbers are attached.","MessageStream":"outbound"}'
	send_mail backdoor "$backdoor"
	send_mail benign "$benign"
	grep -q "$marker-backdoor" "$WORK/api.log" && R_LEAKED=yes
	grep -q "$marker-benign" "$WORK/api.log" && [ "$(cat "$WORK/benign.code" 2>/dev/null)" = 200 ] && R_DELIVERED=yes
	say "fake API received $(wc -l <"$WORK/api.log") request(s)"

	local i entries
	for ((i = 0; i < 150; i++)); do
		if [ "$MODE" = systemd ]; then
			entries=$(journalctl -u aarsm.service --since "$since" AARSM_VERDICT=block -o json --no-pager 2>/dev/null || true)
		else
			entries=$(grep '"AARSM_VERDICT":"block"' "$WORK/verdicts.json" || true)
		fi
		entries=$(grep 'phan@giftshop.club' <<<"$entries" || true)
		[ -n "$entries" ] && break
		sleep 0.1
	done
	if [ -n "$entries" ]; then
		R_VERDICT=yes
		say "verdict: $(head -n1 <<<"$entries" | cut -c1-1500)"
		grep -q '"AARSM_RECIPIENTS":"[^"]*ceo@company.com' <<<"$entries" && R_PLAINTEXT=yes
	fi
	[ "$MODE" = systemd ] || stop_direct_agent
	if [ "$R_LEAKED" = no ] && [ "$R_DELIVERED" = yes ] && [ "$R_VERDICT" = yes ]; then
		R_RESULT=pass
	else
		R_REASON="leaked=$R_LEAKED (want no) delivered=$R_DELIVERED (want yes) verdict_found=$R_VERDICT (want yes)"
	fi
}

case $R_SCENARIO in
trace) scenario_trace || true ;;
postmark) scenario_postmark || true ;;
*)
	R_REASON="unknown scenario $R_SCENARIO"
	;;
esac
report
[ "$R_RESULT" = pass ]
