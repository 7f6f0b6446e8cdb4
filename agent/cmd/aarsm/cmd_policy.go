package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/aarsm/aarsm/agent/internal/policy"
)

const policyUsage = `usage: aarsm policy check PATH...

Validate e-mail security policy files. A PATH may be a file or a directory
(its *.hcl files are read). Every error is reported with its file, line,
column and a source snippet.

Exit status: 0 when the policies are valid, 1 when they have errors, 2 on a
usage error.
`

// runPolicy implements "aarsm policy SUBCOMMAND": today only "check".
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	case "check":
	default:
		fmt.Fprintf(stderr, "aarsm policy: unknown subcommand %q\n\n%s", args[0], policyUsage)
		return 2
	}
	fs := flag.NewFlagSet("aarsm policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage) }
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(stderr, "aarsm policy check: no PATH given\n\n%s", policyUsage)
		return 2
	}
	err := policy.Check(fs.Args(), stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, policy.ErrInvalid):
		return 1
	default:
		fmt.Fprintf(stderr, "aarsm policy check: %v\n", err)
		return 1
	}
}
