package enforce

import (
	"strconv"

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
