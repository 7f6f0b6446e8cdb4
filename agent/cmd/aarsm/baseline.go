package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

const baselineUsage = `usage: aarsm baseline COMMAND [OPTIONS]

  show [--json] [PACKAGE]           what every package and executable (or one) has been
                                    seen to do
  forget PACKAGE                    drop a package's baseline (NAME@VERSION: that version's
                                    only), after a legitimate upgrade for instance
  learn [--for DURATION] [PACKAGE]  let a package learn for DURATION (default 1h; 0 ends
                                    its window); without PACKAGE, every package

PACKAGE is npm:NAME[@VERSION], python:NAME[@VERSION], exe:/PATH or
script:/PATH, as the agent's log names it, or a name or path alone when it
names one package of the baseline. DURATION is "30m", "2h", "7d"...

The agent records, per package and per version and content hash, the
destinations (host:port) of every request it sends (HTTP/1.1, HTTP/2,
WebSocket, SMTP) and the recipient domains of its mail while the package
learns; then it flags what the package sends elsewhere, as a rug pull when
its version or content changed since it learned. What it keeps, by kind:
  mcp      an MCP server's package (npm:, python:, or its exe:/script:)
  package  the npm package or Python distribution a process in a policy's
           scope runs
  script   a script outside any package, by path and content hash
  exe      any other program in a policy's scope, by path and sha256
A package first seen by an enforcing agent learns for an hour, and so does
a forgotten one from its next use. The baseline is kept root-only in
<state dir>/baseline; these commands work on it whether the agent runs or
not (a running agent sees a change within a second), and need root.

Options:
  --state-dir DIR   the agent's state directory (default /var/lib/aarsm)
`

// maxLearnFor bounds "aarsm baseline learn --for".
const maxLearnFor = 365 * 24 * time.Hour

func runBaseline(args []string, stdout, stderr io.Writer) int {
	return baselineCommand(args, stdout, stderr, os.Geteuid(), time.Now())
}

// baselineCommand is "aarsm baseline", run as user euid at now.
func baselineCommand(args []string, stdout, stderr io.Writer, euid int, now time.Time) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, baselineUsage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, baselineUsage)
		return 0
	case "show", "forget", "learn":
	default:
		fmt.Fprintf(stderr, "aarsm baseline: unknown command %q\n\n%s", cmd, baselineUsage)
		return 2
	}
	fs := flag.NewFlagSet("aarsm baseline "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, baselineUsage) }
	stateDir := fs.String("state-dir", act.DefaultStateDir, "the agent's state directory")
	var asJSON *bool
	var learnFor *string
	switch cmd {
	case "show":
		asJSON = fs.Bool("json", false, "print the baseline as JSON (the file's format)")
	case "learn":
		learnFor = fs.String("for", "1h", "how long the package learns (0 ends its window)")
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "aarsm baseline %s: %v\n", cmd, explainBaseline(err))
		return 1
	}
	var arg string
	var ok bool
	if cmd == "forget" {
		arg, ok = parseWithArg(fs, args[1:], "PACKAGE")
	} else {
		arg, ok = parseOptionalArg(fs, args[1:])
	}
	if !ok {
		return 2
	}
	var sel baseline.Selector
	if arg != "" {
		s, err := baseline.ParseSelector(arg)
		if err != nil {
			fmt.Fprintf(stderr, "aarsm baseline %s: %v\n", cmd, err)
			return 2
		}
		sel = s
	}
	if euid != 0 {
		fmt.Fprintf(stderr, "aarsm baseline %s: must be run as root: the baseline is root-only\n", cmd)
		return 1
	}
	dir := baseline.Dir(*stateDir)
	switch cmd {
	case "show":
		return baselineShow(dir, arg != "", sel, *asJSON, now, stdout, fail)
	case "forget":
		var what string
		err := baseline.Update(dir, now, func(f *baseline.File) error {
			var err error
			what, err = f.Forget(sel)
			return err
		})
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "forgot %s (a running agent drops it within a second)\n", clean(what))
		return 0
	}
	d, err := policy.ParseDuration(*learnFor)
	if err != nil || d < 0 || d > maxLearnFor {
		fmt.Fprintf(stderr, "aarsm baseline learn: --for %q: not a duration between 0 and 365d\n", *learnFor)
		return 2
	}
	until := now.Add(d)
	var name string
	err = baseline.Update(dir, now, func(f *baseline.File) error {
		if arg == "" {
			f.LearnUntil = until.UTC()
			return nil
		}
		var err error
		name, err = f.Learn(sel, until)
		return err
	})
	if err != nil {
		return fail(err)
	}
	who := "every package learns"
	if arg != "" {
		who = clean(name) + " learns"
	}
	if d == 0 {
		fmt.Fprintf(stdout, "%s no more (learning window ended)\n", who)
	} else {
		fmt.Fprintf(stdout, "%s until %s\n", who, fmtTime(until))
	}
	return 0
}

// parseOptionalArg parses flags given before or after an optional
// argument.
func parseOptionalArg(fs *flag.FlagSet, args []string) (string, bool) {
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() == 0 {
		return "", true
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return "", false
	}
	return arg, true
}

func explainBaseline(err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w (the baseline is root-only: run as root)", err)
	case errors.Is(err, baseline.ErrNotFound):
		return fmt.Errorf("%w (see aarsm baseline show)", err)
	case errors.Is(err, baseline.ErrCorrupt):
		return fmt.Errorf("%w (left as it is: the agent moves a corrupt file aside when it reads it, and starts an empty baseline)", err)
	case errors.Is(err, baseline.ErrLocked):
		return fmt.Errorf("%w (another aarsm is changing it: try again)", err)
	}
	return err
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.DateTime + " MST") }

func baselineShow(dir string, selected bool, sel baseline.Selector, asJSON bool, now time.Time, stdout io.Writer, fail func(error) int) int {
	f, err := baseline.Read(dir)
	if err != nil {
		return fail(err)
	}
	all := f
	if selected {
		if f, err = f.Select(sel); err != nil {
			return fail(err)
		}
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(f); err != nil {
			return fail(err)
		}
		return 0
	}
	if _, err := io.WriteString(stdout, formatBaseline(f, len(all.Packages), baseline.Path(dir), now)); err != nil {
		return fail(err)
	}
	return 0
}

// formatBaseline writes a baseline for people. Names, versions and forms
// given come from the processes watched: control characters are escaped.
func formatBaseline(f *baseline.File, total int, path string, now time.Time) string {
	var b strings.Builder
	if total == 0 {
		fmt.Fprintf(&b, "baseline: nothing learned yet (%s)\n", path)
	} else {
		plural := "s"
		if total == 1 {
			plural = ""
		}
		fmt.Fprintf(&b, "baseline: %d package%s in %s", total, plural, path)
		if !f.Updated.IsZero() {
			fmt.Fprintf(&b, ", written %s", fmtTime(f.Updated))
		}
		if f.Mode != "" {
			fmt.Fprintf(&b, " (the agent was in %s mode)", f.Mode)
		}
		b.WriteString("\n")
	}
	if f.LearnUntil.After(now) {
		fmt.Fprintf(&b, "every package learns until %s\n", fmtTime(f.LearnUntil))
	}
	for _, p := range f.Packages {
		fmt.Fprintf(&b, "\n%-7s  %s", p.Kind(), clean(p.Name))
		var notes []string
		switch {
		case p.LearnUntil.After(now):
			notes = append(notes, "learning until "+fmtTime(p.LearnUntil))
		case f.LearnUntil.After(now), f.Mode == "learn":
			notes = append(notes, "learning")
		case f.Mode == "enforce":
			notes = append(notes, "enforced")
		}
		if !p.LastUsed.IsZero() {
			notes = append(notes, "last used "+fmtTime(p.LastUsed))
		}
		if len(p.Builds) == 0 {
			notes = append(notes, "nothing learned yet")
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, "  (%s)", strings.Join(notes, "; "))
		}
		b.WriteString("\n")
		for _, bd := range p.Builds {
			id := []string{}
			if bd.Version != "" {
				id = append(id, clean(bd.Version))
			}
			if bd.Hash != "" {
				id = append(id, clean(baseline.ShortHash(bd.Hash)))
			}
			if len(id) == 0 {
				id = append(id, "(no version, no hash)")
			}
			fmt.Fprintf(&b, "  %s  seen %s .. %s\n", strings.Join(id, " "), fmtTime(bd.FirstSeen), fmtTime(bd.LastSeen))
			if len(bd.Destinations)+len(bd.Domains) == 0 {
				b.WriteString("    nothing sent\n")
			}
			entry := func(kind string, e baseline.Entry) {
				fmt.Fprintf(&b, "    %-11s  %s  %d×, last %s", kind, clean(e.Value), e.Count, fmtTime(e.LastSeen))
				if len(e.Given) > 0 {
					given := make([]string, len(e.Given))
					for i, g := range e.Given {
						given[i] = fmt.Sprintf("%q", g)
					}
					fmt.Fprintf(&b, "  (as %s)", clean(strings.Join(given, ", ")))
				}
				b.WriteString("\n")
			}
			for _, e := range bd.Destinations {
				entry("destination", e)
			}
			for _, e := range bd.Domains {
				entry("domain", e)
			}
		}
	}
	return b.String()
}
