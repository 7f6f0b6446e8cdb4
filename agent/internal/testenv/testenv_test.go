package testenv

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const waitTimeout = 20 * time.Second

// testBody returns a body with all byte values, CRLFs and a fake chunk
// header in it, so that framing bugs show.
func testBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString("hello\r\n0\r\n\r\n")
	for i := 0; b.Len() < n; i++ {
		b.WriteByte(byte(i))
	}
	return b.Bytes()[:n]
}

func TestCA(t *testing.T) {
	ca := NewCA(t)
	for _, f := range []string{ca.CAFile, ca.CertFile, ca.KeyFile} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("stat %s: %v", f, err)
		}
	}
	pemData, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	certs := ca.ServerTLSConfig().Certificates
	if len(certs) != 1 || len(pemData) == 0 {
		t.Fatalf("want one server certificate, got %d", len(certs))
	}
	leaf, err := x509.ParseCertificate(certs[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
}

func TestServerWithGoClient(t *testing.T) {
	ca := NewCA(t)
	srv := NewServer(t, ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLSConfig()}}
	resp, err := client.Post(srv.URL()+"/go?q=1", "text/plain", strings.NewReader("go body"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got response
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !got.OK || got.Seq != 1 || got.BodyLen != 7 {
		t.Fatalf("response %d %+v", resp.StatusCode, got)
	}
	r := srv.WaitFor(t, nil, waitTimeout)
	if r.Method != "POST" || r.Path != "/go?q=1" || string(r.Body) != "go body" || string(r.RawBody) != "go body" || (r.ALPN != "" && r.ALPN != "http/1.1") {
		t.Fatalf("recorded %+v", r)
	}
	if !bytes.HasPrefix(r.RawHead, []byte("POST /go?q=1 HTTP/1.1\r\n")) || !bytes.HasSuffix(r.RawHead, []byte("\r\n\r\n")) {
		t.Fatalf("raw head %q", r.RawHead)
	}
}

type clientFunc func(t testing.TB, ca *CA, url string, req Request) *exec.Cmd

func clients() []struct {
	name string
	fn   clientFunc
} {
	return []struct {
		name string
		fn   clientFunc
	}{{"curl", Curl}, {"python", Python}, {"node", Node}}
}

func TestClients(t *testing.T) {
	SkipShort(t, "runs curl, python3 and node")
	ca := NewCA(t)
	srv := NewServer(t, ca)
	variants := []struct {
		name string
		req  Request
	}{
		{"get", Request{Method: "GET", Path: "/get?a=1&b=two"}},
		{"post-small", Request{Method: "POST", Path: "/small", Body: []byte(`{"k":"v"}`), Header: map[string]string{"Content-Type": "application/json"}}},
		{"put-large", Request{Method: "PUT", Path: "/large?x=y", Body: testBody(40000)}},
		{"chunked", Request{Method: "POST", Path: "/chunked", Body: testBody(10000), Chunked: true}},
		{"gzip", Request{Method: "POST", Path: "/gzip", Body: testBody(5000), Gzip: true}},
		{"chunked-gzip", Request{Method: "POST", Path: "/chunked-gzip", Body: testBody(5000), Gzip: true, Chunked: true}},
	}
	for _, c := range clients() {
		for _, v := range variants {
			t.Run(c.name+"/"+v.name, func(t *testing.T) {
				t.Parallel()
				id := c.name + "-" + v.name
				req := v.req
				req.Header = map[string]string{"X-Aarsm-Test": id}
				for k, val := range v.req.Header {
					req.Header[k] = val
				}
				cmd := c.fn(t, ca, srv.URL(), req)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s failed: %v\n%s", c.name, err, out)
				}
				r := srv.WaitFor(t, func(r Recorded) bool { return r.Header.Get("X-Aarsm-Test") == id }, waitTimeout)
				t.Logf("request head as received: %q", r.RawHead)
				checkRecorded(t, r, req)
				if !bytes.Contains(out, []byte(`"ok":true`)) {
					t.Errorf("client output %q lacks the server's JSON", out)
				}
			})
		}
	}
}

func checkRecorded(t *testing.T, r Recorded, req Request) {
	t.Helper()
	if r.Method != req.method() || r.Path != req.path() || r.Proto != "HTTP/1.1" {
		t.Errorf("got %s %s %s, want %s %s HTTP/1.1", r.Method, r.Path, r.Proto, req.method(), req.path())
	}
	if r.ALPN != "" && r.ALPN != "http/1.1" {
		t.Errorf("ALPN %q", r.ALPN)
	}
	if r.DecodeError != "" {
		t.Errorf("decode error: %s", r.DecodeError)
	}
	if !bytes.Equal(r.Body, req.Body) {
		t.Errorf("decoded body: got %d bytes, want %d (first bytes %q)", len(r.Body), len(req.Body), head(r.Body))
	}
	wire, err := req.WireBody()
	if err != nil {
		t.Fatal(err)
	}
	if req.Chunked {
		if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
			t.Errorf("transfer-encoding %q, want chunked", r.TransferEncoding)
		}
		if dechunked := dechunk(t, r.RawBody); !bytes.Equal(dechunked, wire) {
			t.Errorf("raw chunked body does not de-chunk to the wire body (%d vs %d bytes)", len(dechunked), len(wire))
		}
	} else if !bytes.Equal(r.RawBody, wire) {
		t.Errorf("raw body: got %d bytes, want %d", len(r.RawBody), len(wire))
	}
	if req.Gzip && len(req.Body) > 0 && r.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("content-encoding %q", r.Header.Get("Content-Encoding"))
	}
	for k, v := range req.Header {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func head(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// dechunk parses chunked framing strictly, independent of net/http.
func dechunk(t *testing.T, b []byte) []byte {
	t.Helper()
	var out []byte
	for {
		line, rest, ok := bytes.Cut(b, []byte("\r\n"))
		if !ok {
			t.Fatalf("chunk header without CRLF: %q", head(b))
		}
		sizeHex, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseUint(string(bytes.TrimSpace(sizeHex)), 16, 32)
		if err != nil {
			t.Fatalf("chunk size %q: %v", line, err)
		}
		if n == 0 {
			if !bytes.Equal(rest, []byte("\r\n")) {
				t.Fatalf("unexpected trailer %q", rest)
			}
			return out
		}
		if uint64(len(rest)) < n+2 || string(rest[n:n+2]) != "\r\n" {
			t.Fatalf("bad chunk of size %d", n)
		}
		out = append(out, rest[:n]...)
		b = rest[n+2:]
	}
}

func TestOpenSSL(t *testing.T) {
	ca := NewCA(t)
	srv := NewServer(t, ca)
	body := testBody(3000)
	raw := []byte(fmt.Sprintf("POST /raw?x=1 HTTP/1.1\r\nHost: %s\r\nX-Aarsm-Test: openssl\r\nContent-Length: %d\r\n\r\n%s", srv.Addr(), len(body), body))
	cmd := OpenSSL(t, ca, srv.Addr(), raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl failed: %v\n%s", err, out)
	}
	r := srv.WaitFor(t, nil, waitTimeout)
	if got := append(append([]byte(nil), r.RawHead...), r.RawBody...); !bytes.Equal(got, raw) {
		t.Fatalf("server saw %q..., want the raw request", head(got))
	}
	if !bytes.Equal(r.Body, body) || r.Path != "/raw?x=1" {
		t.Fatalf("recorded %s %d bytes", r.Path, len(r.Body))
	}
	if !bytes.Contains(out, []byte("HTTP/1.1 200 OK")) {
		t.Fatalf("openssl output %q", out)
	}
}

func TestOpenSSLRejectsUnknownCA(t *testing.T) {
	srv := NewServer(t, NewCA(t))
	other := NewCA(t)
	cmd := OpenSSL(t, other, srv.Addr(), []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("openssl accepted a server signed by another CA:\n%s", out)
	}
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("server recorded %d requests", n)
	}
}

func TestCurlRejectsUnknownCA(t *testing.T) {
	srv := NewServer(t, NewCA(t))
	cmd := Curl(t, NewCA(t), srv.URL(), Request{})
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("curl accepted a server signed by another CA:\n%s", out)
	}
}

// mapsContain reports whether /proc/pid/maps maps a file whose path
// contains substr.
func mapsContain(t *testing.T, pid int, substr string) bool {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("read maps: %v", err)
	}
	return bytes.Contains(data, []byte(substr))
}

// readingStdin returns "" when pid is blocked in a read(2) of its fd 0,
// else what /proc/PID/syscall shows ("running", another call).
func readingStdin(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	if err != nil {
		t.Fatalf("read syscall of pid %d: %v", pid, err)
	}
	// "0 0x0 0x7ffd... ...": the call's number, then its arguments.
	f := strings.Fields(string(b))
	if len(f) >= 2 && f[0] == strconv.Itoa(unix.SYS_READ) && f[1] == "0x0" {
		return ""
	}
	return "/proc/" + strconv.Itoa(pid) + "/syscall: " + strings.TrimSpace(string(b))
}

func TestWaitForStdinLine(t *testing.T) {
	SkipShort(t, "runs curl, python3, node and openssl")
	ca := NewCA(t)
	srv := NewServer(t, ca)
	body := []byte("body sent after the go line")
	type tc struct {
		name string
		cmd  func(t *testing.T, id string) *exec.Cmd
		// lib is a mapped file that proves the TLS library is loaded at READY
		// ("" when the client maps it only after the go line).
		lib string
	}
	cases := []tc{
		{"curl", func(t *testing.T, id string) *exec.Cmd {
			return Curl(t, ca, srv.URL(), Request{Path: "/" + id, Body: body, Header: map[string]string{"X-Aarsm-Test": id}, WaitForStdinLine: true})
		}, ""},
		{"python", func(t *testing.T, id string) *exec.Cmd {
			return Python(t, ca, srv.URL(), Request{Path: "/" + id, Body: body, Header: map[string]string{"X-Aarsm-Test": id}, WaitForStdinLine: true})
		}, "libssl.so"},
		{"node", func(t *testing.T, id string) *exec.Cmd {
			return Node(t, ca, srv.URL(), Request{Path: "/" + id, Body: body, Header: map[string]string{"X-Aarsm-Test": id}, WaitForStdinLine: true})
		}, "/node"},
		{"openssl", func(t *testing.T, id string) *exec.Cmd {
			raw := fmt.Sprintf("POST /%s HTTP/1.1\r\nHost: x\r\nX-Aarsm-Test: %s\r\nContent-Length: %d\r\n\r\n%s", id, id, len(body), body)
			return OpenSSLWaitForStdinLine(t, ca, srv.Addr(), []byte(raw))
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			id := "wait-" + c.name
			cmd := c.cmd(t, id)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			gate := NewGate(t, cmd)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := gate.Ready(t, waitTimeout)
			if pid != cmd.Process.Pid {
				t.Fatalf("READY pid %d, started pid %d", pid, cmd.Process.Pid)
			}
			if c.lib != "" && !mapsContain(t, pid, c.lib) {
				t.Errorf("%s not mapped at READY", c.lib)
			}
			// The client waits in a read of its stdin, and the server has
			// handled whatever reached it: a request sent before the go
			// line would be in.
			Eventually(t, waitTimeout, fmt.Sprintf("pid %d to wait in a read of its stdin", pid), func() (bool, string) {
				sc := readingStdin(t, pid)
				return sc == "", sc
			})
			srv.WaitDrained(t, waitTimeout)
			for _, r := range srv.Requests() {
				if r.Header.Get("X-Aarsm-Test") == id {
					t.Fatalf("request sent before the go line")
				}
			}
			gate.Go(t)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("client failed: %v\n%s", err, stderr.Bytes())
			}
			r := srv.WaitFor(t, func(r Recorded) bool { return r.Header.Get("X-Aarsm-Test") == id }, waitTimeout)
			if !bytes.Equal(r.Body, body) {
				t.Errorf("body %q", r.Body)
			}
			if !bytes.Contains(gate.Stdout(), []byte(`"ok":true`)) {
				t.Errorf("stdout after READY: %q", gate.Stdout())
			}
		})
	}
}

func TestSMTP(t *testing.T) {
	ca := NewCA(t)
	smtp := NewSMTPServer(t, ca)
	data := []byte("From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nline one\r\n.line with leading dot\r\n..two dots\r\nend\r\n")
	cmd := CurlSMTP(t, ca, smtp.URL(), "a@example.test", []string{"b@example.test", "c@example.test"}, data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl smtps failed: %v\n%s", err, out)
	}
	m := smtp.WaitFor(t, nil, waitTimeout)
	if m.From != "a@example.test" || strings.Join(m.To, ",") != "b@example.test,c@example.test" {
		t.Errorf("envelope from %q to %q", m.From, m.To)
	}
	if !bytes.Equal(m.Data, data) {
		t.Errorf("data:\n got %q\nwant %q", m.Data, data)
	}
	if !bytes.Contains(m.RawData, []byte("\r\n..line with leading dot\r\n...two dots\r\n")) {
		t.Errorf("raw data is not dot-stuffed: %q", m.RawData)
	}
	if m.Helo == "" {
		t.Errorf("no EHLO/HELO recorded")
	}
	if errs := smtp.Errors(); len(errs) > 0 {
		t.Errorf("server errors: %v", errs)
	}
}

// libInode returns the inode of path in /proc/pid/maps (0 if absent).
func libInode(t *testing.T, pid int, path string) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatalf("read maps: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[5] == path {
			ino, err := strconv.ParseUint(f[4], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return ino
		}
	}
	return 0
}

func TestPythonInMountNS(t *testing.T) {
	ca := NewCA(t)
	srv := NewServer(t, ca)
	req := Request{Path: "/mntns", Body: []byte("from a private mount namespace"), Header: map[string]string{"X-Aarsm-Test": "mntns"}, WaitForStdinLine: true}
	cmd, lib := PythonInMountNS(t, ca, srv.URL(), req)
	if lib.CopyInode == lib.HostInode || lib.CopyInode == 0 {
		t.Fatalf("copy inode %d, host inode %d", lib.CopyInode, lib.HostInode)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	gate := NewGate(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, waitTimeout)
	if pid != cmd.Process.Pid {
		t.Fatalf("READY pid %d, started pid %d", pid, cmd.Process.Pid)
	}
	if got := libInode(t, pid, lib.HostPath); got != lib.CopyInode {
		t.Fatalf("/proc/%d/maps shows %s with inode %d, want the copy's %d (host %d)", pid, lib.HostPath, got, lib.CopyInode, lib.HostInode)
	}
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if child, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err != nil || child == self {
		t.Fatalf("client mount namespace %q (err %v), ours %q", child, err, self)
	}
	var st unix.Stat_t
	if err := unix.Stat(lib.HostPath, &st); err != nil || st.Ino != lib.HostInode {
		t.Fatalf("host library changed in our namespace: inode %d, err %v", st.Ino, err)
	}
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client failed: %v\n%s", err, stderr.Bytes())
	}
	r := srv.WaitFor(t, func(r Recorded) bool { return r.Header.Get("X-Aarsm-Test") == "mntns" }, waitTimeout)
	if !bytes.Equal(r.Body, req.Body) {
		t.Fatalf("body %q", r.Body)
	}
}

func TestCgroup(t *testing.T) {
	RequireRoot(t)
	var leftover []int
	var dir string
	t.Run("use", func(t *testing.T) {
		cg := NewCgroup(t)
		dir = cg.Path()
		var st unix.Stat_t
		if err := unix.Stat(cg.Path(), &st); err != nil {
			t.Fatal(err)
		}
		if cg.ID() != st.Ino {
			t.Fatalf("ID %d, inode %d", cg.ID(), st.Ino)
		}
		// The kernfs file handle of a cgroup carries its 64-bit id, the value
		// bpf_get_current_cgroup_id() returns.
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, cg.Path(), 0)
		if err != nil {
			t.Fatalf("name_to_handle_at: %v", err)
		}
		if b := h.Bytes(); len(b) != 8 || binary.LittleEndian.Uint64(b) != cg.ID() {
			t.Fatalf("file handle %x, want id %d", b, cg.ID())
		}

		sleep1 := exec.Command("sleep", "60")
		if err := cg.Start(sleep1); err != nil {
			t.Fatal(err)
		}
		sleep2 := exec.Command("sleep", "60")
		if err := sleep2.Start(); err != nil {
			t.Fatal(err)
		}
		if err := cg.Add(sleep2.Process.Pid); err != nil {
			t.Fatal(err)
		}
		for _, pid := range []int{sleep1.Process.Pid, sleep2.Process.Pid} {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "0::"+cg.Name()+"\n") {
				t.Fatalf("pid %d cgroups:\n%s\nwant 0::%s", pid, data, cg.Name())
			}
		}
		pids, err := cg.PIDs()
		if err != nil || len(pids) != 2 {
			t.Fatalf("PIDs %v, %v", pids, err)
		}
		leftover = []int{sleep1.Process.Pid, sleep2.Process.Pid}
		// Reap them once the cleanup has killed them.
		for _, c := range []*exec.Cmd{sleep1, sleep2} {
			go func() { _ = c.Wait() }()
		}

		// A real client started inside the cgroup works.
		ca := NewCA(t)
		srv := NewServer(t, ca)
		curl := Curl(t, ca, srv.URL(), Request{Path: "/cg", Body: []byte("in a cgroup")})
		if err := cg.Start(curl); err != nil {
			t.Fatal(err)
		}
		if err := curl.Wait(); err != nil {
			t.Fatal(err)
		}
		if r := srv.WaitFor(t, nil, waitTimeout); string(r.Body) != "in a cgroup" {
			t.Fatalf("body %q", r.Body)
		}
	})
	for _, pid := range leftover {
		Eventually(t, 5*time.Second, fmt.Sprintf("pid %d to be gone after the cleanup", pid), func() (bool, string) {
			err := unix.Kill(pid, 0)
			return err == unix.ESRCH, fmt.Sprintf("kill 0: %v", err)
		})
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("cgroup dir %s still exists (%v)", dir, err)
	}
}

func TestProcessesKilledAtCleanup(t *testing.T) {
	SkipShort(t, "runs python3")
	var pid int
	t.Run("start", func(t *testing.T) {
		ca := NewCA(t)
		srv := NewServer(t, ca)
		cmd := Python(t, ca, srv.URL(), Request{WaitForStdinLine: true})
		gate := NewGate(t, cmd)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid = gate.Ready(t, waitTimeout)
		go func() { _ = cmd.Wait() }()
	})
	Eventually(t, 5*time.Second, fmt.Sprintf("pid %d to be gone after the test's cleanup", pid), func() (bool, string) {
		err := unix.Kill(pid, 0)
		return err == unix.ESRCH, fmt.Sprintf("kill 0: %v", err)
	})
}

func TestDecodeContent(t *testing.T) {
	got, err := decodeContent("identity", []byte("x"))
	if err != nil || string(got) != "x" {
		t.Fatalf("identity: %q %v", got, err)
	}
	if _, err := decodeContent("br", []byte("x")); err == nil {
		t.Fatal("br accepted")
	}
	req := Request{Body: []byte("zipped"), Gzip: true}
	wire, err := req.WireBody()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeContent("gzip", wire); err != nil || string(got) != "zipped" {
		t.Fatalf("gzip: %q %v", got, err)
	}
}

// fatalTB records the first Fatalf and ends the call there, as
// testing.T's does, by a panic its caller recovers.
type fatalTB struct {
	testing.TB
	msg string
}

type fatalled struct{}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalled{})
}

func (f *fatalTB) run(fn func()) {
	defer func() {
		if r := recover(); r != nil && r != (fatalled{}) {
			panic(r)
		}
	}()
	fn()
}

func TestEventually(t *testing.T) {
	n := 0
	start := time.Now()
	at := Eventually(t, time.Second, "the third poll", func() bool { n++; return n == 3 })
	if n != 3 || at.Before(start) {
		t.Errorf("returned after %d polls at %v (started %v)", n, at, start)
	}

	f := &fatalTB{TB: t}
	polls := 0
	f.run(func() {
		Eventually(f, 20*time.Millisecond, "a condition that never holds", func() (bool, string) {
			polls++
			return false, fmt.Sprintf("%d polls", polls)
		})
		t.Error("Eventually returned although its condition never held")
	})
	if want := fmt.Sprintf("waited 20ms for a condition that never holds; last seen: %d polls", polls); !strings.HasSuffix(f.msg, want) || polls < 2 {
		t.Errorf("failure %q, want it to end with %q", f.msg, want)
	}
	f.msg = ""
	f.run(func() { Eventually(f, 0, "nothing", func() bool { return false }) })
	if !strings.HasSuffix(f.msg, "waited 0s for nothing") {
		t.Errorf("failure %q without a state", f.msg)
	}
}
