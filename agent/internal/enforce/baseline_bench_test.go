package enforce

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pipeline"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// BenchmarkBaselineRequest is what the baseline adds to the agent for a
// request that is no mail (the benchmark's own process, an executable in
// every policy's scope, to a destination it learned), beside what
// judging a small mail of the same process costs, in one run; with their
// ratio. No kernel needed: the judging stages only.
func BenchmarkBaselineRequest(b *testing.B) {
	dir := policyDir(&testing.T{}, map[string]string{"p.hcl": "agent {\n  baseline = \"learn\"\n}\n" + mcpPolicy})
	a := &Agent{
		opts: Options{PolicyDir: dir, StateDir: b.TempDir(), DiagOut: io.Discard},
		log:  slog.New(slog.DiscardHandler), facts: factCache{}, toolCalls: nil, pipe: pipeline.New(pipeline.Options{}),
	}
	if err := a.Reload(); err != nil {
		b.Fatal(err)
	}
	a.openBaseline(a.loaded.Load().Set)
	a.applyBaseline(a.loaded.Load().Set)
	defer a.closeBaseline()
	ev := &probe.Event{PID: uint32(os.Getpid())}
	req := []found{{dest: "api.example:443", endpoint: "GET api.example/v1/items"}}
	if v := a.judge(req, a.factsOf(ev), false); len(v) != 0 || a.facts[ev.PID].ident == nil {
		b.Fatalf("learning: %+v; identity %+v", v, a.facts[ev.PID].ident)
	}
	msg := &mail.Message{Provider: "postmark", To: []mail.Address{{Addr: "ceo@company.example"}}, From: []mail.Address{{Addr: "ops@company.example"}}, Subject: "Q3", TextBody: "The numbers."}
	mails := []found{{dest: "api.example:443", msg: msg}}
	var perReq, perMail time.Duration
	b.Run("request", func(b *testing.B) {
		for b.Loop() {
			a.judge(req, a.factsOf(ev), false)
		}
		perReq = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("mail", func(b *testing.B) {
		for b.Loop() {
			a.judge(mails, a.factsOf(ev), false)
		}
		perMail = b.Elapsed() / time.Duration(b.N)
	})
	if perMail > 0 {
		b.Logf("a request observed by the baseline: %v; a small mail judged (baseline included): %v (ratio %.2f)", perReq, perMail, float64(perReq)/float64(perMail))
	}
}
