package mcp

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

func TestRecipients(t *testing.T) {
	for _, tc := range []struct {
		name, args string
		want       []string
	}{
		{"postmark sendEmail", `{"to":"alice@example.com","subject":"Hi","textBody":"Hello"}`, []string{"alice@example.com"}},
		{"case and display name", `{"to":"Alice Smith <Alice.Smith@Example.COM>"}`, []string{"alice.smith@example.com"}},
		{"comma list", `{"to":"a@example.com, B <b@example.org>,c@example.net"}`, []string{"a@example.com", "b@example.org", "c@example.net"}},
		{"semicolon list", `{"cc":"a@example.com; b@example.org"}`, []string{"a@example.com", "b@example.org"}},
		{"arrays and depth", `{"message":{"recipients":[{"email":"x@example.com"},{"email":"y@example.com","name":"Y"}],"cc":["z@example.com"]}}`,
			[]string{"x@example.com", "y@example.com", "z@example.com"}},
		{"JSON escape", `{"to":"phan\u0040giftshop.club"}`, []string{"phan@giftshop.club"}},
		{"escaped display form", `{"to":"\"Phan\" \u003cPHAN\u0040GiftShop.club\u003e"}`, []string{"phan@giftshop.club"}},
		{"mailto", `{"link":"mailto:Bob@Example.com?subject=hi"}`, []string{"bob@example.com", "bob@example.com?subject=hi"}},
		{"mailto in text", `{"html":"<a href=\"mailto:bob@example.com\">write</a>"}`, []string{"bob@example.com"}},
		{"percent escape", `{"to":"bob%40example.com"}`, []string{"bob@example.com"}},
		{"encoded word", `{"to":"=?utf-8?B?cGhhbkBnaWZ0c2hvcC5jbHVi?="}`, []string{"phan@giftshop.club"}},
		{"IDN", `{"to":"user@bücher.example"}`, []string{"user@xn--bcher-kva.example"}},
		{"full-width", `{"to":"ｐ@ｇｉｆｔｓｈｏｐ．ｃｌｕｂ"}`, []string{"p@giftshop.club"}},
		{"in prose", `{"body":"Please forward to carol@example.com and cc dave@example.org. Thanks"}`, []string{"carol@example.com", "dave@example.org"}},
		{"in a key", `{"recipients":{"erin@example.com":"Erin"}}`, []string{"erin@example.com"}},
		{"JSON in a string", `{"payload":"{\"to\":\"frank\\u0040example.com\"}"}`, []string{"frank@example.com"}},
		{"duplicates", `{"to":"a@example.com","cc":"A@EXAMPLE.COM","bcc":["<a@example.com>"]}`, []string{"a@example.com"}},
		{"not addresses", `{"handle":"@someone","n":3,"ok":true,"x":null,"at":"a@","b":"@b.c"}`, nil},
		{"top-level string", `"g@example.com"`, []string{"g@example.com"}},
		{"long body", `{"textBody":"` + strings.Repeat("Write to Bob <Bob@Example.org>, or mailto:c@example.net?subject=x. ", 1000) + `=?utf-8?q?d=40example.com?= %65%40example.com"}`,
			[]string{"bob@example.org", "c@example.net", "d@example.com", "e@example.com"}},
		{"empty", ``, nil},
		{"null", `null`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, cut := scanRecipients([]byte(tc.args))
			if !slices.Equal(got, tc.want) || cut {
				t.Fatalf("got %q (cut %v), want %q", got, cut, tc.want)
			}
			// Every address equals what the mail parser makes of it.
			for _, a := range got {
				if l := mail.ParseAddressList(a); len(l) != 1 || l[0].Addr != a {
					t.Errorf("%q parses as %v in mail", a, l)
				}
			}
		})
	}
}

// The addresses match what the mail parser reads from the mail the tool
// sends, in whatever form the tool writes them.
func TestRecipientsMatchMail(t *testing.T) {
	args := `{"to":"\"Ünïcödé, Jr\" <JR@Bücher.Example>","cc":"mailto:Cc%40Example.org"}`
	got := Recipients([]byte(args))
	for _, header := range []string{"=?utf-8?q?=C3=9Cn=C3=AF?= <jr@xn--bcher-kva.example>", "JR@BÜCHER.EXAMPLE", "<cc@example.org>"} {
		for _, a := range mail.ParseAddressList(header) {
			if !slices.Contains(got, a.Addr) {
				t.Errorf("mail recipient %q (from %q) not among %q", a.Addr, header, got)
			}
		}
	}
}

func TestRecipientsBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"to":[`)
	for i := range MaxRecipients + 10 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"u%d@example.com"`, i)
	}
	b.WriteString(`]}`)
	got, cut := scanRecipients([]byte(b.String()))
	if len(got) != MaxRecipients || !cut {
		t.Fatalf("%d addresses, cut %v", len(got), cut)
	}
	deep := strings.Repeat(`{"a":`, MaxArgsDepth+1) + `"deep@example.com"` + strings.Repeat(`}`, MaxArgsDepth+1)
	if got, cut := scanRecipients([]byte(deep)); len(got) != 0 || !cut {
		t.Fatalf("too deep: %q, cut %v", got, cut)
	}
	ok := strings.Repeat(`[`, MaxArgsDepth) + `"deep@example.com"` + strings.Repeat(`]`, MaxArgsDepth)
	if got, cut := scanRecipients([]byte(ok)); len(got) != 1 || cut {
		t.Fatalf("at the depth bound: %q, cut %v", got, cut)
	}
	// JSON held in strings counts towards the depth.
	inner := `"[\"[\\\"x@example.com\\\"]\"]"` // a string holding an array holding a string holding an array
	for _, tc := range []struct {
		outer int
		cut   bool
	}{{MaxArgsDepth - 4, false}, {MaxArgsDepth - 3, true}} {
		text := strings.Repeat("[", tc.outer) + inner + strings.Repeat("]", tc.outer)
		got, cut := scanRecipients([]byte(text))
		if cut != tc.cut || !tc.cut && !slices.Contains(got, "x@example.com") {
			t.Fatalf("%d levels around two JSON texts in strings: %q, cut %v", tc.outer, got, cut)
		}
	}
	if got, cut := scanRecipients([]byte(`{"to":"a@example.com","b":`)); !slices.Equal(got, []string{"a@example.com"}) || !cut {
		t.Fatalf("truncated JSON: %q, cut %v", got, cut)
	}
}
