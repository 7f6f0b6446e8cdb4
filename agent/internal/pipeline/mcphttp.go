package pipeline

import (
	"bufio"
	"encoding/hex"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// MCP servers over streamable HTTP on loopback: probe.Event (KindSockIn,
// KindSockOut of a process that listens on a loopback port: the sensor
// makes it a candidate when it starts listening, watchExistingHTTP when it
// listened before the agent) → mcp.HTTPConn (one per connection: HTTP/1.1
// requests and responses → JSON-RPC) → the process's mcp.Server, the same
// tracker as for stdio servers, so that MCP(pid) finds it.

// HTTPWatcher is the sensor's control of whose loopback connections it
// copies (probe.Sensor). A StdioWatcher that is one too gets the HTTP
// branch.
type HTTPWatcher interface {
	WatchHTTP(pid uint32, ports []uint16) error
	UnwatchHTTP(pid uint32) error
}

// HTTPStats count what the streamable-HTTP branch saw.
type HTTPStats struct {
	Watched int // candidate processes with a connection seen
	Servers int // of those, recognised as MCP servers
	Conns   int // connections tracked now
	// ConnsGivenUp counts connections dropped: not MCP over HTTP/1.x, or
	// bytes lost; GivenUp the processes dropped after httpGiveUpConns
	// such connections and no JSON-RPC.
	ConnsGivenUp, GivenUp uint64
	Messages              uint64 // JSON-RPC messages decoded
	Malformed, Oversize   uint64 // bodies or events skipped
}

// Bounds of the HTTP branch: connections tracked at once (the least
// recently used goes first), the body bound of each direction of one
// (mcp.HTTPConn), and the connections without JSON-RPC after which a
// process that never showed any is no longer watched.
const (
	maxHTTPConns    = 256
	maxHTTPMessage  = mcp.DefaultMaxMessage
	httpGiveUpConns = 16
)

type httpConnKey struct {
	pid  uint32
	sock uint64
}

type httpConn struct {
	dec  *mcp.HTTPConn
	used uint64 // httpBranch.tick at the last event
}

type httpBranch struct {
	w     HTTPWatcher
	procs map[uint32]*MCPServer
	conns map[httpConnKey]*httpConn
	tick  uint64
	done  HTTPStats // of connections and processes no longer tracked
}

func newHTTPBranch(w HTTPWatcher) *httpBranch {
	return &httpBranch{w: w, procs: map[uint32]*MCPServer{}, conns: map[httpConnKey]*httpConn{}}
}

// HTTPStats returns the counters of the streamable-HTTP branch.
func (p *Pipeline) HTTPStats() HTTPStats {
	h := p.http
	if h == nil {
		return HTTPStats{}
	}
	st := h.done
	st.Watched = len(h.procs)
	st.Conns = len(h.conns)
	for _, s := range h.procs {
		if s.known {
			st.Servers++
		}
	}
	for _, c := range h.conns {
		addHTTPConnStats(&st, c.dec.Stats())
	}
	return st
}

func addHTTPConnStats(st *HTTPStats, d mcp.Stats) {
	st.Messages += d.Messages
	st.Malformed += d.Malformed
	st.Oversize += d.Oversize
}

// sockData decodes what a candidate read from (a request) or wrote to (a
// response) one of its loopback connections.
func (p *Pipeline) sockData(ev *probe.Event) []mcp.Message {
	h := p.http
	if h == nil {
		return nil
	}
	if ev.PID == p.self {
		_ = h.w.UnwatchHTTP(ev.PID) // the agent's own servers (tests)
		return nil
	}
	s := h.procs[ev.PID]
	if s == nil {
		if len(h.procs) >= maxWatched {
			return nil
		}
		s = &MCPServer{PID: ev.PID, HTTP: true, Server: mcp.NewServer(mcp.ServerOptions{})}
		h.procs[ev.PID] = s
	}
	h.tick++
	k := httpConnKey{pid: ev.PID, sock: ev.SSL}
	c := h.conns[k]
	if c == nil {
		if len(h.conns) >= maxHTTPConns {
			h.evictOldest()
		}
		c = &httpConn{dec: mcp.NewHTTPConn(maxHTTPMessage)}
		h.conns[k] = c
	}
	c.used = h.tick
	if c.dec.GivenUp() {
		return nil
	}
	_ = ev.ReadRest(p.procs.Path(ev.PID, "mem"), maxStdioRead) // what could not be read is lost to the decoder
	side := mcp.FromClient
	if ev.Kind == probe.KindSockOut {
		side = mcp.FromServer
	}
	msgs := c.dec.Feed(side, ev.Data)
	if lost := int(ev.Len) - len(ev.Data); lost > 0 {
		c.dec.Lost(lost)
	}
	if c.dec.GivenUp() {
		h.done.ConnsGivenUp++
		s.givenUp++
		if !s.known && s.givenUp >= httpGiveUpConns {
			h.forget(ev.PID)
			h.done.GivenUp++
			_ = h.w.UnwatchHTTP(ev.PID)
			return nil
		}
	}
	now := time.Now()
	for _, m := range msgs {
		s.Server.Observe(side, m, now)
	}
	if len(msgs) > 0 && !s.known {
		s.known = true
		s.Package, s.PackageErr = p.packages.Lookup(ev.PID)
		var ts unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil && uint64(ts.Nano()) > ev.Mono {
			s.KnownAfter = time.Duration(uint64(ts.Nano()) - ev.Mono)
		}
	}
	return msgs
}

// evictOldest drops the connection used least recently among those given
// up (closed ones mostly: the sensor does not report a close), or else
// among all.
func (h *httpBranch) evictOldest() {
	var oldest, oldestUp httpConnKey
	var at, atUp uint64
	found, foundUp := false, false
	for k, c := range h.conns {
		if !found || c.used < at {
			oldest, at, found = k, c.used, true
		}
		if c.dec.GivenUp() && (!foundUp || c.used < atUp) {
			oldestUp, atUp, foundUp = k, c.used, true
		}
	}
	switch {
	case foundUp:
		h.dropConn(oldestUp)
	case found:
		h.dropConn(oldest)
	}
}

func (h *httpBranch) dropConn(k httpConnKey) {
	if c := h.conns[k]; c != nil {
		addHTTPConnStats(&h.done, c.dec.Stats())
		delete(h.conns, k)
	}
}

// forget drops what is known of pid (gone, exec'd, or not MCP).
func (h *httpBranch) forget(pid uint32) {
	if _, ok := h.procs[pid]; !ok {
		return
	}
	delete(h.procs, pid)
	for k := range h.conns {
		if k.pid == pid {
			h.dropConn(k)
		}
	}
}

// forgetHTTP drops pid's state; unwatch also stops the sensor copying
// (the process is gone).
func (p *Pipeline) forgetHTTP(pid uint32, unwatch bool) {
	if p.http == nil {
		return
	}
	p.http.forget(pid)
	if unwatch {
		_ = p.http.w.UnwatchHTTP(pid) // gone already, or never watched
	}
}

// watchExistingHTTP makes the processes that listen on a loopback TCP
// port now (started before the agent) candidates: the listening sockets
// of the agent's network namespace (/proc/net/tcp, tcp6) matched to the
// processes' file descriptors.
func (p *Pipeline) watchExistingHTTP() {
	ports := map[string]uint16{} // socket inode -> port
	self := p.procs.Path(p.self, "net")
	for _, f := range []string{"tcp", "tcp6"} {
		listeners(self+"/"+f, ports)
	}
	if len(ports) == 0 {
		return
	}
	pids, err := p.procs.PIDs()
	if err != nil {
		return
	}
	for _, pid := range pids {
		if pid == p.self {
			continue
		}
		var mine []uint16
		dir := p.procs.Path(pid, "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			l, err := os.Readlink(dir + "/" + e.Name())
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			if port, ok := ports[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")]; ok {
				mine = append(mine, port)
			}
		}
		if len(mine) > 0 {
			_ = p.http.w.WatchHTTP(pid, mine) // the map is full: not watched
		}
	}
}

// listeners adds the TCP sockets of a /proc/net/tcp{,6} file that listen
// on a loopback or wildcard address to ports (inode -> port).
func listeners(path string, ports map[string]uint16) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // TCP_LISTEN
			continue
		}
		addr, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		ip, ok := procNetIP(addr)
		if !ok || !(ip.IsLoopback() || ip.IsUnspecified()) {
			continue
		}
		n, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			continue
		}
		ports[fields[9]] = uint16(n)
	}
}

// procNetIP decodes an address of /proc/net/tcp{,6}: 32-bit words in
// host (little-endian) order.
func procNetIP(s string) (net.IP, bool) {
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil, false
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b), true
}
