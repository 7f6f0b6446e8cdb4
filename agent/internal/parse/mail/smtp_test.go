package mail

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

const smtpSession = "EHLO client.company.com\r\n" +
	"AUTH PLAIN AGFnZW50AHNlY3JldA==\r\n" +
	"MAIL FROM:<agent@company.com> SIZE=1000\r\n" +
	"RCPT TO:<alice@company.com>\r\n" +
	"RCPT TO:<PHAN@giftshop.club> NOTIFY=NEVER\r\n" +
	"DATA\r\n" +
	"From: agent@company.com\r\n" +
	"To: Alice <alice@company.com>\r\n" +
	"Subject: Fwd: numbers\r\n" +
	"\r\n" +
	"line one\r\n" +
	"..leading dot\r\n" +
	".\r\n" +
	"QUIT\r\n"

func TestSMTPSessionWhole(t *testing.T) {
	s := NewSMTPSession()
	msgs := s.Feed([]byte(smtpSession))
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if m.EnvelopeFrom != "agent@company.com" {
		t.Errorf("envelope from %q", m.EnvelopeFrom)
	}
	if got := addrs(m.EnvelopeTo); !slices.Equal(got, []string{"alice@company.com", "phan@giftshop.club"}) {
		t.Errorf("envelope to %v", got)
	}
	if got := addrs(m.BlindRecipients()); !slices.Equal(got, []string{"phan@giftshop.club"}) {
		t.Errorf("blind recipients %v", got)
	}
	if m.Subject != "Fwd: numbers" || len(m.ForwardMarkers()) == 0 {
		t.Errorf("subject %q markers %v", m.Subject, m.ForwardMarkers())
	}
	if !strings.Contains(m.TextBody, "line one\r\n.leading dot") || strings.Contains(m.TextBody, "..leading") {
		t.Errorf("dot-unstuffing: %q", m.TextBody)
	}
	if s.Pending() != nil {
		t.Error("pending after QUIT")
	}
}

// Every split of the stream into two fragments gives the same message, and
// Pending shows the envelope recipients before DATA completes.
func TestSMTPSessionFragments(t *testing.T) {
	for cut := 0; cut <= len(smtpSession); cut++ {
		s := NewSMTPSession()
		msgs := s.Feed([]byte(smtpSession[:cut]))
		msgs = append(msgs, s.Feed([]byte(smtpSession[cut:]))...)
		if len(msgs) != 1 {
			t.Fatalf("cut %d: %d messages", cut, len(msgs))
		}
		if got := addrs(msgs[0].EnvelopeTo); len(got) != 2 {
			t.Fatalf("cut %d: envelope %v", cut, got)
		}
	}
	// Byte by byte.
	s := NewSMTPSession()
	var msgs []*Message
	sawPendingPhan := false
	for i := 0; i < len(smtpSession); i++ {
		msgs = append(msgs, s.Feed([]byte{smtpSession[i]})...)
		if p := s.Pending(); p != nil && slices.Contains(addrs(p.EnvelopeTo), "phan@giftshop.club") {
			if !p.Partial {
				t.Fatal("pending not marked partial")
			}
			sawPendingPhan = true
		}
	}
	if len(msgs) != 1 || !sawPendingPhan {
		t.Fatalf("byte-wise: %d messages, pending saw phan: %v", len(msgs), sawPendingPhan)
	}
}

func TestSMTPPendingHeaders(t *testing.T) {
	s := NewSMTPSession()
	s.Feed([]byte("MAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\nRCPT TO:<phan@giftshop.club>\r\nDATA\r\nTo: b@company.com\r\n"))
	p := s.Pending()
	if got := addrs(p.BlindRecipients()); len(got) != 0 {
		t.Fatalf("blind recipients before header end: %v", got)
	}
	s.Feed([]byte("Subject: x\r\n\r\nbody"))
	p = s.Pending()
	if got := addrs(p.BlindRecipients()); !slices.Equal(got, []string{"phan@giftshop.club"}) {
		t.Fatalf("blind recipients after header end: %v", got)
	}
	if p.Subject != "x" {
		t.Fatalf("subject %q", p.Subject)
	}
}

func TestSMTPRsetAndMultipleMessages(t *testing.T) {
	s := NewSMTPSession()
	msgs := s.Feed([]byte("MAIL FROM:<a@company.com>\r\nRCPT TO:<x@evil.example>\r\nRSET\r\n" +
		"MAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\nDATA\r\nSubject: 1\r\n\r\n.\r\n" +
		"MAIL FROM:<a@company.com>\r\nRCPT TO:<c@company.com>\r\nDATA\r\nSubject: 2\r\n\r\n.\r\n"))
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if got := addrs(msgs[0].EnvelopeTo); !slices.Equal(got, []string{"b@company.com"}) {
		t.Errorf("first envelope %v (RSET must clear x@evil.example)", got)
	}
	if msgs[1].Subject != "2" || addrs(msgs[1].EnvelopeTo)[0] != "c@company.com" {
		t.Errorf("second message %q %v", msgs[1].Subject, addrs(msgs[1].EnvelopeTo))
	}
}

func TestSMTPBDAT(t *testing.T) {
	body := "To: b@company.com\r\nSubject: chunked\r\n\r\nhello\r\n.\r\n"
	s := NewSMTPSession()
	msgs := s.Feed([]byte("MAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\nBDAT 10\r\n" + body[:10]))
	msgs = append(msgs, s.Feed([]byte("BDAT "+strconv.Itoa(len(body)-10)+" LAST\r\n"+body[10:]))...)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	if msgs[0].Subject != "chunked" || !strings.Contains(msgs[0].TextBody, "hello\r\n.\r\n") {
		t.Fatalf("subject %q body %q", msgs[0].Subject, msgs[0].TextBody)
	}
}

func TestSMTPBounded(t *testing.T) {
	s := NewSMTPSession()
	s.Feed([]byte("MAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\nDATA\r\nSubject: big\r\n\r\n"))
	chunk := []byte(strings.Repeat("x", 1<<20))
	for i := 0; i < 20; i++ {
		s.Feed(chunk) // one 20 MiB line, never terminated by itself
	}
	s.Feed([]byte(strings.Repeat(strings.Repeat("y", 1000)+"\r\n", 100)))
	if len(s.data) > MaxBodyBytes || len(s.dline) > maxSMTPDataLine {
		t.Fatalf("buffers grew to %d / %d", len(s.data), len(s.dline))
	}
	msgs := s.Feed([]byte("\r\n.\r\n"))
	if len(msgs) != 1 || !msgs[0].Truncated {
		t.Fatalf("want one truncated message, got %d", len(msgs))
	}
	// A long command line is dropped, not kept.
	s.Feed([]byte("RCPT TO:<" + strings.Repeat("a", 10000)))
	if len(s.line) > maxSMTPLine {
		t.Fatalf("command buffer %d", len(s.line))
	}
}

func TestSMTPLeadingDotLineIsNotTerminator(t *testing.T) {
	s := NewSMTPSession()
	msgs := s.Feed([]byte("MAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\nDATA\r\n\r\n..\r\n.x\r\n"))
	if len(msgs) != 0 {
		t.Fatal("terminated early")
	}
	msgs = s.Feed([]byte(".\n"))
	if len(msgs) != 1 {
		t.Fatal("bare-LF terminator not accepted")
	}
}
