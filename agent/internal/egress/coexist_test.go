package egress

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
)

// The egress programs and the network quarantine's are attached to the
// same cgroup root side by side (multi-attach links): the quarantine still
// cuts off its cgroup when an egress policy allows the destination, and
// the egress policy still refuses what it does not list once the
// quarantine is lifted.
func TestEgressBesideQuarantine(t *testing.T) {
	k := startEnforcer(t, Options{})
	rnd := make([]byte, 6)
	_, _ = rand.Read(rnd)
	q, err := act.OpenQuarantine(act.QuarantineOptions{PinDir: "/sys/fs/bpf/aarsm-test-" + hex.EncodeToString(rnd), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Unpin(); err != nil {
			t.Error(err)
		}
	})
	allowed, unlisted := httpServer(t, "127.0.0.1"), httpServer(t, "127.0.0.2")
	k.apply(t, fmt.Sprintf("egress_policy \"beside\" {\n  scope {\n    cgroups = [%q]\n  }\n  allow {\n    cidrs = [\"127.0.0.1/32\"]\n  }\n}\n", k.cg.Name()))
	if err := q.Add(k.cg.ID(), k.cg.Name(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if code, _ := curl(t, k.cg, allowed); code != 7 {
		t.Errorf("quarantined, to a destination the egress policy allows: curl exit %d, want 7", code)
	}
	if err := q.Remove(k.cg.ID()); err != nil {
		t.Fatal(err)
	}
	if code, _ := curl(t, k.cg, allowed); code != 0 {
		t.Errorf("quarantine lifted, allowed destination: curl exit %d", code)
	}
	if code, _ := curl(t, k.cg, unlisted); code != 7 {
		t.Errorf("quarantine lifted, unlisted destination: curl exit %d, want 7", code)
	}
}
