package mcp

import (
	"slices"
	"strings"
	"testing"
)

// Messages as the official SDKs write them. The TypeScript SDK
// (@modelcontextprotocol/sdk) puts jsonrpc and id after the method and
// params (it spreads the request and adds them); the Python SDK (pydantic,
// by alias, without nulls) puts them first.
const (
	tsInitialize   = `{"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-ai","version":"0.1.0"}},"jsonrpc":"2.0","id":0}`
	tsInitResult   = `{"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}},"jsonrpc":"2.0","id":0}`
	tsInitialized  = `{"method":"notifications/initialized","jsonrpc":"2.0"}`
	tsToolsList    = `{"method":"tools/list","jsonrpc":"2.0","id":1}`
	tsToolsResult  = `{"result":{"tools":[{"name":"sendEmail","description":"Send a single email","inputSchema":{"type":"object","properties":{"to":{"type":"string","description":"Recipient email address"},"subject":{"type":"string"},"textBody":{"type":"string"}},"required":["to","subject","textBody"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}},{"name":"sendEmailWithTemplate","inputSchema":{"type":"object"}},{"name":"listTemplates","inputSchema":{"type":"object"}},{"name":"getDeliveryStats","inputSchema":{"type":"object"}}]},"jsonrpc":"2.0","id":1}`
	tsCall         = `{"method":"tools/call","params":{"name":"sendEmail","arguments":{"to":"Alice <Alice@Example.COM>","subject":"Q3 report","textBody":"See attached."},"_meta":{"progressToken":2}},"jsonrpc":"2.0","id":2}`
	tsCallResult   = `{"result":{"content":[{"type":"text","text":"Email sent successfully!\nMessageID: 6f1c2a4e-0000-4000-8000-000000000000\nTo: alice@example.com\nSubject: Q3 report"}]},"jsonrpc":"2.0","id":2}`
	tsCallIsError  = `{"result":{"content":[{"type":"text","text":"Error: 422 Unprocessable"}],"isError":true},"jsonrpc":"2.0","id":3}`
	tsCallRPCError = `{"jsonrpc":"2.0","id":4,"error":{"code":-32602,"message":"MCP error -32602: Tool nope not found"}}`
	tsCancelled    = `{"method":"notifications/cancelled","params":{"requestId":5,"reason":"AbortError: This operation was aborted"},"jsonrpc":"2.0"}`
	pyInitialize   = `{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"roots":{"listChanged":true}},"clientInfo":{"name":"mcp","version":"0.1.0"}}}`
	pyInitResult   = `{"jsonrpc":"2.0","id":"init-1","result":{"protocolVersion":"2025-06-18","capabilities":{"experimental":{},"prompts":{"listChanged":false},"resources":{"subscribe":false,"listChanged":false},"tools":{"listChanged":false}},"serverInfo":{"name":"mail-tools","version":"1.9.4"}}}`
	pyPing         = `{"jsonrpc":"2.0","id":7,"method":"ping"}`
	serverSampling = `{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":100},"jsonrpc":"2.0","id":0}`
	parseError     = `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`
)

func TestDecodeMessage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		check    func(Message) bool
	}{
		{"ts initialize", tsInitialize, func(m Message) bool {
			return m.Kind == KindRequest && m.ID == "0" && m.Method == "initialize" && m.Init != nil &&
				m.Init.ProtocolVersion == "2025-06-18" && m.Init.Client == Implementation{"claude-ai", "0.1.0"}
		}},
		{"ts initialize result", tsInitResult, func(m Message) bool {
			return m.Kind == KindResult && m.ID == "0" && m.InitResult != nil &&
				m.InitResult.Server == Implementation{"postmark-mcp", "1.0.16"} && m.InitResult.ProtocolVersion == "2025-06-18" &&
				!m.ToolsList && !m.CallResult
		}},
		{"initialized", tsInitialized, func(m Message) bool {
			return m.Kind == KindNotification && m.ID == "" && m.Method == "notifications/initialized"
		}},
		{"tools/list", tsToolsList, func(m Message) bool { return m.Kind == KindRequest && m.ID == "1" && !m.Cursor }},
		{"tools/list page", `{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"cursor":"abc"}}`, func(m Message) bool { return m.Cursor }},
		{"tools/list result", tsToolsResult, func(m Message) bool {
			return m.Kind == KindResult && m.ToolsList && slices.Equal(m.Tools, []string{"sendEmail", "sendEmailWithTemplate", "listTemplates", "getDeliveryStats"}) && m.InitResult == nil
		}},
		{"empty tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"nextCursor":"n2"}}`, func(m Message) bool { return m.ToolsList && len(m.Tools) == 0 && m.NextCursor }},
		{"tools/call", tsCall, func(m Message) bool {
			return m.Kind == KindRequest && m.ID == "2" && m.Call != nil && m.Call.Name == "sendEmail" &&
				string(m.Call.Arguments) == `{"to":"Alice <Alice@Example.COM>","subject":"Q3 report","textBody":"See attached."}` &&
				slices.Equal(m.Call.Recipients, []string{"alice@example.com"}) && !m.Call.RecipientsCut
		}},
		{"tools/call result", tsCallResult, func(m Message) bool { return m.Kind == KindResult && m.CallResult && !m.IsError }},
		{"tools/call isError", tsCallIsError, func(m Message) bool { return m.Kind == KindResult && m.CallResult && m.IsError && m.ID == "3" }},
		{"rpc error", tsCallRPCError, func(m Message) bool {
			return m.Kind == KindError && m.ID == "4" && m.ErrorCode == -32602 && strings.Contains(m.ErrorMessage, "not found")
		}},
		{"cancelled", tsCancelled, func(m Message) bool { return m.Kind == KindNotification && m.Cancels == "5" }},
		{"py initialize", pyInitialize, func(m Message) bool {
			return m.Kind == KindRequest && m.ID == `"init-1"` && m.Init.Client.Name == "mcp"
		}},
		{"py initialize result", pyInitResult, func(m Message) bool { return m.InitResult.Server.Version == "1.9.4" }},
		{"ping", pyPing, func(m Message) bool {
			return m.Kind == KindRequest && m.Method == "ping" && m.Init == nil && m.Call == nil
		}},
		{"parse error, null id", parseError, func(m Message) bool { return m.Kind == KindError && m.ID == "" && m.ErrorCode == -32700 }},
		{"request with null id is a notification", `{"jsonrpc":"2.0","id":null,"method":"x"}`, func(m Message) bool { return m.Kind == KindNotification }},
		{"empty result", `{"jsonrpc":"2.0","id":7,"result":{}}`, func(m Message) bool { return m.Kind == KindResult && !m.CallResult && !m.ToolsList }},
		{"non-object result", `{"jsonrpc":"2.0","id":7,"result":[1,2]}`, func(m Message) bool { return m.Kind == KindResult }},
		{"call without arguments", `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"listTemplates"}}`, func(m Message) bool {
			return m.Call != nil && m.Call.Name == "listTemplates" && m.Call.Arguments == nil && m.Call.Recipients == nil
		}},
		{"call with malformed params", `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":"oops"}`, func(m Message) bool { return m.Call != nil && m.Call.Name == "" }},
		{"size", tsInitialized, func(m Message) bool { return m.Size == len(tsInitialized) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := decodeMessage([]byte(tc.in))
			if !ok {
				t.Fatal("not decoded")
			}
			if !tc.check(m) {
				t.Fatalf("unexpected %+v", m)
			}
		})
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `"x"`, `{}`, `{"id":1,"method":"x"}`, `{"jsonrpc":"1.0","id":1,"method":"x"}`,
		`{"jsonrpc":"2.0","id":1}`, `{"jsonrpc":"2.0","method":""}`, `{"jsonrpc":"2.0","id":true,"method":"x"}`,
		`{"jsonrpc":"2.0","id":{"a":1},"method":"x"}`, `{"jsonrpc":"2.0","id":"` + strings.Repeat("x", MaxIDLen) + `","method":"x"}`,
		`{"jsonrpc":"2.0","result":{}}`, `{"jsonrpc":"2.0","id":1,"method":7}`, `{"jsonrpc":"2.0","id":1,"method":"x"`,
		`{"level":"info","msg":"listening on stdio"}`,
	} {
		if m, ok := decodeMessage([]byte(in)); ok {
			t.Errorf("%q accepted as %+v", in, m)
		}
	}
}

func TestIDs(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want ID
		ok   bool
	}{
		{`1`, "1", true}, {`"1"`, `"1"`, true}, {`"\u0031"`, `"1"`, true}, {`1.0`, "1", true}, {`1e2`, "100", true},
		{`-5`, "-5", true}, {`1.5`, "1.5", true}, {`null`, "", true}, {` 7 `, "7", true}, {`"a\"b"`, `"a\"b"`, true},
		{`true`, "", false}, {`{}`, "", false}, {`[1]`, "", false}, {`"unterminated`, "", false}, {`1x`, "", false},
	} {
		got, ok := parseID([]byte(tc.raw))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseID(%s) = %q, %v; want %q, %v", tc.raw, got, ok, tc.want, tc.ok)
		}
	}
	// 1 and "1" are different requests.
	a, _ := parseID([]byte(`1`))
	b, _ := parseID([]byte(`"1"`))
	if a == b {
		t.Error("number and string ids collide")
	}
}

func TestBatch(t *testing.T) {
	in := `[` + tsToolsList + `,` + tsCall + `,{"not":"rpc"},` + tsInitialized + `]`
	msgs, ok := decodeJSON([]byte(in), nil)
	if !ok || len(msgs) != 3 {
		t.Fatalf("ok=%v %d messages", ok, len(msgs))
	}
	for _, m := range msgs {
		if !m.Batch {
			t.Errorf("%+v not marked as batch", m)
		}
	}
	if msgs[1].Call == nil || msgs[2].Method != "notifications/initialized" {
		t.Errorf("unexpected %+v", msgs)
	}
	if _, ok := decodeJSON([]byte(`[{"a":1},2]`), nil); ok {
		t.Error("batch without a JSON-RPC element accepted")
	}
	big := "[" + strings.Repeat(tsInitialized+",", MaxBatch+10) + tsInitialized + "]"
	if msgs, _ := decodeJSON([]byte(big), nil); len(msgs) != MaxBatch {
		t.Errorf("batch bound: %d messages", len(msgs))
	}
}

func TestBounds(t *testing.T) {
	long := strings.Repeat("é", MaxNameLen)
	m, ok := decodeMessage([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + long + `","arguments":{"body":"` + strings.Repeat("x", MaxArgsLen) + ` to bob@example.org"}}}`))
	if !ok || len(m.Call.Name) > MaxNameLen || !strings.HasPrefix(long, m.Call.Name) {
		t.Fatalf("name %d bytes", len(m.Call.Name))
	}
	if m.Call.Arguments != nil || m.Call.ArgsSize <= MaxArgsLen {
		t.Errorf("arguments over the bound kept: %d, size %d", len(m.Call.Arguments), m.Call.ArgsSize)
	}
	// Recipients are read from the whole arguments all the same.
	if !slices.Equal(m.Call.Recipients, []string{"bob@example.org"}) {
		t.Errorf("recipients %q", m.Call.Recipients)
	}
	var tools strings.Builder
	for i := range MaxTools + 5 {
		if i > 0 {
			tools.WriteString(",")
		}
		tools.WriteString(`{"name":"t"}`)
	}
	m, _ = decodeMessage([]byte(`{"jsonrpc":"2.0","id":1,"result":{"tools":[` + tools.String() + `]}}`))
	if len(m.Tools) != MaxTools {
		t.Errorf("%d tools kept", len(m.Tools))
	}
}
