package enforce

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/egress"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveOK serves HTTP "ok" on host, any port.
func serveOK(t *testing.T, host string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// curlExit fetches http://dest/ from cg and returns curl's exit code.
func curlExit(t *testing.T, cg *testenv.Cgroup, dest netip.AddrPort) int {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "http://"+dest.String()+"/")
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return cmd.ProcessState.ExitCode()
}

// A reload whose egress policy has a bad CIDR or host name is refused
// with file:line:column, and nothing of it is applied: the egress policy
// in force stays as it was, in the kernel.
func TestEgressReloadKeepsPolicy(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	allowed, other := serveOK(t, "127.0.0.1"), serveOK(t, "127.0.0.2")
	policyFor := func(cidrs string) string {
		return fmt.Sprintf(`egress_policy "reload" {
  scope {
    cgroups = [%q]
  }
  allow {
    cidrs = [%s]
  }
  allow {
    hosts = ["localhost"]
  }
}
`, cg.Name(), cidrs)
	}
	dir := policyDir(t, map[string]string{"egress.hcl": policyFor(fmt.Sprintf("%q", allowed.Addr().String()+"/32"))})
	enf, err := egress.Open(egress.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- enf.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; enf.Close() })
	diag := &syncBuffer{}
	a := startOpts(t, dir, cg, Options{Egress: enf, DiagOut: diag}).agent

	if code := curlExit(t, cg, allowed); code != 0 {
		t.Fatalf("allowed: curl exit %d", code)
	}
	if code := curlExit(t, cg, other); code != 7 {
		t.Fatalf("unlisted: curl exit %d, want 7", code)
	}

	// A broken file that would allow the other address.
	broken := strings.Replace(policyFor(fmt.Sprintf("%q, %q", other.Addr().String()+"/32", "10.0.0.0/33")), `"localhost"`, `"local host"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "egress.hcl"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil {
		t.Fatal("a policy with a bad CIDR reloaded")
	}
	out := diag.String()
	for _, want := range []string{"Invalid CIDR", "egress.hcl line 6, column 30", "Invalid host name", "egress.hcl line 9, column 14"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, out)
		}
	}
	if code := curlExit(t, cg, other); code != 7 {
		t.Errorf("after the refused reload, the address it would allow: curl exit %d, want 7", code)
	}
	if code := curlExit(t, cg, allowed); code != 0 {
		t.Errorf("after the refused reload, the address allowed before: curl exit %d", code)
	}

	// Fixed: applied.
	if err := os.WriteFile(filepath.Join(dir, "egress.hcl"), []byte(policyFor(fmt.Sprintf("%q", other.Addr().String()+"/32"))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if code := curlExit(t, cg, other); code != 0 {
		t.Errorf("after the good reload: curl exit %d", code)
	}
}
