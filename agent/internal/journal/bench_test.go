package journal

import (
	"io"
	"runtime"
	"testing"
	"time"

	sdjournal "github.com/coreos/go-systemd/v22/journal"

	"github.com/aarsm/aarsm/agent/internal/testenv"
	"golang.org/x/sys/unix"
)

// BenchmarkJournaldSend measures the cost per entry of the block verdict
// entry through the native sink, through go-systemd's journal.Send (same
// fields, run in the private journald's mount namespace because its socket
// path is fixed) and through the JSON sink to io.Discard. Both journal
// variants send to the same kind of private journald; compare the ns/op
// of the sub-benchmarks (run with -benchtime=2000x or more, -count 5).
// ns/op includes waiting for journald when its receive queue is full
// (net.unix.max_dgram_qlen); thread-cpu-ns/op is the CPU time of the
// sending thread alone, the sender's own cost.
func BenchmarkJournaldSend(b *testing.B) {
	v := blockVerdict()
	b.Run("native", func(b *testing.B) {
		j := testenv.NewJournald(b)
		l, err := New(Options{Format: FormatJournal, SocketPath: j.SocketPath})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b.ReportAllocs()
		b.ResetTimer()
		cpu := threadCPU()
		for range b.N {
			if err := l.Log(v); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		reportCPU(b, cpu)
	})
	b.Run("go-systemd", func(b *testing.B) {
		j := testenv.NewJournald(b)
		var sendErr error
		b.ReportAllocs()
		if err := j.InNamespace(func() {
			b.ResetTimer()
			cpu := threadCPU()
			for range b.N {
				// As a caller would: the same sanitised fields, then Send.
				fields := v.Fields()
				vars := make(map[string]string, len(fields))
				for _, f := range fields[2:] { // after MESSAGE and MESSAGE_ID
					vars[f.Name] = f.Value
				}
				delete(vars, FieldPriority)
				vars[FieldMessageID] = MessageID
				if sendErr = sdjournal.Send(fields[0].Value, sdjournal.Priority(v.Priority), vars); sendErr != nil {
					return
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
		}); err != nil {
			b.Fatal(err)
		}
		if sendErr != nil {
			b.Fatal(sendErr)
		}
	})
	b.Run("json", func(b *testing.B) {
		l, err := New(Options{Format: FormatJSON, Out: io.Discard, Now: func() time.Time { return time.Unix(0, 0) }})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := l.Log(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// threadCPU returns the CPU time of the calling OS thread (lock it first).
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(threadCPU()-start)/float64(b.N), "thread-cpu-ns/op")
}
