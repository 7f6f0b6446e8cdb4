package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/aarsm/aarsm/agent/internal/probe"
)

// holdGuard is the guard process of a running agent (see probe.RunGuard).
type holdGuard struct {
	cmd  *exec.Cmd
	pipe *os.File // write end: open as long as the agent lives
}

// startHoldGuard starts "aarsm hold-guard" with the sensor's hold maps and
// the read end of a pipe only this process writes to.
func startHoldGuard(s *probe.Sensor) (*holdGuard, error) {
	files, err := s.GuardFiles()
	if err != nil {
		return nil, fmt.Errorf("start hold guard: %w", err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start hold guard: %w", err)
	}
	defer r.Close()
	self, err := os.Executable()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start hold guard: %w", err)
	}
	cmd := exec.Command(self, "hold-guard")
	cmd.ExtraFiles = append([]*os.File{r}, files...) // fds 3 (pipe), 4 (holds), 5 (settings)
	cmd.Stderr = os.Stderr
	// Its own process group: a Ctrl-C meant for the agent must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start hold guard: %w", err)
	}
	return &holdGuard{cmd: cmd, pipe: w}, nil
}

// stop tells the guard the agent is gone (after it released everything)
// and waits for it.
func (g *holdGuard) stop() {
	g.pipe.Close()
	_ = g.cmd.Wait()
}

func runHoldGuard(stderr io.Writer) int {
	// A service manager stopping the agent signals the whole group: the
	// guard leaves only once the agent is gone and the holds are released.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	agent := os.NewFile(3, "agent")
	n, err := probe.RunGuard(4, 5, agent)
	if n > 0 {
		fmt.Fprintf(stderr, "aarsm hold-guard: the agent is gone; resumed %d held process(es) unjudged\n", n)
	}
	if err != nil {
		fmt.Fprintf(stderr, "aarsm hold-guard: %v\n", err)
		return 1
	}
	return 0
}
