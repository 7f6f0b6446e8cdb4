package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Stdio selects what of a process's standard streams the sensor copies
// (bpf/ssl/ssl.c, stdio_watch): the bytes it reads from fd 0, writes to
// fd 1, or both, as KindStdin and KindStdout events. MCP servers over
// stdio speak JSON-RPC there.
type Stdio uint8

// The streams of Stdio.
const (
	StdioIn  Stdio = 1 << 0
	StdioOut Stdio = 1 << 1
	StdioAll       = StdioIn | StdioOut
)

// WatchStdio makes the sensor copy what pid (in the agent's pid namespace)
// reads from its stdin and writes to its stdout. At most 4096 processes are
// watched at once: beyond, an error.
func (s *Sensor) WatchStdio(pid uint32, what Stdio) error {
	if err := s.objs.StdioWatch.Put(pid, uint8(what)); err != nil {
		return fmt.Errorf("watch the stdio of pid %d: %w", pid, err)
	}
	return nil
}

// UnwatchStdio stops copying pid's stdio (it is no MCP server, or gone).
func (s *Sensor) UnwatchStdio(pid uint32) error {
	if err := s.objs.StdioWatch.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("stop watching the stdio of pid %d: %w", pid, err)
	}
	return nil
}
