package detect

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// Test secrets are assembled at run time so that the source holds no string
// a secret scanner would flag.
func j(parts ...string) string { return strings.Join(parts, "") }

const alnum = "Ab3dE5fG7hJ9kL2mN4pQ6rS8tU1vW3xY5zA7bC9dE2fG4hJ6kL8mN1pQ3rS5tU7vW9xY2zA4bC6dE8fG1hJ3kL5mN7pQ9rS2tU4vW6xY8z"

func jwt() string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"1234567890","name":"x"}`))
	return h + "." + p + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
}

func TestScanFinds(t *testing.T) {
	tests := []struct {
		detector string
		text     string
	}{
		{"aws_access_key_id", j("key id: AKIA", "Q3ZJ5WXRT7KBN2LM", " ok")},
		{"aws_access_key_id", j("ASIA", "Q3ZJ5WXRT7KBN2LM")},
		{"aws_secret_access_key", j("aws_secret_access_key = ", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz", "Q3ZJ5WXR")},
		{"github_token", j("token ghp_", alnum[:36])},
		{"github_token", j("github_pat_", alnum[:22], "_", alnum[22:81])},
		{"gitlab_token", j("glpat-", alnum[:20])},
		{"slack_token", j("xoxb-", "123456789012-1234567890123-", alnum[:24])},
		{"slack_webhook", j("https://hooks.slack.com/services/", "T00000000/B00000000/", alnum[:24])},
		{"stripe_secret_key", j("sk_", "live_", alnum[:24])},
		{"stripe_secret_key", j("rk_", "test_", alnum[:24])},
		{"google_api_key", j("key=AIza", alnum[:35], "&x=1")},
		{"openai_api_key", j("sk-", "proj-", alnum[:40])},
		{"openai_api_key", j("sk-", alnum[:20], "T3BlbkFJ", alnum[20:40])},
		{"anthropic_api_key", j("sk-", "ant-api03-", alnum[:93], "AA")},
		{"jwt", "Authorization token " + jwt()},
		{"secret_assignment", j(`"client_secret": "`, alnum[:32], `"`)},
		{"secret_assignment", j("Authorization: Bearer ", alnum[:40])},
		{"private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + alnum[:64] + "\n-----END RSA PRIVATE KEY-----"},
		{"private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\r\n"},
		{"private_key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF" + alnum[:60]},
		{"password", "Your login\nPassword: Tr0ub4dor&3\nThanks"},
		{"password", "the db passwd=hunter22 was rotated"},
		{"password", "Passwort: correcthorsebatterystaple"},
		{"password", "password is: S3cretSauce"},
		{"url_credentials", "clone https://deploy:s3cr3tT0ken@git.company.com/repo.git"},
		{"url_credentials", "DATABASE_URL=postgres://app:Xk29!qz@db.internal:5432/prod"},
	}
	for _, tt := range tests {
		fs := Scan(tt.text, KindAll, 0)
		found := false
		for _, f := range fs {
			if f.Detector == tt.detector {
				found = true
				if f.Detector != "private_key" && strings.Contains(tt.text, f.Redacted) && len(f.Redacted) > 12 {
					t.Errorf("%s: redacted form %q leaks the secret", tt.detector, f.Redacted)
				}
			}
		}
		if !found {
			t.Errorf("%s not found in %q (got %+v)", tt.detector, tt.text, fs)
		}
	}
}

// Benign look-alikes must not be reported.
func TestScanBenign(t *testing.T) {
	texts := []string{
		"AKIAIOSFODNN7EXAMPLE is the documented sample access key",
		"AKIA1234567890123456 has digits AWS never uses",
		"AKIASHORT",
		"ghp_ is the prefix of a GitHub token",
		"ghp_tooShort123",
		"glpat-xxxxxxxxxxxxxxxxxxxx",
		"xoxb-not-a-token",
		j("pk_", "live_", alnum[:24], " is a publishable key and may be public"),
		"sk_live_short",
		"AIzaShort",
		"desk-top task-list sk-learn scikit",
		"sk-ant-api03-short",
		"eyJhbGciOiJIUzI1NiJ9 alone is only a header",
		"eyJub3QiOiJqd3QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl (header without alg)",
		"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + alnum[:40] + "\n-----END PUBLIC KEY-----",
		"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ" + "\n-----END CERTIFICATE-----",
		"The file starts with -----BEGIN RSA PRIVATE KEY----- and ends with END.",
		"Password: ********",
		"Password: <your password>",
		"password: {{ password }}",
		"password: ${DB_PASSWORD}",
		"Forgot your password? Click here.",
		"Your password: changed",
		"password: reset",
		"Password: (hidden)",
		"password=",
		"https://user@github.com/org/repo",
		"mailto:alice@company.com",
		"https://example.com/@handle",
		"postgres://app:${DB_PASSWORD}@db:5432/prod",
		"https://user:****@host.example",
		"https://user:password@host.example",
		"api_key: YOUR_API_KEY_GOES_HERE",
		"client_secret = xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		"Bearer tokens are described in RFC 6750",
		"boarding pass: ABC123XYZ",
		"The meeting is at 10:00, see https://meet.example.com/abc-defg-hij",
	}
	for _, s := range texts {
		if fs := Scan(s, KindAll, 0); len(fs) > 0 {
			t.Errorf("false positive in %q: %+v", s, fs)
		}
	}
}

func TestScanKinds(t *testing.T) {
	text := j("AKIA", "Q3ZJ5WXRT7KBN2LM password: Tr0ub4dor&3")
	if fs := Scan(text, KindAPIKey, 0); len(fs) != 1 || fs[0].Detector != "aws_access_key_id" {
		t.Errorf("api keys only: %+v", fs)
	}
	if fs := Scan(text, KindCredential, 0); len(fs) != 1 || fs[0].Detector != "password" || fs[0].Kind != KindCredential {
		t.Errorf("credentials only: %+v", fs)
	}
	if fs := Scan(strings.Repeat(j("AKIA", "Q3ZJ5WXRT7KBN2LM "), 100), KindAll, 5); len(fs) != 5 {
		t.Errorf("max not honoured: %d", len(fs))
	}
}

func TestRedaction(t *testing.T) {
	fs := Scan(j("AKIA", "Q3ZJ5WXRT7KBN2LM"), KindAll, 0)
	if len(fs) != 1 || fs[0].Redacted != "AKIA…N2LM" {
		t.Fatalf("%+v", fs)
	}
	fs = Scan("Password: Tr0ub4dor&3", KindAll, 0)
	if len(fs) != 1 || strings.Contains(fs[0].Redacted, "Tr0") {
		t.Fatalf("password redaction: %+v", fs)
	}
}

func zipWith(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, n := range names {
		f, err := w.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("x"))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSensitiveAttachment(t *testing.T) {
	tests := []struct {
		name, ctype string
		content     []byte
		want        string
	}{
		{"id_rsa", "", []byte("x"), ReasonPrivateKey},
		{"home/.ssh/id_ed25519", "", nil, ReasonPrivateKey},
		{"server.key", "application/octet-stream", []byte("-----BEGIN"), ReasonPrivateKey},
		{"bundle.p12", "", nil, ReasonKeyBundle},
		{"cert.PFX", "", nil, ReasonKeyBundle},
		{"x.bin", "application/x-pkcs12", nil, ReasonKeyBundle},
		{"release.jks", "", nil, ReasonKeystore},
		{"store", "", []byte{0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2}, ReasonKeystore},
		{"Passwords.kdbx", "", nil, ReasonKeystore},
		{".env", "text/plain", []byte("A=1"), ReasonEnvFile},
		{".env.production", "", nil, ReasonEnvFile},
		{"prod.env", "", nil, ReasonEnvFile},
		{"settings.txt", "text/plain", []byte("DB_HOST=db\nDB_PASSWORD=hunter2\nDEBUG=0\n"), ReasonEnvFile},
		{"backup.sql.gz", "application/gzip", []byte{0x1f, 0x8b}, ReasonDBDump},
		{"prod.sql", "", []byte("-- PostgreSQL database dump\nCOPY users FROM stdin;\n"), ReasonDBDump},
		{"data.sql", "", []byte("INSERT INTO users VALUES (1,'a');"), ReasonDBDump},
		{"export.dump", "", nil, ReasonDBDump},
		{"app.db", "", []byte("SQLite format 3\x00...."), ReasonDBDump},
		{"file.bin", "", []byte("PGDMP\x01\x0e"), ReasonDBDump},
		{"customers.sqlite", "", nil, ReasonDBDump},
		{"x", "application/sql", nil, ReasonDBDump},
		{".netrc", "", nil, ReasonCredFile},
		{"credentials", "", nil, ReasonCredFile},
		{"keys.zip", "application/zip", zipWith(t, "readme.txt", "deploy/.ssh/id_rsa"), ReasonPrivateKey + " in archive (id_rsa)"},
		{"PPK", "", []byte("PuTTY-User-Key-File-3: ssh-ed25519\n"), ReasonPrivateKey},
		// Benign look-alikes.
		{"report.pdf", "application/pdf", []byte("%PDF-1.7"), ""},
		{"Q3 Keynote.key", "application/octet-stream", []byte("PK\x03\x04rest-of-zip"), ""},
		{"id_rsa.pub", "", []byte("ssh-ed25519 AAAA"), ""},
		{"ca.crt", "application/x-x509-ca-cert", []byte("-----BEGIN CERTIFICATE-----"), ""},
		{"public.pem", "", []byte("-----BEGIN CERTIFICATE-----"), ""},
		{"schema.sql", "", []byte("CREATE TABLE users (id int);"), ""},
		{"Thumbs.db", "", []byte{0xD0, 0xCF, 0x11, 0xE0}, ""},
		{"environment.pdf", "", nil, ""},
		{"photos.zip", "application/zip", zipWith(t, "a.jpg", "b.jpg"), ""},
		{"notes.txt", "text/plain", []byte("meeting at 10\nbring coffee\n"), ""},
		{"config.ini", "", []byte("[db]\nhost=x\n"), ""},
		{"broken.zip", "", []byte("PK\x03\x04garbage"), ""},
	}
	for _, tt := range tests {
		if got := SensitiveAttachment(tt.name, tt.ctype, tt.content); got != tt.want {
			t.Errorf("SensitiveAttachment(%q, %q) = %q, want %q", tt.name, tt.ctype, got, tt.want)
		}
	}
}

func FuzzScan(f *testing.F) {
	f.Add("password: Tr0ub4dor&3 AKIAQ3ZJ5WXRT7KBN2LM https://a:b@c")
	f.Add("-----BEGIN RSA PRIVATE KEY-----\n" + alnum)
	f.Add(jwt())
	f.Fuzz(func(t *testing.T, s string) {
		for _, fd := range Scan(s, KindAll, 0) {
			if fd.Offset < 0 || fd.Offset > len(s) || fd.Detector == "" {
				t.Fatalf("bad finding %+v", fd)
			}
		}
	})
}

func FuzzSensitiveAttachment(f *testing.F) {
	f.Add("id_rsa", "", []byte("x"))
	f.Add("a.zip", "application/zip", []byte("PK\x03\x04"))
	f.Add("x.sql", "application/sql; charset=utf-8", []byte("INSERT INTO"))
	f.Fuzz(func(t *testing.T, name, ct string, content []byte) {
		_ = SensitiveAttachment(name, ct, content)
	})
}
