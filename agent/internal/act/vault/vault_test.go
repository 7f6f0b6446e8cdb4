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
		Header: Header{Policy: "company", Rules: []string{"quarantine_sensitive_attachments"}, Violations: []string{"id_rsa"},
			PID: 42, Comm: "node", Dest: "api.postmarkapp.com"},
		Message: &mail.Message{Provider: "postmark", To: []mail.Address{{Addr: "a@company.com"}}, Bcc: []mail.Address{{Addr: "x@evil.example"}},
			Subject: "keys", Attachments: []mail.Attachment{{Name: "id_rsa", Content: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\x00\xff")}}},
	}
}

func TestPutGetPurge(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	v, err := Open(dir, Limits{})
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
	if list[0].Policy != "company" || list[0].Dest != "api.postmarkapp.com" || list[0].Recipients != 2 || list[0].PID != 42 ||
		!list[0].Expires.Equal(t0.Add(time.Hour)) || list[0].Size == 0 {
		t.Fatalf("list header %+v", list[0])
	}
	if next, ok, err := v.NextExpiry(t0); !ok || err != nil || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("NextExpiry %v %v %v", next, ok, err)
	}
	if next, ok, err := v.NextExpiry(t0.Add(time.Hour)); !ok || err != nil || !next.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("NextExpiry after the first %v %v %v", next, ok, err)
	}
	if ids, err := v.Purge(t0.Add(59 * time.Minute)); len(ids) != 0 || err != nil {
		t.Fatalf("early purge removed %v (%v)", ids, err)
	}
	if ids, err := v.Purge(t0.Add(time.Hour)); len(ids) != 1 || ids[0] != short || err != nil {
		t.Fatalf("purge at expiry removed %v (%v)", ids, err)
	}
	if _, err := v.Get(short); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged entry: %v", err)
	}
	if _, err := v.Get(long); err != nil {
		t.Fatalf("unexpired entry: %v", err)
	}
	if ids, _ := v.Purge(t0.Add(25 * time.Hour)); len(ids) != 1 {
		t.Fatalf("second purge removed %v", ids)
	}
	if _, ok, _ := v.NextExpiry(t0); ok {
		t.Fatal("NextExpiry of an empty vault")
	}
}

func TestOpenTightensMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Limits{}); err != nil {
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
	if _, err := Open(link, Limits{}); err == nil {
		t.Fatal("symlinked quarantine directory accepted")
	}
}

func TestGetRejectsBadIDs(t *testing.T) {
	v, err := Open(t.TempDir(), Limits{})
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
	v, err := Open(t.TempDir(), Limits{})
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
	v, err := Open(t.TempDir(), Limits{})
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

// The vault is bounded in entries and in bytes; a message over a bound is
// refused, and what was kept stays.
func TestLimits(t *testing.T) {
	v, err := Open(t.TempDir(), Limits{MaxEntries: 2, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	first, err := v.Put(entry(), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(entry(), t0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(entry(), t0, time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("third entry of at most 2: %v", err)
	}
	if _, err := v.Get(first); err != nil {
		t.Fatalf("the oldest entry went: %v", err)
	}
	if err := v.Delete(first); err != nil {
		t.Fatal(err)
	}
	big := entry()
	big.Message.Attachments[0].Content = make([]byte, 1<<20)
	if _, err := v.Put(big, t0, time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("entry over the byte bound: %v", err)
	}
	if _, err := v.Put(entry(), t0, time.Hour); err != nil {
		t.Fatalf("a small entry with room left: %v", err)
	}
	if n, _, _ := v.Usage(); n != 2 {
		t.Fatalf("%d entries", n)
	}
}

func TestDelete(t *testing.T) {
	v, err := Open(t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Put(entry(), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(id); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{id, "../x", ""} {
		if err := v.Delete(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete(%q): %v", bad, err)
		}
	}
}

// OpenExisting creates and changes nothing.
func TestOpenExisting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	if _, err := OpenExisting(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("OpenExisting created the directory")
	}
	w, err := Open(dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := w.Put(entry(), t0, time.Hour)
	r, err := OpenExisting(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := r.Get(id); err != nil || e.Recipients != 2 || len(e.Message.Bcc) != 1 {
		t.Fatalf("Get: %+v %v", e, err)
	}
}

// List reads the header of an entry, not its message: an entry whose
// message part is damaged is still listed with its header.
func TestListReadsHeaderOnly(t *testing.T) {
	v, err := Open(t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Put(entry(), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(v.Dir(), id+".json")
	data, _ := os.ReadFile(p)
	i := strings.Index(string(data), `"message":`)
	if i < 0 || strings.Contains(string(data[:i]), "x@evil.example") {
		t.Fatalf("the message is not last, or the header names a recipient: %s", data)
	}
	if err := os.WriteFile(p, append(data[:i+len(`"message":`)], "{garbage"...), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := v.List()
	if err != nil || len(list) != 1 || list[0].Policy != "company" || list[0].Recipients != 2 {
		t.Fatalf("List: %+v %v", list, err)
	}
	if _, err := v.Get(id); err == nil {
		t.Fatal("Get decoded a damaged entry")
	}
}

// The Writer stores in the background; Close waits for what is queued.
func TestWriter(t *testing.T) {
	v, err := Open(t.TempDir(), Limits{MaxEntries: 3})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(v, nil, 8)
	var ids []string
	for range 4 {
		id, err := w.Submit(entry(), t0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	w.Close()
	if _, err := w.Submit(entry(), t0, time.Hour); !errors.Is(err, ErrBusy) {
		t.Fatalf("Submit after Close: %v", err)
	}
	for i, id := range ids {
		_, err := v.Get(id)
		if (i < 3) != (err == nil) {
			t.Errorf("entry %d: %v (the vault holds 3: the first three are kept, the fourth refused)", i, err)
		}
	}
}
