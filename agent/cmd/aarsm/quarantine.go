package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/status"
)

// The quarantine has two halves, both kept by the agent and both readable
// and changeable by "aarsm quarantine" whether the agent runs or not:
//
//   - the vault, <state dir>/quarantine: one root-only file per blocked
//     message (package vault). Files written aside and renamed: the CLI
//     reads and deletes them beside the agent without coordination.
//   - the network quarantine: the pinned map of cgroups cut off the network
//     and its copy, <state dir>/quarantine.json (act.Quarantine). The CLI
//     lifts an entry itself (act.LiftQuarantine) under the flock the agent
//     takes for each of its own changes, rather than asking the agent over
//     the status socket: the status protocol has no requests, and a
//     quarantine must be liftable while the agent is stopped too (the
//     pinned map goes on refusing connections without it).

// vaultDir is where the agent keeps quarantined messages.
func vaultDir(stateDir string) string { return filepath.Join(stateDir, "quarantine") }

// housekeeper purges what has expired: quarantined messages (the vault)
// and network quarantines (the pinned map and the state file). It runs at
// start, every interval, and at the soonest expiry in between.
type housekeeper struct {
	vault      *vault.Vault    // nil: none
	quarantine *act.Quarantine // nil: none
	interval   time.Duration
	log        *slog.Logger
	now        func() time.Time

	stop func()
	done chan struct{}
}

// minHousekeeping is the shortest wait between two rounds.
const minHousekeeping = time.Second

// start purges once, then goes on in the background until Stop.
func (h *housekeeper) start() {
	if h.now == nil {
		h.now = time.Now
	}
	next := h.purge()
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		for {
			t := time.NewTimer(next)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			next = h.purge()
		}
	}()
}

// Stop ends the background purges and waits for one under way.
func (h *housekeeper) Stop() {
	if h.stop != nil {
		h.stop()
		<-h.done
		h.stop = nil
	}
}

// purge removes what expired and returns how long to wait for the next
// round: the interval, or less if something expires sooner.
func (h *housekeeper) purge() time.Duration {
	now := h.now()
	next := now.Add(h.interval)
	if h.vault != nil {
		ids, err := h.vault.Purge(now)
		if err != nil {
			h.log.Error("cannot purge expired quarantined messages", "err", err)
		}
		if len(ids) > 0 {
			h.log.Info("expired quarantined messages purged", "count", len(ids), "ids", strings.Join(ids, ","))
		}
		if t, ok, err := h.vault.NextExpiry(now); err == nil && ok && t.Before(next) {
			next = t
		}
	}
	if h.quarantine != nil {
		ids, err := h.quarantine.Expire(now)
		if err != nil {
			h.log.Error("cannot remove expired network quarantines", "err", err)
		}
		for _, id := range ids {
			h.log.Info("network quarantine expired", "cgroup_id", id)
		}
		if entries, err := h.quarantine.List(); err == nil {
			for _, e := range entries {
				if e.Until.After(now) && e.Until.Before(next) {
					next = e.Until
				}
			}
		}
	}
	return max(next.Sub(h.now()), minHousekeeping)
}

// quarantinedMessages lists the vault's unexpired messages for the status
// report.
func quarantinedMessages(v *vault.Vault, now time.Time) ([]status.QuarantinedMessage, error) {
	infos, err := v.List()
	out := []status.QuarantinedMessage{}
	for _, i := range infos {
		if i.Expires.After(now) {
			out = append(out, status.QuarantinedMessage{ID: i.ID, Expires: i.Expires, Policy: i.Policy, Dest: i.Dest, Recipients: i.Recipients})
		}
	}
	return out, err
}

const quarantineUsage = `usage: aarsm quarantine COMMAND [OPTIONS]

  list [--json]            the quarantined messages and the cgroups cut off the network
  show [--json] ID         one quarantined message, whole
  delete ID                delete a quarantined message before its expiry
  lift CGROUP              end a network quarantine before its expiry; CGROUP is
                           a cgroup id, a path as "aarsm status" shows it
                           (/system.slice/x.service) or its directory

A message blocked by a policy whose violation_action quarantines is kept,
root-only, in <state dir>/quarantine for the policy's quarantine_duration,
and the sender's unit (or cgroup) is refused every new connection as long.
These commands work on the files and pins themselves, whether the agent
runs or not, and need root.

Options (every command):
  --state-dir DIR   the agent's state directory (default /var/lib/aarsm)
  --pin-dir DIR     the agent's bpffs directory (default /sys/fs/bpf/aarsm)
`

func runQuarantine(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, quarantineUsage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("aarsm quarantine "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, quarantineUsage) }
	stateDir := fs.String("state-dir", act.DefaultStateDir, "the agent's state directory")
	pinDir := fs.String("pin-dir", act.DefaultPinDir, "the agent's bpffs directory")
	asJSON := fs.Bool("json", false, "print JSON (list, show)")
	fail := func(err error) int {
		fmt.Fprintf(stderr, "aarsm quarantine %s: %v\n", cmd, explain(err))
		return 1
	}
	if cmd != "help" && cmd != "-h" && cmd != "--help" && os.Geteuid() != 0 {
		fmt.Fprintf(stderr, "aarsm quarantine %s: must be run as root: quarantined messages and the network quarantine are root-only\n", cmd)
		return 1
	}
	switch cmd {
	case "list":
		if !parseFlags(fs, args[1:]) {
			return 2
		}
		return quarantineList(*stateDir, *pinDir, *asJSON, stdout, fail)
	case "show", "delete", "lift":
		arg, ok := parseWithArg(fs, args[1:], map[string]string{"show": "ID", "delete": "ID", "lift": "CGROUP"}[cmd])
		if !ok {
			return 2
		}
		switch cmd {
		case "show":
			return quarantineShow(*stateDir, arg, *asJSON, stdout, fail)
		case "delete":
			v, err := vault.OpenExisting(vaultDir(*stateDir))
			if err != nil {
				return fail(err)
			}
			if err := v.Delete(arg); err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "deleted %s\n", arg)
			return 0
		default:
			e, err := act.LiftQuarantine(act.QuarantineOptions{PinDir: *pinDir, StateDir: *stateDir}, arg)
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(stdout, "lifted the network quarantine of %s\n", cgroupName(e))
			return 0
		}
	case "help", "-h", "--help":
		fmt.Fprint(stdout, quarantineUsage)
		return 0
	}
	fmt.Fprintf(stderr, "aarsm quarantine: unknown command %q\n\n%s", cmd, quarantineUsage)
	return 2
}

// parseWithArg parses flags given before or after the one argument,
// which must be there.
func parseWithArg(fs *flag.FlagSet, args []string, name string) (string, bool) {
	arg, ok := parseOptionalArg(fs, args)
	if ok && arg == "" {
		_, _ = fmt.Fprintf(fs.Output(), "%s: missing %s\n", fs.Name(), name)
		return "", false
	}
	return arg, ok
}

// explain adds what to do to the errors people meet.
func explain(err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w (the quarantine is root-only: run as root)", err)
	case errors.Is(err, vault.ErrNotFound):
		return fmt.Errorf("%w (expired and purged, deleted, or never kept: see aarsm quarantine list)", err)
	case errors.Is(err, act.ErrNotQuarantined):
		return fmt.Errorf("%w (see aarsm quarantine list)", err)
	}
	return err
}

func cgroupName(e act.QuarantineEntry) string {
	if e.Cgroup == "" {
		return fmt.Sprintf("cgroup id %d", e.CgroupID)
	}
	return fmt.Sprintf("%s (cgroup id %d)", e.Cgroup, e.CgroupID)
}

// quarantineListing is "aarsm quarantine list --json".
type quarantineListing struct {
	Messages []vault.Info          `json:"messages"`
	Network  []act.QuarantineEntry `json:"network"`
	// Errors say what could not be read (the other half is listed still).
	Errors []string `json:"errors,omitempty"`
}

func quarantineList(stateDir, pinDir string, asJSON bool, stdout io.Writer, fail func(error) int) int {
	now := time.Now()
	l := quarantineListing{Messages: []vault.Info{}, Network: []act.QuarantineEntry{}}
	var errs []error
	var vaultErr, netErr error
	v, err := vault.OpenExisting(vaultDir(stateDir))
	switch {
	case errors.Is(err, fs.ErrNotExist): // no message was ever kept
	case err != nil:
		vaultErr = err
	default:
		infos, err := v.List()
		vaultErr = err
		for _, i := range infos {
			if i.Expires.After(now) {
				l.Messages = append(l.Messages, i)
			}
		}
	}
	network, err := act.ListQuarantine(act.QuarantineOptions{PinDir: pinDir, StateDir: stateDir})
	if err != nil {
		netErr = fmt.Errorf("network quarantine: %w", err)
	}
	l.Network = append(l.Network, network...)
	for _, err := range []error{vaultErr, netErr} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, err := range errs {
		l.Errors = append(l.Errors, explain(err).Error())
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(l); err != nil {
			return fail(err)
		}
	} else {
		var b strings.Builder
		switch {
		case len(l.Messages) == 0 && vaultErr != nil:
			b.WriteString("messages: unavailable (below)\n")
		case len(l.Messages) == 0:
			b.WriteString("messages: none quarantined\n")
		default:
			fmt.Fprintf(&b, "messages: %d quarantined (aarsm quarantine show ID)\n", len(l.Messages))
			ms := make([]status.QuarantinedMessage, 0, len(l.Messages))
			for _, i := range l.Messages {
				ms = append(ms, status.QuarantinedMessage{ID: i.ID, Expires: i.Expires, Policy: i.Policy, Dest: i.Dest, Recipients: i.Recipients})
			}
			status.FormatMessages(&b, ms, "  ")
		}
		switch {
		case len(l.Network) == 0 && netErr != nil:
			b.WriteString("network:  unavailable (below)\n")
		case len(l.Network) == 0:
			b.WriteString("network:  no cgroup quarantined\n")
		default:
			fmt.Fprintf(&b, "network:  %d cgroups cut off (aarsm quarantine lift CGROUP)\n", len(l.Network))
			for _, e := range l.Network {
				until := "until lifted"
				if !e.Until.IsZero() {
					until = "until " + e.Until.UTC().Format(time.DateTime+" MST")
				}
				fmt.Fprintf(&b, "  %s %s\n", cgroupName(e), until)
			}
		}
		if _, err := io.WriteString(stdout, b.String()); err != nil {
			return fail(err)
		}
	}
	if len(errs) > 0 {
		return fail(errors.Join(errs...))
	}
	return 0
}

func quarantineShow(stateDir, id string, asJSON bool, stdout io.Writer, fail func(error) int) int {
	v, err := vault.OpenExisting(vaultDir(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return fail(fmt.Errorf("%w: %s", vault.ErrNotFound, id))
	}
	if err != nil {
		return fail(err)
	}
	e, err := v.Get(id)
	if err != nil {
		return fail(err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(e)
	} else {
		_, err = io.WriteString(stdout, formatEntry(e))
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// formatEntry writes a quarantined message for people. Every value comes
// from the sender, an attacker maybe: control characters are escaped, so
// that nothing in it can drive the terminal.
func formatEntry(e *vault.Entry) string {
	var b strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-12s %s\n", k+":", clean(v))
		}
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.DateTime + " MST") }
	line("id", e.ID)
	line("stored", ts(e.Stored))
	line("expires", ts(e.Expires))
	line("policy", e.Policy)
	line("rules", strings.Join(e.Rules, ", "))
	line("violations", strings.Join(e.Violations, ", "))
	proc := fmt.Sprintf("pid %d", e.PID)
	if e.Comm != "" {
		proc += " (" + e.Comm + ")"
	}
	if e.Exe != "" {
		proc += " " + e.Exe
	}
	line("process", proc)
	line("unit", e.Unit)
	line("cgroup", e.Cgroup)
	line("destination", e.Dest)
	line("recipients", fmt.Sprint(e.Recipients))
	m := e.Message
	if m == nil {
		b.WriteString("(no message)\n")
		return b.String()
	}
	fmt.Fprintf(&b, "\n--- message (%s", clean(m.Provider))
	if m.Endpoint != "" {
		fmt.Fprintf(&b, ", %s", clean(m.Endpoint))
	}
	b.WriteString(")\n")
	addrs := func(as []mail.Address) string {
		s := make([]string, len(as))
		for i, a := range as {
			s[i] = a.String()
		}
		return strings.Join(s, ", ")
	}
	line("From", addrs(m.From))
	line("To", addrs(m.To))
	line("Cc", addrs(m.Cc))
	line("Bcc", addrs(m.Bcc))
	line("Reply-To", addrs(m.ReplyTo))
	line("Env-From", m.EnvelopeFrom)
	line("Env-To", addrs(m.EnvelopeTo))
	line("Subject", m.Subject)
	var notes []string
	if m.Partial {
		notes = append(notes, "partial (judged before it was complete)")
	}
	if m.Truncated {
		notes = append(notes, "truncated (content over a limit was not kept)")
	}
	if m.Unreadable != "" {
		notes = append(notes, "not read whole: "+m.Unreadable)
	}
	line("Note", strings.Join(notes, "; "))
	if len(m.Headers) > 0 {
		b.WriteString("\nheaders:\n")
		for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
			for _, v := range m.Headers[k] {
				fmt.Fprintf(&b, "  %s: %s\n", clean(k), clean(v))
			}
		}
	}
	body := func(name, s string) {
		if s != "" {
			fmt.Fprintf(&b, "\n%s:\n%s\n", name, cleanText(s))
		}
	}
	body("text body", m.TextBody)
	body("html body", m.HTMLBody)
	for i, x := range m.Extra {
		body(fmt.Sprintf("extra text %d", i+1), x)
	}
	if len(m.Attachments) > 0 {
		b.WriteString("\nattachments (contents: aarsm quarantine show --json):\n")
		for _, a := range m.Attachments {
			fmt.Fprintf(&b, "  %q %s, %d bytes, sha256 %x\n", a.Name, clean(a.ContentType), len(a.Content), sha256.Sum256(a.Content))
		}
	}
	return b.String()
}

// clean replaces control characters (line breaks included) and bidi
// overrides with '?'.
func clean(s string) string { return strings.Map(safeRune(false), s) }

// cleanText does as clean but keeps line breaks and tabs.
func cleanText(s string) string { return strings.Map(safeRune(true), s) }

func safeRune(keepLines bool) func(rune) rune {
	return func(r rune) rune {
		if keepLines && (r == '\n' || r == '\t') {
			return r
		}
		if unicode.IsControl(r) || (r >= 0x200e && r <= 0x200f) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
			return '?'
		}
		return r
	}
}
