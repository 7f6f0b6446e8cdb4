package vault

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

var t0 = time.Date(2025, 9, 25, 12, 0, 0, 0, time.UTC)

func entry() *Entry {
	return &Entry{
		Policy: "company", Rules: []string{"quarantine_sensitive_attachments"}, Violations: []string{"id_rsa"},
		PID: 42, Comm: "node",
		Message: &mail.Message{Provider: "postmark", To: []mail.Address{{Addr: "a@company.com"}},
			Subject: "keys", Attachments: []mail.Attachment{{Name: "id_rsa", Content: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\x00\xff")}}},
	}
}

func TestPutGetPurge(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	v, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v %v", st.Mode(), err)
	}
	short, err := v.Put(entry(), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	long, err := v.Put(entry(), t0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{short, long} {
		st, err := os.Stat(filepath.Join(dir, id+".json"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("file mode %v %v", st.Mode(), err)
		}
	}
	e, err := v.Get(short)
	if err != nil {
		t.Fatal(err)
	}
	if e.Policy != "company" || string(e.Message.Attachments[0].Content) != "-----BEGIN OPENSSH PRIVATE KEY-----\x00\xff" ||
		!e.Expires.Equal(t0.Add(time.Hour)) || !e.Stored.Equal(t0) {
		t.Fatalf("round trip: %+v", e)
	}
	list, _ := v.List()
	if len(list) != 2 || list[0].ID != short {
		t.Fatalf("list %+v", list)
	}
	if n, err := v.Purge(t0.Add(59 * time.Minute)); n != 0 || err != nil {
		t.Fatalf("early purge removed %d (%v)", n, err)
	}
	if n, err := v.Purge(t0.Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("purge at expiry removed %d (%v)", n, err)
	}
	if _, err := v.Get(short); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged entry: %v", err)
	}
	if _, err := v.Get(long); err != nil {
		t.Fatalf("unexpired entry: %v", err)
	}
	if n, _ := v.Purge(t0.Add(25 * time.Hour)); n != 1 {
		t.Fatalf("second purge removed %d", n)
	}
}

func TestOpenTightensMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", st.Mode())
	}
}

func TestOpenRefusesSymlink(t *testing.T) {
	base := t.TempDir()
	target := filepath.Join(base, "elsewhere")
	os.Mkdir(target, 0o700)
	link := filepath.Join(base, "q")
	if err := os.Symlink(target, link); err != nil {
		t.Skip(err)
	}
	if _, err := Open(link); err == nil {
		t.Fatal("symlinked quarantine directory accepted")
	}
}

func TestGetRejectsBadIDs(t *testing.T) {
	v, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "../../etc/passwd", "00000000000000000001-zzzz", strings.Repeat("0", 20) + "-0123456789abcdef/x"} {
		if _, err := v.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q): %v", id, err)
		}
	}
}

func TestPutRejects(t *testing.T) {
	v, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(entry(), t0, 0); err == nil {
		t.Fatal("zero duration accepted")
	}
	big := entry()
	big.Message.Attachments[0].Content = make([]byte, MaxEntryBytes)
	if _, err := v.Put(big, t0, time.Hour); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large entry: %v", err)
	}
	if des, _ := os.ReadDir(v.Dir()); len(des) != 0 {
		t.Fatalf("left files behind: %v", des)
	}
}

func TestPurgeRemovesStaleTemporaries(t *testing.T) {
	v, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(v.Dir(), ".tmp-123")
	os.WriteFile(stale, []byte("x"), 0o600)
	old := t0.Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	fresh := filepath.Join(v.Dir(), ".tmp-456")
	os.WriteFile(fresh, []byte("x"), 0o600)
	os.Chtimes(fresh, t0, t0)
	if _, err := v.Purge(t0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("stale temporary kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh temporary removed")
	}
}
