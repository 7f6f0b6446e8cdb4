// Command fakeagent stands in for /usr/bin/aarsm in the package tests until
// "aarsm run" exists. It speaks the service protocol the unit expects, and
// nothing else:
//
//	fakeagent run --policy-dir DIR --log-format F
//	    reads DIR, sends READY=1 (from the main process, as NotifyAccess=main
//	    requires), pings WATCHDOG=1 at half of WATCHDOG_USEC, reloads on
//	    SIGHUP (RELOADING=1 ... READY=1) and exits 0 on SIGTERM. It writes
//	    "generation N" to $STATE_DIRECTORY/fakeagent.state on every (re)load,
//	    so a test can tell that the reload happened.
//	fakeagent reload --pid PID
//	    sends SIGHUP to PID and waits until the agent has handled it (it
//	    counts its reloads in $RUNTIME_DIRECTORY/fakeagent.reloads); fails
//	    if the agent kept its old policy, like "aarsm reload".
//	fakeagent policy check PATH...
//	    fails if a file contains "BROKEN", like a policy with an error.
//	fakeagent version
//
// It also checks, from inside the unit's sandbox, what the real agent needs
// from it besides BPF: that /proc/PID/maps and /proc/PID/root of PID 1 and
// of a process of another user can be read, and that the state and runtime
// directories can be written. A
// failure is fatal, so the unit never becomes active.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fakeagent run|policy check|version")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version":
		fmt.Println("aarsm fakeagent")
	case "policy":
		os.Exit(policyCheck(os.Args[2:]))
	case "reload":
		if err := reload(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fakeagent:", err)
			os.Exit(1)
		}
	case "run":
		if err := run(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fakeagent:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "fakeagent: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func policyCheck(args []string) int {
	if len(args) < 2 || args[0] != "check" {
		fmt.Fprintln(os.Stderr, "usage: fakeagent policy check PATH...")
		return 2
	}
	bad := 0
	for _, p := range args[1:] {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.hcl"))
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				bad++
				continue
			}
			if strings.Contains(string(data), "BROKEN") {
				fmt.Fprintf(os.Stderr, "%s: broken policy\n", f)
				bad++
			}
		}
	}
	if bad > 0 {
		return 1
	}
	return 0
}

func run(args []string) error {
	policyDir := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--policy-dir" {
			policyDir = args[i+1]
		}
	}
	if policyDir == "" {
		return errors.New("--policy-dir is required")
	}
	if err := sandboxChecks(); err != nil {
		return err
	}
	generation := 0
	load := func() error {
		if policyCheck([]string{"check", policyDir}) != 0 {
			return fmt.Errorf("policy in %s is broken", policyDir)
		}
		generation++
		state := filepath.Join(os.Getenv("STATE_DIRECTORY"), "fakeagent.state")
		return os.WriteFile(state, []byte("generation "+strconv.Itoa(generation)+"\n"), 0o600)
	}
	if err := load(); err != nil {
		return err
	}
	// Not ready at once: the unit must stay "activating" until READY=1.
	time.Sleep(300 * time.Millisecond)
	if err := notify("READY=1\nSTATUS=fake agent ready"); err != nil {
		return err
	}

	reloads := 0
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	var tick <-chan time.Time
	if us, err := strconv.Atoi(os.Getenv("WATCHDOG_USEC")); err == nil && us > 0 {
		t := time.NewTicker(time.Duration(us) * time.Microsecond / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			if err := notify("WATCHDOG=1"); err != nil {
				return err
			}
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return notify("STOPPING=1")
			}
			_ = notify("RELOADING=1")
			outcome := "ok"
			if err := load(); err != nil {
				// Keep the old policy, as the real agent does.
				fmt.Fprintln(os.Stderr, "fakeagent: reload:", err)
				outcome = "failed"
			}
			reloads++
			if err := os.WriteFile(reloadsFile(), []byte(strconv.Itoa(reloads)+" "+outcome+"\n"), 0o600); err != nil {
				return err
			}
			if err := notify("READY=1"); err != nil {
				return err
			}
		}
	}
}

func reloadsFile() string {
	return filepath.Join(os.Getenv("RUNTIME_DIRECTORY"), "fakeagent.reloads")
}

// reloads reads the agent's reload count and the last outcome.
func reloads() (int, string) {
	data, err := os.ReadFile(reloadsFile())
	if err != nil {
		return 0, ""
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, ""
	}
	n, _ := strconv.Atoi(f[0])
	return n, f[1]
}

func reload(args []string) error {
	if len(args) != 2 || args[0] != "--pid" {
		return errors.New("usage: fakeagent reload --pid PID")
	}
	pid, err := strconv.Atoi(args[1])
	if err != nil {
		return fmt.Errorf("--pid %q: %w", args[1], err)
	}
	before, _ := reloads()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		n, outcome := reloads()
		if n > before {
			if outcome != "ok" {
				return errors.New("the agent kept its old policy")
			}
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no reload within 90s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sandboxChecks fails when the unit's sandbox takes away what the agent
// reads and writes outside BPF.
func sandboxChecks() error {
	pids := []string{"1"}
	if pid := otherUsersProcess(); pid != "" {
		// Needs CAP_SYS_PTRACE, and ProtectProc=invisible must not hide it.
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if _, err := os.ReadFile("/proc/" + pid + "/maps"); err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if _, err := os.ReadDir("/proc/" + pid + "/root/etc"); err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
	}
	for _, env := range []string{"STATE_DIRECTORY", "RUNTIME_DIRECTORY"} {
		dir := os.Getenv(env)
		if dir == "" {
			return fmt.Errorf("sandbox: $%s is not set", env)
		}
		if err := os.WriteFile(filepath.Join(dir, ".probe"), nil, 0o600); err != nil {
			return fmt.Errorf("sandbox: %s: %w", env, err)
		}
		if err := os.Remove(filepath.Join(dir, ".probe")); err != nil {
			return fmt.Errorf("sandbox: %s: %w", env, err)
		}
	}
	return nil
}

// otherUsersProcess returns the pid of a process that does not run as root,
// or "".
func otherUsersProcess() string {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] != "0" {
				return e.Name()
			}
		}
	}
	return ""
}

// notify sends one sd_notify message.
func notify(msg string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return errors.New("NOTIFY_SOCKET is not set: not started by systemd with Type=notify")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
