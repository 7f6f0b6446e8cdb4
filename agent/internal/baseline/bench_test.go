package baseline

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// BenchmarkObserveKnown is the cost of the common case: an enforcing
// store, a known build, destination and domain.
func BenchmarkObserveKnown(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Mode: ModeLearn, RefreshInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	k := postmark("1.0.15", hashA)
	s.Observe(k, api, []string{"company.com"}, t0)
	s.SetMode(ModeEnforce)
	for b.Loop() {
		if r := s.Observe(k, api, []string{"company.com"}, t0); r.Verdict != Known {
			b.Fatal(r)
		}
	}
}

// BenchmarkFlushFull is the cost of one write of a store at its default
// bound of entries (65536 destinations and domains over 1024 packages).
func BenchmarkFlushFull(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, Options{Mode: ModeLearn, RefreshInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for p := range DefaultMaxPackages {
		k := Key{Package: fmt.Sprintf("npm:package-%04d", p), Version: "1.0.0", Hash: hashA}
		for e := range DefaultMaxEntries / DefaultMaxPackages / 2 {
			s.Observe(k, fmt.Sprintf("host-%02d.example-%04d.com:443", e, p), []string{fmt.Sprintf("domain-%02d.example-%04d.com", e, p)}, t0.Add(time.Duration(e)*time.Second))
		}
	}
	if st := s.Stats(); st.Entries != DefaultMaxEntries {
		b.Fatalf("%+v", st)
	}
	for b.Loop() {
		s.SetMode(ModeEnforce)
		s.SetMode(ModeLearn) // something to write
		if err := s.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	st, _ := os.Stat(Path(dir))
	b.ReportMetric(float64(st.Size()), "file-bytes")
}

// BenchmarkSnapshotFull is the part of a write made under the store's
// mutex (Observe waits for it): the copy of a store at its default bound.
func BenchmarkSnapshotFull(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Mode: ModeLearn, RefreshInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for p := range DefaultMaxPackages {
		k := Key{Package: fmt.Sprintf("npm:package-%04d", p), Version: "1.0.0", Hash: hashA}
		for e := range DefaultMaxEntries / DefaultMaxPackages / 2 {
			s.Observe(k, fmt.Sprintf("host-%02d.example-%04d.com:443", e, p), []string{fmt.Sprintf("domain-%02d.example-%04d.com", e, p)}, t0)
		}
	}
	for b.Loop() {
		s.Snapshot()
	}
}
