package probe

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The stacks of files that export nothing the sensor probes: programs
// built here with gcc whose read-only data carries each fingerprint as
// the real stacks do (BoringSSL's version string and source path, a
// rustls panic location), the static OpenSSL client, and plain C. This Go
// test binary (crypto/tls, and every fingerprint among its strings) is
// examined as Go only: probed, no stack reported.
func TestClassifyStack(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Fatalf("gcc: %v (apt-get install -y gcc)", err)
	}
	build := func(name, str string) string {
		dir := t.TempDir()
		src := filepath.Join(dir, name+".c")
		prog := "#include <stdio.h>\nint main(void) { puts(\"" + str + "\"); return 0; }\n"
		if err := os.WriteFile(src, []byte(prog), 0o600); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, name)
		if out, err := exec.Command(gcc, "-O2", "-s", "-o", bin, src).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
		return bin
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, stack string
	}{
		{"boringssl", build("boring", "BoringSSL third_party/boringssl/src/ssl/ssl_lib.cc"), StackBoringSSL},
		{"rustls", build("rustls", "/root/.cargo/registry/src/index.crates.io-6f17d22bba15001f/rustls-0.23.12/src/conn.rs"), StackRustls},
		{"static openssl", testenv.StaticOpenSSLClient(t), StackOpenSSLStatic},
		{"plain c", build("plain", "hello"), ""},
		{"go test binary", self, ""},
	} {
		f, err := os.Open(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		info, err := examineELF(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.path == self && info.gotls == nil {
			t.Errorf("%s: crypto/tls not found", tc.name)
		}
		if info.writes() || info.stack != tc.stack || (tc.stack != "") != (info.stackWhy != "") {
			t.Errorf("%s: writes=%v stack %q (%s), want %q", tc.name, info.writes(), info.stack, info.stackWhy, tc.stack)
		}
		if tc.stack == StackGo && !strings.Contains(info.stackWhy, "go1.") {
			t.Errorf("%s: reason %q names no Go version", tc.name, info.stackWhy)
		}
	}
	// NSS's TLS library, by its SONAME.
	nss, err := os.Open("/usr/lib/x86_64-linux-gnu/libssl3.so")
	if err != nil {
		t.Fatalf("%v (apt-get install -y libnss3)", err)
	}
	defer nss.Close()
	ef, err := elf.NewFile(nss)
	if err != nil {
		t.Fatal(err)
	}
	if stack, _, _ := classifyStack(ef); stack != StackNSS {
		t.Errorf("libssl3.so: stack %q, want %q", stack, StackNSS)
	}
}

// BenchmarkExamineUnprobed prints what classifying the TLS stack adds to
// the examination of a file that exports nothing probed (a process in
// scope waits for it at its exec): examineELF against what it did before
// (the dynamic symbols and one search of .rodata for OpenSSL), on this Go
// test binary, the static OpenSSL client and a C program linked to libc.
func BenchmarkExamineUnprobed(b *testing.B) {
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"go-test-binary", self},
		{"static-openssl", testenv.StaticOpenSSLClient(b)},
		{"c-libc", "/usr/bin/ls"},
	} {
		f, err := os.Open(tc.path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = f.Close() })
		b.Run(tc.name+"/before", func(b *testing.B) {
			for b.Loop() {
				ef, err := elf.NewFile(f)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := dynamicFunctions(ef, tlsSymbols); err != nil {
					b.Fatal(err)
				}
				if sec := ef.Section(".rodata"); sec != nil {
					readerContains(sec.Open(), markOpenSSL, 1<<20)
				}
			}
		})
		b.Run(tc.name+"/classified", func(b *testing.B) {
			for b.Loop() {
				if _, err := examineELF(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
