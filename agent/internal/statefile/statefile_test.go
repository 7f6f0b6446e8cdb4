package statefile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	for _, data := range []string{"first", "second"} {
		if err := WriteAtomic(p, ".tmp-", []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		st, serr := os.Stat(p)
		if err != nil || serr != nil || string(got) != data || st.Mode().Perm() != 0o600 {
			t.Fatalf("%q %v, mode %v %v; want %q 0600", got, err, st.Mode(), serr, data)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestLockIsExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	busy := errors.New("busy")
	release, err := Lock(p, time.Second, busy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(p, 20*time.Millisecond, busy); !errors.Is(err, busy) {
		t.Fatalf("second lock: %v, want busy", err)
	}
	release()
	again, err := Lock(p, time.Second, busy)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	again()
	if err := os.Symlink(p, p+".link"); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(p+".link", time.Second, busy); err == nil {
		t.Error("a symbolic link was locked")
	}
}

func TestMoveAside(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	other := filepath.Join(dir, "other.json")
	now := time.Date(2026, 12, 7, 23, 0, 0, 0, time.UTC)
	var names []string
	for i := range 4 {
		if err := os.WriteFile(p, []byte("{garbage"), 0o644); err != nil {
			t.Fatal(err)
		}
		name, err := MoveAside(p, now.Add(time.Duration(i)*time.Second), 3)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(name)
		if err != nil || st.Mode().Perm() != 0o600 || filepath.Dir(name) != dir ||
			filepath.Base(name) != "state.json.corrupt-"+now.Add(time.Duration(i)*time.Second).Format("20060102T150405.000000000Z") {
			t.Fatalf("moved to %s: %v %v, want 0600 state.json.corrupt-<time>", name, st, err)
		}
		names = append(names, name)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", p, err)
	}
	// Another file's copies count towards the same bound; the oldest go.
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := MoveAside(other, now.Add(time.Hour), 3); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*"))
	if len(left) != 3 {
		t.Fatalf("left %v, want 3", left)
	}
	for _, gone := range names[:2] {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s kept, want removed (oldest)", gone)
		}
	}
	if _, err := MoveAside(filepath.Join(dir, "missing.json"), now, 3); err == nil {
		t.Error("moving a missing file aside succeeded")
	}
}
