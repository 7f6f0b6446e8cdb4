package enforce

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A message blocked under a policy that quarantines is handed to the
// vault whole, with who sent it and why; the journal names the entry and
// gets none of the message's text.
func TestBlockedMessageIsKept(t *testing.T) {
	testenv.RequireRoot(t)
	v, err := vault.Open(filepath.Join(t.TempDir(), "quarantine"), vault.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	w := vault.NewWriter(v, slog.New(slog.NewTextHandler(io.Discard, nil)), 0)
	t.Cleanup(w.Close)
	dir := policyDir(t, map[string]string{"q.hcl": `email_security_policy "keep" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    violation_action    = "quarantine_and_alert"
    quarantine_duration = "1h"
  }
}
`})
	cg := testenv.NewCgroup(t)
	e := startWith(t, dir, cg, &act.Executor{Vault: w})
	text := "numbers " + marker(t)
	bad := testenv.Curl(t, e.ca, e.srv.URL(), postmark(marker(t), `,"Bcc":"phan@giftshop.club","HtmlBody":"`+text+`"`))
	if err := cg.Start(bad); err != nil {
		t.Fatal(err)
	}
	if err := bad.Wait(); err == nil {
		t.Fatal("the mail went through")
	}
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(bad.Process.Pid))[0]
	actions := fmt.Sprint(rec["AARSM_ACTION_DETAILS"])
	_, id, ok := strings.Cut(actions, "quarantine message=")
	id, _, _ = strings.Cut(id, ",")
	if !ok || !vault.ValidID(id) {
		t.Fatalf("actions %q name no vault entry", actions)
	}
	for k, val := range rec {
		if strings.Contains(fmt.Sprint(val), text) {
			t.Errorf("the journal got the message's text in %s", k)
		}
	}
	var got *vault.Entry
	deadline := time.Now().Add(10 * time.Second)
	for got == nil {
		got, err = v.Get(id)
		if got == nil && time.Now().After(deadline) {
			t.Fatalf("entry %s not written: %v", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := got.Message
	if got.Policy != "keep" || got.PID != uint32(bad.Process.Pid) || got.Comm != "curl" || got.Cgroup != cg.Name() || got.Dest == "" ||
		got.Recipients != 2 || time.Until(got.Expires) < 59*time.Minute || len(got.Rules) == 0 {
		t.Errorf("header %+v", got.Header)
	}
	if m == nil || len(m.Bcc) != 1 || m.Bcc[0].Addr != "phan@giftshop.club" || !strings.Contains(m.HTMLBody, text) {
		t.Errorf("message %+v", m)
	}
}

// The copy handed to the background writer shares nothing the parser may
// write to.
func TestCloneMessage(t *testing.T) {
	content := []byte("secret")
	m := &mail.Message{Bcc: []mail.Address{{Addr: "x@y.z"}}, Attachments: []mail.Attachment{{Name: "a", Content: content}},
		Headers: map[string][]string{"X": {"1"}}}
	c := cloneMessage(m)
	content[0] = 'S'
	m.Bcc[0].Addr = "changed"
	m.Headers["X"][0] = "2"
	if string(c.Attachments[0].Content) != "secret" || c.Bcc[0].Addr != "x@y.z" || c.Headers["X"][0] != "1" {
		t.Fatalf("the copy changed with the original: %+v", c)
	}
}
