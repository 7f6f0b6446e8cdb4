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
