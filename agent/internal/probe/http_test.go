package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
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
// as socket events with the bytes, each connection under one name; the
// client (not listening) has none.
func TestHTTPWatch(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ server, addr string }{{"python3", "127.0.0.1"}, {"python3", "::1"}, {"node", "127.0.0.1"}} {
		t.Run(tc.server+"-"+tc.addr, func(t *testing.T) {
			var mu sync.Mutex
			var srvPID uint32
			var in, out bytes.Buffer
			client := 0 // events of the client (this process, which does not listen)
			s := stdioBenchSensor(t, func(ev *Event) {
				if ev.Kind != KindSockIn && ev.Kind != KindSockOut {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case ev.PID == uint32(os.Getpid()):
					client++
				case ev.PID != srvPID: // other listeners of the host: candidates too
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
			if client > 0 {
				t.Errorf("%d socket events of the client, which does not listen", client)
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

// pingPong is a python3 process that listens on loopback, connects to
// itself and, once told "go" on stdin, passes 1 KiB back and forth: the
// client sends, the server reads and sends it back, the client reads. Per
// round trip: two 1 KiB socket calls on the server's side (a candidate's
// calls that are copied) and two on the client's (a candidate's calls on a
// connection of no port it listens on: looked at, not copied). It prints
// its pid, then the ns per round trip.
const pingPong = `
import os, socket, sys, time
n = int(sys.argv[1])
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
buf = b"x" * 1024; rb = bytearray(1024)
print(os.getpid(), flush=True)
sys.stdin.readline()
def full(sock):
    got = 0
    while got < 1024:
        got += sock.recv_into(memoryview(rb)[got:])
t = time.perf_counter_ns()
for _ in range(n):
    c.sendall(buf); full(s); s.sendall(buf); full(c)
print((time.perf_counter_ns() - t) / n, flush=True)
`

// BenchmarkHTTPCost prints what the loopback-socket copy adds to 1 KiB
// socket reads and writes (python3 through a loopback connection to
// itself): with no sensor, with the sensor but no stdio program, with the
// stdio program without the loopback-socket branch (NoHTTP), for a
// process that is no candidate (every host process pays that: one lookup
// per socket call), and for a candidate whose server side is copied.
// Modes interleaved, median of the rounds.
func BenchmarkHTTPCost(b *testing.B) {
	testenv.RequireRoot(b)
	const rounds, trips = 7, 20000
	modes := []string{"off", "sensor, no stdio", "stdio, no http", "not a candidate", "candidate"}
	results := map[string][]float64{}
	run := func(s *benchSensorHandle, watch bool) float64 {
		cmd := exec.Command("python3", "-c", pingPong, strconv.Itoa(trips))
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		r := bufio.NewReader(out)
		if _, err := r.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
		pid := uint32(cmd.Process.Pid)
		if s != nil {
			// It listened with the sensor loaded: a candidate already.
			if s.HTTPWatched(pid) != watch {
				if err := s.UnwatchHTTP(pid); err != nil {
					b.Fatal(err)
				}
			}
			if s.HTTPWatched(pid) != watch {
				b.Fatalf("pid %d watched %v, want %v", pid, s.HTTPWatched(pid), watch)
			}
		}
		if _, err := io.WriteString(in, "go\n"); err != nil {
			b.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
		if err != nil {
			b.Fatalf("ping-pong printed %q", line)
		}
		return ns
	}
	for range rounds {
		for _, mode := range modes {
			var s *benchSensorHandle
			switch mode {
			case "sensor, no stdio":
				s = traceSensor(b)
			case "stdio, no http":
				s = stdioSensorOpts(b, Options{Stdio: true, NoHTTP: true})
			case "not a candidate", "candidate":
				s = stdioSensor(b)
			}
			results[mode] = append(results[mode], run(s, mode == "candidate"))
			if s != nil {
				st, _ := s.stop()
				if mode == "candidate" && st.Sock < 2*trips {
					b.Fatalf("candidate: %d socket calls copied, want %d", st.Sock, 2*trips)
				}
			}
		}
	}
	off := median(results["off"])
	fmt.Printf("\nadded cost of the loopback-socket copy per round trip of 1 KiB (4 socket calls: 2 copied for a candidate), python3 over loopback, median of %d rounds\n", rounds)
	for _, mode := range modes {
		m := median(results[mode])
		fmt.Printf("%-22s %8.0f ns  (%+6.0f ns per round trip, %+5.0f ns per call, ratio %.2f)\n", mode, m, m-off, (m-off)/4, m/off)
		b.ReportMetric(m/off, "ratio-"+strings.NewReplacer(" ", "-", ",", "").Replace(mode))
	}
}
