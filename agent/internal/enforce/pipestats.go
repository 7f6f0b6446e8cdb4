package enforce

import (
	"sync/atomic"

	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// PipelineStats are the counters of the stream and parse stages.
type PipelineStats struct {
	Stream stream.Stats
	Parse  parse.Stats
}

// pipeStatsState publishes PipelineStats from the Run goroutine (the
// stages are not safe for concurrent use) to any reader, one atomic
// counter each (the set is not one snapshot).
type pipeStatsState struct {
	open, procs                                    atomic.Int64
	opened, evicted, retries, lostBytes            atomic.Uint64
	messages, junkBytes, malformed, ignoredStreams atomic.Uint64
}

// publishPipeline publishes the stages' counters and the number of
// processes whose facts are cached; the Run goroutine calls it after every
// event.
func (a *Agent) publishPipeline() {
	ss, ps := a.pipe.Stats()
	p := &a.pipeStats
	p.open.Store(int64(ss.Open))
	p.procs.Store(int64(len(a.facts)))
	p.opened.Store(ss.Opened)
	p.evicted.Store(ss.Evicted)
	p.retries.Store(ss.Retries)
	p.lostBytes.Store(ss.LostBytes)
	p.messages.Store(ps.Messages)
	p.junkBytes.Store(ps.JunkBytes)
	p.malformed.Store(ps.Malformed)
	p.ignoredStreams.Store(ps.IgnoredStreams)
}

// PipelineStats returns the stream and parse stages' counters as of the
// last event handled. Safe to call from any goroutine.
func (a *Agent) PipelineStats() PipelineStats {
	p := &a.pipeStats
	return PipelineStats{
		Stream: stream.Stats{Open: int(p.open.Load()), Opened: p.opened.Load(), Evicted: p.evicted.Load(),
			Retries: p.retries.Load(), LostBytes: p.lostBytes.Load()},
		Parse: parse.Stats{Messages: p.messages.Load(), JunkBytes: p.junkBytes.Load(), Malformed: p.malformed.Load(),
			IgnoredStreams: p.ignoredStreams.Load()},
	}
}
