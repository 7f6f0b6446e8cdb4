package enforce

// State is how much per-connection and per-process state the agent keeps
// now: it must come back to its baseline once the processes that caused
// it are gone (the soak test checks it).
type State struct {
	Connections int // connections the stream stage tracks
	Processes   int // processes whose facts are cached
}

// State returns the state kept now (as of the last event handled; see
// publishPipeline). Safe to call from any goroutine.
func (a *Agent) State() State {
	return State{Connections: int(a.pipeStats.open.Load()), Processes: int(a.pipeStats.procs.Load())}
}
