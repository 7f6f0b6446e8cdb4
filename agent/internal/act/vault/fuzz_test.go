package vault

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzVaultEntry reads an arbitrary file as a quarantined message: List
// reads the head of every file in the vault and "aarsm quarantine show"
// the whole of one; a broken entry is an error, never a panic.
func FuzzVaultEntry(f *testing.F) {
	f.Add([]byte(`{"id":"01796543210987654321-abcdef0123456789","stored":"2026-12-07T10:00:00Z","expires":"2026-12-08T10:00:00Z","policy":"company","rules":["unauthorized_bcc_recipients"],"message":{"to":["a@company.com"]}}`))
	f.Add([]byte(`{"message":`))
	f.Add([]byte(`[]`))
	// One directory for every input: a directory per input costs
	// milliseconds, the decoding microseconds.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		const id = "01796543210987654321-abcdef0123456789"
		if !ValidID(id) {
			t.Fatalf("%s is not a valid id", id)
		}
		p := filepath.Join(dir, id+".json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if info, err := readHeader(p); err == nil && info.Size != int64(len(data)) {
			t.Fatalf("size %d of %d bytes", info.Size, len(data))
		}
		v := &Vault{dir: dir}
		if e, err := v.Get(id); err == nil && e == nil {
			t.Fatal("no entry and no error")
		}
	})
}
