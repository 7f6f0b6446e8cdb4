package pkgid

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// A file is hashed once per identity; rewritten in place (same path,
// same inode), it is hashed again.
func TestExeHasher(t *testing.T) {
	h := NewExeHasher(ExeHashOptions{})
	defer h.Close()
	p := filepath.Join(t.TempDir(), "tool")
	v1 := bytes.Repeat([]byte("one"), 1000)
	if err := os.WriteFile(p, v1, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		got, err := h.Sum(p, time.Minute, nil)
		if err != nil || got != sumOf(v1) {
			t.Fatalf("sum %d: %q, %v; want %s", i, got, err, sumOf(v1))
		}
	}
	if st := h.Stats(); st.Hashed != 1 || st.Hits != 1 {
		t.Fatalf("stats %+v: want 1 hashed, 1 hit", st)
	}
	v2 := append(bytes.Clone(v1), '!')
	if err := os.WriteFile(p, v2, 0o755); err != nil { // same inode
		t.Fatal(err)
	}
	if got, err := h.Sum(p, time.Minute, nil); err != nil || got != sumOf(v2) {
		t.Fatalf("rewritten: %q, %v; want %s", got, err, sumOf(v2))
	}
	if _, err := h.Sum(filepath.Join(t.TempDir(), "none"), time.Minute, nil); err == nil || errors.Is(err, ErrHashPending) {
		t.Fatalf("missing file: %v", err)
	}
}

// A big file does not hold the caller: Sum returns ErrHashPending within
// its wait, and the callback gets the sum.
func TestExeHasherPending(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB")
	}
	h := NewExeHasher(ExeHashOptions{})
	defer h.Close()
	p := filepath.Join(t.TempDir(), "big")
	want := func() string {
		big := bytes.Repeat([]byte{0x90}, 256<<20)
		if err := os.WriteFile(p, big, 0o755); err != nil {
			t.Fatal(err)
		}
		return sumOf(big)
	}()
	got := make(chan string, 1)
	start := time.Now()
	_, err := h.Sum(p, time.Millisecond, func(sum string, err error) {
		if err != nil {
			t.Errorf("callback: %v", err)
		}
		got <- sum
	})
	returned := time.Since(start)
	if !errors.Is(err, ErrHashPending) {
		t.Fatalf("256 MiB file: %v, want ErrHashPending", err)
	}
	var sum string
	select {
	case sum = <-got:
	case <-time.After(time.Minute):
		t.Fatal("no callback")
	}
	hashed := time.Since(start)
	if sum != want {
		t.Fatalf("callback sum %s, want %s", sum, want)
	}
	t.Logf("Sum returned after %v; the hash was known after %v (%.0fx)", returned, hashed, float64(hashed)/float64(returned))
	if s, err := h.Sum(p, 0, nil); err != nil || s != want {
		t.Fatalf("second Sum: %q, %v", s, err)
	}
}
