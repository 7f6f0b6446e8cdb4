package enforce

import (
	"slices"
	"time"

	"github.com/aarsm/aarsm/agent/internal/pipeline"
)

// MCPServer is what the agent knows of an MCP server process, for
// status (a copy: safe to read from any goroutine).
type MCPServer struct {
	PID      uint32
	Name     string // serverInfo, "" before an initialize result was seen
	Version  string
	Package  string // e.g. "npm:postmark-mcp@1.0.16"; "" if not identified
	Hash     string // the package's content hash
	Client   string // the executable that started it
	Calls    uint64 // tool calls seen
	LastTool string
	LastCall time.Time
	// Transport is how it speaks MCP: "stdio" or "http" (streamable HTTP
	// on a loopback port).
	Transport string
	// KnownAfter: an HTTP server's time from the read of its first
	// JSON-RPC message to the agent knowing it (pipeline.MCPServer).
	KnownAfter time.Duration
}

// MCPServers returns the MCP servers the agent has seen, by pid. Safe to
// call from any goroutine.
func (a *Agent) MCPServers() []MCPServer {
	if p := a.mcpSeen.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// publishMCP copies what the pipeline knows of the MCP servers for
// MCPServers (after an event that changed it).
func (a *Agent) publishMCP() {
	var out []MCPServer
	for _, s := range a.pipe.MCPServers() {
		id := s.Server.Identity()
		m := MCPServer{PID: s.PID, Name: id.Server.Name, Version: id.Server.Version, Client: s.Client,
			Calls: s.Server.Stats().Calls, Transport: "stdio", KnownAfter: s.KnownAfter}
		if s.HTTP {
			m.Transport = "http"
		}
		if s.PackageErr == nil {
			m.Package, m.Hash = s.Package.String(), s.Package.Hash.Sum
		}
		calls := append(s.Server.InFlight(time.Now()), s.Server.Recent()...)
		for _, c := range calls {
			if c.Started.After(m.LastCall) {
				m.LastTool, m.LastCall = c.Tool, c.Started
			}
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(x, y MCPServer) int { return int(x.PID) - int(y.PID) })
	if old := a.mcpSeen.Load(); old == nil || !slices.EqualFunc(*old, out, func(x, y MCPServer) bool { return x.PID == y.PID }) {
		a.mcpGen++ // the processes found to be no MCP server are looked at again
	}
	a.mcpSeen.Store(&out)
	st := a.pipe.StdioStats()
	a.mcpStats.Store(&st)
}

// StdioStats returns the counters of the MCP observation. Safe to call
// from any goroutine.
func (a *Agent) StdioStats() pipeline.StdioStats {
	if p := a.mcpStats.Load(); p != nil {
		return *p
	}
	return pipeline.StdioStats{}
}
