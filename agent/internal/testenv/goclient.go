package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// goClient is a Go TLS client (crypto/tls, net/http): it reads the JSON
// config the python and node clients read (scriptConfig), sends one
// request over HTTP/1.1 or HTTP/2 (argv[2]: "h1" or "h2"; h2 by ALPN, as
// net/http does by default) and prints the response body. Exit 22 on a
// status other than 2xx; 23 when the protocol is not the one asked for.
const goClient = `package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
)

type config struct {
	URL      string      ` + "`json:\"url\"`" + `
	Method   string      ` + "`json:\"method\"`" + `
	Headers  [][2]string ` + "`json:\"headers\"`" + `
	BodyFile string      ` + "`json:\"body_file\"`" + `
	CAFile   string      ` + "`json:\"cafile\"`" + `
	Wait     bool        ` + "`json:\"wait\"`" + `
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var c config
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	want := "HTTP/2.0"
	if os.Args[2] == "h2" {
		tr.ForceAttemptHTTP2 = true
	} else {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		want = "HTTP/1.1"
	}
	var body []byte
	if c.BodyFile != "" {
		if body, err = os.ReadFile(c.BodyFile); err != nil {
			return err
		}
	}
	if c.Wait {
		fmt.Printf("READY %d\n", os.Getpid())
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for the go line: %w", err)
		}
	}
	req, err := http.NewRequest(c.Method, c.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for _, h := range c.Headers {
		req.Header.Set(h[0], h[1])
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	os.Stdout.Write(b)
	if resp.StatusCode/100 != 2 {
		os.Exit(22)
	}
	if resp.Proto != want {
		fmt.Fprintf(os.Stderr, "protocol %s, want %s\n", resp.Proto, want)
		os.Exit(23)
	}
	return nil
}
`

// GoBuild builds Go source (files: name -> content; a go.mod is written
// if none is given) with this machine's go command into dir and returns
// the path of the binary, dir/name. Extra arguments go to "go build" (-ldflags=-s -w
// for a stripped binary). The environment's GOPROXY, GOFLAGS and caches
// are kept; GOTOOLCHAIN=local, no cgo (a static binary, which runs in
// any mount namespace).
func GoBuild(t testing.TB, dir, name string, files map[string]string, args ...string) string {
	t.Helper()
	SkipShort(t, "builds a Go program")
	gocmd, err := exec.LookPath("go")
	if err != nil {
		gocmd = "/usr/local/go/bin/go" // where the machine images keep it
		if _, serr := os.Stat(gocmd); serr != nil {
			t.Fatalf("testenv: no go command on PATH nor at %s: %v", gocmd, err)
		}
	}
	if _, ok := files["go.mod"]; !ok {
		files["go.mod"] = "module aarsmtest\n\ngo 1.22\n"
	}
	for file, src := range files {
		p := filepath.Join(dir, file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, name)
	cmd := exec.Command(gocmd, append(append([]string{"build", "-o", bin}, args...), ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: go build in %s: %v\n%s", dir, err, out)
	}
	return bin
}

// BuildGoClient builds the Go TLS client into a fresh directory and
// returns its path; stripped: with -ldflags='-s -w' (no symbol table, as
// release binaries ship).
func BuildGoClient(t testing.TB, stripped bool) string {
	t.Helper()
	var args []string
	if stripped {
		args = append(args, "-ldflags=-s -w")
	}
	return GoBuild(t, stateDir(t, "goclient-"), "goclient", map[string]string{"main.go": goClient}, args...)
}

// GoClient returns an unstarted command of the Go client bin
// (BuildGoClient) that sends req to url+req.Path over proto ("h1" or
// "h2"), verifying the server with ca, and prints the response body.
// WaitForStdinLine is honoured (NewGate); Chunked and Gzip are not.
func GoClient(t testing.TB, bin string, ca *CA, url string, req Request, proto string) *exec.Cmd {
	t.Helper()
	dir := stateDir(t, "goclient-run-")
	_, cfg := writeScript(t, dir, "unused", "", newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(bin, cfg, proto)
	killOnCleanup(t, cmd)
	return cmd
}

// GoClientInMountNS is GoClient run inside a new private mount namespace
// where the binary is reached through a path that exists only there (a
// bind mount over an empty directory of the host): the agent finds the
// executable through /proc/PID/root. unshare and the shell exec, so the
// process's pid is the client's. It returns the command and the path of
// the copy of bin it runs (on the host).
func GoClientInMountNS(t testing.TB, bin string, ca *CA, url string, req Request, proto string) (*exec.Cmd, string) {
	t.Helper()
	RequireRoot(t)
	unshare := requireBinary(t, "unshare", unshareHint)
	requireBinary(t, "mount", unshareHint)
	sh := requireBinary(t, "sh", shHint)
	dir := stateDir(t, "goclient-mntns-")
	src := filepath.Join(dir, "src")
	empty := filepath.Join(dir, "empty")
	for _, d := range []string{src, empty} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(src, "goclient")
	if err := os.WriteFile(cp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	_, cfg := writeScript(t, dir, "unused", "", newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--",
		sh, "-c", mountNSScript, "testenv-mntns", src, empty,
		filepath.Join(empty, "goclient"), cfg, proto)
	killOnCleanup(t, cmd)
	return cmd, cp
}

// goWriter is the Go counterpart of writer.c: COUNT writes of SIZE bytes
// through crypto/tls's (*Conn).Write after 1,000 warm-up writes, then the
// mean nanoseconds per write on stdout.
const goWriter = `package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	count, _ := strconv.Atoi(os.Args[2])
	size, _ := strconv.Atoi(os.Args[3])
	c, err := tls.Dial("tcp4", "127.0.0.1:"+os.Args[1], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = 'x'
	}
	var start time.Time
	for i := -1000; i < count; i++ {
		if i == 0 {
			start = time.Now()
		}
		if _, err := c.Write(buf); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("%.1f\n", float64(time.Since(start).Nanoseconds())/float64(count))
	c.Close()
}
`

// GoWriter builds the Go counterpart of CWriter (usage: gowriter PORT
// COUNT SIZE; no rate) and returns its path.
func GoWriter(t testing.TB) string {
	t.Helper()
	return GoBuild(t, stateDir(t, "gowriter-"), "gowriter", map[string]string{"main.go": goWriter})
}
