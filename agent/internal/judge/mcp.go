package judge

import (
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// MCP is what the agent knows of a sender that is an MCP server: who it
// is, what it runs, who started it, and the tool call the message is
// attributed to. Context.MCP is nil for a process that is no MCP server
// the agent has seen. Every field but Call is for scopes and the journal;
// the rules read Call.
type MCP struct {
	// ServerName and ServerVersion are the serverInfo of its initialize
	// result; "" when it was not seen (the server started before the
	// agent). Scope blocks' mcp_servers match ServerName.
	ServerName    string
	ServerVersion string
	// Package is the package identity of what the process runs
	// (pkgid.Identity.String: "npm:postmark-mcp@1.0.16",
	// "python:mcp-mail@0.3.1", "exe:/usr/local/bin/server") and
	// PackageHash its content hash (pkgid.Hash.Sum: "sha256:" and 64 hex
	// digits); "" when unknown.
	Package     string
	PackageHash string
	// Client is the AI application that started the server: its
	// clientInfo from initialize and its executable, e.g.
	// "claude-code/1.0.3 (/usr/bin/node)"; "" when unknown.
	Client string
	// Call is the tool call being served that the message is attributed
	// to; nil when none is in flight.
	Call *ToolCall
}

// ToolCall is one tools/call as the judge sees it.
type ToolCall struct {
	// ID is the JSON-RPC id as JSON text (mcp.ID.String): 7, or "7"
	// with its quotes for a string id.
	ID   string
	Tool string // the tool's name
	// Declared are the e-mail addresses the call's arguments name
	// (mcp.Call.Recipients), normalised as the mail parser normalises
	// recipients.
	Declared AddressSet
	// Cut is set when a bound stopped the reading of the arguments
	// (mcp.Call.RecipientsCut): Declared may then be incomplete.
	Cut bool
	// Args are the arguments redacted for a log line (mcp.RedactArgs);
	// never judged.
	Args string
}

// AddressSet is a set of normalised e-mail addresses.
type AddressSet map[string]struct{}

// NewAddressSet returns the set of addrs, which must be normalised as
// the mail parser normalises recipients (mail.NormalizeAddress: case,
// IDNA, display names and escapes undone), as mcp.Call.Recipients are.
// It does not normalise them again: that costs microseconds per address
// (IDNA), and a tool call may name hundreds.
func NewAddressSet(addrs ...string) AddressSet {
	s := make(AddressSet, len(addrs))
	for _, a := range addrs {
		if a != "" {
			s[a] = struct{}{}
		}
	}
	return s
}

// Has reports whether addr, normalised (mail.Address.Addr), is in s.
func (s AddressSet) Has(addr string) bool {
	_, ok := s[addr]
	return ok
}

// call returns the tool call in flight of an MCP sender, or nil.
func (c Context) call() *ToolCall {
	if c.MCP == nil {
		return nil
	}
	return c.MCP.Call
}

// ScopeTarget returns what scope blocks match: Target, with MCPServer
// set to the MCP server's name when it is empty.
func (c Context) ScopeTarget() policy.Target {
	t := c.Target
	if t.MCPServer == "" && c.MCP != nil {
		t.MCPServer = c.MCP.ServerName
	}
	return t
}

// undeclared is one recipient that no argument of the tool call names.
type undeclared struct {
	addr  string
	where string // "to", "cc", "bcc", "envelope"; ", arguments cut" when Cut
}

// undeclaredRecipients returns the recipients of the message (To, Cc,
// Bcc, envelope, each once, named by the first list it is in) that call
// does not declare.
func (e *evaluation) undeclaredRecipients(call *ToolCall) []undeclared {
	if e.haveUndecl {
		return e.undecl
	}
	e.haveUndecl = true
	m := e.msg
	seen := make(map[string]bool, len(m.To)+len(m.Cc)+len(m.Bcc)+len(m.EnvelopeTo))
	for _, l := range []struct {
		where string
		addrs []mail.Address
	}{{"to", m.To}, {"cc", m.Cc}, {"bcc", m.Bcc}, {"envelope", m.EnvelopeTo}} {
		for _, a := range l.addrs {
			if seen[a.Addr] {
				continue
			}
			seen[a.Addr] = true
			if call.Declared.Has(a.Addr) {
				continue
			}
			where := l.where
			if call.Cut {
				where += ", arguments cut"
			}
			e.undecl = append(e.undecl, undeclared{addr: a.Addr, where: where})
		}
	}
	return e.undecl
}
