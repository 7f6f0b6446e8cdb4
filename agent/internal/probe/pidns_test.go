package probe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A sensor in a container (its own pid namespace) that holds "every
// process" holds only the processes of its namespace, and reports them by
// the ids it can signal: a host process that runs a file the container's
// sensor has never seen is neither stopped nor reported.
func TestSensorInPIDNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	helper := exec.Command("unshare", "--pid", "--fork", "--mount", "--mount-proc",
		os.Args[0], "-test.run=^TestPIDNamespaceHelper$", "-test.v")
	helper.Env = append(os.Environ(), "AARSM_PIDNS_HELPER="+srv.URL())
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	goLine, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = helper.Stdout
	if err := helper.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	defer func() { _ = helper.Process.Kill(); _ = helper.Wait() }()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log []string
	wait := func(prefix string) string {
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("helper ended before %q:\n%s", prefix, strings.Join(log, "\n"))
				}
				log = append(log, l)
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q from the helper:\n%s", prefix, strings.Join(log, "\n"))
			}
		}
	}
	wait("ready")

	// A host process running a file nobody has seen: a copy of sleep.
	bin := filepath.Join(t.TempDir(), "sleep-copy")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	host := exec.Command(bin, "1")
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill() }) // stopped or not
	exited := make(chan error, 1)
	go func() { exited <- host.Wait() }()
	// It runs to its end: a process the container's sensor stopped would
	// not (the helper then finds its sensor took no hold at all).
	var exit error
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("host pid %d (a copy of sleep 1) to exit", host.Process.Pid), func() (bool, string) {
		select {
		case exit = <-exited:
			return true, ""
		default:
			return false, fmt.Sprintf("state %c", testenv.ProcessState(host.Process.Pid))
		}
	})
	if exit != nil {
		t.Errorf("host pid %d: %v", host.Process.Pid, exit)
	}
	if _, err := io.WriteString(goLine, "go\n"); err != nil {
		t.Fatal(err)
	}
	if l := wait("result"); l != "result ok" {
		t.Fatalf("in the namespace: %s\n%s", l, strings.Join(log, "\n"))
	}
}

// TestPIDNamespaceHelper runs inside "unshare --pid" for
// TestSensorInPIDNamespace: a holding sensor with every process in scope,
// then a curl POST that must be held with its pid as seen here.
func TestPIDNamespaceHelper(t *testing.T) {
	url := os.Getenv("AARSM_PIDNS_HELPER")
	if url == "" {
		t.Skip("runs inside TestSensorInPIDNamespace only")
	}
	s, err := Load(Options{Holds: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println("result load:", err)
		return
	}
	defer s.Close()
	if err := s.SetHolds(HoldConfig{Enabled: true, All: true, AllPolicy: testHoldPolicy}); err != nil {
		fmt.Println("result holds:", err)
		return
	}
	type seen struct{ pid, tid uint32 }
	held := make(chan seen, 16)
	foreign := make(chan uint32, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, func(ev *Event) {
		if ev.Kind == KindWrite && ev.Held {
			held <- seen{ev.PID, ev.TID}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", ev.PID)); err != nil && ev.Kind != KindExit {
			select {
			case foreign <- ev.PID:
			default:
			}
		}
	})
	fmt.Println("ready")
	// The host side runs its copy of sleep to its end, then says go.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Println("result no go line:", err)
		return
	}
	// Nothing of this namespace has run a new file or written since the
	// sensor loaded: any hold is the host process's.
	if st, err := s.Stats(); err != nil || st.FileHolds != 0 || st.Holds != 0 {
		fmt.Printf("result before curl the sensor held %d processes and %d writes (%v): the host's?\n", st.FileHolds, st.Holds, err)
		return
	}
	curl := exec.Command("curl", "-sk", "-o", "/dev/null", "-X", "POST", "--data", `{"To":"a@b.example"}`, url+"/email")
	if err := curl.Start(); err != nil {
		fmt.Println("result curl:", err)
		return
	}
	result := "result ok"
	select {
	case h := <-held:
		if h.pid != uint32(curl.Process.Pid) {
			result = fmt.Sprintf("result held pid %d, curl is %d here", h.pid, curl.Process.Pid)
		}
		if _, err := s.Release(h.pid, h.tid); err != nil {
			result = "result release: " + err.Error()
		}
	case <-time.After(20 * time.Second):
		result = "result the POST was not held"
		_ = curl.Process.Kill()
	}
	if err := curl.Wait(); err != nil && result == "result ok" {
		result = "result curl: " + err.Error()
	}
	select {
	case pid := <-foreign:
		result = fmt.Sprintf("result an event of pid %d, not in this namespace", pid)
	default:
	}
	if hs, _ := s.Holds(); len(hs) != 0 && result == "result ok" {
		result = fmt.Sprintf("result holds left: %v", hs)
	}
	fmt.Println(result)
}
