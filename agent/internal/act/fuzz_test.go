package act

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzQuarantineState reads an arbitrary quarantine state file (it
// survives restarts and reboots; "aarsm quarantine list" reads it without
// an agent): a broken one is an error naming the file, never a panic, and
// what is read is written back and read again unchanged.
func FuzzQuarantineState(f *testing.F) {
	f.Add([]byte(`{"version":1,"entries":[{"cgroup_id":4242,"cgroup":"/system.slice/x.service","until":"2026-12-08T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"entries":[]}`))
	f.Add([]byte(`{"version":1,"entries":[{"cgroup_id":1}],"entries":null}`))
	// One directory for every input: a directory per input costs
	// milliseconds, the decoding microseconds.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, stateFileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		entries, err := readStateFile(dir)
		if err != nil {
			if entries != nil {
				t.Fatalf("entries %v with an error", entries)
			}
			return
		}
		if err := writeStateFile(dir, entries); err != nil {
			t.Fatal(err)
		}
		again, err := readStateFile(dir)
		if err != nil {
			t.Fatalf("state written back cannot be read: %v", err)
		}
		if len(entries) == 0 && len(again) == 0 {
			return
		}
		for i := range entries {
			entries[i].Until = entries[i].Until.UTC()
		}
		for i := range again {
			again[i].Until = again[i].Until.UTC()
		}
		if !reflect.DeepEqual(entries, again) {
			t.Fatalf("read %+v, after a round trip %+v", entries, again)
		}
	})
}
