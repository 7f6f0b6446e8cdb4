package testenv

import (
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
)

// rawWritesClient sends each of its writes with one SSL_write_ex of
// python's ssl module (sendall does not split a buffer), on one TLS
// connection, then reads until it has the responses it expects. It exits
// 0 with them, 3 without.
const rawWritesClient = `import base64, json, socket, ssl, sys, time
cfg = json.load(open(sys.argv[1]))
ctx = ssl.create_default_context(cafile=cfg["ca"])
if cfg["alpn"]:
    ctx.set_alpn_protocols(cfg["alpn"])
sock = socket.create_connection((cfg["host"], cfg["port"]))
t = ctx.wrap_socket(sock, server_hostname=cfg["host"])
t.settimeout(5)
got = b""
def read_until(n):
    global got
    while got.count(b" 200 OK") < n:
        d = t.recv(65536)
        if not d:
            break
        got += d
for i, w in enumerate(cfg["writes"]):
    t.sendall(base64.b64decode(w))
    if cfg["pause_ms"]:
        time.sleep(cfg["pause_ms"] / 1000)
    if cfg["read_each"]:
        # A response per write, read as keep-alive clients do (the
        # socket's timeout makes python's reads non-blocking underneath:
        # SSL_read fails with WANT_READ and SSL_get_error is asked).
        read_until(i + 1)
try:
    read_until(cfg["responses"])
except socket.timeout:
    pass
sys.stdout.write(got.decode(errors="replace"))
sys.exit(0 if got.count(b" 200 OK") >= cfg["responses"] else 3)
`

// RawWrites returns an unstarted python3 command that connects to addr
// over TLS (trusting only the test CA, offering alpn if any) and sends
// each of writes with one SSL_write, pausing pauseMS between them; it
// exits 0 once it has read responses "200 OK" responses.
func RawWrites(t testing.TB, ca *CA, addr string, alpn []string, writes [][]byte, pauseMS, responses int) *exec.Cmd {
	return rawWrites(t, ca, addr, alpn, writes, pauseMS, responses, false)
}

// RawWritesReadEach is RawWrites reading one response after each write,
// as a keep-alive client sending one request per write does.
func RawWritesReadEach(t testing.TB, ca *CA, addr string, alpn []string, writes [][]byte, pauseMS int) *exec.Cmd {
	return rawWrites(t, ca, addr, alpn, writes, pauseMS, len(writes), true)
}

func rawWrites(t testing.TB, ca *CA, addr string, alpn []string, writes [][]byte, pauseMS, responses int, readEach bool) *exec.Cmd {
	t.Helper()
	py := findPython(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := stateDir(t, "raw-")
	cfg, err := json.Marshal(map[string]any{"ca": ca.CAFile, "host": host, "port": port, "alpn": alpn,
		"writes": writes, "pause_ms": pauseMS, "responses": responses, "read_each": readEach})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	script, cfgPath := filepath.Join(dir, "raw.py"), filepath.Join(dir, "raw.json")
	if err := writeFile(script, []byte(rawWritesClient)); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := writeFile(cfgPath, cfg); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(py.Executable, script, cfgPath)
	killOnCleanup(t, cmd)
	return cmd
}
