package statefile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CorruptMark separates a state file's name from the time it was moved
// aside: "quarantine.json.corrupt-20261207T231500.000000000Z".
const CorruptMark = ".corrupt-"

// asideTime is the layout of the time in an aside name; it sorts as text.
const asideTime = "20060102T150405.000000000Z"

// MoveAside renames a state file that cannot be read to
// <path>.corrupt-<time> (UTC), makes it root-only (0600), and removes the
// older files moved aside in the same directory so that at most keep of
// them remain (0: no limit). It returns the new name. The evidence stays
// for people to look at; the caller starts a fresh file.
func MoveAside(path string, now time.Time, keep int) (string, error) {
	name := path + CorruptMark + now.UTC().Format(asideTime)
	if err := os.Rename(path, name); err != nil {
		return "", fmt.Errorf("move %s aside: %w", path, err)
	}
	if err := os.Chmod(name, 0o600); err != nil {
		return name, fmt.Errorf("restrict %s: %w", name, err)
	}
	if keep > 0 {
		PruneAside(filepath.Dir(path), keep)
	}
	return name, nil
}

// PruneAside removes the oldest files moved aside (MoveAside) in dir but
// the newest keep. It is best effort: errors are ignored.
func PruneAside(dir string, keep int) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type aside struct{ at, name string }
	var all []aside
	for _, de := range des {
		i := strings.LastIndex(de.Name(), CorruptMark)
		if i <= 0 || !de.Type().IsRegular() {
			continue
		}
		at := de.Name()[i+len(CorruptMark):]
		if _, err := time.Parse(asideTime, at); err != nil {
			continue
		}
		all = append(all, aside{at, de.Name()})
	}
	slices.SortFunc(all, func(a, b aside) int { return strings.Compare(a.at+a.name, b.at+b.name) })
	for len(all) > keep {
		_ = os.Remove(filepath.Join(dir, all[0].name))
		all = all[1:]
	}
}
