package journal

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/policy"
)

func fullEgress() Egress {
	return Egress{Blocked: true, Policies: []string{"mail-mcp"}, Hook: "connect4", Protocol: "tcp",
		Dest: netip.MustParseAddrPort("10.1.2.3:443"), PID: 42, Comm: "node", Exe: "/usr/bin/node",
		Unit: "postmark-mcp.service", Cgroup: "/system.slice/postmark-mcp.service", CgroupID: 7, Priority: policy.PriorityErr}
}

// The catalog's egress entry explains every AARSM_* field an egress entry
// can have, and no other.
func TestEgressCatalogListsEveryField(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "systemd", "aarsm.catalog"))
	if err != nil {
		t.Fatal(err)
	}
	_, entry, ok := strings.Cut(string(src), "\n-- "+EgressMessageID+"\n")
	if !ok {
		t.Fatalf("the catalog has no entry %s", EgressMessageID)
	}
	entry, _, _ = strings.Cut(entry, "\n-- ")
	_, list, ok := strings.Cut(entry, "The fields of this entry")
	if !ok {
		t.Fatal("the egress entry has no list of fields")
	}
	var catalog, fields []string
	for _, m := range regexp.MustCompile(`(?m)^  (AARSM_[A-Z0-9_]+) `).FindAllStringSubmatch(list, -1) {
		catalog = append(catalog, m[1])
	}
	for _, f := range fullEgress().Fields() {
		if strings.HasPrefix(f.Name, "AARSM_") {
			fields = append(fields, f.Name)
		}
	}
	slices.Sort(catalog)
	slices.Sort(fields)
	if !slices.Equal(catalog, fields) {
		t.Errorf("catalog fields %v, egress fields %v", catalog, fields)
	}
}

func TestEgressSentence(t *testing.T) {
	e := fullEgress()
	want := "egress blocked: pid 42 (node, /usr/bin/node, unit postmark-mcp.service) to 10.1.2.3:443 (connect4, policy mail-mcp)"
	if got := e.Sentence(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	e.Blocked = false
	if got := e.Sentence(); !strings.HasPrefix(got, "egress not allowed (monitor): pid 42") {
		t.Errorf("monitor: %q", got)
	}
}
