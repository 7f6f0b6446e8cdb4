package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// sockServers are loopback HTTP servers that answer every POST with its
// body, each printing its port once it listens: python3 (recv/sendall:
// recvfrom, sendto) and node (libuv: read, writev).
var sockServers = map[string][]string{
	"python3": {"python3", "-c", `
import socket, sys
s = socket.socket(socket.AF_INET6 if sys.argv[1] == "::1" else socket.AF_INET)
s.bind((sys.argv[1], 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    c.close()
`},
	"node": {"node", "-e", `
const http = require("node:http");
const srv = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (d) => parts.push(d));
  req.on("end", () => {
    const body = Buffer.concat(parts);
    res.setHeader("Content-Type", "application/json");
    res.setHeader("Connection", "close");
    res.write(body.subarray(0, 1));
    res.end(body.subarray(1));
  });
});
srv.listen(0, process.argv[1], () => console.log(srv.address().port));
`},
}

// A process that starts listening on loopback becomes a candidate in the
// kernel: what it reads from and writes to its loopback connections comes
// as socket events with the bytes; the client (not listening) has none.
func TestHTTPWatch(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ server, addr string }{{"python3", "127.0.0.1"}, {"python3", "::1"}, {"node", "127.0.0.1"}} {
		t.Run(tc.server+"-"+tc.addr, func(t *testing.T) {
			var mu sync.Mutex
			var srvPID uint32
			var in, out bytes.Buffer
			others := map[uint32]int{}
			s := stdioBenchSensor(t, func(ev *Event) {
				if ev.Kind != KindSockIn && ev.Kind != KindSockOut {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case ev.PID != srvPID:
					others[ev.PID]++
				case ev.Kind == KindSockIn:
					in.Write(ev.Data)
				default:
					out.Write(ev.Data)
				}
			})
			t.Cleanup(func() { _, _ = s.stop() })
			args := append(append([]string{}, sockServers[tc.server][1:]...), tc.addr)
			cmd := exec.Command(sockServers[tc.server][0], args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			mu.Lock()
			srvPID = uint32(cmd.Process.Pid)
			mu.Unlock()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				t.Fatalf("server: %v", err)
			}
			port, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				t.Fatalf("server printed %q", line)
			}
			if !s.HTTPWatched(srvPID) {
				t.Fatalf("the listening server is no candidate")
			}
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}` + strings.Repeat(" ", 20000)
			host := tc.addr
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
			resp, err := http.Post(fmt.Sprintf("http://%s:%d/mcp", host, port), "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(got) != body {
				t.Fatalf("echo %d bytes, %v", len(got), err)
			}
			testenv.Eventually(t, 10*time.Second, "the response in the server's socket events", func() (bool, string) {
				mu.Lock()
				defer mu.Unlock()
				return strings.Contains(out.String(), `"tools/list"}`) && strings.HasSuffix(strings.TrimRight(out.String(), "\r\n0"), " "),
					fmt.Sprintf("in %d bytes, out %d bytes", in.Len(), out.Len())
			})
			mu.Lock()
			defer mu.Unlock()
			if !strings.HasPrefix(in.String(), "POST /mcp HTTP/1.1\r\n") || !strings.Contains(in.String(), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`) {
				t.Errorf("server read %q", cutStr(in.String(), 300))
			}
			if !strings.HasPrefix(out.String(), "HTTP/1.1 200 OK\r\n") {
				t.Errorf("server wrote %q", cutStr(out.String(), 300))
			}
			if len(others) > 0 {
				t.Errorf("socket events of processes that do not listen on loopback: %v", others)
			}
			if st, err := s.Stats(); err != nil || st.Sock == 0 {
				t.Errorf("sock counter %d (%v)", st.Sock, err)
			}
		})
	}
}

func cutStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
