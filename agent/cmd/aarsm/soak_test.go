package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The soak (make soak; SOAK=1 go test -run TestSoak): a real enforcing
// agent under sustained load from real clients, checked for wrong
// verdicts, lost events and state or memory that grows with the load.
//
// Knobs (environment): SOAK_REQUESTS (1,000,000 keep-alive requests in
// phase 1), SOAK_CONNS (1,000,000 short-lived connections in phase 2),
// SOAK_PROCS (100,000 short-lived processes in phase 2), SOAK_VIOLATING
// (violating mails per thousand, 10), SOAK_CLIENTS (client processes at
// once, 6), SOAK_CHUNK (mails per client process in phase 1, 2,000),
// SOAK_TIME (a bound on each phase's sending, 2h: what was sent by then is
// checked and reported), SOAK_SEED.
type soakConfig struct {
	requests, conns, procs   int
	permille, clients, chunk int
	limit                    time.Duration
	seed                     uint64
}

func soakEnv(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a count", name, s)
	}
	return n
}

// soakRun is the state of one soak: the agent, the API, which ids are
// violating, what the clients and the agent's verdicts said of each id.
type soakRun struct {
	cfg     soakConfig
	bin     string
	ca      *testenv.CA
	api     *testenv.SoakAPI
	clients *testenv.Cgroup
	dir     string
	socket  string
	python  string // the interpreter itself (not a shim script that finds it)
	agent   *exec.Cmd

	violating bitmap // ids that carry an external Bcc
	blocked   bitmap // ids a block verdict named
	failed    bitmap // ids whose client saw the request fail
	sent      atomic.Int64

	mu           sync.Mutex
	verdicts     map[string]int // AARSM_VERDICT -> count
	strayBlocks  int            // block verdicts that name no violating id
	repeats      int            // block verdicts of an id blocked before (curl retries a request its reused connection lost)
	clientErrors []string       // client processes that did not finish cleanly (first few)
	unchecked    [][2]int       // id ranges of client processes that did not finish: what they sent is unknown
	stderr       *tailBuffer
	rss          []rssSample
}

type rssSample struct {
	at   time.Duration
	kib  int
	seen uint64 // the sensor's events delivered so far
	lost uint64 // and dropped (ring buffer full)
}

// bitmap is a fixed set of ids, safe for concurrent use.
type bitmap struct {
	mu   sync.Mutex
	bits []uint64
}

func newBitmap(n int) bitmap { return bitmap{bits: make([]uint64, (n+63)/64)} }

func (b *bitmap) set(i int) {
	b.mu.Lock()
	b.bits[i/64] |= 1 << (i % 64)
	b.mu.Unlock()
}

func (b *bitmap) has(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bits[i/64]&(1<<(i%64)) != 0
}

// tailBuffer keeps the first and the last 32 KiB written to it.
type tailBuffer struct {
	mu         sync.Mutex
	head, tail []byte
	total      int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	const keep = 32 << 10
	b.total += len(p)
	if room := keep - len(b.head); room > 0 {
		b.head = append(b.head, p[:min(room, len(p))]...)
	}
	b.tail = append(b.tail, p...)
	if len(b.tail) > 2*keep {
		b.tail = append(b.tail[:0], b.tail[len(b.tail)-keep:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total <= len(b.head) {
		return string(b.head)
	}
	return string(b.head) + fmt.Sprintf("\n…(%d bytes in all)…\n", b.total) + string(b.tail)
}

var leakID = regexp.MustCompile(`leak-([0-9]+)@giftshop\.club`)

// readVerdicts reads the agent's JSON verdicts: a block must name the
// violating id(s) it stopped.
func (s *soakRun) readVerdicts(r io.Reader, done chan<- struct{}) {
	defer close(done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var v map[string]string
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			continue
		}
		s.mu.Lock()
		s.verdicts[v["AARSM_VERDICT"]]++
		if v["AARSM_VERDICT"] == "block" {
			named := false
			for _, m := range leakID.FindAllStringSubmatch(v["AARSM_VIOLATIONS"], -1) {
				id, err := strconv.Atoi(m[1])
				if err == nil && id < len(s.violating.bits)*64 && s.violating.has(id) {
					if s.blocked.has(id) {
						s.repeats++
					}
					s.blocked.set(id)
					named = true
				}
			}
			if !named {
				s.strayBlocks++
			}
		}
		s.mu.Unlock()
	}
}

func TestSoak(t *testing.T) {
	if os.Getenv("SOAK") != "1" {
		t.Skip("the soak runs with SOAK=1 (make soak)")
	}
	testenv.RequireRoot(t)
	cfg := soakConfig{
		requests: soakEnv(t, "SOAK_REQUESTS", 1_000_000), conns: soakEnv(t, "SOAK_CONNS", 1_000_000),
		procs: soakEnv(t, "SOAK_PROCS", 100_000), permille: soakEnv(t, "SOAK_VIOLATING", 10),
		clients: max(1, soakEnv(t, "SOAK_CLIENTS", 6)), chunk: max(10, soakEnv(t, "SOAK_CHUNK", 2000)),
		seed: uint64(soakEnv(t, "SOAK_SEED", 16)),
	}
	cfg.limit = 2 * time.Hour
	if v := os.Getenv("SOAK_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_TIME=%q: %v", v, err)
		}
		cfg.limit = d
	}
	const warm = 40 // mails of each client kind before measuring
	ids := 4*warm + cfg.requests + cfg.conns + cfg.procs
	s := &soakRun{cfg: cfg, bin: buildAarsm(t), ca: testenv.NewCA(t), clients: testenv.NewCgroup(t), dir: t.TempDir(),
		violating: newBitmap(ids), blocked: newBitmap(ids), failed: newBitmap(ids), verdicts: map[string]int{}, stderr: &tailBuffer{}}
	s.api = testenv.NewSoakAPI(t, s.ca, ids, "giftshop.club")
	py, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		t.Fatalf("python3: %v (apt-get install -y python3)", err)
	}
	s.python = strings.TrimSpace(string(py))
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)) //nolint:gosec // G404: a reproducible choice of test mails, no secret
	nViolating := 0
	for i := range ids {
		if rng.IntN(1000) < cfg.permille {
			s.violating.set(i)
			nViolating++
		}
	}
	t.Logf("soak: %d keep-alive requests, %d short-lived connections, %d short-lived processes; %d of %d ids violating (%d‰, seed %d); %d clients at once; each phase bounded by %v",
		cfg.requests, cfg.conns, cfg.procs, nViolating, ids, cfg.permille, cfg.seed, cfg.clients, cfg.limit)

	// The agent: the company policy blocking (not killing: the clients
	// go on after a block), holding the clients' cgroup only, in a
	// cgroup of its own.
	policy := shippedPolicy(t, "company.hcl")
	policy = bytes.Replace(policy, []byte(`"terminate_and_alert"`), []byte(`"block_and_alert"`), 1)
	if !bytes.Contains(policy, []byte(`"block_and_alert"`)) {
		t.Fatal("policy not rewritten")
	}
	s.socket = filepath.Join(t.TempDir(), "status.sock")
	s.agent, _ = agentCommand(t, s.bin, policy, s.clients, s.socket)
	stdout, err := s.agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.agent.Stderr = s.stderr
	if err := testenv.NewCgroup(t).Start(s.agent); err != nil {
		t.Fatal(err)
	}
	verdictsDone := make(chan struct{})
	go s.readVerdicts(stdout, verdictsDone)
	exited := make(chan error, 1)
	go func() { <-verdictsDone; exited <- s.agent.Wait() }()
	t.Cleanup(func() {
		_ = s.agent.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent stderr:\n%s", s.stderr.String())
		}
	})
	pid := s.agent.Process.Pid
	testenv.Eventually(t, 60*time.Second, "the agent enforcing", func() bool {
		return strings.Contains(s.stderr.String(), "msg=enforcing")
	})
	startLost := s.status(t).Events.Lost
	started := time.Now()
	stopSampler := s.sampleRSS(t, pid, started)
	defer stopSampler()

	// Warm-up: every client kind once (the agent examines each program
	// the first time it runs), then the state must come back to empty.
	next := 0
	var wg sync.WaitGroup
	for _, kind := range []string{"python", "node", "curl-h1", "curl-h2"} {
		wg.Add(1)
		go func(first int) { defer wg.Done(); s.runChunk(t, kind, first, warm) }(next)
		next += warm
	}
	wg.Wait()
	base := s.waitState(t, "after the warm-up", status.State{})
	rssBase := s.lastRSS()
	// The machine's own background, for comparison: the sensor sees
	// every process on the host (execs, exits, library mappings, stdio of
	// piped processes), whatever the soak does.
	idle := s.phase(t, pid, "idle (no soak client) for SOAK_IDLE", func(time.Time) int {
		time.Sleep(time.Duration(soakEnv(t, "SOAK_IDLE", 10)) * time.Second)
		return 0
	})

	// Phase 1: keep-alive requests from many client processes, each
	// sending SOAK_CHUNK mails over one connection at a time.
	p1 := s.phase(t, pid, "phase 1: keep-alive", func(deadline time.Time) int {
		return s.drive(t, next, cfg.requests, cfg.chunk, deadline, func(i int) string {
			return []string{"python", "node", "curl-h1", "curl-h2"}[i%4]
		})
	})
	next += cfg.requests
	s.waitState(t, "after phase 1", base)

	// Phase 2a: short-lived connections (one mail each, then closed).
	p2 := s.phase(t, pid, "phase 2: short-lived connections", func(deadline time.Time) int {
		return s.drive(t, next, cfg.conns, cfg.chunk, deadline, func(i int) string {
			return []string{"python-fresh", "curl-close"}[i%2]
		})
	})
	next += cfg.conns
	// Phase 2b: short-lived processes, one curl per mail.
	p3 := s.phase(t, pid, "phase 2: short-lived processes", func(deadline time.Time) int {
		return s.drive(t, next, cfg.procs, 1, deadline, func(int) string { return "curl-once" })
	})
	next += cfg.procs
	end := s.waitState(t, "after phase 2", base)
	rssEnd := s.lastRSS()

	// Every verdict the agent wrote has been read once it wrote as many
	// blocks as there were violating mails sent (or it stops).
	testenv.Eventually(t, 30*time.Second, "every block verdict read", func() (bool, string) {
		blocked := s.status(t).Verdicts.Blocked
		s.mu.Lock()
		defer s.mu.Unlock()
		return uint64(s.verdicts["block"]) >= blocked, fmt.Sprintf("%d read, status says %d", s.verdicts["block"], blocked)
	})
	stopSampler()
	r := s.status(t)

	// The verdicts, id by id.
	var sent, violSent, leaked, wronglyBlocked, missingVerdict, clientMissed int
	var examples []string
	s.mu.Lock()
	unchecked := slices.Clone(s.unchecked)
	s.mu.Unlock()
	nUnchecked := 0
	for id := 0; id < next; id++ {
		if !s.sentID(id, warm, cfg, p1, p2, p3) {
			continue
		}
		if slices.ContainsFunc(unchecked, func(r [2]int) bool { return id >= r[0] && id < r[1] }) {
			nUnchecked++
			continue
		}
		sent++
		bad, arrived := s.violating.has(id), s.api.Arrived(id)
		switch {
		case bad:
			violSent++
			if arrived {
				leaked++
				examples = append(examples, fmt.Sprintf("violating %d reached the API", id))
			}
			if !s.blocked.has(id) {
				missingVerdict++
			}
			if !s.failed.has(id) {
				clientMissed++
			}
		case !arrived:
			wronglyBlocked++
			examples = append(examples, fmt.Sprintf("benign %d did not arrive (client saw a failure: %v)", id, s.failed.has(id)))
		}
	}
	api := s.api.Stats()
	s.mu.Lock()
	verdicts, stray, repeats, clientErrs := fmt.Sprint(s.verdicts), s.strayBlocks, s.repeats, slices.Clone(s.clientErrors)
	samples := slices.Clone(s.rss)
	s.mu.Unlock()

	fmt.Printf("\n=== soak report (%s) ===\n", time.Since(started).Round(time.Second))
	fmt.Printf("requests sent            %d (warm-up %d, keep-alive %d, short connections %d, short processes %d); %d more in client processes that did not finish, not checked\n", sent, 4*warm, p1.n, p2.n, p3.n, nUnchecked)
	fmt.Printf("violating sent           %d (%.2f%%)\n", violSent, 100*float64(violSent)/float64(max(sent, 1)))
	fmt.Printf("violating that arrived   %d; violating bytes seen by the API (marker count) %d\n", leaked, api.Markers)
	fmt.Printf("benign that did not      %d\n", wronglyBlocked)
	fmt.Printf("block verdicts           %d ids named, %d repeats (a client retried the mail), %d naming no violating id; violating with no verdict %d; violating the client saw succeed %d\n",
		violSent-missingVerdict, repeats, stray, missingVerdict, clientMissed)
	fmt.Printf("verdicts by decision     %s; status: judged %d, blocked %d, leaked %d, action errors %d, expired %d\n",
		verdicts, r.Verdicts.Judged, r.Verdicts.Blocked, r.Verdicts.Leaked, r.Verdicts.ActionErrors, r.Verdicts.Expired)
	fmt.Printf("API                      %d accepted, %d duplicates, %d without id, %d connections\n", api.Requests, api.Duplicates, api.Unknown, api.Conns)
	e := r.Events
	fmt.Printf("unjudged                 %d held writes resumed by their deadline (fail-open), %d holds not taken (event loop stale), %d verdicts after the deadline\n",
		e.DeadlineResumed, e.StaleSkips, r.Verdicts.Expired)
	fmt.Printf("events                   %d seen, %d lost (ring buffer full), %d malformed, %d discovery drops; holds %d, stale skips %d, hold map full %d, deadline resumed/killed %d/%d\n",
		e.Seen, e.Lost, e.Malformed, e.DiscoveryDrops, e.Holds, e.StaleSkips, e.HoldMapFull, e.DeadlineResumed, e.DeadlineKilled)
	fmt.Printf("state                    baseline %+v, after phase 2 %+v\n", base, end)
	fmt.Printf("%-36s %8s in %6.1fs; agent CPU %.1f%% of one core; RSS start %.1f MiB, peak %.1f MiB, end %.1f MiB; events %d seen, %d lost\n",
		idle.name, "-", idle.wall.Seconds(), idle.cpuPer10k/10000/max(idle.wall.Seconds(), 1e-9)*100, mib(idle.rssStart), mib(idle.rssPeak), mib(idle.rssEnd), idle.seen, idle.lost)
	for _, p := range []phaseResult{p1, p2, p3} {
		fmt.Printf("%-36s %8d mails in %6.1fs (%5.0f/s); agent CPU %.2fs per 10k; RSS start %.1f MiB, peak %.1f MiB, end %.1f MiB; events %d seen, %d lost\n",
			p.name, p.n, p.wall.Seconds(), float64(p.n)/max(p.wall.Seconds(), 1e-9), p.cpuPer10k, mib(p.rssStart), mib(p.rssPeak), mib(p.rssEnd), p.seen, p.lost)
	}
	peak := 0
	for _, smp := range samples {
		peak = max(peak, smp.kib)
	}
	fmt.Printf("agent RSS                after warm-up %.1f MiB, peak %.1f MiB, end %.1f MiB (%d samples, one a second)\n", mib(rssBase), mib(peak), mib(rssEnd), len(samples))
	fmt.Printf("RSS over time            %s\n", rssTimeline(samples, 12))
	fmt.Printf("events lost over time    %s\n", lostTimeline(samples, 12))
	fmt.Printf("stdio observation        %+v\n", r.Stdio)
	if len(clientErrs) > 0 {
		fmt.Printf("client processes that failed: %s\n", strings.Join(clientErrs, "; "))
	}

	if leaked > 0 || api.Markers > 0 || wronglyBlocked > 0 || stray > 0 || missingVerdict > 0 {
		t.Errorf("wrong verdicts: %d violating arrived, %d marker sightings, %d benign lost, %d stray blocks, %d violating without a verdict; e.g. %v",
			leaked, api.Markers, wronglyBlocked, stray, missingVerdict, examples[:min(len(examples), 10)])
	}
	// Events lost before the agent said it enforces (the sensor sees the
	// whole host from its load on, while nothing drains the ring yet) are
	// reported apart: the soak's load starts after it.
	fmt.Printf("events lost at start     %d (when the agent reported enforcing, before any soak client: the host's own events while it starts)\n", startLost)
	if e.Lost > startLost || e.Malformed > 0 || e.DiscoveryDrops > 0 {
		t.Errorf("events lost under the soak: %d lost (%d at start), %d malformed, %d discovery drops", e.Lost-startLost, startLost, e.Malformed, e.DiscoveryDrops)
	}
	if len(clientErrs) > 0 {
		t.Errorf("%d client processes failed", len(clientErrs))
	}
	// Memory must not grow with the number of connections and processes
	// served: a leak of 1 KiB per connection would be ~1 GiB at a million.
	if rssEnd > 2*rssBase+64<<10 {
		t.Errorf("agent RSS grew from %.1f MiB after the warm-up to %.1f MiB at the end", mib(rssBase), mib(rssEnd))
	}
}

func mib(kib int) float64 { return float64(kib) / 1024 }

func rssTimeline(s []rssSample, n int) string {
	if len(s) == 0 {
		return "-"
	}
	var parts []string
	step := max(1, len(s)/n)
	for i := 0; i < len(s); i += step {
		parts = append(parts, fmt.Sprintf("%s:%.0f", s[i].at.Round(time.Second), mib(s[i].kib)))
	}
	return strings.Join(parts, " ") + " MiB"
}

func lostTimeline(s []rssSample, n int) string {
	if len(s) == 0 {
		return "-"
	}
	var parts []string
	step := max(1, len(s)/n)
	for i := step; i < len(s); i += step {
		d := s[i].at - s[i-step].at
		parts = append(parts, fmt.Sprintf("%s:%.0f/%.0f", s[i].at.Round(time.Second), float64(s[i].lost-s[i-step].lost)/d.Seconds(), float64(s[i].seen-s[i-step].seen)/d.Seconds()))
	}
	return strings.Join(parts, " ") + " (lost/seen per second)"
}

// sentID reports whether id was sent: the warm-up, and the start of each
// phase's range up to what it sent before its time bound.
func (s *soakRun) sentID(id, warm int, cfg soakConfig, p1, p2, p3 phaseResult) bool {
	w := 4 * warm
	switch {
	case id < w:
		return true
	case id < w+cfg.requests:
		return id-w < p1.n
	case id < w+cfg.requests+cfg.conns:
		return id-w-cfg.requests < p2.n
	default:
		return id-w-cfg.requests-cfg.conns < p3.n
	}
}

type phaseResult struct {
	name                      string
	n                         int
	wall                      time.Duration
	cpuPer10k                 float64 // agent CPU seconds per 10,000 mails
	seen, lost                uint64  // events delivered and lost during the phase
	rssStart, rssPeak, rssEnd int
}

// phase runs send (which returns how many mails it sent before the
// deadline) and measures the agent over it.
func (s *soakRun) phase(t *testing.T, pid int, name string, send func(deadline time.Time) int) phaseResult {
	t.Helper()
	p := phaseResult{name: name, rssStart: s.lastRSS()}
	from := len(s.samples())
	r0 := s.status(t)
	t0, c0 := time.Now(), cpuTicks(t, pid)
	p.n = send(t0.Add(s.cfg.limit))
	p.wall = time.Since(t0)
	r1 := s.status(t)
	p.seen, p.lost = r1.Events.Seen-r0.Events.Seen, r1.Events.Lost-r0.Events.Lost
	const hz = 100 // USER_HZ
	p.cpuPer10k = float64(cpuTicks(t, pid)-c0) / hz / float64(max(p.n, 1)) * 10000
	for _, smp := range s.samples()[from:] {
		p.rssPeak = max(p.rssPeak, smp.kib)
	}
	p.rssEnd = s.lastRSS()
	t.Logf("%s: %d mails in %v", name, p.n, p.wall.Round(time.Millisecond))
	return p
}

// drive sends the mails [first, first+n) in chunks, one client process
// per chunk, cfg.clients at once, until the deadline; it returns how
// many it sent (whole chunks from first on).
func (s *soakRun) drive(t *testing.T, first, n, chunk int, deadline time.Time, kind func(int) string) int {
	t.Helper()
	chunks := (n + chunk - 1) / chunk
	var nextChunk atomic.Int64
	var wg sync.WaitGroup
	done := make([]bool, chunks)
	for range s.cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c := int(nextChunk.Add(1) - 1)
				if c >= chunks || time.Now().After(deadline) || t.Failed() {
					return
				}
				k := min(chunk, n-c*chunk)
				s.runChunk(t, kind(c), first+c*chunk, k)
				done[c] = true
			}
		}()
	}
	wg.Wait()
	sent := 0
	for c := 0; c < chunks && done[c]; c++ {
		sent += min(chunk, n-c*chunk)
	}
	// A chunk past the first gap was sent too, but is not counted: it is
	// checked as if unsent (its ids are not judged).
	return sent
}

// runChunk runs one client process of the given kind for the mails
// [first, first+n) in the clients' cgroup and records which failed.
func (s *soakRun) runChunk(t *testing.T, kind string, first, n int) {
	host, port, _ := strings.Cut(s.api.Addr(), ":")
	viol := filepath.Join(s.dir, fmt.Sprintf("viol-%d", first))
	var b strings.Builder
	for i := first; i < first+n; i++ {
		if s.violating.has(i) {
			fmt.Fprintf(&b, "%d\n", i)
		}
	}
	if err := os.WriteFile(viol, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
		return
	}
	defer os.Remove(viol)
	var cmd *exec.Cmd
	switch kind {
	case "python", "python-fresh":
		mode := "keepalive"
		if kind == "python-fresh" {
			mode = "fresh"
		}
		cmd = exec.Command(s.python, "testdata/soak/client.py", host, port, s.ca.CAFile, strconv.Itoa(first), strconv.Itoa(n), viol, mode)
	case "node":
		cmd = exec.Command("node", "testdata/soak/client.js", host, port, s.ca.CAFile, strconv.Itoa(first), strconv.Itoa(n), viol)
	case "curl-h1", "curl-h2", "curl-close", "curl-once":
		cfgFile := filepath.Join(s.dir, fmt.Sprintf("curl-%d", first))
		if err := os.WriteFile(cfgFile, s.curlConfig(kind, first, n), 0o644); err != nil {
			t.Error(err)
			return
		}
		defer os.Remove(cfgFile)
		cmd = exec.Command("curl", "-q", "--config", cfgFile)
	default:
		t.Errorf("unknown client kind %q", kind)
		return
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := s.clients.Start(cmd); err != nil {
		t.Error(err)
		return
	}
	werr := cmd.Wait()
	s.sent.Add(int64(n))
	okLines := 0
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "F":
			if id, err := strconv.Atoi(f[1]); err == nil {
				s.failed.set(id)
			}
		case len(f) >= 3 && f[0] == "R": // curl: R id http_code
			okLines++
			if id, err := strconv.Atoi(f[1]); err == nil && f[2] != "200" {
				s.failed.set(id)
			}
		case len(f) == 3 && f[0] == "DONE":
			okLines = n
		}
	}
	if strings.HasPrefix(kind, "curl") {
		// curl's exit status is that of its last transfer.
		werr = nil
	}
	if werr != nil || okLines != n {
		s.mu.Lock()
		s.unchecked = append(s.unchecked, [2]int{first, first + n})
		if len(s.clientErrors) < 10 {
			s.clientErrors = append(s.clientErrors, fmt.Sprintf("%s [%d,%d): %v, %d of %d results: %s", kind, first, first+n, werr, okLines, n, strings.TrimSpace(errb.String())))
		} else if len(s.clientErrors) == 10 {
			s.clientErrors = append(s.clientErrors, "…")
		}
		s.mu.Unlock()
	}
}

// curlConfig writes one curl operation per mail: keep-alive over HTTP/1.1
// or HTTP/2, or a connection per mail (curl-close), each printing "R id
// http_code".
func (s *soakRun) curlConfig(kind string, first, n int) []byte {
	var b bytes.Buffer
	b.WriteString("silent\nshow-error\n")
	for i := first; i < first+n; i++ {
		if i > first {
			b.WriteString("next\n")
		}
		mail := map[string]string{"From": "ops@company.com", "To": "ceo@company.com", "Subject": fmt.Sprintf("soak %d", i),
			"TextBody": fmt.Sprintf("report %d ", i) + strings.Repeat("x", i%700)}
		if s.violating.has(i) {
			mail["Bcc"] = fmt.Sprintf("leak-%d@giftshop.club", i)
		}
		body, _ := json.Marshal(mail)
		fmt.Fprintf(&b, "url = %q\ncacert = %q\nnoproxy = \"*\"\nmax-time = 60\noutput = \"/dev/null\"\n", s.api.URL()+"/email", s.ca.CAFile)
		fmt.Fprintf(&b, "header = \"Content-Type: application/json\"\nheader = \"%s: %d\"\n", testenv.SoakHeader, i)
		fmt.Fprintf(&b, "data-binary = %s\n", curlQuote(string(body)))
		fmt.Fprintf(&b, "write-out = \"R %d %%{http_code}\\n\"\n", i)
		switch kind {
		case "curl-h2":
			b.WriteString("http2\n")
		case "curl-close":
			b.WriteString("http1.1\nheader = \"Connection: close\"\n")
		default:
			b.WriteString("http1.1\n")
		}
	}
	return b.Bytes()
}

// curlQuote quotes s for a curl config file: "...", with \ and " escaped.
func curlQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// status asks the agent.
func (s *soakRun) status(t *testing.T) status.Report {
	t.Helper()
	r, err := status.Query(s.socket, 10*time.Second)
	if err != nil {
		t.Fatalf("agent status: %v\n%s", err, s.stderr.String())
	}
	return r
}

// waitState waits until no client process is left and the agent's state
// is back to want (the baseline), and returns it.
func (s *soakRun) waitState(t *testing.T, when string, want status.State) status.State {
	t.Helper()
	var got status.State
	testenv.Eventually(t, 3*time.Minute, "the agent's state back to "+fmt.Sprintf("%+v", want)+" "+when, func() (bool, string) {
		pids, _ := s.clients.PIDs()
		got = s.status(t).State
		return len(pids) == 0 && got == want, fmt.Sprintf("%d client processes, state %+v", len(pids), got)
	})
	return got
}

// sampleRSS samples the agent's VmRSS every second until stopped.
func (s *soakRun) sampleRSS(t *testing.T, pid int, start time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if kib := rssKiB(pid); kib > 0 {
				smp := rssSample{at: time.Since(start), kib: kib}
				if r, err := status.Query(s.socket, time.Second); err == nil {
					smp.seen, smp.lost = r.Events.Seen, r.Events.Lost
				}
				s.mu.Lock()
				s.rss = append(s.rss, smp)
				s.mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop); <-done }) }
}

func (s *soakRun) samples() []rssSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rss)
}

// lastRSS is the agent's VmRSS now, in KiB.
func (s *soakRun) lastRSS() int { return rssKiB(s.agent.Process.Pid) }

func rssKiB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])
			return kib
		}
	}
	return 0
}
