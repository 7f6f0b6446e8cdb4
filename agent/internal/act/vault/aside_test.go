package vault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Corrupt entries (truncated, garbage, trailing data) are moved aside,
// root-only; good ones stay and the vault lists cleanly afterwards.
func TestSetAsideCorrupt(t *testing.T) {
	v, err := Open(filepath.Join(t.TempDir(), "q"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	good, err := v.Put(entry(), t0, 24*3600e9)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(filepath.Join(v.Dir(), good+".json"))
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"truncated": whole[:len(whole)/2],
		"garbage":   []byte("\x7fELF\x00\x01garbage"),
		"trailing":  append(append([]byte{}, whole...), "{}"...),
		"empty":     nil,
	}
	ids := map[string]string{}
	for what, data := range bad {
		id, err := v.Put(entry(), t0, 3600e9)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v.Dir(), id+".json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		ids[id] = what
	}
	if _, err := v.List(); err == nil {
		t.Log("List does not notice a corrupt entry whose header reads (the truncated one)")
	}
	moved, err := v.SetAsideCorrupt(t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != len(bad) {
		t.Fatalf("moved %+v, want the %d corrupt entries", moved, len(bad))
	}
	for _, c := range moved {
		if ids[c.ID] == "" || c.Err == nil || !strings.HasPrefix(filepath.Base(c.To), c.ID+".json.corrupt-") {
			t.Errorf("moved %+v: not one of the corrupt entries, or no reason, or badly named", c)
		}
		if st, err := os.Stat(c.To); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", c.To, st, err)
		}
	}
	list, err := v.List()
	if err != nil || len(list) != 1 || list[0].ID != good {
		t.Fatalf("after: list %+v %v, want only %s", list, err, good)
	}
	if again, err := v.SetAsideCorrupt(t0); err != nil || len(again) != 0 {
		t.Errorf("second pass moved %+v %v", again, err)
	}
}
