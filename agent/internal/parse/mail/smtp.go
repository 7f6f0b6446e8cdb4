package mail

import (
	"bytes"
	"strconv"
	"strings"
)

// SMTPSession parses the client side of an SMTP session (the bytes a
// process writes into its TLS connection to a mail server) incrementally.
// It is fed fragments of any size and returns each message once its DATA
// terminator (or BDAT LAST chunk) arrives. Server replies are not needed:
// every command is assumed accepted.
//
// Memory is bounded: a command line is kept up to maxSMTPLine bytes, message
// content up to MaxBodyBytes (the rest is scanned for the terminator and
// dropped, and the message marked Truncated), recipients up to
// MaxRecipients.
//
// An SMTPSession is not safe for concurrent use.
type SMTPSession struct {
	mode      smtpMode
	line      []byte // command line being assembled
	overflow  bool   // current command line exceeded maxSMTPLine
	from      string
	rcpts     []Address
	rcptTrunc bool
	data      []byte // message content (dot-unstuffed)
	dline     []byte // DATA line being assembled
	dlineLong bool   // current DATA line was flushed already (so not ".")
	dataTrunc bool
	bdatLeft  int64
	bdatLast  bool
}

type smtpMode uint8

const (
	smtpCommand smtpMode = iota
	smtpData
	smtpBDAT
)

const (
	maxSMTPLine     = 4096
	maxSMTPDataLine = 64 << 10
)

// NewSMTPSession returns a parser at the start of a session.
func NewSMTPSession() *SMTPSession { return &SMTPSession{} }

// Feed consumes the next client bytes and returns the messages completed by
// them (usually none or one).
func (s *SMTPSession) Feed(b []byte) []*Message {
	var out []*Message
	for len(b) > 0 {
		switch s.mode {
		case smtpCommand:
			i := bytes.IndexByte(b, '\n')
			chunk := b
			if i >= 0 {
				chunk = b[:i]
			}
			if !s.overflow {
				if len(s.line)+len(chunk) > maxSMTPLine {
					s.overflow = true
					s.line = s.line[:0]
				} else {
					s.line = append(s.line, chunk...)
				}
			}
			if i < 0 {
				return out
			}
			b = b[i+1:]
			if !s.overflow {
				if m := s.command(bytes.TrimRight(s.line, "\r")); m != nil {
					out = append(out, m)
				}
			}
			s.line = s.line[:0]
			s.overflow = false
		case smtpData:
			i := bytes.IndexByte(b, '\n')
			chunk := b
			if i >= 0 {
				chunk = b[:i+1]
			}
			b = b[len(chunk):]
			if len(s.dline)+len(chunk) > maxSMTPDataLine {
				// Too long to be the terminator: flush what we have.
				s.appendData(s.dline)
				s.appendData(chunk)
				s.dline = s.dline[:0]
				s.dlineLong = i < 0
				continue
			}
			s.dline = append(s.dline, chunk...)
			if i < 0 {
				return out
			}
			line := s.dline
			long := s.dlineLong
			s.dline = s.dline[:0]
			s.dlineLong = false
			if !long && (string(line) == ".\r\n" || string(line) == ".\n") {
				out = append(out, s.finish())
				continue
			}
			if !long && len(line) > 0 && line[0] == '.' {
				line = line[1:]
			}
			s.appendData(line)
		case smtpBDAT:
			n := int64(len(b))
			if n > s.bdatLeft {
				n = s.bdatLeft
			}
			s.appendData(b[:n])
			b = b[n:]
			s.bdatLeft -= n
			if s.bdatLeft == 0 {
				s.mode = smtpCommand
				if s.bdatLast {
					out = append(out, s.finish())
				}
			}
		}
	}
	return out
}

func (s *SMTPSession) appendData(b []byte) {
	if len(b) == 0 {
		return
	}
	room := MaxBodyBytes - len(s.data)
	if len(b) > room {
		b = b[:max(room, 0)]
		s.dataTrunc = true
	}
	s.data = append(s.data, b...)
}

// command handles one command line and returns a message when it completes
// one (BDAT 0 LAST).
func (s *SMTPSession) command(line []byte) *Message {
	verb, arg, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
	switch strings.ToUpper(verb) {
	case "HELO", "EHLO", "RSET":
		s.reset()
	case "MAIL":
		if a, ok := cutPrefixFold(arg, "FROM:"); ok {
			s.reset()
			s.from, _ = NormalizeAddress(pathArg(a))
			if s.from == "" {
				s.from = "<>"
			}
		}
	case "RCPT":
		if a, ok := cutPrefixFold(arg, "TO:"); ok {
			if n, ok := NormalizeAddress(pathArg(a)); ok {
				if len(s.rcpts) < MaxRecipients {
					s.rcpts = appendAddr(s.rcpts, Address{Addr: n})
				} else {
					s.rcptTrunc = true
				}
			}
		}
	case "DATA":
		s.mode = smtpData
		s.data = s.data[:0]
		s.dataTrunc = false
	case "BDAT":
		fields := strings.Fields(arg)
		if len(fields) == 0 {
			return nil
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || n < 0 {
			return nil
		}
		s.bdatLast = len(fields) > 1 && strings.EqualFold(fields[1], "LAST")
		if n == 0 {
			if s.bdatLast {
				return s.finish()
			}
			return nil
		}
		s.bdatLeft = n
		s.mode = smtpBDAT
	}
	return nil
}

// pathArg extracts the mailbox from "<a@b> SIZE=10", "<@relay:a@b>" or
// "a@b".
func pathArg(a string) string {
	a = strings.TrimSpace(a)
	if strings.HasPrefix(a, "<") {
		if j := strings.IndexByte(a, '>'); j > 0 {
			a = a[1:j]
		} else {
			a = a[1:]
		}
	} else if j := strings.IndexAny(a, " \t"); j >= 0 {
		a = a[:j]
	}
	if strings.HasPrefix(a, "@") { // source route
		if j := strings.LastIndexByte(a, ':'); j >= 0 {
			a = a[j+1:]
		}
	}
	return a
}

func cutPrefixFold(s, prefix string) (string, bool) {
	s = strings.TrimLeft(s, " ")
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func (s *SMTPSession) reset() {
	s.from = ""
	s.rcpts = nil
	s.rcptTrunc = false
	s.data = s.data[:0]
	s.dataTrunc = false
}

// finish builds the message from the envelope and the content, and resets
// for the next transaction.
func (s *SMTPSession) finish() *Message {
	m := newMessage(ProviderSMTP, "SMTP")
	parseRFC822Into(m, s.data, 0)
	m.EnvelopeFrom = s.from
	// The header may add envelope recipients too (X-SMTPAPI).
	m.EnvelopeTo = mergeAddrs(append([]Address(nil), s.rcpts...), m.EnvelopeTo)
	m.Truncated = m.Truncated || s.dataTrunc || s.rcptTrunc
	s.mode = smtpCommand
	s.reset()
	s.data = nil // release the buffer between messages
	return m
}

// Pending returns what is known of the transaction in progress, or nil when
// none is: the envelope (MAIL FROM, RCPT TO so far) and, once the header
// section of the DATA has arrived, the header recipients and subject. The
// result has Partial set; bodies are only judged on completion. The
// enforcement stage judges it before letting each write proceed, so a
// recipient is refused before the server can deliver to it.
func (s *SMTPSession) Pending() *Message {
	if s.from == "" && len(s.rcpts) == 0 && s.mode == smtpCommand {
		return nil
	}
	m := newMessage(ProviderSMTP, "SMTP")
	m.Partial = true
	m.EnvelopeFrom = s.from
	m.EnvelopeTo = append([]Address(nil), s.rcpts...)
	m.Truncated = s.rcptTrunc
	if s.mode != smtpCommand && len(s.data) > 0 {
		if end := headerEnd(s.data); end > 0 {
			hdr, _ := splitHeader(s.data[:end])
			applyHeaders(m, hdr)
			if m.Headers == nil {
				m.Headers = make(map[string][]string)
			}
		}
	}
	return m
}

// headerEnd returns the length of the header section including the blank
// line, or 0 when it has not arrived yet.
func headerEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		if j := bytes.Index(b, []byte("\n\n")); j >= 0 && j < i {
			return j + 2
		}
		return i + 4
	}
	if j := bytes.Index(b, []byte("\n\n")); j >= 0 {
		return j + 2
	}
	return 0
}
