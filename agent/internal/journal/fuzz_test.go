package journal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// FuzzVerdictFields renders a verdict made of arbitrary strings (what a
// sender controls: recipients, comm, tool arguments, the violating values)
// and checks every field value journald and journalctl -o json get: valid
// UTF-8, no control character but tab and newline, within MaxValueBytes;
// the native protocol encoding decodes back to the same fields, and the
// JSON sink writes one valid JSON object with the same values.
func FuzzVerdictFields(f *testing.F) {
	f.Add("phan@giftshop.club", "node", "/usr/bin/node", `{"to":"a@b.c"}`, uint8(3), uint16(0))
	f.Add("a\x00b\nc\r\x7f\u0085", "cu\xffrl", "", "\xe2\x82", uint8(0), uint16(2048))
	f.Add(strings.Repeat("é", 700), "python3", "/usr/bin/python3.11", strings.Repeat("\x01", 600), uint8(2), uint16(443))
	f.Fuzz(func(t *testing.T, value, comm, exe, args string, decision uint8, port uint16) {
		v := Verdict{
			Reason:        "unauthorized Bcc " + value,
			Priority:      policy.Priority(decision % 8),
			Decision:      judge.Decision(int(decision) % 3),
			Actions:       []policy.Effect{policy.Effect(value)},
			ActionDetails: []string{value, "", comm},
			Policy:        comm,
			Rules:         []string{value, args},
			Violations:    []string{value},
			PID:           int(port),
			Comm:          comm,
			Exe:           exe,
			Unit:          value,
			Cgroup:        "/" + exe,
			CgroupID:      uint64(port),
			Dest:          value + ":443",
			Peer:          netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
			Recipients:    []string{value, value},
			Latency:       time.Duration(port) * time.Microsecond,
			MCP:           MCP{Server: comm, Package: exe, Client: exe, Tool: value, ToolCallID: value, ToolArgs: args},
			Baseline:      Baseline{Kind: value, Package: comm, Previous: exe},
		}
		fields := v.Fields()
		for _, fl := range fields {
			if fl.Name != strings.ToUpper(fl.Name) {
				t.Fatalf("field name %q is not upper case", fl.Name)
			}
			if len(fl.Value) > MaxValueBytes || !utf8.ValidString(fl.Value) {
				t.Fatalf("%s: %d bytes, valid UTF-8 %v", fl.Name, len(fl.Value), utf8.ValidString(fl.Value))
			}
			for _, r := range fl.Value {
				if (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f) {
					t.Fatalf("%s: control character %U in %q", fl.Name, r, fl.Value)
				}
			}
		}
		got, err := readNative(appendNative(nil, fields))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(fields) {
			t.Fatalf("native: %d fields back of %d", len(got), len(fields))
		}
		for i := range got {
			if got[i] != fields[i] {
				t.Fatalf("native: field %d is %q, want %q", i, got[i], fields[i])
			}
		}
		var out bytes.Buffer
		s := &jsonSink{w: &out}
		if err := s.write(fields, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		var obj map[string]string
		if err := json.Unmarshal(out.Bytes(), &obj); err != nil {
			t.Fatalf("json sink: %v: %q", err, out.String())
		}
		for _, fl := range fields {
			if obj[fl.Name] != fl.Value {
				t.Fatalf("json sink: %s is %q, want %q", fl.Name, obj[fl.Name], fl.Value)
			}
		}
		if strings.Count(out.String(), "\n") != 1 {
			t.Fatalf("json sink: not one line: %q", out.String())
		}
	})
}

// readNative decodes journald's native protocol as journald does.
func readNative(b []byte) ([]Field, error) {
	var out []Field
	r := bufio.NewReader(bytes.NewReader(b))
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF && line == "" {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		line = line[:len(line)-1]
		if name, value, ok := strings.Cut(line, "="); ok {
			out = append(out, Field{name, value})
			continue
		}
		var n uint64
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			return nil, err
		}
		value := make([]byte, n+1)
		if _, err := io.ReadFull(r, value); err != nil {
			return nil, err
		}
		if value[n] != '\n' {
			return nil, io.ErrUnexpectedEOF
		}
		out = append(out, Field{line, string(value[:n])})
	}
}
