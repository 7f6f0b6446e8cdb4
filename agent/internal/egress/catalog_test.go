package egress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

var catalogLine = regexp.MustCompile(`^  ([A-Z][A-Z0-9_]*) +(.*)$`)

// egressCatalog returns the fields the catalog's egress entry lists, with
// their text.
func egressCatalog(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "systemd", "aarsm.catalog"))
	if err != nil {
		t.Fatal(err)
	}
	_, entry, ok := strings.Cut(string(src), "\n-- "+journal.EgressMessageID+"\n")
	if !ok {
		t.Fatal("no egress entry in the catalog")
	}
	entry, _, _ = strings.Cut(entry, "\n-- ")
	_, list, _ := strings.Cut(entry, "The fields of this entry")
	out := map[string]string{}
	last := ""
	for _, l := range strings.Split(list, "\n") {
		if m := catalogLine.FindStringSubmatch(l); m != nil {
			last = m[1]
			out[last] = m[2]
		} else if strings.HasPrefix(l, "    ") && last != "" {
			out[last] += " " + strings.TrimSpace(l)
		}
	}
	return out
}

// A real refused connect, read back from a real journald: every field the
// catalog's egress entry lists is there, or the catalog says when it is
// absent and that is the case.
func TestEgressEntryMatchesCatalog(t *testing.T) {
	testenv.RequireRoot(t)
	jd := testenv.NewJournald(t)
	jl, err := journal.New(journal.Options{Format: journal.FormatJournal, SocketPath: jd.SocketPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jl.Close() })
	e, err := Open(Options{Journal: jl, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; e.Close() })
	k := &kenv{enf: e, cg: testenv.NewCgroup(t)}
	dest := httpServer(t, "127.0.0.2")
	k.apply(t, fmt.Sprintf("egress_policy \"cat\" {\n  scope {\n    cgroups = [%q]\n  }\n  allow {\n    cidrs = [\"192.0.2.0/24\"]\n  }\n}\n", k.cg.Name()))
	code, pid := curl(t, k.cg, dest)
	if code != 7 {
		t.Fatalf("curl exit %d, want 7", code)
	}
	entry := jd.WaitFor(t, 1, "MESSAGE_ID="+journal.EgressMessageID, "AARSM_PID="+strconv.Itoa(pid))[0]
	catalog := egressCatalog(t)
	if len(catalog) < 8 {
		t.Fatalf("catalog fields %v", catalog)
	}
	want := map[string]string{
		"PRIORITY": "3", "AARSM_VERDICT": "block", "AARSM_POLICY": "cat", "AARSM_EGRESS_HOOK": "connect4",
		"AARSM_EGRESS_PROTOCOL": "tcp", "AARSM_DEST": dest.String(), "AARSM_PID": strconv.Itoa(pid), "AARSM_COMM": "curl",
		"AARSM_CGROUP": k.cg.Name(), "AARSM_CGROUP_ID": strconv.FormatUint(k.cg.ID(), 10),
	}
	absentHere := map[string]string{"AARSM_UNIT": "the client runs in a test cgroup, no unit's"}
	for name, text := range catalog {
		v, ok := entry[name]
		if why, absent := absentHere[name]; absent && !ok {
			if !strings.Contains(text, "Absent when") {
				t.Errorf("%s is absent (%s) but the catalog does not say when", name, why)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: the catalog lists it, the entry lacks it", name)
			continue
		}
		if w, ok := want[name]; ok && fmt.Sprint(v) != w {
			t.Errorf("%s = %v, want %s", name, v, w)
		}
	}
	// AARSM_EXE: either the executable, or "?" when curl was gone before
	// the entry was written and no scope names its executable, as the
	// catalog says. AARSM_CGROUP is there either way: the scope names
	// curl's cgroup.
	if exe := fmt.Sprint(entry["AARSM_EXE"]); exe != "?" && !strings.HasSuffix(exe, "/curl") {
		t.Errorf("AARSM_EXE %q", exe)
	}
	for name := range entry {
		if strings.HasPrefix(name, "AARSM_") {
			if _, ok := catalog[name]; !ok {
				t.Errorf("%s is in the entry but not in the catalog", name)
			}
		}
	}
}
