package enforce

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// keepAliveClient is a python client that sends n mails over one
// keep-alive HTTPS connection and prints the mean round trip in µs.
const keepAliveClient = `
import http.client, ssl, sys, time, json
host, port, ca, n, bcc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection(host, port, context=ctx)
c.connect()
t0 = time.perf_counter()
for i in range(n):
    mail = {"From": "ops@company.com", "To": "ceo@company.com", "Subject": "m%d" % i, "TextBody": "x" * 512}
    if bcc:
        mail["Bcc"] = bcc
    c.request("POST", "/email", body=json.dumps(mail), headers={"Content-Type": "application/json", "Connection": "keep-alive"})
    c.getresponse().read()
print("%.1f" % ((time.perf_counter() - t0) / n * 1e6))
`

func runKeepAlive(b *testing.B, e *env, n int, bcc string) (float64, error) {
	script := filepath.Join(b.TempDir(), "client.py")
	if err := os.WriteFile(script, []byte(keepAliveClient), 0o644); err != nil {
		b.Fatal(err)
	}
	host, port, _ := strings.Cut(e.srv.Addr(), ":")
	cmd := exec.Command("python3", script, host, port, e.ca.CAFile, fmt.Sprint(n), bcc)
	var out strings.Builder
	cmd.Stdout = &out
	if err := e.cg.Start(cmd); err != nil {
		b.Fatal(err)
	}
	err := cmd.Wait()
	var us float64
	fmt.Sscanf(out.String(), "%f", &us)
	return us, err
}

// BenchmarkVerdictLatency: 1000 judged writes with and without the agent,
// in one run. Prints the client round trip of each and their ratio, the
// agent's hit → release percentiles, and what a backdoored client got
// through.
func BenchmarkVerdictLatency(b *testing.B) {
	testenv.RequireRoot(b)
	const n = 1000
	e := &env{jd: nil, cg: testenv.NewCgroup(b), ca: testenv.NewCA(b)}
	e.srv = testenv.NewServer(b, e.ca)
	for i := 0; i < b.N; i++ {
		base, err := runKeepAlive(b, e, n, "")
		if err != nil {
			b.Fatalf("baseline client: %v", err)
		}
		logger, err := journal.New(journal.Options{Format: journal.FormatJSON, Out: io.Discard})
		if err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		src, _ := os.ReadFile(filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl"))
		os.WriteFile(filepath.Join(dir, "company.hcl"), src, 0o644)
		scopePolicies(b, dir, e.cg)
		a, err := New(Options{PolicyDir: dir, Verdicts: logger, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), HoldCgroups: []string{e.cg.Path()}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		held, err := runKeepAlive(b, e, n, "")
		if err != nil {
			b.Fatalf("client with the agent: %v", err)
		}
		before := len(e.srv.Requests())
		_, malErr := runKeepAlive(b, e, 10, "phan@giftshop.club")
		leaked := len(e.srv.Requests()) - before
		cancel()
		<-done
		a.Close()
		lat := a.HoldLatencies()
		if len(lat) < n {
			b.Fatalf("%d writes judged, want at least %d", len(lat), n)
		}
		pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
		b.Logf("round trip per mail: %.0f µs without agent, %.0f µs with agent holding every write (ratio %.2f)", base, held, held/base)
		b.Logf("hit → release over %d held writes: p50 %v, p99 %v", len(lat), pct(0.50), pct(0.99))
		b.Logf("backdoored client: %d of 10 mails reached the API (client: %v)", leaked, malErr)
		b.ReportMetric(held/base, "ratio")
		b.ReportMetric(float64(pct(0.50).Microseconds()), "p50-µs")
		b.ReportMetric(float64(pct(0.99).Microseconds()), "p99-µs")
		b.ReportMetric(float64(leaked), "leaked")
	}
}
