package testenv

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// WSServer is a WebSocket server over TLS on loopback (wss://): it keeps
// every text message it receives and answers each with "ok".
type WSServer struct {
	ln  net.Listener
	mu  sync.Mutex
	got []string
}

// NewWSServer starts a wss server; it is closed when the test ends.
func NewWSServer(t testing.TB, ca *CA) *WSServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerTLSConfig())
	if err != nil {
		t.Fatalf("testenv: websocket listen: %v", err)
	}
	s := &WSServer{ln: ln}
	// websocket.Server with no Handshake accepts any Origin (node sends none).
	srv := &http.Server{Handler: websocket.Server{Handler: s.serve}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *WSServer) serve(c *websocket.Conn) {
	for {
		var msg string
		if err := websocket.Message.Receive(c, &msg); err != nil {
			return
		}
		s.mu.Lock()
		s.got = append(s.got, msg)
		s.mu.Unlock()
		if err := websocket.Message.Send(c, "ok"); err != nil {
			return
		}
	}
}

// URL returns "wss://127.0.0.1:port/".
func (s *WSServer) URL() string { return "wss://" + s.ln.Addr().String() + "/" }

// Received returns the text messages received so far.
func (s *WSServer) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// nodeWSClient sends argv[3] as one text message over node's WebSocket
// client (undici, node's own TLS) and exits 0 at the server's answer.
const nodeWSClient = `const [url, msg] = process.argv.slice(2);
const ws = new WebSocket(url);
ws.onopen = () => ws.send(msg);
ws.onmessage = (e) => { console.log("reply " + e.data); ws.close(); process.exit(0); };
ws.onerror = (e) => { console.error("error " + (e.message || e.error || e)); process.exit(1); };
ws.onclose = () => { console.error("closed"); process.exit(2); };
`

// NodeWebSocket returns an unstarted node command that opens a wss
// connection to url (trusting ca) and sends msg as one text message.
// node 20 needs --experimental-websocket; node 22 has the client built in.
func NodeWebSocket(t testing.TB, ca *CA, url, msg string) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "node", nodeHint)
	dir := stateDir(t, "nodews-")
	script := filepath.Join(dir, "ws.js")
	if err := os.WriteFile(script, []byte(nodeWSClient), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, "--experimental-websocket", script, url, msg)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+ca.CAFile, "NODE_NO_WARNINGS=1")
	killOnCleanup(t, cmd)
	return cmd
}
