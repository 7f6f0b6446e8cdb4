package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// systemLibssl finds the libssl.so.3 that python's ssl module links.
func systemLibssl(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import _ssl; print(_ssl.__file__)").Output()
	if err != nil {
		t.Fatalf("find python's _ssl: %v", err)
	}
	ldd, err := exec.Command("ldd", strings.TrimSpace(string(out))).Output()
	if err != nil {
		t.Fatalf("ldd: %v", err)
	}
	for _, line := range strings.Split(string(ldd), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[0], "libssl.so") {
			p, err := filepath.EvalSymlinks(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	t.Fatalf("python's ssl module links no libssl:\n%s", ldd)
	return ""
}

// systemLibgnutls finds the libgnutls.so.30 that wget links.
func systemLibgnutls(t testing.TB) string {
	t.Helper()
	wget, err := exec.LookPath("wget")
	if err != nil {
		t.Fatalf("wget: %v (apt-get install -y wget)", err)
	}
	ldd, err := exec.Command("ldd", wget).Output()
	if err != nil {
		t.Fatalf("ldd: %v", err)
	}
	for _, line := range strings.Split(string(ldd), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[0], "libgnutls.so") {
			p, err := filepath.EvalSymlinks(f[2])
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	t.Fatalf("wget links no libgnutls:\n%s", ldd)
	return ""
}

func TestExamineELF(t *testing.T) {
	libssl := systemLibssl(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	libcrypto := filepath.Join(filepath.Dir(libssl), "libcrypto.so.3")
	openssl := len(tlsSymbols) - 3 // all but GnuTLS's
	for _, tc := range []struct {
		path    string
		writes  bool
		embeds  bool
		symbols int
	}{
		{libssl, true, false, openssl},
		{node, true, false, openssl},
		{libcrypto, false, false, 0},
		// gnutls_record_send, gnutls_record_recv, gnutls_deinit.
		{systemLibgnutls(t), true, false, 3},
	} {
		f, err := os.Open(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := examineELF(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if info.writes() != tc.writes || info.embedsOpenSSL != tc.embeds || len(info.symbols) != tc.symbols {
			t.Errorf("%s: writes=%v embeds=%v symbols=%v", tc.path, info.writes(), info.embedsOpenSSL, info.symbols)
		}
	}
	if _, err := examineELF(strings.NewReader("#!/bin/sh\necho not elf\n")); !errors.Is(err, errNotELF) {
		t.Errorf("a script: err %v, want errNotELF", err)
	}
	if _, err := examineELF(strings.NewReader("\x7fELF\x02\x01\x01garbage")); err == nil {
		t.Error("a truncated ELF header gave no error")
	}
}

// A library loaded with dlopen long after exec — a file no process had
// mapped when the agent started — is found through the mmap tracepoint.
func TestLibraryLoadedLater(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "libssl.so.3")
	data, err := os.ReadFile(systemLibssl(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, data, 0o755); err != nil {
		t.Fatal(err)
	}
	id, _, err := proc.StatID(copyPath)
	if err != nil {
		t.Fatal(err)
	}

	attached := make(chan Target, 64)
	s, err := Load(Options{
		LibraryDirs: []string{},
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnAttach: func(tg Target) {
			if tg.ID == id {
				select {
				case attached <- tg:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, func(*Event) {})

	// The exec is examined first; the library is mapped a second later.
	cg := testenv.NewCgroup(t)
	script := fmt.Sprintf("import ctypes, time; time.sleep(1); ctypes.CDLL(%q); time.sleep(5)", copyPath)
	cmd := exec.Command("python3", "-c", script)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	deadline := time.After(10 * time.Second)
	for {
		select {
		case tg := <-attached:
			if tg.ID != id {
				continue
			}
			if !tg.Probed() {
				t.Fatalf("copy examined but not probed: %v", tg.Err)
			}
			return
		case <-deadline:
			t.Fatalf("library %s (%v) mapped after exec was never probed", copyPath, id)
		}
	}
}
