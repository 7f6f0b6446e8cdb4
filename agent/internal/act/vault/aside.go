package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/aarsm/aarsm/agent/internal/statefile"
)

// MaxCorrupt bounds the corrupt entries kept aside in the vault.
const MaxCorrupt = 16

// Corrupt is an entry that did not decode, moved aside.
type Corrupt struct {
	ID  string // the entry's id
	To  string // where it was moved: <id>.json.corrupt-<time>, 0600
	Err error  // why it did not decode
}

// SetAsideCorrupt checks every entry (the agent does it at start): one
// that does not decode as a whole entry, or is over MaxEntryBytes, is
// moved aside (statefile.MoveAside, at most MaxCorrupt kept) so that
// listings and the status report are not broken by it, and returned.
// Entries read fine stay as they are. The error reports entries that
// could not be checked or moved.
func (v *Vault) SetAsideCorrupt(now time.Time) ([]Corrupt, error) {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("check quarantine: %w", err)
	}
	var out []Corrupt
	var errs []error
	for _, de := range des {
		id, ok := entryID(de.Name())
		if !ok {
			continue
		}
		p := filepath.Join(v.dir, de.Name())
		cerr := checkEntry(p)
		if cerr == nil || errors.Is(cerr, fs.ErrNotExist) {
			continue
		}
		var ce *corruptEntry
		if !errors.As(cerr, &ce) {
			errs = append(errs, fmt.Errorf("%s: %w", p, cerr))
			continue
		}
		to, err := statefile.MoveAside(p, now, MaxCorrupt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Corrupt{ID: id, To: to, Err: ce.err})
	}
	return out, errors.Join(errs...)
}

// corruptEntry is an entry file whose contents are wrong (not an I/O
// error).
type corruptEntry struct{ err error }

func (c *corruptEntry) Error() string { return c.err.Error() }
func (c *corruptEntry) Unwrap() error { return c.err }

// checkEntry decodes the entry at p whole.
func checkEntry(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return &corruptEntry{fmt.Errorf("not a regular file")}
	}
	if st.Size() > MaxEntryBytes {
		return &corruptEntry{fmt.Errorf("%d bytes, at most %d", st.Size(), MaxEntryBytes)}
	}
	dec := json.NewDecoder(io.LimitReader(f, MaxEntryBytes))
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return &corruptEntry{fmt.Errorf("decode: %w", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &corruptEntry{errors.New("data after the entry")}
	}
	if e.ID == "" {
		return &corruptEntry{errors.New("no id")}
	}
	return nil
}
