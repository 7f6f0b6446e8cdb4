// Package vault keeps quarantined messages: root-only (0600 files in a 0700
// directory) copies of blocked messages, each kept for its policy's
// quarantine_duration and then purged.
//
// Time never comes from the clock here: callers pass now, so that tests and
// the judge agree on it.
package vault

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// DefaultDir is where the agent keeps quarantined messages.
const DefaultDir = "/var/lib/aarsm/quarantine"

// MaxEntryBytes bounds one stored entry.
const MaxEntryBytes = 64 << 20

// ErrNotFound is returned by Get for an unknown or purged id.
var ErrNotFound = errors.New("quarantine entry not found")

// ErrTooLarge is returned by Put for an entry over MaxEntryBytes.
var ErrTooLarge = errors.New("quarantine entry too large")

// Entry is one quarantined message with why and from whom it was stopped.
type Entry struct {
	ID         string        `json:"id"`
	Stored     time.Time     `json:"stored"`
	Expires    time.Time     `json:"expires"`
	Policy     string        `json:"policy"`
	Rules      []string      `json:"rules,omitempty"`
	Violations []string      `json:"violations,omitempty"`
	PID        uint32        `json:"pid,omitempty"`
	Comm       string        `json:"comm,omitempty"`
	Exe        string        `json:"exe,omitempty"`
	Unit       string        `json:"unit,omitempty"`
	Dest       string        `json:"dest,omitempty"`
	Message    *mail.Message `json:"message"`
}

// Info is what List reports without reading entries.
type Info struct {
	ID      string
	Expires time.Time
}

// Vault is a quarantine directory. It is safe for concurrent use: entries
// are written to temporary files and renamed into place.
type Vault struct {
	dir string
}

// Open prepares dir (created if needed, mode forced to 0700). It refuses a
// symbolic link, a non-directory, and, when running as root, a directory
// owned by another user.
func Open(dir string) (*Vault, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create quarantine directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("stat quarantine directory: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
		return nil, fmt.Errorf("quarantine directory %s is not a plain directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && sys.Uid != 0 {
		return nil, fmt.Errorf("quarantine directory %s is owned by uid %d, not root", dir, sys.Uid)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("restrict quarantine directory: %w", err)
		}
	}
	return &Vault{dir: dir}, nil
}

// Dir returns the directory.
func (v *Vault) Dir() string { return v.dir }

// File names are "<expiry unix nanoseconds, 20 digits>-<16 hex>.json", so
// that Purge needs no file contents.
var idPattern = regexp.MustCompile(`^[0-9]{20}-[0-9a-f]{16}$`)

// Put stores e (ID, Stored and Expires are set from now and keep) and
// returns its id.
func (v *Vault) Put(e *Entry, now time.Time, keep time.Duration) (string, error) {
	if keep <= 0 {
		return "", fmt.Errorf("quarantine duration %v is not positive", keep)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("quarantine id: %w", err)
	}
	exp := now.Add(keep)
	e.ID = fmt.Sprintf("%020d-%s", exp.UnixNano(), hex.EncodeToString(rnd[:]))
	e.Stored = now.UTC()
	e.Expires = exp.UTC()
	data, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("encode quarantine entry: %w", err)
	}
	if len(data) > MaxEntryBytes {
		return "", fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	f, err := os.CreateTemp(v.dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create quarantine file: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return "", fmt.Errorf("restrict quarantine file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return "", fmt.Errorf("write quarantine file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync quarantine file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("close quarantine file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, e.ID+".json")); err != nil {
		return "", fmt.Errorf("store quarantine file: %w", err)
	}
	ok = true
	return e.ID, nil
}

// Get reads an entry. An expired entry not yet purged is still returned.
func (v *Vault) Get(id string) (*Entry, error) {
	if !idPattern.MatchString(id) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	data, err := os.ReadFile(filepath.Join(v.dir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read quarantine entry: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode quarantine entry %s: %w", id, err)
	}
	return &e, nil
}

// List returns the stored entries, soonest to expire first.
func (v *Vault) List() ([]Info, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	var out []Info
	for _, de := range des {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || !idPattern.MatchString(id) {
			continue
		}
		ns, _ := strconv.ParseInt(id[:20], 10, 64)
		out = append(out, Info{ID: id, Expires: time.Unix(0, ns).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Purge deletes the entries that expired at or before now, and temporary
// files left by an interrupted Put more than an hour before now. It
// returns how many entries it deleted.
func (v *Vault) Purge(now time.Time) (int, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return 0, fmt.Errorf("purge quarantine: %w", err)
	}
	n := 0
	var errs []error
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") {
			if info, err := de.Info(); err == nil && info.ModTime().Before(now.Add(-time.Hour)) {
				os.Remove(filepath.Join(v.dir, name))
			}
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || !idPattern.MatchString(id) {
			continue
		}
		ns, err := strconv.ParseInt(id[:20], 10, 64)
		if err != nil || ns > now.UnixNano() {
			continue
		}
		if err := os.Remove(filepath.Join(v.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("purge quarantine: %w", errors.Join(errs...))
	}
	return n, nil
}
