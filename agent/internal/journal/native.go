package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocketPath is where journald listens for native-protocol entries.
const DefaultSocketPath = "/run/systemd/journal/socket"

// ErrJournalUnavailable is returned (wrapped) when the journal sink is asked
// for and nothing answers on the journald socket.
var ErrJournalUnavailable = errors.New("journald is not reachable")

// Enabled reports whether a journald answers on the socket at path ("" is
// DefaultSocketPath). It is go-systemd's journal.Enabled for any path.
func Enabled(path string) bool {
	if path == "" {
		path = DefaultSocketPath
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// sendBufferBytes is the send buffer asked for (the kernel caps it at
// net.core.wmem_max), as sd-journal does, so entries of a few KiB go as one
// datagram.
const sendBufferBytes = 8 << 20

// nativeSink writes entries to journald with its native protocol
// (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): one datagram per entry,
// each field as "NAME=value\n", or "NAME\n" + 64-bit little-endian length +
// value + "\n" when the value holds a newline. An entry too big for one
// datagram is written to a sealed memfd whose descriptor is passed instead.
type nativeSink struct {
	conn    *net.UnixConn
	addr    *net.UnixAddr
	timeout time.Duration
	bufs    sync.Pool
	// forceMemfd sends every entry through a memfd (tests).
	forceMemfd bool
}

func newNativeSink(path string, timeout time.Duration) (*nativeSink, error) {
	if path == "" {
		path = DefaultSocketPath
	}
	if !Enabled(path) {
		return nil, fmt.Errorf("open journal sink: %w (no socket answers at %s)", ErrJournalUnavailable, path)
	}
	// Unbound and unconnected, like sd-journal: each send names the socket,
	// so a restarted journald is found again.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("open journal sink: create socket: %w", err)
	}
	_ = conn.SetWriteBuffer(sendBufferBytes)
	s := &nativeSink{conn: conn, addr: &net.UnixAddr{Name: path, Net: "unixgram"}, timeout: timeout}
	s.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return s, nil
}

// appendNative appends the fields in the native protocol encoding.
func appendNative(b []byte, fields []Field) []byte {
	for _, f := range fields {
		if strings.IndexByte(f.Value, '\n') < 0 {
			b = append(b, f.Name...)
			b = append(b, '=')
			b = append(b, f.Value...)
			b = append(b, '\n')
			continue
		}
		b = append(b, f.Name...)
		b = append(b, '\n')
		b = binary.LittleEndian.AppendUint64(b, uint64(len(f.Value)))
		b = append(b, f.Value...)
		b = append(b, '\n')
	}
	return b
}

func (s *nativeSink) write(fields []Field, _ time.Time) error {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	*bp = appendNative((*bp)[:0], fields)
	data := *bp
	if s.timeout > 0 {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	}
	if !s.forceMemfd {
		_, _, err := s.conn.WriteMsgUnix(data, nil, s.addr)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
			return fmt.Errorf("send journal entry: %w", err)
		}
	}
	return s.writeMemfd(data)
}

// writeMemfd passes data in a sealed memfd, which journald maps and reads.
func (s *nativeSink) writeMemfd(data []byte) error {
	fd, err := unix.MemfdCreate("aarsm-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("send journal entry: create memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "aarsm-journal")
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("send journal entry: write memfd: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("send journal entry: seal memfd: %w", err)
	}
	if _, _, err := s.conn.WriteMsgUnix(nil, unix.UnixRights(int(f.Fd())), s.addr); err != nil {
		return fmt.Errorf("send journal entry: pass memfd: %w", err)
	}
	return nil
}

func (s *nativeSink) close() error {
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("close journal sink: %w", err)
	}
	return nil
}
