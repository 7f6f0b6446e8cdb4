package pipeline

import (
	"os"
	"strings"
	"time"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
)

// The MCP branch of the pipeline: probe.Event (KindStdin, KindStdout of a
// watched process) → mcp.Decoder (one per stream) → mcp.Server (the
// process's tool calls). A process is watched when its stdin and stdout
// are both pipes or sockets (an MCP client spawns its stdio servers so);
// the sensor stops copying its stdio as soon as its stdin is found not to
// carry JSON-RPC.

// StdioWatcher is the sensor's control of whose stdio it copies
// (probe.Sensor).
type StdioWatcher interface {
	WatchStdio(pid uint32, what probe.Stdio) error
	UnwatchStdio(pid uint32) error
}

// MCPServer is what the pipeline knows of a process that speaks MCP on
// its stdio: its calls (Server), the package it runs and the client that
// started it.
type MCPServer struct {
	PID    uint32
	Server *mcp.Server
	// Package is the package the server runs (pkgid), looked up when its
	// first MCP message was seen; PackageErr says why it is not known.
	Package    pkgid.Identity
	PackageErr error
	// Client is the executable of the process that started it (the AI
	// application), "" if gone.
	Client string
	// HTTP: it speaks streamable HTTP on a loopback port (mcphttp.go),
	// not stdio; Client is then "".
	HTTP bool
	// KnownAfter is, for an HTTP server, the time from the system call
	// that read its first JSON-RPC message (its kernel timestamp) to the
	// pipeline knowing it as an MCP server.
	KnownAfter time.Duration

	in, out *mcp.Decoder
	known   bool // a JSON-RPC message was seen
	givenUp int  // HTTP: connections given up
}

// StdioStats count what the MCP branch saw.
type StdioStats struct {
	Watched  int    // processes whose stdio is copied now
	Servers  int    // of those, recognised as MCP servers
	GivenUp  uint64 // processes dropped: their stdin carried no JSON-RPC
	Messages uint64 // JSON-RPC messages decoded
	// Malformed and Oversize count the frames skipped: not JSON-RPC, or
	// over the decoder's bound.
	Malformed, Oversize uint64
	// HTTP counts the streamable-HTTP servers' branch (HTTPStats).
	HTTP HTTPStats
}

// StdioStats returns the counters of the MCP branch.
func (p *Pipeline) StdioStats() StdioStats {
	st := p.stdioDone
	st.HTTP = p.HTTPStats()
	st.Watched = len(p.mcp)
	for _, s := range p.mcp {
		if s.known {
			st.Servers++
		}
		addDecoderStats(&st, s.in.Stats())
		addDecoderStats(&st, s.out.Stats())
	}
	return st
}

func addDecoderStats(st *StdioStats, d mcp.Stats) {
	st.Messages += d.Messages
	st.Malformed += d.Malformed
	st.Oversize += d.Oversize
}

// maxMCPAncestors bounds the walk from a process to the MCP server that
// started it (a server's helper, its shell, ...).
const maxMCPAncestors = 8

// maxStdioRead bounds what is read of one stdio call past the sensor's
// copy (probe.Event.ReadRest).
const maxStdioRead = 4 << 20

// watchExisting starts watching the stdio of the processes running now
// that may be MCP servers: one started before the agent is recognised
// from its next message.
func (p *Pipeline) watchExisting() {
	pids, err := p.procs.PIDs()
	if err != nil {
		return
	}
	for _, pid := range pids {
		p.considerStdio(pid)
	}
}

// considerStdio watches pid's stdio if it may be an MCP server, and stops
// watching it otherwise (after an exec).
func (p *Pipeline) considerStdio(pid uint32) {
	if pid == p.self {
		return
	}
	if !stdioCandidate(p.procs, pid) {
		p.forgetStdio(pid)
		return
	}
	if _, ok := p.mcp[pid]; ok {
		return
	}
	if len(p.mcp) >= maxWatched {
		return
	}
	if err := p.stdio.WatchStdio(pid, probe.StdioAll); err != nil {
		return
	}
	p.mcp[pid] = newMCPServer(pid)
}

func newMCPServer(pid uint32) *MCPServer {
	return &MCPServer{
		PID:    pid,
		Server: mcp.NewServer(mcp.ServerOptions{}),
		in:     mcp.NewDecoder(mcp.DecoderOptions{}),
		out:    mcp.NewDecoder(mcp.DecoderOptions{}),
	}
}

// feed decodes one stdio call of the server and tracks what it carried.
func (s *MCPServer) feed(side mcp.Side, data []byte, now time.Time) []mcp.Message {
	dec := s.in
	if side == mcp.FromServer {
		dec = s.out
	}
	msgs := dec.Feed(data)
	for _, m := range msgs {
		s.Server.Observe(side, m, now)
	}
	return msgs
}

// maxWatched is the size of the sensor's stdio_watch map.
const maxWatched = 4096

func (p *Pipeline) forgetStdio(pid uint32) {
	s, ok := p.mcp[pid]
	if !ok {
		return
	}
	addDecoderStats(&p.stdioDone, s.in.Stats())
	addDecoderStats(&p.stdioDone, s.out.Stats())
	if s.in.GivenUp() {
		p.stdioDone.GivenUp++
	}
	delete(p.mcp, pid)
	_ = p.stdio.UnwatchStdio(pid) // gone already, or never watched
}

// stdioCandidate reports whether pid's stdin and stdout are both pipes or
// sockets.
func stdioCandidate(fs proc.FS, pid uint32) bool {
	for _, fd := range []string{"fd/0", "fd/1"} {
		l, err := os.Readlink(fs.Path(pid, fd))
		if err != nil || !(strings.HasPrefix(l, "pipe:") || strings.HasPrefix(l, "socket:")) {
			return false
		}
	}
	return true
}

// stdioData decodes what a watched process read from its stdin (the
// client's requests) or wrote to its stdout (its answers).
func (p *Pipeline) stdioData(ev *probe.Event) []mcp.Message {
	s := p.mcp[ev.PID]
	if s == nil {
		return nil
	}
	_ = ev.ReadRest(p.procs.Path(ev.PID, "mem"), maxStdioRead) // what could not be read is lost to the decoder
	side := mcp.FromClient
	if ev.Kind == probe.KindStdout {
		side = mcp.FromServer
	}
	msgs := s.feed(side, ev.Data, time.Now())
	if s.in.GivenUp() || (s.out.GivenUp() && !s.known) {
		p.forgetStdio(ev.PID)
		return nil
	}
	if len(msgs) > 0 && !s.known {
		s.known = true
		s.Package, s.PackageErr = p.packages.Lookup(ev.PID)
		if ppid, err := p.procs.PPID(ev.PID); err == nil {
			s.Client, _ = p.procs.Exe(ppid)
		}
	}
	return msgs
}

// MCP returns the MCP server pid is, or the nearest one among its
// ancestors that started it (a tool's helper process); nil when none.
func (p *Pipeline) MCP(pid uint32) *MCPServer {
	for range maxMCPAncestors {
		if s := p.mcp[pid]; s != nil && s.known {
			return s
		}
		if p.http != nil {
			if s := p.http.procs[pid]; s != nil && s.known {
				return s
			}
		}
		ppid, err := p.procs.PPID(pid)
		if err != nil || ppid <= 1 || ppid == pid {
			return nil
		}
		pid = ppid
	}
	return nil
}

// MCPServers returns the processes recognised as MCP servers.
func (p *Pipeline) MCPServers() []*MCPServer {
	var out []*MCPServer
	for _, s := range p.mcp {
		if s.known {
			out = append(out, s)
		}
	}
	if p.http != nil {
		for _, s := range p.http.procs {
			if s.known {
				out = append(out, s)
			}
		}
	}
	return out
}
