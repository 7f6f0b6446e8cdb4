package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/aarsm/aarsm/agent/internal/enforce"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/status"
)

// An upgrade in place: SIGUSR2 makes the running agent execute the binary
// now installed at its path (the package's new one) under the same pid,
// handing over its sensor (probe.PrepareHandover), its lock and its hold
// guard. The new image attaches beside the old probes and switches the
// kernel over in one step: no write goes unseen or unjudged in between,
// and what the old image held is judged by the new one. "aarsm handover"
// (the package's postinst) asks for it and waits for the outcome.

// handoverEnv carries the handover state (JSON) to the new image.
const handoverEnv = "AARSM_HANDOVER"

// handoverAllow is how long the kernel keeps holding for the new image
// before it sees the event loop as stopped (it takes over in ~0.2-0.4 s).
const handoverAllow = 5 * time.Second

// handoverState is what the old image leaves the new one.
type handoverState struct {
	Sensor    probe.HandoverFDs `json:"sensor"`
	Lock      int               `json:"lock"`       // the agent lock (lockAgent), still held
	GuardPID  int               `json:"guard_pid"`  // the old image's hold guard, a child
	GuardPipe int               `json:"guard_pipe"` // its agent pipe (write end)
	Started   time.Time         `json:"started"`    // when the agent started (status: uptime)
	Handovers uint64            `json:"handovers"`  // done before this one
	From      string            `json:"from"`       // the old image's version
}

// takeHandover returns the state an old image left in the environment,
// nil when this image was started afresh. The variable is removed: the
// guard and other children must not see it.
func takeHandover() (*handoverState, error) {
	v, ok := os.LookupEnv(handoverEnv)
	if !ok {
		return nil, nil
	}
	_ = os.Unsetenv(handoverEnv)
	var st handoverState
	if err := json.Unmarshal([]byte(v), &st); err != nil {
		return nil, fmt.Errorf("handover state in %s: %w", handoverEnv, err)
	}
	return &st, nil
}

// execSuccessor executes the binary installed at this one's path with the
// same arguments, handing st over. It returns only on failure.
func execSuccessor(st handoverState) error {
	self, err := os.Executable() // the path, even once the file is replaced
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	for _, fd := range []int{st.Lock, st.GuardPipe} {
		if err := probe.Inherit(fd); err != nil {
			return err
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode handover state: %w", err)
	}
	env := append(os.Environ(), handoverEnv+"="+string(b))
	if err := syscall.Exec(self, os.Args, env); err != nil { //nolint:gosec // G204: the agent's own path, now the installed binary
		return fmt.Errorf("execute %s: %w", self, err)
	}
	return nil
}

// retireGuard tells the old image's hold guard to leave without resolving
// anything (the new guard watches the same holds), and reaps it.
func retireGuard(st *handoverState, log *slog.Logger) {
	pipe := os.NewFile(uintptr(st.GuardPipe), "old hold guard")
	if pipe == nil {
		return
	}
	if _, err := pipe.Write([]byte{probe.GuardRetire}); err != nil {
		log.Warn("cannot retire the previous hold guard; it resolves the holds as if the agent were gone", "pid", st.GuardPID, "err", err)
	}
	_ = pipe.Close()
	go func() {
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(st.GuardPID, &ws, 0, nil)
	}()
}

func runHandover(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("aarsm handover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("status-socket", status.DefaultSocket, "the running agent's status socket")
	pid := fs.Int("pid", 0, "the agent's process ID ($MAINPID); refused if the agent on the socket is another")
	timeout := fs.Duration("timeout", 60*time.Second, "give up when the new binary has not taken over within this time")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm handover [--pid PID] [--status-socket PATH]\n\n"+
			"Makes the running agent execute the aarsm binary now installed at its\n"+
			"path, in place (same pid), without a gap in enforcement: the package's\n"+
			"postinst does it on an upgrade. Exit 0 once the new binary enforces,\n"+
			"1 if it failed (the agent then stops, the service manager restarts\n"+
			"it), %d when no agent answers or the running one cannot hand over.\n\n", exitNotRunning)
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	// The agent execs from whichever thread runs the handover: while the
	// kernel makes that thread the leader (de_thread), the old leader is
	// a zombie for a moment. Only a zombie, or no process, that stays so
	// is an agent that died.
	var goneSince time.Time
	before, r, err := signalAgent(*socket, *pid, *timeout, syscall.SIGUSR2, func(r status.Report) error {
		if !r.CanHandOver {
			return fmt.Errorf("the running agent (version %s) cannot hand over in place: restart it", r.Version)
		}
		return nil
	}, func(before, r status.Report, err error) (bool, error) {
		switch {
		case err == nil:
			return r.Handovers > before.Handovers, nil
		case !processGone(before.PID):
			goneSince = time.Time{}
		case goneSince.IsZero():
			goneSince = time.Now()
		case time.Since(goneSince) >= deadAfter:
			return true, fmt.Errorf("the agent (pid %d) exited during the handover", before.PID)
		}
		return false, nil // the socket is down while the new image starts
	})
	if err != nil {
		fmt.Fprintf(stderr, "aarsm handover: %v\n", err)
		if errors.Is(err, status.ErrNotRunning) {
			return exitNotRunning
		}
		return 1
	}
	fmt.Fprintf(stdout, "handed over: version %s now enforces (was %s), pid %d\n", r.Version, before.Version, r.PID)
	return 0
}

// handOver executes the installed binary with the agent's sensor handed
// over (after Run returned, holds kept). It returns only on failure.
func handOver(agent *enforce.Agent, st handoverState, log *slog.Logger) error {
	fds, err := agent.Sensor().PrepareHandover(handoverAllow)
	if err != nil {
		return err
	}
	st.Sensor = fds
	notify("STATUS=handing over to the installed binary")
	log.Info("handing over to the installed binary", "version", version, "probes", len(fds.Links))
	return execSuccessor(st)
}

// deadAfter is how long an agent must look gone (processGone) to be taken
// for dead.
const deadAfter = time.Second

// processGone reports whether pid has exited (or is a zombie nobody
// reaped yet, or for a moment while a thread other than the leader
// execs).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}
