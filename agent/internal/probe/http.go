package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// MCP servers over streamable HTTP (bpf/ssl/ssl.c, section "MCP over
// streamable HTTP"): a process that listens on a TCP port reachable from
// loopback is a candidate (http_watch) and its listening ports are known
// (http_ports); the kernel adds both when a process starts listening, and
// user space adds the listeners it finds running (WatchHTTP). What a
// candidate reads from and writes to a loopback connection of one of those
// ports comes as KindSockIn and KindSockOut events.

// WatchHTTP makes pid (in the agent's pid namespace) a candidate that
// listens on ports: its loopback connections to them are copied. At most
// 4096 candidates at once: beyond, an error.
func (s *Sensor) WatchHTTP(pid uint32, ports []uint16) error {
	for _, p := range ports {
		if err := s.objs.HttpPorts.Put(ssl.SensorHttpPortKey{Tgid: pid, Port: uint32(p)}, uint8(1)); err != nil {
			return fmt.Errorf("watch port %d of pid %d: %w", p, pid, err)
		}
	}
	if err := s.objs.HttpWatch.Put(pid, uint8(1)); err != nil {
		return fmt.Errorf("watch the loopback connections of pid %d: %w", pid, err)
	}
	return nil
}

// UnwatchHTTP stops copying pid's loopback connections (it is gone, or
// speaks no MCP). Its ports are left to age out of their LRU map: without
// the process's entry they are never looked up.
func (s *Sensor) UnwatchHTTP(pid uint32) error {
	if err := s.objs.HttpWatch.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("stop watching the loopback connections of pid %d: %w", pid, err)
	}
	return nil
}

// HTTPWatched reports whether pid is an HTTP candidate now.
func (s *Sensor) HTTPWatched(pid uint32) bool {
	var v uint8
	return s.objs.HttpWatch.Lookup(pid, &v) == nil
}
