package testenv

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxSMTPLine bounds one SMTP command or data line.
const maxSMTPLine = 64 << 10

// Mail is one message accepted by the SMTPS sink.
type Mail struct {
	// Seq numbers messages of this server from 1.
	Seq int
	// Conn numbers the TLS connections of this server from 1.
	Conn int
	// Helo is the argument of EHLO/HELO.
	Helo string
	// From is the MAIL FROM address without angle brackets.
	From string
	// To are the RCPT TO addresses without angle brackets.
	To []string
	// RawData is the DATA section exactly as received, dot-stuffed, without
	// the terminating ".\r\n" line.
	RawData []byte
	// Data is RawData with the dot-stuffing removed.
	Data []byte
	// Time is when the final "." was received.
	Time time.Time
}

// SMTPServer is a minimal implicit-TLS (SMTPS) sink on 127.0.0.1 that
// understands EHLO/HELO, MAIL FROM, RCPT TO, DATA, BDAT, RSET, NOOP and QUIT, and
// records every message.
type SMTPServer struct {
	loop   *tlsLoop
	rec    *recorder[Mail]
	rcpts  *recorder[string]
	closed *recorder[int] // connections served to their end
	// startTLS: the session began in plaintext (NewSMTPStartTLSServer):
	// no second greeting over TLS.
	startTLS bool
}

// NewSMTPServer starts the sink; it is closed when the test ends.
func NewSMTPServer(t testing.TB, ca *CA) *SMTPServer {
	t.Helper()
	s := &SMTPServer{rec: newRecorder[Mail](), rcpts: newRecorder[string](), closed: newRecorder[int]()}
	cfg := ca.ServerTLSConfig()
	cfg.NextProtos = nil
	s.loop = startTLSLoop(t, cfg, func(conn *tls.Conn, id int) error {
		defer s.closed.add(id, nil)
		return s.serveConn(conn, id)
	})
	return s
}

// NewSMTPStartTLSServer is the sink on a plaintext port that a client
// upgrades with STARTTLS (RFC 3207): greeting, EHLO (offering STARTTLS
// only) and STARTTLS in plaintext, then the session as NewSMTPServer's
// over TLS. URL is smtp://; curl needs --ssl-reqd.
func NewSMTPStartTLSServer(t testing.TB, ca *CA) *SMTPServer {
	t.Helper()
	s := &SMTPServer{rec: newRecorder[Mail](), rcpts: newRecorder[string](), closed: newRecorder[int](), startTLS: true}
	cfg := ca.ServerTLSConfig()
	cfg.NextProtos = nil
	s.loop = startTLSLoop(t, cfg, func(conn *tls.Conn, id int) error {
		defer s.closed.add(id, nil)
		return s.serveConn(conn, id)
	}, func(raw net.Conn) error {
		br := bufio.NewReader(raw)
		for _, step := range []struct{ expect, reply string }{
			{"", "220 aarsm-test ESMTP ready"},
			{"EHLO", "250-aarsm-test\r\n250 STARTTLS"},
			{"STARTTLS", "220 go ahead"},
		} {
			if step.expect != "" {
				line, err := br.ReadString('\n')
				if err != nil {
					return fmt.Errorf("read %s: %w", step.expect, err)
				}
				if !strings.HasPrefix(strings.ToUpper(line), step.expect) {
					return fmt.Errorf("want %s, got %q", step.expect, line)
				}
			}
			if _, err := io.WriteString(raw, step.reply+"\r\n"); err != nil {
				return fmt.Errorf("reply: %w", err)
			}
		}
		if br.Buffered() > 0 {
			return errors.New("data after STARTTLS before the handshake (command injection)")
		}
		return nil
	})
	return s
}

// Addr returns "127.0.0.1:port".
func (s *SMTPServer) Addr() string { return s.loop.ln.Addr().String() }

// URL returns "smtps://127.0.0.1:port" ("smtp://" for a STARTTLS server).
func (s *SMTPServer) URL() string {
	if s.startTLS {
		return "smtp://" + s.Addr()
	}
	return "smtps://" + s.Addr()
}

// Mails returns the messages received so far, in arrival order.
func (s *SMTPServer) Mails() []Mail {
	items, _ := s.rec.snapshot()
	return items
}

// Recipients returns every RCPT TO address the server received, whether
// the transaction was completed or not.
func (s *SMTPServer) Recipients() []string {
	items, _ := s.rcpts.snapshot()
	return items
}

// WaitClosed waits until n connections have been served to their end
// (the client closed or reset them): everything they carried was read.
func (s *SMTPServer) WaitClosed(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		items, changed := s.closed.snapshot()
		if len(items) >= n {
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("testenv: %d of %d SMTP connections ended within %v", len(items), n, timeout)
		}
	}
}

// WaitDrained waits until the server has handled every byte that reached
// it so far (see Server.WaitDrained); it fails the test after timeout.
func (s *SMTPServer) WaitDrained(t testing.TB, timeout time.Duration) {
	t.Helper()
	s.loop.waitDrained(t, timeout)
}

// Errors returns connection-level errors seen so far.
func (s *SMTPServer) Errors() []error { return s.loop.errors() }

// WaitFor waits until a message matching pred (nil matches any) has been
// received and returns the first such message; it fails the test after
// timeout.
func (s *SMTPServer) WaitFor(t testing.TB, pred func(Mail) bool, timeout time.Duration) Mail {
	t.Helper()
	m, all, ok := s.rec.waitFor(pred, timeout)
	if !ok {
		t.Fatalf("testenv: no matching mail within %v; %d received; server errors: %v", timeout, len(all), s.Errors())
	}
	return m
}

func (s *SMTPServer) serveConn(conn *tls.Conn, connID int) error {
	br := bufio.NewReaderSize(conn, maxSMTPLine)
	bw := bufio.NewWriter(conn)
	reply := func(lines ...string) error {
		for _, l := range lines {
			// A bufio.Writer keeps its first error, and Flush returns it.
			_, _ = bw.WriteString(l)
			_, _ = bw.WriteString("\r\n")
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
		return nil
	}
	readLine := func() ([]byte, error) {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("line longer than %d bytes", maxSMTPLine)
		}
		if err != nil {
			return nil, err
		}
		return bytes.Clone(line), nil
	}

	if !s.startTLS {
		if err := reply("220 aarsm-test ESMTP ready"); err != nil {
			return err
		}
	}
	var cur Mail
	reset := func() { cur = Mail{Conn: connID, Helo: cur.Helo} }
	reset()
	for {
		line, err := readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read command: %w", err)
		}
		cmdLine := strings.TrimRight(string(line), "\r\n")
		verb, arg, _ := strings.Cut(cmdLine, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			cur.Helo = arg
			err = reply("250-aarsm-test greets "+arg, "250-8BITMIME", "250-CHUNKING", "250-SIZE 67108864", "250 HELP")
		case "HELO":
			cur.Helo = arg
			err = reply("250 aarsm-test")
		case "MAIL":
			addr, ok := smtpPath(arg, "FROM:")
			if !ok {
				err = reply("501 syntax: MAIL FROM:<address>")
				break
			}
			reset()
			cur.From = addr
			err = reply("250 OK")
		case "RCPT":
			addr, ok := smtpPath(arg, "TO:")
			if !ok {
				err = reply("501 syntax: RCPT TO:<address>")
				break
			}
			cur.To = append(cur.To, addr)
			s.rcpts.add(addr, nil)
			err = reply("250 OK")
		case "BDAT":
			// RFC 3030 CHUNKING: BDAT size [LAST], then size bytes.
			f := strings.Fields(arg)
			n, perr := strconv.Atoi(firstOr(f, ""))
			if perr != nil || n < 0 || n > maxRecordedBody || len(cur.To) == 0 {
				err = reply("501 syntax: BDAT size [LAST] after RCPT")
				break
			}
			chunk := make([]byte, n)
			if _, rerr := io.ReadFull(br, chunk); rerr != nil {
				return fmt.Errorf("read BDAT chunk: %w", rerr)
			}
			cur.RawData = append(cur.RawData, chunk...)
			if len(f) < 2 || !strings.EqualFold(f[1], "LAST") {
				err = reply("250 OK chunk")
				break
			}
			cur.Data = cur.RawData
			cur.Time = time.Now()
			seq := 0
			s.rec.add(cur, func(m *Mail, n int) { m.Seq = n; seq = n })
			reset()
			err = reply(fmt.Sprintf("250 OK queued as %d", seq))
		case "DATA":
			if len(cur.To) == 0 {
				err = reply("503 need RCPT first")
				break
			}
			if err := reply("354 end data with <CR><LF>.<CR><LF>"); err != nil {
				return err
			}
			var raw, data bytes.Buffer
			for {
				l, rerr := readLine()
				if rerr != nil {
					return fmt.Errorf("read data: %w", rerr)
				}
				if string(l) == ".\r\n" || string(l) == ".\n" {
					break
				}
				raw.Write(l)
				if l[0] == '.' {
					l = l[1:]
				}
				data.Write(l)
			}
			cur.RawData = raw.Bytes()
			cur.Data = data.Bytes()
			cur.Time = time.Now()
			seq := 0
			s.rec.add(cur, func(m *Mail, n int) { m.Seq = n; seq = n })
			reset()
			err = reply(fmt.Sprintf("250 OK queued as %d", seq))
		case "RSET":
			reset()
			err = reply("250 OK")
		case "NOOP":
			err = reply("250 OK")
		case "QUIT":
			_ = reply("221 bye")
			_ = conn.CloseWrite()
			return nil
		default:
			err = reply("502 command not implemented")
		}
		if err != nil {
			return err
		}
	}
}

func firstOr(f []string, def string) string {
	if len(f) == 0 {
		return def
	}
	return f[0]
}

// smtpPath parses "FROM:<a@b> SIZE=1" into "a@b".
func smtpPath(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if strings.HasPrefix(rest, "<") {
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return "", false
		}
		return rest[1:end], true
	}
	addr, _, _ := strings.Cut(rest, " ")
	return addr, addr != ""
}

// CurlSMTP returns an unstarted curl command that sends data as one mail
// to the SMTPS url (e.g. SMTPServer.URL()), verifying the server with the
// test CA. curl does the dot-stuffing itself.
func CurlSMTP(t testing.TB, ca *CA, url, from string, to []string, data []byte) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "curl", "apt-get install -y curl")
	dir := stateDir(t, "curl-smtp-")
	mailFile := dir + "/mail.eml"
	if err := writeFile(mailFile, data); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	args := []string{"-q", "--silent", "--show-error", "--noproxy", "*", "--max-time", "60",
		"--cacert", ca.CAFile, "--url", url, "--mail-from", from}
	if strings.HasPrefix(url, "smtp://") {
		args = append(args, "--ssl-reqd") // STARTTLS, or fail
	}
	for _, r := range to {
		args = append(args, "--mail-rcpt", r)
	}
	args = append(args, "--upload-file", mailFile)
	cmd := exec.Command(bin, args...)
	killOnCleanup(t, cmd)
	return cmd
}
