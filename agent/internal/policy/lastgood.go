package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The last good policies: a copy of the files of the last set that loaded
// without error, kept in the agent's state directory, so that an agent
// restarted (after a crash, by a package upgrade) while the policy
// directory holds a broken file starts on what was in force, not on
// nothing.

const lastGoodDir = "policy-last-good"

// SaveLastGood writes the source files of set under stateDir, replacing
// the previous copy whole (a new directory renamed into place).
func SaveLastGood(stateDir string, set *Set) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("save last good policies: %w", err)
	}
	final := filepath.Join(stateDir, lastGoodDir)
	tmp, err := os.MkdirTemp(stateDir, lastGoodDir+".new-")
	if err != nil {
		return fmt.Errorf("save last good policies: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // gone after the rename; a leftover of a failure
	for i, name := range set.Files {
		f := set.Sources[name]
		if f == nil {
			continue
		}
		// The order of the files is the order of their names.
		dst := filepath.Join(tmp, fmt.Sprintf("%03d-%s", i, filepath.Base(name)))
		if err := os.WriteFile(dst, f.Bytes, 0o600); err != nil {
			return fmt.Errorf("save last good policies: %w", err)
		}
	}
	old := final + ".old"
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("save last good policies: %w", err)
	}
	if err := os.Rename(final, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("save last good policies: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("save last good policies: %w", err)
	}
	return os.RemoveAll(old)
}

// LoadLastGood loads the copy SaveLastGood wrote; nil when there is none.
func LoadLastGood(stateDir string) (*Set, error) {
	dir := filepath.Join(stateDir, lastGoodDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	set, diags := Load(dir)
	if diags.HasErrors() {
		return nil, fmt.Errorf("load last good policies from %s: %s", dir, diags.Error())
	}
	return set, nil
}
