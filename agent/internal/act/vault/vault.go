// Package vault keeps quarantined messages: root-only (0600 files in a 0700
// directory) copies of blocked messages, each kept for its policy's
// quarantine_duration and then purged.
//
// The vault is plain files, safe for concurrent use by several processes:
// the agent writes (one writer), "aarsm quarantine" reads and deletes, and
// either may purge. Entries are written to a temporary file and renamed
// into place, so a reader sees a whole entry or none.
//
// It is bounded: one entry holds at most MaxEntryBytes, and the vault at
// most Limits.MaxEntries entries and Limits.MaxBytes bytes. A message that
// would go over a bound is not kept (Put returns ErrTooLarge or ErrFull);
// the entries already kept are never pushed out by newer ones, so that a
// flood of blocked messages cannot purge the evidence of the first. (The
// message is blocked all the same: the vault is a copy.)
//
// Time never comes from the clock here: callers pass now, so that tests and
// the judge agree on it.
package vault

import (
	"bufio"
	"bytes"
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
	"github.com/aarsm/aarsm/agent/internal/statefile"
)

// DefaultDir is where the agent keeps quarantined messages
// (<state directory>/quarantine).
const DefaultDir = "/var/lib/aarsm/quarantine"

// MaxEntryBytes bounds one stored entry (its JSON file). A message keeps at
// most 16 MiB of content (mail.MaxBodyBytes), attachments grow by a third
// in base64: only text made mostly of control characters (escaped
// six-fold) takes an entry over it.
const MaxEntryBytes = 64 << 20

// Default bounds of the whole vault.
const (
	DefaultMaxEntries = 1000
	DefaultMaxBytes   = 512 << 20
)

// ErrNotFound is returned for an unknown or purged id.
var ErrNotFound = errors.New("no quarantined message with this id")

// ErrTooLarge is returned by Put for an entry over MaxEntryBytes.
var ErrTooLarge = errors.New("quarantine entry too large")

// ErrFull is returned by Put when the entry would take the vault over its
// Limits.
var ErrFull = errors.New("quarantine full")

// Header is what an entry says about a message besides the message itself:
// why, from whom and where to it was stopped, and until when it is kept.
// Everything in it also goes to the journal with the verdict, but the
// recipients' addresses (only their number is here).
type Header struct {
	ID         string    `json:"id"`
	Stored     time.Time `json:"stored"`
	Expires    time.Time `json:"expires"`
	Policy     string    `json:"policy"`
	Rules      []string  `json:"rules,omitempty"`
	Violations []string  `json:"violations,omitempty"`
	PID        uint32    `json:"pid,omitempty"`
	Comm       string    `json:"comm,omitempty"`
	Exe        string    `json:"exe,omitempty"`
	Unit       string    `json:"unit,omitempty"`
	Cgroup     string    `json:"cgroup,omitempty"`
	Dest       string    `json:"dest,omitempty"`
	// Recipients counts the message's distinct recipients (To, Cc, Bcc,
	// envelope); Put sets it.
	Recipients int `json:"recipients"`
}

// Entry is one quarantined message with its Header. In the file the
// message comes last, so that List reads only the header.
type Entry struct {
	Header
	Message *mail.Message `json:"message"`
}

// Info is what List reports of an entry: its header and the file's size.
type Info struct {
	Header
	Size int64 `json:"size"`
}

// Limits bound the whole vault; zero fields take the defaults.
type Limits struct {
	MaxEntries int
	MaxBytes   int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Vault is a quarantine directory. It is safe for concurrent use, by
// goroutines and processes; it is bounded only as long as one of them
// writes (the agent).
type Vault struct {
	dir    string
	limits Limits
}

// Open prepares dir for the agent (created if needed, mode forced to 0700).
// It refuses a symbolic link, a non-directory, and, when running as root,
// a directory owned by another user.
func Open(dir string, limits Limits) (*Vault, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create quarantine directory: %w", err)
	}
	st, err := check(dir)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // G302: a directory: 0700 is root-only
			return nil, fmt.Errorf("restrict quarantine directory: %w", err)
		}
	}
	return &Vault{dir: dir, limits: limits.withDefaults()}, nil
}

// OpenExisting opens dir as it is, for reading and deleting ("aarsm
// quarantine"): nothing is created or changed. A missing directory is an
// error wrapping fs.ErrNotExist; one that only root may read, run by
// another user, wraps fs.ErrPermission.
func OpenExisting(dir string) (*Vault, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if _, err := check(dir); err != nil {
		return nil, err
	}
	if err := syscall.Access(dir, 0o5 /* R_OK|X_OK */); err != nil {
		return nil, fmt.Errorf("quarantine directory %s: %w", dir, &fs.PathError{Op: "open", Path: dir, Err: err})
	}
	return &Vault{dir: dir, limits: Limits{}.withDefaults()}, nil
}

func check(dir string) (fs.FileInfo, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("quarantine directory: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
		return nil, fmt.Errorf("quarantine directory %s is not a plain directory", dir)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && sys.Uid != 0 {
		return nil, fmt.Errorf("quarantine directory %s is owned by uid %d, not root", dir, sys.Uid)
	}
	return st, nil
}

// Dir returns the directory.
func (v *Vault) Dir() string { return v.dir }

// Limits returns the vault's bounds.
func (v *Vault) Limits() Limits { return v.limits }

// File names are "<expiry unix nanoseconds, 20 digits>-<16 hex>.json", so
// that Purge and NextExpiry need no file contents.
var idPattern = regexp.MustCompile(`^[0-9]{20}-[0-9a-f]{16}$`)

// ValidID reports whether id has the form of an entry's id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Assign gives e its ID, Stored and Expires (now + keep) and counts its
// recipients, without storing it: see Write. Put does both.
func Assign(e *Entry, now time.Time, keep time.Duration) error {
	if keep <= 0 {
		return fmt.Errorf("quarantine duration %v is not positive", keep)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("quarantine id: %w", err)
	}
	exp := now.Add(keep)
	e.ID = fmt.Sprintf("%020d-%s", exp.UnixNano(), hex.EncodeToString(rnd[:]))
	e.Stored = now.UTC()
	e.Expires = exp.UTC()
	if e.Message != nil {
		e.Recipients = len(e.Message.Recipients())
	}
	return nil
}

// Put stores e (ID, Stored and Expires are set from now and keep) and
// returns its id.
func (v *Vault) Put(e *Entry, now time.Time, keep time.Duration) (string, error) {
	if err := Assign(e, now, keep); err != nil {
		return "", err
	}
	if err := v.Write(e); err != nil {
		return "", err
	}
	return e.ID, nil
}

// Write stores an entry Assign prepared: refused with ErrTooLarge over
// MaxEntryBytes and with ErrFull when the vault would go over its Limits.
func (v *Vault) Write(e *Entry) error {
	if !idPattern.MatchString(e.ID) {
		return fmt.Errorf("store quarantine entry: bad id %q", e.ID)
	}
	// Not HTML-escaped: an HTML body's "<" stays one byte, not six.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return fmt.Errorf("encode quarantine entry: %w", err)
	}
	data := buf.Bytes()
	if len(data) > MaxEntryBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(data), MaxEntryBytes)
	}
	n, size, err := v.Usage()
	if err != nil {
		return err
	}
	if n+1 > v.limits.MaxEntries {
		return fmt.Errorf("%w: %d messages kept already, at most %d", ErrFull, n, v.limits.MaxEntries)
	}
	if size+int64(len(data)) > v.limits.MaxBytes {
		return fmt.Errorf("%w: %d bytes kept already, %d more would exceed %d", ErrFull, size, len(data), v.limits.MaxBytes)
	}
	if err := statefile.WriteAtomic(filepath.Join(v.dir, e.ID+".json"), ".tmp-", data); err != nil {
		return fmt.Errorf("store quarantine file: %w", err)
	}
	return nil
}

// Usage returns how many entries the vault holds and their size in bytes.
func (v *Vault) Usage() (int, int64, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return 0, 0, fmt.Errorf("quarantine usage: %w", err)
	}
	n, size := 0, int64(0)
	for _, de := range des {
		if _, ok := entryID(de.Name()); !ok {
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue // purged meanwhile
		}
		n++
		size += info.Size()
	}
	return n, size, nil
}

// entryID returns the id of an entry's file name.
func entryID(name string) (string, bool) {
	id, ok := strings.CutSuffix(name, ".json")
	return id, ok && idPattern.MatchString(id)
}

// expiryOf reads the expiry in an id.
func expiryOf(id string) time.Time {
	ns, _ := strconv.ParseInt(id[:20], 10, 64)
	return time.Unix(0, ns).UTC()
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

// Delete removes an entry before its expiry.
func (v *Vault) Delete(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	err := os.Remove(filepath.Join(v.dir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("delete quarantine entry: %w", err)
	}
	return nil
}

// List returns the headers of the stored entries, soonest to expire
// first, expired ones not yet purged included. Only the head of each file
// is read. An entry purged while List runs is left out.
func (v *Vault) List() ([]Info, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	var out []Info
	var errs []error
	for _, de := range des {
		id, ok := entryID(de.Name())
		if !ok {
			continue
		}
		info, err := readHeader(filepath.Join(v.dir, de.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			// Still listed, by what its name says.
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			info = Info{Header: Header{ID: id}}
		}
		info.ID = id
		info.Expires = expiryOf(id)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(errs) > 0 {
		return out, fmt.Errorf("list quarantine: %w", errors.Join(errs...))
	}
	return out, nil
}

// readHeader decodes the members of an entry's JSON object up to
// "message", and stops there.
func readHeader(path string) (Info, error) {
	var info Info
	f, err := os.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return info, err
	}
	info.Size = st.Size()
	dec := json.NewDecoder(bufio.NewReaderSize(f, 4096))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		if err == nil {
			err = errors.New("no JSON object")
		}
		return info, fmt.Errorf("not a quarantine entry: %w", err)
	}
	head := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return info, fmt.Errorf("decode header: %w", err)
		}
		key, _ := tok.(string)
		if key == "message" {
			break
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return info, fmt.Errorf("decode header: %w", err)
		}
		head[key] = raw
	}
	b, err := json.Marshal(head)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info.Header); err != nil {
		return info, fmt.Errorf("decode header: %w", err)
	}
	return info, nil
}

// NextExpiry returns the soonest expiry after the given time among the
// stored entries; false if there is none.
func (v *Vault) NextExpiry(after time.Time) (time.Time, bool, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("quarantine: %w", err)
	}
	for _, de := range des { // sorted by name: by expiry
		if id, ok := entryID(de.Name()); ok && expiryOf(id).After(after) {
			return expiryOf(id), true, nil
		}
	}
	return time.Time{}, false, nil
}

// Purge deletes the entries that expired at or before now, and temporary
// files left by an interrupted Write more than an hour before now. It
// returns the ids it deleted.
func (v *Vault) Purge(now time.Time) ([]string, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("purge quarantine: %w", err)
	}
	var purged []string
	var errs []error
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") {
			if info, err := de.Info(); err == nil && info.ModTime().Before(now.Add(-time.Hour)) {
				_ = os.Remove(filepath.Join(v.dir, name))
			}
			continue
		}
		id, ok := entryID(name)
		if !ok || expiryOf(id).After(now) {
			continue
		}
		err := os.Remove(filepath.Join(v.dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile ("aarsm quarantine delete")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		purged = append(purged, id)
	}
	if len(errs) > 0 {
		return purged, fmt.Errorf("purge quarantine: %w", errors.Join(errs...))
	}
	return purged, nil
}
