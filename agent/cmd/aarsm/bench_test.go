package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// BenchmarkAgentLoad runs "aarsm run" on the shipped default policy,
// scoped to a cgroup where a C client on libssl writes 1 KiB records at
// 10,000 per second for 5 s, and prints the agent's CPU (% of one core) and
// memory beside the same figures for the idle agent over the same time, in
// one run.
func BenchmarkAgentLoad(b *testing.B) {
	testenv.RequireRoot(b)
	const rate, seconds = 10000, 5
	bin := buildAarsm(b)
	writer := testenv.CWriter(b)
	port := testenv.NewDiscardServer(b, testenv.NewCA(b))
	clients := testenv.NewCgroup(b)
	var stderr syncBuffer
	agent, _ := agentCommand(b, bin, shippedPolicy(b, "default.hcl"), clients, "")
	agent.Stderr = &stderr
	if err := agent.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	waitOutput(b, "agent stderr", &stderr, "msg=enforcing")

	idle := measure(b, agent.Process.Pid, seconds*time.Second, nil)
	load := measure(b, agent.Process.Pid, seconds*time.Second, func() {
		cmd := exec.Command(writer, port, strconv.Itoa(rate*seconds), "1024", strconv.Itoa(rate))
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := clients.Start(cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("writer: %v: %s", err, errb.String())
		}
	})
	fmt.Printf("\naarsm run, default policy, 1 KiB writes in scope\n")
	fmt.Printf("%-22s %12s %12s\n", "", "idle", fmt.Sprintf("%d writes/s", rate))
	fmt.Printf("%-22s %11.1f%% %11.1f%%\n", "CPU (one core)", idle.cpu, load.cpu)
	fmt.Printf("%-22s %9.1f MiB %9.1f MiB\n", "RSS at the end", idle.rss, load.rss)
	fmt.Printf("%-22s %9.1f MiB %9.1f MiB\n", "RSS peak", idle.hwm, load.hwm)
	b.ReportMetric(load.cpu, "cpu-%-at-10k/s")
	b.ReportMetric(load.hwm, "rss-peak-MiB")
}

type agentUsage struct{ cpu, rss, hwm float64 }

// measure runs work (or waits d) and returns pid's CPU over that time and
// its memory at the end.
func measure(b *testing.B, pid int, d time.Duration, work func()) agentUsage {
	t0, c0 := time.Now(), cpuTicks(b, pid)
	if work != nil {
		work()
	} else {
		time.Sleep(d)
	}
	wall, ticks := time.Since(t0), cpuTicks(b, pid)-c0
	const hz = 100 // USER_HZ
	u := agentUsage{cpu: 100 * float64(ticks) / hz / wall.Seconds()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			u.rss = kb / 1024
		case "VmHWM:":
			u.hwm = kb / 1024
		}
	}
	return u
}

// cpuTicks returns pid's user and system time in clock ticks.
func cpuTicks(b testing.TB, pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st
}
