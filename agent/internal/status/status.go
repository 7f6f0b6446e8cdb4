// Package status serves the running agent's state on a unix socket that
// only root can open, and reads it back for "aarsm status".
//
// The protocol is one JSON document: a client connects, the agent writes a
// Report and closes the connection. There is no TCP listener and no
// request; the socket file is mode 0600, and the agent also checks the
// peer's credentials (root or its own user) before it answers.
package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where "aarsm run" listens under systemd
// (RuntimeDirectory=aarsm).
const DefaultSocket = "/run/aarsm/aarsm.sock"

// Report is the agent's state.
type Report struct {
	Version       string    `json:"version"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`

	PolicyDir      string    `json:"policy_dir"`
	Policies       []Policy  `json:"policies"`
	PoliciesLoaded time.Time `json:"policies_loaded"`
	// ReloadError is the last reload that failed, if the policies in force
	// are older than it.
	ReloadError *ReloadError `json:"reload_error,omitempty"`
	// Reloads counts the reloads (SIGHUP) done, failed ones included.
	Reloads uint64 `json:"reloads"`
	// CanHandOver: the agent replaces itself in place on SIGUSR2 ("aarsm
	// handover"); Handovers counts the times it did since it started.
	CanHandOver bool   `json:"can_hand_over"`
	Handovers   uint64 `json:"handovers"`

	// HoldScope is whom the kernel holds.
	HoldScope HoldScope `json:"hold_scope"`
	// Probes are the files with probes attached, and those that could not
	// be probed (Error set).
	Probes []Probe `json:"probes"`
	Events Events  `json:"events"`
	// Pipeline counts what user space made of the events: connections
	// tracked and evicted, bytes that were no protocol it parses.
	Pipeline Pipeline `json:"pipeline"`
	// LoopAgeSeconds is how long ago the event loop last went round (it
	// does every few milliseconds; the watchdog stops pinging when it is
	// stuck).
	LoopAgeSeconds float64 `json:"loop_age_seconds"`

	Verdicts Verdicts `json:"verdicts"`
	// Quarantines are the cgroups cut off the network now.
	Quarantines []Quarantine `json:"quarantines"`
	// QuarantineError says why the quarantine is not available or could
	// not be listed.
	QuarantineError string `json:"quarantine_error,omitempty"`
	// QuarantinedMessages are the blocked messages kept in the vault
	// ("aarsm quarantine show ID" prints one), soonest to expire first.
	QuarantinedMessages []QuarantinedMessage `json:"quarantined_messages"`
	// VaultError says why the vault is not available or could not be
	// (wholly) listed.
	VaultError string `json:"vault_error,omitempty"`
	// MCPServers are the processes seen speaking MCP on their stdio.
	MCPServers []MCPServer `json:"mcp_servers"`
	// Stdio counts the observation of processes' stdio for MCP.
	Stdio Stdio `json:"stdio"`
	// State is the per-connection and per-process state kept now.
	State State `json:"state"`
	// MCPHTTP counts the observation of loopback connections of processes
	// listening on loopback (MCP over streamable HTTP).
	MCPHTTP MCPHTTP `json:"mcp_http"`
	// Programs are the sensor's BPF programs and the runs the kernel
	// missed of each.
	Programs []Program `json:"programs,omitempty"`
	// StatusRefused counts the connections to the status socket refused
	// for their peer's credentials.
	StatusRefused uint64 `json:"status_refused"`
	// Egress is the egress policies in force and what the kernel counted;
	// nil when the egress programs could not be loaded (EgressError).
	Egress      *Egress `json:"egress,omitempty"`
	EgressError string  `json:"egress_error,omitempty"`
	// Unmonitored are the last processes seen doing TLS that AARSM cannot
	// read (bounded), oldest first.
	Unmonitored []Unmonitored `json:"unmonitored"`
}

// Unmonitored is a process doing TLS through a library AARSM cannot probe.
type Unmonitored struct {
	PID       int       `json:"pid"`
	Exe       string    `json:"exe"`
	Stack     string    `json:"stack"`
	Reason    string    `json:"reason"`
	FirstSeen time.Time `json:"first_seen"`
}

// Egress is the egress_policy state.
type Egress struct {
	// Attached: the egress programs are attached to the cgroup root
	// (while at least one egress policy is in force).
	Attached bool           `json:"attached"`
	Policies []EgressPolicy `json:"policies"`
	// Counters per hook (connect4, connect6, sendmsg4, sendmsg6), of
	// processes in scope only.
	Counters []EgressCounters `json:"counters"`
	// Lost: events the ring buffer had no room for; Journaled: entries
	// written; Deduped: attempts of a process to a destination already
	// journaled.
	Lost          uint64 `json:"lost"`
	Journaled     uint64 `json:"journaled"`
	JournalErrors uint64 `json:"journal_errors"`
	Deduped       uint64 `json:"deduped"`
}

// EgressPolicy is one egress policy in force.
type EgressPolicy struct {
	Name        string       `json:"name"`
	Mode        string       `json:"mode"`
	Cgroups     []string     `json:"cgroups"`     // in its scope now
	Executables []string     `json:"executables"` // in its scope now
	Hosts       []EgressHost `json:"hosts"`
}

// EgressHost is an allowed host name and its addresses now.
type EgressHost struct {
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
	Error string   `json:"error,omitempty"`
}

// EgressCounters are one hook's counts.
type EgressCounters struct {
	Hook     string `json:"hook"`
	Allowed  uint64 `json:"allowed"`
	Blocked  uint64 `json:"blocked"`
	Reported uint64 `json:"reported"`
}

// MCPHTTP counts the observation of loopback connections for MCP over
// streamable HTTP.
type MCPHTTP struct {
	Watched      int    `json:"watched"`        // listening processes with a connection seen
	Conns        int    `json:"conns"`          // connections tracked now
	Copied       uint64 `json:"copied"`         // socket reads and writes copied
	ConnsGivenUp uint64 `json:"conns_given_up"` // connections dropped: not MCP over HTTP/1.x, or bytes lost
	GivenUp      uint64 `json:"given_up"`       // processes dropped: no JSON-RPC on their connections
	Messages     uint64 `json:"messages"`       // JSON-RPC messages decoded
	Skipped      uint64 `json:"skipped"`        // bodies or events skipped: malformed or over the bound
}

// Program is one of the sensor's BPF programs.
type Program struct {
	Name string `json:"name"`
	// Missed counts the runs the kernel skipped (another BPF program ran
	// on the CPU): writes neither seen nor held.
	Missed uint64 `json:"missed"`
}

// State is the per-connection and per-process state the agent keeps now
// (as of the last event): it comes back to its baseline once the
// processes are gone.
type State struct {
	Connections int `json:"connections"` // TLS connections tracked
	Processes   int `json:"processes"`   // processes whose facts are cached
}

// Stdio counts the observation of processes' stdio for MCP.
type Stdio struct {
	Watched   int    `json:"watched"`   // processes whose stdio is copied now
	Copied    uint64 `json:"copied"`    // stdin reads and stdout writes copied
	GivenUp   uint64 `json:"given_up"`  // processes dropped: no JSON-RPC on their stdin
	Messages  uint64 `json:"messages"`  // JSON-RPC messages decoded
	Malformed uint64 `json:"malformed"` // frames skipped: not JSON-RPC
	Oversize  uint64 `json:"oversize"`  // frames skipped: over the size bound
}

// MCPServer is a process seen speaking MCP on its stdio.
type MCPServer struct {
	PID int `json:"pid"`
	// Name and Version are its serverInfo ("" until its initialize
	// result was seen: a server started before the agent).
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Package is the package it runs, e.g. "npm:postmark-mcp@1.0.16", and
	// Hash its content hash.
	Package string `json:"package,omitempty"`
	Hash    string `json:"hash,omitempty"`
	// Transport is "stdio" or "http" (streamable HTTP on loopback).
	Transport string `json:"transport,omitempty"`
	// Client is the executable of the process that started it.
	Client string `json:"client,omitempty"`
	// Calls counts the tool calls seen; LastTool names the last one.
	Calls    uint64    `json:"calls"`
	LastTool string    `json:"last_tool,omitempty"`
	LastCall time.Time `json:"last_call,omitzero"`
}

// QuarantinedMessage is one message kept in the vault.
type QuarantinedMessage struct {
	ID         string    `json:"id"`
	Expires    time.Time `json:"expires"`
	Policy     string    `json:"policy"`
	Dest       string    `json:"dest,omitempty"`
	Recipients int       `json:"recipients"`
}

// HoldScope is whom the kernel holds: the enforcing policies' scopes as
// far as the kernel can check them.
type HoldScope struct {
	// EveryProcess: every process is held (see Widened for why).
	EveryProcess bool `json:"every_process"`
	// Cgroups are the cgroup paths whose processes are held.
	Cgroups []string `json:"cgroups"`
	// Widened says, per policy, why the scope covers every process.
	Widened []string `json:"widened,omitempty"`
	// Narrowed are the --hold-cgroup directories that narrow the scope.
	Narrowed []string `json:"narrowed,omitempty"`
	// NewCgroups: a new cgroup is held from its creation until its path
	// has been matched against the policies.
	NewCgroups bool `json:"new_cgroups"`
	// FailClosed are the fail-closed policies.
	FailClosed []string `json:"fail_closed,omitempty"`
	// EnforcingPolicies counts the enforcing policies: none, nothing held.
	EnforcingPolicies int `json:"enforcing_policies"`
	// CopyAll: writes out of scope are copied too (a monitoring policy).
	CopyAll bool `json:"copy_all"`
}

// Policy is one policy in force.
type Policy struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	File string `json:"file"`
}

// ReloadError is a failed reload.
type ReloadError struct {
	At    time.Time `json:"at"`
	Error string    `json:"error"`
}

// Probe is a file the sensor examined.
type Probe struct {
	Path    string   `json:"path"`
	Symbols []string `json:"symbols,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Events are the sensor's counters since the agent started.
type Events struct {
	Seen       uint64 `json:"seen"`        // events delivered to the pipeline
	Lost       uint64 `json:"lost"`        // dropped: the ring buffer was full (or monitoring copies shed at 3/4)
	Writes     uint64 `json:"writes"`      // TLS writes seen in the kernel
	Truncated  uint64 `json:"truncated"`   // writes longer than the copy limit
	Holds      uint64 `json:"holds"`       // writes held for judgement
	FileHolds  uint64 `json:"file_holds"`  // processes held until a new file was probed
	HeldNow    int    `json:"held_now"`    // writes held at the time of the report
	GuardKills uint64 `json:"guard_kills"` // held threads resumed by someone else, killed
	// Holds not taken, and their fail mode applied at once: the event loop
	// was not running, or the hold map was full.
	StaleSkips  uint64 `json:"stale_skips"`
	HoldMapFull uint64 `json:"hold_map_full"`
	// FailKills are processes killed in the kernel by a fail-closed policy
	// (stale loop, full hold map, full ring buffer).
	FailKills uint64 `json:"fail_kills"`
	// ForeignConts are SIGCONTs to a held process that the agent did not send.
	ForeignConts uint64 `json:"foreign_sigconts"`
	// HeldExits are threads that exited (were killed) while held.
	HeldExits uint64 `json:"held_exits"`
	// Deadline resolutions by the guard: resumed (fail-open), killed
	// (fail-closed), dropped (the thread was gone or its id reused).
	DeadlineResumed uint64 `json:"deadline_resumed"`
	DeadlineKilled  uint64 `json:"deadline_killed"`
	DeadlineGone    uint64 `json:"deadline_gone"`
	// Predecessor are holds left by a previous agent, resolved at start.
	Predecessor int    `json:"predecessor_holds"`
	Malformed   uint64 `json:"malformed"`
	// DiscoveryDrops are new files not examined because the queue was full.
	DiscoveryDrops uint64 `json:"discovery_drops"`
}

// Pipeline are the counters of the stream and parse stages, as of the
// last event handled.
type Pipeline struct {
	ConnsOpen   int    `json:"conns_open"`   // connections tracked now (bounded)
	ConnsOpened uint64 `json:"conns_opened"` // connections seen
	// ConnsEvicted: closed for lack of room (the oldest first) or idleness.
	ConnsEvicted   uint64 `json:"conns_evicted"`
	RetriesDropped uint64 `json:"retries_dropped"` // writes repeated after a failed SSL_write
	LostBytes      uint64 `json:"lost_bytes"`      // bytes not captured (past the copy limit, or lost events)
	Messages       uint64 `json:"messages"`        // HTTP messages and mails parsed
	// JunkBytes: bytes that were no protocol parsed (other protocols,
	// garbage, framing lost); Malformed: messages given up; IgnoredStreams:
	// HTTP/2 streams beyond those tracked at once.
	JunkBytes      uint64 `json:"junk_bytes"`
	Malformed      uint64 `json:"malformed"`
	IgnoredStreams uint64 `json:"ignored_h2_streams"`
}

// Verdicts are the judge's counters since the agent started.
type Verdicts struct {
	Judged  uint64 `json:"judged"`
	Blocked uint64 `json:"blocked"` // stopped before a byte of the message left
	// Leaked are messages a policy would have blocked, judged only after
	// their bytes had left (logged as alerts; acted on all the same).
	Leaked       uint64 `json:"leaked"`
	Alerted      uint64 `json:"alerted"`
	Released     uint64 `json:"released"` // held writes let go
	ActionErrors uint64 `json:"action_errors"`
	// Expired are held writes whose deadline passed before the verdict.
	Expired uint64 `json:"expired"`
}

// Quarantine is one quarantined cgroup.
type Quarantine struct {
	CgroupID uint64    `json:"cgroup_id"`
	Cgroup   string    `json:"cgroup,omitempty"`
	Until    time.Time `json:"until,omitzero"` // zero: until lifted
}

// Server answers status requests on a unix socket.
type Server struct {
	ln      *net.UnixListener
	path    string
	group   int // gid whose members may ask besides root; -1: none
	report  func() Report
	wg      sync.WaitGroup
	refused atomic.Uint64
}

// Options configure ListenWith.
type Options struct {
	// Group is a group id whose processes may ask too (the peer's
	// primary group, from SO_PEERCRED): the socket is then 0660 of that
	// group. -1 (or Listen): root only.
	Group int
}

// Listen creates the socket at path (mode 0600; its directory, mode 0700,
// if missing) and answers every connection with report's result until
// Close. A socket file left by an agent that died is replaced; one that
// another agent answers on is not.
func Listen(path string, report func() Report) (*Server, error) {
	return ListenWith(path, Options{Group: -1}, report)
}

// ListenWith is Listen with options. A directory of the socket that
// others may write (without the sticky bit) is refused: they could
// replace the socket.
func ListenWith(path string, opts Options, report func() Report) (*Server, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	} else if st.Mode().Perm()&0o022 != 0 && st.Mode()&os.ModeSticky == 0 {
		return nil, fmt.Errorf("status socket: directory %s is writable by group or others (mode %04o)", dir, st.Mode().Perm())
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("status socket %s: another agent answers on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("status socket: remove stale %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// Connections accepted before the chmod are still checked by
	// credentials (serve).
	mode := os.FileMode(0o600)
	if opts.Group >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, opts.Group); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("status socket: %w", err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("status socket: %w", err)
	}
	s := &Server{ln: ln, path: path, group: opts.Group, report: report}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Refused counts the connections refused for their peer's credentials.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		s.answer(c)
	}
}

// answer writes the report to an allowed peer and closes the connection.
// A client that does not read cannot hold the agent up for long.
func (s *Server) answer(c *net.UnixConn) {
	defer c.Close()
	if !allowed(c, s.group) {
		s.refused.Add(1)
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = json.NewEncoder(c).Encode(s.report())
}

// allowed reports whether the peer is root, the agent's own user or, if
// group is not -1, of that (primary) group.
func allowed(c *net.UnixConn, group int) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid() || (group >= 0 && int(cred.Gid) == group)
}

// Close stops answering and removes the socket file.
func (s *Server) Close() error {
	err := s.ln.Close() // unlinks the socket file
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("close status socket: %w", err)
	}
	return nil
}

// ErrNotRunning is wrapped by Query's error when no agent listens on the
// socket.
var ErrNotRunning = errors.New("no agent is running")

// Query asks the agent listening on path for its report.
func Query(path string, timeout time.Duration) (Report, error) {
	var r Report
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
			return r, fmt.Errorf("%w: nothing answers on %s (systemctl status aarsm): %w", ErrNotRunning, path, err)
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
			return r, fmt.Errorf("cannot open %s (root only): %w", path, err)
		}
		return r, fmt.Errorf("connect to the agent at %s: %w", path, err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	data, err := io.ReadAll(c)
	if err != nil {
		return r, fmt.Errorf("read status from %s: %w", path, err)
	}
	if len(data) == 0 {
		return r, fmt.Errorf("read status from %s: the agent closed the connection without an answer (not root?)", path)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode status from %s: %w", path, err)
	}
	return r, nil
}

// Format writes r for people.
func Format(w io.Writer, r Report) error {
	var b strings.Builder
	up := time.Duration(r.UptimeSeconds * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(&b, "aarsm %s, pid %d, up %s (since %s)", r.Version, r.PID, up, r.Started.UTC().Format(time.DateTime+" MST"))
	if r.Handovers > 0 {
		fmt.Fprintf(&b, ", replaced in place %d time(s)", r.Handovers)
	}
	b.WriteString("\n")

	fmt.Fprintf(&b, "policies:    %d from %s, loaded %s\n", len(r.Policies), r.PolicyDir, r.PoliciesLoaded.UTC().Format(time.DateTime+" MST"))
	for _, p := range r.Policies {
		fmt.Fprintf(&b, "  %-20s %-8s %s\n", p.Name, p.Mode, p.File)
	}
	if r.ReloadError != nil {
		fmt.Fprintf(&b, "last reload: FAILED at %s, the policies above stay in force:\n  %s\n",
			r.ReloadError.At.UTC().Format(time.DateTime+" MST"), strings.ReplaceAll(r.ReloadError.Error, "\n", "\n  "))
	}

	probed := 0
	for _, p := range r.Probes {
		if p.Error == "" {
			probed++
		}
	}
	fmt.Fprintf(&b, "probes:      %d files attached", probed)
	if n := len(r.Probes) - probed; n > 0 {
		fmt.Fprintf(&b, ", %d failed", n)
	}
	b.WriteString("\n")
	probes := append([]Probe(nil), r.Probes...)
	sort.Slice(probes, func(i, j int) bool { return probes[i].Path < probes[j].Path })
	for _, p := range probes {
		if p.Error != "" {
			fmt.Fprintf(&b, "  %s: %s\n", p.Path, p.Error)
		} else {
			fmt.Fprintf(&b, "  %s (%s)\n", p.Path, strings.Join(p.Symbols, " "))
		}
	}
	hs := r.HoldScope
	switch {
	case hs.EnforcingPolicies == 0:
		b.WriteString("holding:     nothing (no enforcing policy)\n")
	case hs.EveryProcess:
		b.WriteString("holding:     every process\n")
	case len(hs.Cgroups) == 0:
		b.WriteString("holding:     no process now")
		if hs.NewCgroups {
			b.WriteString(" (new cgroups are held until matched)")
		}
		b.WriteString("\n")
	default:
		fmt.Fprintf(&b, "holding:     processes in %s", strings.Join(hs.Cgroups, ", "))
		if hs.NewCgroups {
			b.WriteString(" (and new cgroups until matched)")
		}
		b.WriteString("\n")
	}
	for _, w := range hs.Widened {
		fmt.Fprintf(&b, "  widened:   %s\n", w)
	}
	if len(hs.Narrowed) > 0 {
		fmt.Fprintf(&b, "  narrowed:  to %s (--hold-cgroup)\n", strings.Join(hs.Narrowed, ", "))
	}
	if len(hs.FailClosed) > 0 {
		fmt.Fprintf(&b, "  fail-closed policies: %s\n", strings.Join(hs.FailClosed, ", "))
	}
	e := r.Events
	fmt.Fprintf(&b, "event loop:  went round %s ago\n", time.Duration(r.LoopAgeSeconds*float64(time.Second)).Round(time.Millisecond))
	fmt.Fprintf(&b, "events:      %d seen, %d lost (ring buffer full, or monitoring copies shed), %d TLS writes, %d truncated\n", e.Seen, e.Lost, e.Writes, e.Truncated)
	pl := r.Pipeline
	fmt.Fprintf(&b, "connections: %d tracked, %d seen, %d evicted; %d messages parsed, %d malformed, %d junk bytes, %d bytes not captured\n",
		pl.ConnsOpen, pl.ConnsOpened, pl.ConnsEvicted, pl.Messages, pl.Malformed, pl.JunkBytes, pl.LostBytes)
	var missed []string
	for _, p := range r.Programs {
		if p.Missed > 0 {
			missed = append(missed, fmt.Sprintf("%s %d", p.Name, p.Missed))
		}
	}
	if len(missed) > 0 {
		fmt.Fprintf(&b, "  runs missed by the kernel (another BPF program on the CPU): %s\n", strings.Join(missed, ", "))
	}
	fmt.Fprintf(&b, "holds:       %d writes, %d processes until a new file was probed, %d held now, %d guard kills\n", e.Holds, e.FileHolds, e.HeldNow, e.GuardKills)
	fmt.Fprintf(&b, "deadlines:   %d resumed unjudged, %d killed unjudged, %d dropped (thread gone); %d left by a previous agent\n",
		e.DeadlineResumed, e.DeadlineKilled, e.DeadlineGone, e.Predecessor)
	fmt.Fprintf(&b, "not held:    %d (event loop not running), %d (hold map full); %d killed by a fail-closed policy; %d foreign SIGCONTs; %d exited while held\n",
		e.StaleSkips, e.HoldMapFull, e.FailKills, e.ForeignConts, e.HeldExits)
	fmt.Fprintf(&b, "state:       %d TLS connections tracked, %d processes' facts cached\n", r.State.Connections, r.State.Processes)
	v := r.Verdicts
	fmt.Fprintf(&b, "verdicts:    %d judged, %d blocked, %d leaked (blocked after the bytes had left), %d alerted; %d held writes released, %d action errors\n",
		v.Judged, v.Blocked, v.Leaked, v.Alerted, v.Released, v.ActionErrors)
	switch {
	case r.QuarantineError != "":
		fmt.Fprintf(&b, "quarantine:  unavailable: %s\n", r.QuarantineError)
	case len(r.Quarantines) == 0:
		b.WriteString("quarantine:  none in force\n")
	default:
		fmt.Fprintf(&b, "quarantine:  %d cgroups\n", len(r.Quarantines))
		for _, q := range r.Quarantines {
			name := q.Cgroup
			if name == "" {
				name = fmt.Sprintf("cgroup id %d", q.CgroupID)
			}
			until := "until lifted"
			if !q.Until.IsZero() {
				until = "until " + q.Until.UTC().Format(time.DateTime+" MST")
			}
			fmt.Fprintf(&b, "  %s %s\n", name, until)
		}
	}
	switch {
	case len(r.QuarantinedMessages) == 0 && r.VaultError != "":
		fmt.Fprintf(&b, "messages:    vault unavailable: %s\n", r.VaultError)
	case len(r.QuarantinedMessages) == 0:
		b.WriteString("messages:    none quarantined\n")
	default:
		fmt.Fprintf(&b, "messages:    %d quarantined (aarsm quarantine show ID)\n", len(r.QuarantinedMessages))
		FormatMessages(&b, r.QuarantinedMessages, "  ")
		if r.VaultError != "" {
			fmt.Fprintf(&b, "  (not all read: %s)\n", r.VaultError)
		}
	}
	formatEgress(&b, r)
	sd := r.Stdio
	fmt.Fprintf(&b, "stdio:       %d processes watched, %d calls copied, %d given up (no JSON-RPC), %d JSON-RPC messages, %d frames skipped (%d malformed, %d oversize)\n",
		sd.Watched, sd.Copied, sd.GivenUp, sd.Messages, sd.Malformed+sd.Oversize, sd.Malformed, sd.Oversize)
	hd := r.MCPHTTP
	fmt.Fprintf(&b, "mcp http:    %d listening processes watched, %d connections, %d calls copied, %d connections and %d processes given up (no MCP), %d JSON-RPC messages, %d skipped\n",
		hd.Watched, hd.Conns, hd.Copied, hd.ConnsGivenUp, hd.GivenUp, hd.Messages, hd.Skipped)
	if len(r.Unmonitored) == 0 {
		b.WriteString("unmonitored: none seen\n")
	} else {
		fmt.Fprintf(&b, "unmonitored: %d (TLS through a library AARSM cannot read)\n", len(r.Unmonitored))
		for _, u := range r.Unmonitored {
			fmt.Fprintf(&b, "  pid %d %s: %s (%s), first seen %s\n", u.PID, u.Exe, u.Stack, u.Reason, u.FirstSeen.UTC().Format(time.DateTime+" MST"))
		}
	}
	if len(r.MCPServers) == 0 {
		b.WriteString("mcp servers: none seen\n")
	} else {
		fmt.Fprintf(&b, "mcp servers: %d\n", len(r.MCPServers))
		for _, s := range r.MCPServers {
			name := s.Name
			if name == "" {
				name = "(no initialize seen)"
			} else if s.Version != "" {
				name += "@" + s.Version
			}
			fmt.Fprintf(&b, "  pid %d %s", s.PID, name)
			if s.Transport == "http" {
				b.WriteString(" over streamable HTTP")
			}
			if s.Package != "" {
				fmt.Fprintf(&b, " package %s", s.Package)
			}
			if s.Client != "" {
				fmt.Fprintf(&b, " started by %s", s.Client)
			}
			fmt.Fprintf(&b, ", %d tool calls", s.Calls)
			if s.LastTool != "" {
				fmt.Fprintf(&b, " (last %s at %s)", s.LastTool, s.LastCall.UTC().Format(time.TimeOnly+" MST"))
			}
			b.WriteString("\n")
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// FormatMessages writes one line per quarantined message, each after
// indent: id, expiry, policy, destination, number of recipients.
func FormatMessages(b *strings.Builder, ms []QuarantinedMessage, indent string) {
	for _, m := range ms {
		dest := m.Dest
		if dest == "" {
			dest = "-"
		}
		policy := m.Policy
		if policy == "" {
			policy = "-"
		}
		fmt.Fprintf(b, "%s%s  until %s  policy %s  to %s  %d recipients\n", indent, m.ID,
			m.Expires.UTC().Format(time.DateTime+" MST"), policy, dest, m.Recipients)
	}
}

// formatEgress writes the egress lines of r.
func formatEgress(b *strings.Builder, r Report) {
	switch {
	case r.Egress == nil && r.EgressError != "":
		fmt.Fprintf(b, "egress:      unavailable: %s\n", r.EgressError)
		return
	case r.Egress == nil:
		return
	case len(r.Egress.Policies) == 0:
		b.WriteString("egress:      no egress_policy\n")
	default:
		fmt.Fprintf(b, "egress:      %d policies", len(r.Egress.Policies))
		if !r.Egress.Attached {
			b.WriteString(" (programs NOT attached)")
		}
		b.WriteString("\n")
	}
	eg := r.Egress
	for _, p := range eg.Policies {
		cg := "no cgroup or executable now"
		if in := append(append([]string(nil), p.Cgroups...), p.Executables...); len(in) > 0 {
			cg = strings.Join(in, ", ")
		}
		fmt.Fprintf(b, "  %-20s %-8s %s\n", p.Name, p.Mode, cg)
		for _, h := range p.Hosts {
			addrs := strings.Join(h.Addrs, " ")
			if addrs == "" {
				addrs = "(no address)"
			}
			fmt.Fprintf(b, "    %s: %s", h.Name, addrs)
			if h.Error != "" {
				fmt.Fprintf(b, " (last resolution failed: %s)", h.Error)
			}
			b.WriteString("\n")
		}
	}
	var parts []string
	for _, c := range eg.Counters {
		parts = append(parts, fmt.Sprintf("%s %d/%d/%d", c.Hook, c.Allowed, c.Blocked, c.Reported))
	}
	fmt.Fprintf(b, "  allowed/blocked/reported: %s; %d journaled, %d repeats, %d lost, %d journal errors\n",
		strings.Join(parts, ", "), eg.Journaled, eg.Deduped, eg.Lost, eg.JournalErrors)
}
