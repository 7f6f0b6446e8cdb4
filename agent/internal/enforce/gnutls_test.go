package enforce

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// wget speaks TLS through GnuTLS (libgnutls.so.30): its
// gnutls_record_send is held and judged as SSL_write is. The postmark-mcp
// Bcc posted by wget to the fake mail API is blocked before one byte
// reaches it; the benign mail goes through.
func TestGnuTLSWget(t *testing.T) {
	e := start(t)

	api := testenv.NewMailAPI(t, e.ca)
	cmd := testenv.Wget(t, e.ca, api.URL(), postmark(marker(t), `,"Bcc":"phan@giftshop.club"`))
	killed, out, err := runClient(t, e, cmd)
	if !killed {
		t.Errorf("wget with a hidden Bcc not killed: %v\n%s", err, out)
	}
	v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", cmd.Process.Pid))[0]
	if !strings.Contains(fmt.Sprint(v["AARSM_VIOLATIONS"]), "phan@giftshop.club") || v["AARSM_COMM"] != "wget" {
		t.Errorf("verdict %v", v)
	}
	if got := api.Received(); len(got) != 0 {
		t.Errorf("%d bytes reached the API: %q", len(got), clipBytes(got))
	}

	m := marker(t)
	api = testenv.NewMailAPI(t, e.ca)
	cmd = testenv.Wget(t, e.ca, api.URL(), postmark(m, `,"Cc":"cfo@subsidiaries.com"`))
	if killed, out, err := runClient(t, e, cmd); killed || err != nil {
		t.Fatalf("benign mail from wget: killed=%v %v\n%s", killed, err, out)
	}
	found := false
	for _, r := range api.Requests() {
		found = found || strings.Contains(r.Path, m)
	}
	if !found {
		t.Errorf("benign mail not delivered: %d requests", len(api.Requests()))
	}
	e.jd.WaitFor(t, 1, "AARSM_VERDICT=allow", fmt.Sprintf("AARSM_PID=%d", cmd.Process.Pid))
	if got := e.jd.Query(t, "AARSM_VERDICT=block"); len(got) != 1 {
		t.Errorf("%d block verdicts, want the one of the Bcc", len(got))
	}
}

func clipBytes(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}

// A process doing TLS through a library AARSM cannot probe is reported
// once (AARSM_UNMONITORED=1 with its stack) and listed in the status:
// a TLS client linked statically against OpenSSL and stripped (it carries
// OpenSSL, exports no SSL_write) is found by its file; a process that
// connects to a TLS port while no file it maps is probed (python3 with a
// plain socket, standing for any TLS library AARSM does not know: the
// kernel sees only the connection) is reported with stack "unknown"; curl,
// probed in libssl, connects to the same port and is not reported.
func TestUnmonitoredProcesses(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.StaticOpenSSLClient(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	_, portStr, _ := net.SplitHostPort(srv.Addr())
	port, _ := strconv.Atoi(portStr)
	cg := testenv.NewCgroup(t)
	e := startOpts(t, companyPolicy(t), cg, Options{Sensor: probe.Options{TLSPorts: []uint16{uint16(port)}}})

	// The static client: reported by its file (and again, deduplicated,
	// by its connection).
	m := marker(t)
	raw := fmt.Sprintf("GET /?m=%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", m, srv.Addr())
	static := testenv.StaticOpenSSLCommand(t, bin, ca, port, []byte(raw))
	staticIn, err := static.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cg.Start(static); err != nil {
		t.Fatal(err)
	}
	srv.WaitFor(t, func(r testenv.Recorded) bool { return strings.Contains(r.Path, m) }, 10*time.Second)
	pid := strconv.Itoa(static.Process.Pid)
	v := e.jd.WaitFor(t, 1, "AARSM_UNMONITORED=1", "AARSM_PID="+pid)[0]
	t.Logf("entry: %v", v)
	if v["AARSM_STACK"] != probe.StackOpenSSLStatic || v["AARSM_EXE"] != bin || v["AARSM_VERDICT"] != "alert" ||
		!strings.Contains(fmt.Sprint(v["AARSM_UNMONITORED_REASON"]), "exports no SSL_write") ||
		!strings.Contains(fmt.Sprint(v["MESSAGE"]), "not monitored") {
		t.Errorf("entry %v", v)
	}
	catalog := map[string]bool{}
	for _, f := range readCatalog(t) {
		catalog[f.name] = true
	}
	for name := range v {
		if strings.HasPrefix(name, "AARSM_") && !catalog[name] {
			t.Errorf("the entry has %s, which the catalog does not explain", name)
		}
	}

	// curl, probed: its verdict first.
	curl := testenv.Curl(t, ca, srv.URL(), postmark(marker(t), ""))
	if err := e.cg.Start(curl); err != nil {
		t.Fatal(err)
	}
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	e.jd.WaitFor(t, 1, "AARSM_VERDICT=allow", fmt.Sprintf("AARSM_PID=%d", curl.Process.Pid))

	// A connection from a process with no probed file. The sensor checks
	// connections in order: once this one is reported, curl's was
	// checked.
	py := exec.Command("python3", "-c", "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); sys.stdin.read()", portStr)
	pyIn, err := py.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cg.Start(py); err != nil {
		t.Fatal(err)
	}
	v = e.jd.WaitFor(t, 1, "AARSM_UNMONITORED=1", fmt.Sprintf("AARSM_PID=%d", py.Process.Pid))[0]
	if v["AARSM_STACK"] != probe.StackUnknown || !strings.Contains(fmt.Sprint(v["AARSM_UNMONITORED_REASON"]), "port "+portStr) {
		t.Errorf("entry %v", v)
	}
	if got := e.jd.Query(t, "AARSM_UNMONITORED=1", fmt.Sprintf("AARSM_PID=%d", curl.Process.Pid)); len(got) != 0 {
		t.Errorf("curl, probed, reported unmonitored: %v", got)
	}
	if got := e.jd.Query(t, "AARSM_UNMONITORED=1", "AARSM_EXE="+bin); len(got) != 1 {
		t.Errorf("the static client reported %d times, want once", len(got))
	}

	// Both in the status, curl not.
	listed := map[int]string{}
	for _, u := range e.agent.Unmonitored() {
		listed[int(u.PID)] = u.Stack
	}
	if listed[static.Process.Pid] != probe.StackOpenSSLStatic || listed[py.Process.Pid] != probe.StackUnknown {
		t.Errorf("status lists %v", listed)
	}
	if _, ok := listed[curl.Process.Pid]; ok {
		t.Errorf("status lists curl: %v", listed)
	}
	_ = staticIn.Close()
	_ = pyIn.Close()
	if err := static.Wait(); err != nil {
		t.Errorf("static client: %v", err)
	}
	_ = py.Wait()
}
