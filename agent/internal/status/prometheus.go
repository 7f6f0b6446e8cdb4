package status

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// WritePrometheus writes r's counters in the Prometheus text exposition
// format (version 0.0.4): for each metric family a HELP and a TYPE line,
// then its samples; names start with "aarsm_", counters end in "_total".
// No timestamps: the node exporter's textfile collector refuses them.
// "aarsm status --prometheus" prints it, and "aarsm run
// --metrics-textfile" writes it to a file (docs/metrics.md).
func WritePrometheus(w io.Writer, r Report) error {
	p := &promWriter{w: bufio.NewWriter(w)}
	e, v, sd := r.Events, r.Verdicts, r.Stdio

	p.family("aarsm_info", "gauge", "The running agent: its version (value always 1).")
	p.sample("aarsm_info", 1, "version", r.Version)
	p.one("aarsm_start_time_seconds", "gauge", "When the agent started (Unix time; kept across in-place handovers).", float64(r.Started.UnixNano())/1e9)
	p.one("aarsm_event_loop_age_seconds", "gauge", "How long ago the event loop last went round (a few ms when healthy).", r.LoopAgeSeconds)

	p.one("aarsm_events_seen_total", "counter", "Events delivered by the sensor to the pipeline.", float64(e.Seen))
	p.one("aarsm_events_lost_total", "counter", "Events dropped in the kernel because the ring buffer was full.", float64(e.Lost))
	p.one("aarsm_events_malformed_total", "counter", "Sensor records that did not decode.", float64(e.Malformed))
	p.one("aarsm_tls_writes_total", "counter", "TLS writes seen in the kernel.", float64(e.Writes))
	p.one("aarsm_tls_writes_truncated_total", "counter", "TLS writes longer than the copy limit.", float64(e.Truncated))
	p.one("aarsm_discovery_drops_total", "counter", "New files not examined because the discovery queue was full.", float64(e.DiscoveryDrops))
	if len(r.Programs) > 0 {
		p.family("aarsm_program_missed_total", "counter", "Runs of a sensor BPF program the kernel skipped (another BPF program ran on the CPU).")
		for _, pr := range r.Programs {
			p.sample("aarsm_program_missed_total", float64(pr.Missed), "program", pr.Name)
		}
	}

	p.one("aarsm_holds_total", "counter", "Writes held for judgement.", float64(e.Holds))
	p.one("aarsm_file_holds_total", "counter", "Processes held until a file they run or map was examined.", float64(e.FileHolds))
	p.one("aarsm_holds_in_progress", "gauge", "Writes held at the time of the report.", float64(e.HeldNow))
	p.family("aarsm_holds_skipped_total", "counter", "Holds not taken (their fail mode applied at once), by reason.")
	p.sample("aarsm_holds_skipped_total", float64(e.StaleSkips), "reason", "event_loop_stale")
	p.sample("aarsm_holds_skipped_total", float64(e.HoldMapFull), "reason", "hold_map_full")
	p.sample("aarsm_holds_skipped_total", float64(e.HeldLost), "reason", "ring_full")
	p.family("aarsm_hold_deadline_resolutions_total", "counter", "Holds resolved by their deadline before a verdict, by outcome.")
	p.sample("aarsm_hold_deadline_resolutions_total", float64(e.DeadlineResumed), "outcome", "resumed")
	p.sample("aarsm_hold_deadline_resolutions_total", float64(e.DeadlineKilled), "outcome", "killed")
	p.sample("aarsm_hold_deadline_resolutions_total", float64(e.DeadlineGone), "outcome", "gone")
	p.one("aarsm_guard_kills_total", "counter", "Held threads resumed by someone else than the agent, killed.", float64(e.GuardKills))
	p.one("aarsm_fail_kills_total", "counter", "Processes killed in the kernel by a fail-closed policy.", float64(e.FailKills))
	p.one("aarsm_foreign_sigconts_total", "counter", "SIGCONTs to a held process that the agent did not send.", float64(e.ForeignConts))
	p.one("aarsm_held_exits_total", "counter", "Threads that exited while held.", float64(e.HeldExits))
	p.one("aarsm_predecessor_holds", "gauge", "Holds left by a previous agent and resolved at start.", float64(e.Predecessor))

	p.one("aarsm_messages_judged_total", "counter", "Messages judged against the policies.", float64(v.Judged))
	p.family("aarsm_verdicts_total", "counter", "Verdicts, by decision: block (stopped before a byte left), leak (would have been blocked, judged after the bytes left), alert.")
	p.sample("aarsm_verdicts_total", float64(v.Blocked), "decision", "block")
	p.sample("aarsm_verdicts_total", float64(v.Leaked), "decision", "leak")
	p.sample("aarsm_verdicts_total", float64(v.Alerted), "decision", "alert")
	p.one("aarsm_held_writes_released_total", "counter", "Held writes let go after the verdict.", float64(v.Released))
	p.one("aarsm_held_writes_expired_total", "counter", "Held writes whose deadline passed before the verdict.", float64(v.Expired))
	p.one("aarsm_action_errors_total", "counter", "Responses (kill, disconnect, quarantine, unit stop) that failed.", float64(v.ActionErrors))

	attached := 0
	for _, pr := range r.Probes {
		if pr.Error == "" {
			attached++
		}
	}
	p.family("aarsm_probed_files", "gauge", "Files examined for TLS functions, by state.")
	p.sample("aarsm_probed_files", float64(attached), "state", "attached")
	p.sample("aarsm_probed_files", float64(len(r.Probes)-attached), "state", "failed")
	modes := map[string]int{"enforce": 0, "monitor": 0}
	for _, pol := range r.Policies {
		modes[pol.Mode]++
	}
	p.family("aarsm_policies", "gauge", "Policies in force, by mode.")
	for _, m := range slices.Sorted(maps.Keys(modes)) {
		p.sample("aarsm_policies", float64(modes[m]), "mode", m)
	}
	p.one("aarsm_policies_loaded_time_seconds", "gauge", "When the policies in force were loaded (Unix time).", float64(r.PoliciesLoaded.UnixNano())/1e9)
	p.one("aarsm_reloads_total", "counter", "Policy reloads (SIGHUP), failed ones included.", float64(r.Reloads))
	p.one("aarsm_reload_failed", "gauge", "1 when the last reload failed and older policies stay in force.", b2f(r.ReloadError != nil))
	p.one("aarsm_handovers_total", "counter", "In-place replacements of the agent by a new binary since it started.", float64(r.Handovers))

	p.one("aarsm_quarantined_cgroups", "gauge", "Cgroups cut off the network now.", float64(len(r.Quarantines)))
	p.one("aarsm_quarantined_messages", "gauge", "Blocked messages kept in the vault.", float64(len(r.QuarantinedMessages)))
	p.family("aarsm_component_unavailable", "gauge", "1 when a part of the agent is not available (see aarsm status).")
	p.sample("aarsm_component_unavailable", b2f(r.QuarantineError != ""), "component", "network_quarantine")
	p.sample("aarsm_component_unavailable", b2f(r.VaultError != ""), "component", "message_vault")

	p.one("aarsm_mcp_servers", "gauge", "Processes seen speaking MCP (stdio, or streamable HTTP on loopback).", float64(len(r.MCPServers)))
	p.one("aarsm_stdio_watched_processes", "gauge", "Processes whose stdio is copied now.", float64(sd.Watched))
	p.one("aarsm_stdio_copied_total", "counter", "Stdin reads and stdout writes of watched processes copied.", float64(sd.Copied))
	p.one("aarsm_stdio_given_up_total", "counter", "Processes no longer watched: no JSON-RPC on their stdin.", float64(sd.GivenUp))
	p.one("aarsm_stdio_messages_total", "counter", "JSON-RPC messages decoded from stdio.", float64(sd.Messages))
	p.family("aarsm_stdio_frames_skipped_total", "counter", "Stdio frames skipped, by reason.")
	p.sample("aarsm_stdio_frames_skipped_total", float64(sd.Malformed), "reason", "malformed")
	p.sample("aarsm_stdio_frames_skipped_total", float64(sd.Oversize), "reason", "oversize")
	hd := r.MCPHTTP
	p.one("aarsm_mcp_http_watched_processes", "gauge", "Processes listening on loopback whose loopback connections are followed (MCP over streamable HTTP).", float64(hd.Watched))
	p.one("aarsm_mcp_http_connections", "gauge", "Loopback connections of listening processes tracked now.", float64(hd.Conns))
	p.one("aarsm_mcp_http_copied_total", "counter", "Loopback socket reads and writes of listening processes copied.", float64(hd.Copied))
	p.one("aarsm_mcp_http_connections_given_up_total", "counter", "Loopback connections dropped: not MCP over HTTP/1.x, or bytes lost.", float64(hd.ConnsGivenUp))
	p.one("aarsm_mcp_http_given_up_total", "counter", "Listening processes no longer watched: no JSON-RPC on their connections.", float64(hd.GivenUp))
	p.one("aarsm_mcp_http_messages_total", "counter", "JSON-RPC messages decoded from loopback connections.", float64(hd.Messages))

	writeEgress(p, r)

	p.one("aarsm_status_refused_total", "counter", "Connections to the status socket refused for their peer's credentials.", float64(r.StatusRefused))
	if p.err != nil {
		return fmt.Errorf("write metrics: %w", p.err)
	}
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("write metrics: %w", err)
	}
	return nil
}

// writeEgress writes the egress_policy counters, per hook, when the
// egress programs are loaded.
func writeEgress(p *promWriter, r Report) {
	p.one("aarsm_component_egress_unavailable", "gauge", "1 when the egress programs could not be loaded (see aarsm status).", b2f(r.EgressError != ""))
	if r.Egress == nil {
		return
	}
	eg := r.Egress
	p.one("aarsm_egress_attached", "gauge", "1 while the egress programs are attached (at least one egress policy in force).", b2f(eg.Attached))
	p.one("aarsm_egress_policies", "gauge", "Egress policies in force.", float64(len(eg.Policies)))
	p.family("aarsm_egress_connections_total", "counter", "Connects and sendmsgs of processes in an egress policy's scope, by hook and outcome (blocked: refused with EPERM; reported: let through by a monitor policy).")
	for _, c := range eg.Counters {
		p.sample("aarsm_egress_connections_total", float64(c.Allowed), "hook", c.Hook, "outcome", "allowed")
		p.sample("aarsm_egress_connections_total", float64(c.Blocked), "hook", c.Hook, "outcome", "blocked")
		p.sample("aarsm_egress_connections_total", float64(c.Reported), "hook", c.Hook, "outcome", "reported")
	}
	p.one("aarsm_egress_events_lost_total", "counter", "Egress events the ring buffer had no room for (destinations refused but not journaled).", float64(eg.Lost))
	p.one("aarsm_egress_journal_errors_total", "counter", "Egress journal entries that could not be written.", float64(eg.JournalErrors))
}

type promWriter struct {
	w   *bufio.Writer
	err error
}

func (p *promWriter) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *promWriter) family(name, typ, help string) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (p *promWriter) sample(name string, v float64, labels ...string) {
	var b strings.Builder
	b.WriteString(name)
	if len(labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		b.WriteByte('}')
	}
	p.printf("%s %s\n", b.String(), formatValue(v))
}

func (p *promWriter) one(name, typ, help string, v float64) {
	p.family(name, typ, help)
	p.sample(name, v)
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeHelp escapes a HELP text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabel escapes a label value: backslash, double quote, line feed.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
