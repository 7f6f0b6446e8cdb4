package trace

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse"
)

// FormatOptions say how much Format shows.
type FormatOptions struct {
	// Verbose adds headers, bodies and responses.
	Verbose bool
	// ShowSecrets shows credentials and secrets verbatim; without it they
	// are replaced by "[redacted:WHAT NB]" (redact.go says what).
	ShowSecrets bool
}

// Format writes r as one line and, with verbose, its headers and body
// indented below it, secrets redacted. Responses are only shown with
// verbose.
func Format(w io.Writer, r Record, verbose bool) error {
	return FormatWith(w, r, FormatOptions{Verbose: verbose})
}

// FormatWith writes r as Format does, with the options given.
func FormatWith(w io.Writer, r Record, o FormatOptions) error {
	red := redactText
	redHeaders := redactHeaders
	if o.ShowSecrets {
		red = func(s string) string { return s }
		redHeaders = func(h map[string][]string) map[string][]string { return h }
	}
	verbose := o.Verbose
	if r.Mail != nil {
		return formatMail(w, r, verbose, red, redHeaders)
	}
	if r.RPC != nil {
		return formatRPC(w, r)
	}
	m := r.Msg
	if m.Response && !verbose {
		return nil
	}
	var b strings.Builder
	ts := r.Time.Format("15:04:05.000000")
	// HTTP/2 messages carry no reason phrase but a stream id, which ties a
	// response to its request on a connection that multiplexes them.
	h2 := m.Stream != 0
	switch {
	case m.WebSocket:
		writeWSHead(&b, ts, r, red)
	case m.Response && h2:
		fmt.Fprintf(&b, "%s pid=%d comm=%s <- %d h2#%d body=%s", ts, r.Conn.PID, quote(r.Comm), m.Status, m.Stream, size(m.WireSize))
	case m.Response:
		fmt.Fprintf(&b, "%s pid=%d comm=%s <- %d %s body=%s", ts, r.Conn.PID, quote(r.Comm), m.Status, m.Reason, size(m.WireSize))
	case h2:
		fmt.Fprintf(&b, "%s pid=%d comm=%s %s %s %s h2#%d body=%s", ts, r.Conn.PID, quote(r.Comm), m.Method, orDash(m.Host), red(m.Target), m.Stream, size(m.WireSize))
	default:
		fmt.Fprintf(&b, "%s pid=%d comm=%s %s %s %s body=%s", ts, r.Conn.PID, quote(r.Comm), m.Method, orDash(m.Host), red(m.Target), size(m.WireSize))
	}
	if m.Chunked {
		b.WriteString(" chunked")
	}
	if m.Encoding != "" {
		fmt.Fprintf(&b, " %s(%s)", m.Encoding, size(int64(len(m.Data))))
	}
	if m.Reset {
		b.WriteString(" reset")
	}
	if m.Missing > 0 {
		fmt.Fprintf(&b, " truncated(%s not captured)", size(m.Missing))
	} else if m.Truncated {
		b.WriteString(" truncated")
	}
	if m.DecodeErr != nil {
		fmt.Fprintf(&b, " decode-error=%q", m.DecodeErr.Error())
	}
	writeCall(&b, r)
	b.WriteByte('\n')
	if verbose {
		fmt.Fprintf(&b, "    exe=%s cgroup=%d tid=%d ssl=%#x\n", r.Exe, r.Cgroup, r.TID, r.Conn.SSL)
		writeHeaders(&b, redHeaders(m.Header))
		writeBody(&b, red(string(m.Data)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeWSHead writes the head of a WebSocket message's line: its kind and
// payload size as framed and, for the client's, where it goes (the upgrade
// request's host and target).
func writeWSHead(b *strings.Builder, ts string, r Record, red func(string) string) {
	m := r.Msg
	dir := ""
	if m.Response {
		dir = "<- "
	}
	fmt.Fprintf(b, "%s pid=%d comm=%s %sWS %s %s", ts, r.Conn.PID, quote(r.Comm), dir, wsKind(m.Opcode), size(m.WireSize))
	if !m.Response {
		fmt.Fprintf(b, " %s %s", orDash(m.Host), orDash(red(m.Target)))
	}
	if m.CloseCode != 0 {
		fmt.Fprintf(b, " code=%d", m.CloseCode)
	}
}

// wsKind names a WebSocket opcode.
func wsKind(op uint8) string {
	switch op {
	case parse.WSText:
		return "text"
	case parse.WSBinary:
		return "binary"
	case parse.WSClose:
		return "close"
	case parse.WSPing:
		return "ping"
	case parse.WSPong:
		return "pong"
	}
	return fmt.Sprintf("opcode=%#x", op)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

func size(n int64) string {
	return fmt.Sprintf("%dB", n)
}

// printable escapes control characters and invalid UTF-8, keeping newlines.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r == '\r':
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// formatMail writes a mail sent over SMTP as one line, its envelope and
// subject; with verbose, its headers and text below it.
func formatMail(w io.Writer, r Record, verbose bool, red func(string) string, redHeaders func(map[string][]string) map[string][]string) error {
	m := r.Mail
	var b strings.Builder
	rcpts := make([]string, 0, len(m.EnvelopeTo))
	for _, a := range m.EnvelopeTo {
		rcpts = append(rcpts, a.Addr)
	}
	fmt.Fprintf(&b, "%s pid=%d comm=%s SMTP from=%s rcpt=%s subject=%q\n", r.Time.Format("15:04:05.000000"), r.Conn.PID,
		quote(r.Comm), oneLine(red(m.EnvelopeFrom)), oneLine(red(strings.Join(rcpts, ","))), red(m.Subject))
	if verbose {
		fmt.Fprintf(&b, "    exe=%s cgroup=%d tid=%d ssl=%#x\n", r.Exe, r.Cgroup, r.TID, r.Conn.SSL)
		writeHeaders(&b, redHeaders(m.Headers))
		writeBody(&b, red(m.TextBody))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine is s for a one-line field: quoted when it has spaces or
// control characters, "-" when empty.
func oneLine(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == ' ' || r == '"' }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// writeHeaders writes headers indented, sorted by name.
func writeHeaders(b *strings.Builder, h map[string][]string) {
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(b, "    %s: %s\n", k, printable(v))
		}
	}
}

// writeBody writes a body indented, after an empty line.
func writeBody(b *strings.Builder, body string) {
	if body == "" {
		return
	}
	b.WriteString("    \n")
	for _, line := range strings.Split(printable(body), "\n") {
		fmt.Fprintf(b, "    %s\n", line)
	}
}

// formatRPC writes an MCP server's JSON-RPC message as one line: what the
// client asked of it (<- stdin, a request read) or what it answered
// (-> stdout, a response written).
func formatRPC(w io.Writer, r Record) error {
	m := r.RPC
	var b strings.Builder
	dir := "<-"
	if r.RPCOut || r.Conn.SSL == 1 { // stdout (the fd), or a response written
		dir = "->"
	}
	fmt.Fprintf(&b, "%s pid=%d comm=%s MCP", r.Time.Format("15:04:05.000000"), r.Conn.PID, quote(r.Comm))
	if r.Server != "" {
		fmt.Fprintf(&b, " server=%s", oneLine(r.Server))
	}
	fmt.Fprintf(&b, " %s %s", dir, m.Kind)
	if m.Method != "" {
		fmt.Fprintf(&b, " %s", oneLine(m.Method))
	}
	if m.ID != "" {
		fmt.Fprintf(&b, " id=%s", oneLine(m.ID.String()))
	}
	switch {
	case m.Call != nil:
		fmt.Fprintf(&b, " tool=%s args=%s", oneLine(m.Call.Name), oneLine(mcp.RedactArgs(m.Call.Arguments)))
	case m.InitResult != nil:
		fmt.Fprintf(&b, " serverInfo=%s@%s", oneLine(m.InitResult.Server.Name), oneLine(m.InitResult.Server.Version))
	case m.Init != nil:
		fmt.Fprintf(&b, " clientInfo=%s@%s", oneLine(m.Init.Client.Name), oneLine(m.Init.Client.Version))
	case m.IsError:
		b.WriteString(" isError")
	case m.Kind == mcp.KindError:
		fmt.Fprintf(&b, " code=%d message=%s", m.ErrorCode, oneLine(m.ErrorMessage))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCall appends, to a request of an MCP server, the tool call it was
// made for.
func writeCall(b *strings.Builder, r Record) {
	if r.Server == "" && r.Call == nil {
		return
	}
	fmt.Fprintf(b, " mcp=%s", oneLine(r.Server))
	if r.Call != nil {
		fmt.Fprintf(b, " tool=%s call=%s", oneLine(r.Call.Tool), oneLine(r.Call.ID.String()))
	}
}
