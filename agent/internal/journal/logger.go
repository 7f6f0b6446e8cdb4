package journal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aarsm/aarsm/agent/internal/judge"
)

// Format selects the sink: the value of --log-format. It implements
// flag.Value.
type Format string

// Formats.
const (
	// FormatAuto is the journal when its socket answers at New, else JSON.
	FormatAuto Format = "auto"
	// FormatJournal is the systemd journal; New fails when it is absent.
	FormatJournal Format = "journal"
	// FormatJSON is one JSON object per line.
	FormatJSON Format = "json"
)

// ParseFormat parses "journal", "json" or "auto"; "" is auto.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatAuto, FormatJournal, FormatJSON:
		return f, nil
	case "":
		return FormatAuto, nil
	}
	return "", fmt.Errorf("parse log format %q: want journal, json or auto", s)
}

// String returns the format name.
func (f Format) String() string { return string(f) }

// Set parses s into f (flag.Value).
func (f *Format) Set(s string) error {
	p, err := ParseFormat(s)
	if err != nil {
		return err
	}
	*f = p
	return nil
}

// DefaultWriteTimeout bounds one send to journald: a journald that stops
// reading must not hold the pipeline forever.
const DefaultWriteTimeout = time.Second

// Options configure a Logger. The zero value is auto format on the default
// socket with JSON to stdout.
type Options struct {
	// Format selects the sink; "" is FormatAuto.
	Format Format
	// SocketPath is the journald native socket; "" is DefaultSocketPath.
	SocketPath string
	// Out receives the JSON lines when the JSON sink is used; nil is
	// os.Stdout. Each entry is one Write call.
	Out io.Writer
	// LogAllows records allow decisions too; by default they are only
	// counted (see Stats).
	LogAllows bool
	// WriteTimeout bounds one send to journald; 0 is DefaultWriteTimeout,
	// negative means no limit.
	WriteTimeout time.Duration
	// Now stamps JSON entries; nil is time.Now.
	Now func() time.Time
}

// Stats counts what a Logger saw. Allowed, Alerted and Blocked count
// decisions passed to Log (allows whether logged or not); Written counts
// entries the sink accepted and Failed the ones it refused. Unmonitored
// counts the reports of unmonitored processes (not decisions).
type Stats struct {
	Allowed, Alerted, Blocked uint64
	Written, Failed           uint64
	Unmonitored               uint64
}

// sink writes one entry.
type sink interface {
	write(fields []Field, now time.Time) error
	close() error
}

// Logger records verdicts. It is safe for concurrent use.
type Logger struct {
	sink      sink
	format    Format
	logAllows bool
	now       func() time.Time

	allowed, alerted, blocked, written, failed atomic.Uint64
	unmonitored                                atomic.Uint64
}

// New returns a Logger writing to the sink opts selects. With
// FormatJournal it fails (wrapping ErrJournalUnavailable) when no journald
// answers on the socket.
func New(opts Options) (*Logger, error) {
	format := opts.Format
	if format == "" {
		format = FormatAuto
	}
	if _, err := ParseFormat(string(format)); err != nil {
		return nil, fmt.Errorf("new verdict logger: %w", err)
	}
	if format == FormatAuto {
		format = FormatJSON
		if Enabled(opts.SocketPath) {
			format = FormatJournal
		}
	}
	timeout := opts.WriteTimeout
	switch {
	case timeout == 0:
		timeout = DefaultWriteTimeout
	case timeout < 0:
		timeout = 0
	}
	l := &Logger{format: format, logAllows: opts.LogAllows, now: opts.Now}
	if l.now == nil {
		l.now = time.Now
	}
	switch format {
	case FormatJournal:
		s, err := newNativeSink(opts.SocketPath, timeout)
		if err != nil {
			return nil, fmt.Errorf("new verdict logger: %w", err)
		}
		l.sink = s
	default:
		out := opts.Out
		if out == nil {
			out = os.Stdout
		}
		l.sink = &jsonSink{w: out}
	}
	return l, nil
}

// Format returns the sink in use: FormatJournal or FormatJSON.
func (l *Logger) Format() Format { return l.format }

// Log records v. Allow decisions are counted and, unless LogAllows is set,
// not written. An invalid verdict (ErrInvalidVerdict) is neither counted
// nor written.
func (l *Logger) Log(v Verdict) error {
	if err := v.Validate(); err != nil {
		return fmt.Errorf("log verdict: %w", err)
	}
	switch {
	case v.Unmonitored.Stack != "":
		l.unmonitored.Add(1) // a report, not a verdict
	case v.Decision == judge.Allow:
		l.allowed.Add(1)
		if !l.logAllows {
			return nil
		}
	case v.Decision == judge.Alert:
		l.alerted.Add(1)
	case v.Decision == judge.Block:
		l.blocked.Add(1)
	}
	if err := l.sink.write(v.Fields(), l.now()); err != nil {
		l.failed.Add(1)
		return fmt.Errorf("log verdict: %w", err)
	}
	l.written.Add(1)
	return nil
}

// Records reports whether Log writes an entry for decision d (allow
// decisions only with LogAllows), so a caller can skip gathering what
// only the entry needs.
func (l *Logger) Records(d judge.Decision) bool { return d != judge.Allow || l.logAllows }

// Stats returns the counters so far.
func (l *Logger) Stats() Stats {
	return Stats{
		Allowed: l.allowed.Load(),
		Alerted: l.alerted.Load(),
		Blocked: l.blocked.Load(),
		Written: l.written.Load(),
		Failed:  l.failed.Load(),

		Unmonitored: l.unmonitored.Load(),
	}
}

// Close releases the sink (the journal socket; the JSON writer is not
// closed).
func (l *Logger) Close() error { return l.sink.close() }

// jsonSink writes {"TIMESTAMP":...,"MESSAGE":...,...}\n per entry, values as
// JSON strings (as journalctl -o json shows them), in the order of Fields.
type jsonSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

func (s *jsonSink) write(fields []Field, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enc == nil {
		s.enc = json.NewEncoder(&s.buf)
		s.enc.SetEscapeHTML(false)
	}
	s.buf.Reset()
	s.buf.WriteByte('{')
	s.field(FieldTimestamp, now.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	for _, f := range fields {
		s.buf.WriteByte(',')
		s.field(f.Name, f.Value)
	}
	s.buf.WriteString("}\n")
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("write json entry: %w", err)
	}
	return nil
}

// field appends "name":"value"; Encode of a string cannot fail.
func (s *jsonSink) field(name, value string) {
	_ = s.enc.Encode(name)
	s.buf.Truncate(s.buf.Len() - 1) // Encode's newline
	s.buf.WriteByte(':')
	_ = s.enc.Encode(value)
	s.buf.Truncate(s.buf.Len() - 1)
}

func (s *jsonSink) close() error { return nil }
