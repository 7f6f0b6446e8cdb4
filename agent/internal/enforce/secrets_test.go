package enforce

import (
	"encoding/base64"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Fake secrets (shaped like real ones, valid nowhere), one per place a
// mail can carry one.
const (
	secretInBody    = "AKIAQ3EGRTYPLMZK7VWD"                             // AWS access key id, in the text
	secretInSubject = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXq"               // Stripe key, in the subject
	secretInHeader  = "tok_9fQ2xLrT7vKp3ZmW8nYb4HsJd6GcA1e"              // bearer token, Authorization
	secretInName    = "ghp_Xq3vT9mLw2ZrK8pYb5HsJd7GcA1eNf4uQo6R"         // GitHub token, an attachment's name
	postmarkToken   = "5f1c8e2a-93b4-4d7e-a1c6-0b2f9e8d7c34"             // X-Postmark-Server-Token (HTTP only)
	attachmentText  = "password: Hunter2-Correct-Horse and nothing else" // content: makes it sensitive
)

// leakedSecrets returns, for every field of entry, the secrets (whole, or
// their middle 12 bytes) its value holds.
func leakedSecrets(entry map[string]any) []string {
	var out []string
	for k, v := range entry {
		val := fmt.Sprint(v)
		for _, s := range []string{secretInBody, secretInSubject, secretInHeader, secretInName, postmarkToken, "Hunter2-Correct-Horse"} {
			mid := s[len(s)/2-6 : len(s)/2+6]
			if strings.Contains(val, s) || strings.Contains(val, mid) {
				out = append(out, fmt.Sprintf("%s holds %q: %s", k, s, val))
			}
		}
	}
	sort.Strings(out)
	return out
}

// Mails carrying a secret in one place each (text, subject, an
// Authorization header, an attachment's name and content) are blocked by a
// real enforcing agent, and no field of their verdicts, read back from
// journald, holds any secret: over HTTPS (the Postmark API, curl) and
// over SMTPS (curl). One place per mail: the agent blocks at the first
// violation it sees, so each secret is the one its verdict is about.
func TestVerdictFieldsHoldNoSecret(t *testing.T) {
	e := start(t)
	check := func(t *testing.T, cmd *exec.Cmd) {
		t.Helper()
		if err := e.cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatal("the mail carrying a secret was not stopped")
		}
		v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))[0]
		for _, l := range leakedSecrets(v) {
			t.Error(l)
		}
		t.Logf("AARSM_RULES=%v AARSM_VIOLATIONS=%v\nMESSAGE=%v", v["AARSM_RULES"], v["AARSM_VIOLATIONS"], v["MESSAGE"])
	}
	att := base64.StdEncoding.EncodeToString([]byte(attachmentText))
	type mailParts struct{ subject, text, header, attachment string }
	places := map[string]mailParts{
		"text":            {subject: "numbers", text: "aws key " + secretInBody},
		"subject":         {subject: "deploy key " + secretInSubject, text: "see subject"},
		"authorization":   {subject: "numbers", text: "see header", header: "Bearer " + secretInHeader},
		"attachment name": {subject: "numbers", text: "see attachment", attachment: secretInName + ".txt"},
	}
	for _, place := range []string{"text", "subject", "authorization", "attachment name"} {
		m := places[place]
		t.Run("postmark api/"+place, func(t *testing.T) {
			body := `{"From":"ops@company.com","To":"ceo@company.com","Subject":"` + m.subject + `","TextBody":"` + m.text + `"`
			if m.header != "" {
				body += `,"Headers":[{"Name":"Authorization","Value":"` + m.header + `"}]`
			}
			if m.attachment != "" {
				body += `,"Attachments":[{"Name":"` + m.attachment + `","Content":"` + att + `","ContentType":"text/plain"}]`
			}
			body += "}"
			// Addressed to Postmark by name (Host), so that its fields
			// (Headers, Attachments) are read as Postmark's.
			h := map[string]string{"Content-Type": "application/json", "X-Postmark-Server-Token": postmarkToken, "Host": "api.postmarkapp.com"}
			if m.header != "" {
				h["Authorization"] = m.header
			}
			check(t, testenv.Curl(t, e.ca, e.srv.URL(), testenv.Request{Method: "POST", Path: "/email", Header: h, Body: []byte(body)}))
			if n := len(e.srv.Requests()); n != 0 {
				t.Errorf("the API got %d requests", n)
			}
		})
		t.Run("smtp/"+place, func(t *testing.T) {
			smtp := testenv.NewSMTPServer(t, e.ca)
			var b strings.Builder
			b.WriteString("From: ops@company.com\r\nTo: ceo@company.com\r\nSubject: " + m.subject + "\r\n")
			if m.header != "" {
				b.WriteString("Authorization: " + m.header + "\r\n")
			}
			b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\n" + m.text + "\r\n")
			if m.attachment != "" {
				b.WriteString("--XYZ\r\nContent-Type: text/plain; name=\"" + m.attachment + "\"\r\nContent-Disposition: attachment; filename=\"" + m.attachment + "\"\r\n" +
					"Content-Transfer-Encoding: base64\r\n\r\n" + att + "\r\n")
			}
			b.WriteString("--XYZ--\r\n")
			check(t, testenv.CurlSMTP(t, e.ca, smtp.URL(), "ops@company.com", []string{"ceo@company.com"}, []byte(b.String())))
			if n := len(smtp.Mails()); n != 0 {
				t.Errorf("the SMTP server got %d mails", n)
			}
		})
	}
}
