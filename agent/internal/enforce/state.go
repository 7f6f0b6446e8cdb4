package enforce

import "sync/atomic"

// State is how much per-connection and per-process state the agent keeps
// now: it must come back to its baseline once the processes that caused
// it are gone (the soak test checks it).
type State struct {
	Connections int // connections the stream stage tracks
	Processes   int // processes whose facts are cached
}

// stateGauges are the State, written by the Run goroutine at every event
// and read by anyone.
type stateGauges struct {
	conns, procs atomic.Int64
}

// gauge records the state after an event.
func (a *Agent) gauge() {
	st, _ := a.pipe.Stats()
	a.gauges.conns.Store(int64(st.Open))
	a.gauges.procs.Store(int64(len(a.facts)))
}

// State returns the state kept now (as of the last event). Safe to call
// from any goroutine.
func (a *Agent) State() State {
	return State{Connections: int(a.gauges.conns.Load()), Processes: int(a.gauges.procs.Load())}
}
