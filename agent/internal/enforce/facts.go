package enforce

import (
	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
)

// procFacts are what judging, acting and logging need to know of the
// process that wrote a message: looked up once per event and passed down.
type procFacts struct {
	pid        uint32
	comm       string // as the event saw it
	cgroup     uint64 // the cgroup id they were read in
	exe        string // "?" when it could not be read
	start      uint64 // start time (boot ticks): tells a reused pid apart
	cgroupPath string // below the cgroup v2 mount, e.g. /system.slice/x.service
	unit       string // systemd unit, "" for none
	// mcp is the MCP context at the event (not cached: it changes with
	// every tool call).
	mcp *judge.MCP
	// ident is what the process runs, for the baseline (baseline.go):
	// nil until looked up.
	ident *procIdent
	// noMCP: the process is no MCP server nor one's child, as of
	// Agent.mcpGen+1 = noMCP (0: not known).
	noMCP uint64
}

// factCache keeps the facts of each process, by pid, until it execs,
// exits or changes cgroup: read once, not at every held write of a
// message in progress.
type factCache map[uint32]procFacts

// of returns the facts of the process that wrote ev.
func (fc factCache) of(fs proc.FS, ev *probe.Event) procFacts {
	f, ok := fc[ev.PID]
	if !ok || f.cgroup != ev.Cgroup {
		f = readFacts(fs, ev.PID, ev.Cgroup)
		if f.exe != "?" && f.start != 0 && f.cgroupPath != "" {
			fc[ev.PID] = f // a failed read is tried again next time
		}
	}
	f.comm = ev.Comm()
	return f
}

// setIdent keeps the baseline identity of pid with its facts (when they
// are kept).
func (fc factCache) setIdent(pid uint32, id *procIdent) {
	if f, ok := fc[pid]; ok {
		f.ident = id
		fc[pid] = f
	}
}

// setNoMCP notes that pid is no MCP server (nor one's child) as of
// generation gen (when its facts are kept).
func (fc factCache) setNoMCP(pid uint32, gen uint64) {
	if f, ok := fc[pid]; ok {
		f.noMCP = gen
		fc[pid] = f
	}
}

// forget drops the facts of pid (it exec'd or exited).
func (fc factCache) forget(pid uint32) { delete(fc, pid) }

func readFacts(fs proc.FS, pid uint32, cgroup uint64) procFacts {
	f := procFacts{pid: pid, cgroup: cgroup, exe: "?"}
	if exe, err := fs.Exe(pid); err == nil {
		f.exe = exe
	}
	f.start, _ = fs.StartTime(pid)
	f.cgroupPath, _ = fs.CgroupPath(pid)
	if u, ok := act.ParseUnit(f.cgroupPath); ok { // most processes are in no unit
		f.unit = u.Name
	}
	return f
}
