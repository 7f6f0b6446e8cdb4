package enforce

import (
	"strconv"
	"time"

	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
)

// The MCP context of a sender: what the judge (scopes, undeclared_recipients,
// unauthorized_bcc_recipients) and the journal (journal.MCPOf: the
// AARSM_MCP_* and AARSM_TOOL* fields) are told of a process that is an
// MCP server.

// mcpContext returns the judge's MCP context of a server: srv is what its
// tracker saw of the initialize exchange (mcp.Server.Identity), pkg what
// it runs (nil when unknown), parentExe the executable of the process
// that started it ("" when unknown), and call the tool call the message
// is attributed to (nil when it serves none; see toolCallOf).
func mcpContext(srv mcp.Identity, pkg *pkgid.Identity, parentExe string, call *judge.ToolCall) *judge.MCP {
	m := &judge.MCP{
		ServerName:    srv.Server.Name,
		ServerVersion: srv.Server.Version,
		Client:        mcpClientName(srv.Client, parentExe),
		Call:          call,
	}
	if pkg != nil {
		m.Package, m.PackageHash = pkg.String(), pkg.Hash.Sum
	}
	return m
}

// mcpClientName names the AI application that started a server: the
// clientInfo of its initialize request ("name/version") and its
// executable in parentheses, or whichever of the two is known.
func mcpClientName(info mcp.Implementation, exe string) string {
	s := info.Name
	if s != "" && info.Version != "" {
		s += "/" + info.Version
	}
	switch {
	case exe == "":
		return s
	case s == "":
		return exe
	}
	return s + " (" + exe + ")"
}

// toolCallOf returns the judge's view of a tool call in flight. It reads
// the arguments for a log line (mcp.RedactArgs runs the secret detectors
// over them): build it once per call, when the tracker reports it
// (mcp.EventCallStarted), not at every write the call causes.
func toolCallOf(c mcp.Call) *judge.ToolCall {
	t := &judge.ToolCall{
		ID:       c.ID.String(),
		Tool:     c.Tool,
		Declared: judge.NewAddressSet(c.Recipients...),
		Cut:      c.RecipientsCut,
		Args:     mcp.RedactArgs(c.Arguments),
	}
	if c.Arguments == nil && c.ArgsSize > 0 {
		t.Args = "[arguments not kept, " + strconv.Itoa(c.ArgsSize) + " bytes]"
	}
	return t
}

// callGrace is how long after its result a tool call still counts as the
// one a server's request serves: a tool may answer before its client's
// request has left (an asynchronous send).
const callGrace = 2 * time.Second

// maxToolCalls bounds the tool calls kept built (toolCalls).
const maxToolCalls = 1024

// callKey names a tool call of a server.
type callKey struct {
	pid uint32
	id  mcp.ID
	seq uint64
}

// mcpOf returns the MCP context of a process: nil when neither it nor an
// ancestor is an MCP server the agent has seen. The call is the most
// recent one in flight (or ended within callGrace); when several are in
// flight, the recipients any of them declared count as declared: a request
// cannot be told apart between them.
func (a *Agent) mcpOf(pid uint32, now time.Time) *judge.MCP {
	s := a.pipe.MCP(pid)
	if s == nil {
		return nil
	}
	calls := s.Server.InFlight(now)
	if len(calls) == 0 {
		if recent := s.Server.Recent(); len(recent) > 0 && now.Sub(recent[0].Ended) <= callGrace {
			calls = recent[:1]
		}
	}
	var call *judge.ToolCall
	if len(calls) > 0 {
		call = a.toolCall(s.PID, calls[0])
		if len(calls) > 1 {
			merged := *call
			merged.Declared = judge.NewAddressSet()
			for _, c := range calls {
				for _, r := range c.Recipients {
					merged.Declared[r] = struct{}{}
				}
				merged.Cut = merged.Cut || c.RecipientsCut
			}
			call = &merged
		}
	}
	var pkg *pkgid.Identity
	if s.PackageErr == nil {
		pkg = &s.Package
	}
	return mcpContext(s.Server.Identity(), pkg, s.Client, call)
}

// toolCall returns the judge's view of a call, built once.
func (a *Agent) toolCall(pid uint32, c mcp.Call) *judge.ToolCall {
	k := callKey{pid: pid, id: c.ID, seq: c.Seq}
	if t, ok := a.toolCalls[k]; ok {
		return t
	}
	if len(a.toolCalls) >= maxToolCalls {
		clear(a.toolCalls)
	}
	t := toolCallOf(c)
	a.toolCalls[k] = t
	return t
}
