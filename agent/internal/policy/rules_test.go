package policy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// undeclared_recipients is a blocked_actions switch, on by default, that
// a policy turns off like the others.
func TestUndeclaredRecipientsRule(t *testing.T) {
	dir := t.TempDir()
	src := `email_security_policy "default-on" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
}
email_security_policy "off" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
  blocked_actions {
    unauthorized_bcc_recipients = true
    undeclared_recipients       = false
  }
}
email_security_policy "on" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
  blocked_actions {
    undeclared_recipients = true
    unauthorized_bcc_recipients = false
  }
}
`
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	set, diags := Load(dir)
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	for i, want := range []struct{ undeclared, bcc bool }{{true, true}, {false, true}, {true, false}} {
		r := set.Policies[i].Rules
		if r.UndeclaredRecipients != want.undeclared || r.UnauthorizedBcc != want.bcc || !r.UnknownRecipients {
			t.Errorf("%s: rules %+v", set.Policies[i].Name, r)
		}
	}
}

// Bad values of undeclared_recipients are reported at the value, with
// file, line and column; the attribute misspelt or in the wrong block is
// reported where it is written.
func TestUndeclaredRecipientsErrors(t *testing.T) {
	dir := t.TempDir()
	src := `email_security_policy "p" {
  blocked_actions {
    undeclared_recipients = "no"
  }
}
email_security_policy "q" {
  blocked_actions {
    undeclared_recipients = 0
  }
}
email_security_policy "r" {
  blocked_actions {
    undeclared_recipients = null
  }
}
email_security_policy "s" {
  blocked_actions {
    undeclared_recipients = var.on
  }
}
email_security_policy "t" {
  blocked_actions {
    undeclared_recipient = false
  }
}
email_security_policy "u" {
  content_protection {
    undeclared_recipients = false
  }
}
`
	file := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	set, diags := Load(dir)
	if len(set.Policies) != 0 {
		t.Errorf("%d policies loaded from a file with errors", len(set.Policies))
	}
	want := []struct {
		line, col int
		summary   string
		detail    string
	}{
		{3, 29, "Incorrect attribute value type", `"undeclared_recipients": bool required, got string`},
		{8, 29, "Incorrect attribute value type", `"undeclared_recipients": bool required, got number`},
		{13, 29, "Missing value", `"undeclared_recipients" must not be null`},
		{18, 29, "Variables not allowed", ""},
		{23, 5, "Unsupported argument", `Did you mean "undeclared_recipients"?`},
		{28, 5, "Unsupported argument", `"undeclared_recipients" is not expected here`},
	}
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	if len(errs) != len(want) {
		t.Fatalf("%d errors, want %d: %v", len(errs), len(want), errs)
	}
	for i, w := range want {
		d := errs[i]
		if d.Subject == nil || d.Subject.Filename != file || d.Subject.Start.Line != w.line || d.Subject.Start.Column != w.col ||
			d.Summary != w.summary || !strings.Contains(d.Detail, w.detail) {
			t.Errorf("error %d: %s: %s: %s; want line %d column %d %q %q", i, d.Subject, d.Summary, d.Detail, w.line, w.col, w.summary, w.detail)
		}
	}
	var buf bytes.Buffer
	if err := Check([]string{file}, &buf); !errors.Is(err, ErrInvalid) {
		t.Fatalf("check: %v", err)
	}
	for _, w := range want {
		loc := "on " + file + " line " + strconv.Itoa(w.line) + ", column " + strconv.Itoa(w.col)
		if !strings.Contains(buf.String(), loc) {
			t.Errorf("check output lacks %q:\n%s", loc, buf.String())
		}
	}
}
