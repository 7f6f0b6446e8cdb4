package enforce

import (
	"errors"
	"slices"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pipeline"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// The behavioural baseline: per package and build, the destinations and
// recipient domains it was seen to use (package baseline). Every outbound
// request (HTTP/1.1, HTTP/2, WebSocket) and mail (HTTP API or SMTP) of a
// process is recorded while its package learns and checked otherwise; a
// deviation goes to the judge (judge.Baseline: rules unseen_destinations,
// rug_pull). Mail records its recipient domains too; other requests their
// destination only.
//
// What a process is, for the baseline (identityOf):
//
//  1. the MCP server's package, when the process or an ancestor is one
//     the agent has seen (every MCP server, in scope or not, as before);
//  2. otherwise, and only for a process in the scope of a policy that
//     checks the baseline: the npm package or Python distribution of the
//     script an interpreter runs (pkgid: name@version and the package's
//     content hash), or the script itself outside any package
//     (script:/path and its hash);
//  3. else the executable: exe:/path and the sha256 of its content,
//     computed once per file identity by a background worker
//     (pkgid.ExeHasher), waited for at most 20 ms (Options.ExeHashWait).
//     Until it is known the request is checked by path alone against
//     every build the path was seen with (an unseen destination is
//     flagged, a rug pull cannot be told: AARSM_BASELINE_PACKAGE says
//     "hash pending"), and a complete request is observed again, under
//     its hash, once the hash is known: learned then, or logged when it
//     deviates.
//
// The identity is looked up once per process, at its first held write or
// judged request, and kept with its facts (procIdent) until it execs or
// exits.

// defaultExeHashWait is how long a verdict waits for an executable's
// first hash (Options.ExeHashWait): curl (300 KB) and python3 (7 MB) are
// hashed well within it (~1.3 GB/s here); node (100 MB) or a 300 MB binary
// are not, and go on by path.
const defaultExeHashWait = 20 * time.Millisecond

func (a *Agent) exeHashWait() time.Duration {
	switch w := a.opts.ExeHashWait; {
	case w == 0:
		return defaultExeHashWait
	case w < 0:
		return 0
	default:
		return w
	}
}

// openBaseline opens the store under the state directory; none without a
// state directory or with baseline = "off". A corrupt file is logged (the
// store moved it aside and starts empty).
func (a *Agent) openBaseline(set *policy.Set) {
	bs := set.Baseline()
	if a.opts.StateDir == "" || bs.Mode == policy.BaselineOff {
		return
	}
	st, err := baseline.Open(baseline.Dir(a.opts.StateDir), baseline.Options{
		Mode: baselineMode(bs.Mode), FirstLearn: bs.FirstLearn, Log: a.log,
	})
	if errors.Is(err, baseline.ErrCorrupt) {
		a.log.Error("the baseline file was corrupt: moved aside, starting an empty baseline", "err", err)
	} else if err != nil {
		a.log.Error("no behavioural baseline: it cannot be kept", "err", err)
		return
	}
	a.base = st
	a.ids = pkgid.New(a.procs, pkgid.Options{NoExeHash: true})
	a.exeHash = pkgid.NewExeHasher(pkgid.ExeHashOptions{})
}

// applyBaseline puts the baseline settings of a reloaded policy set in
// force (an agent started with baseline = "off" keeps none until restart).
func (a *Agent) applyBaseline(set *policy.Set) {
	bs := set.Baseline()
	a.baseOff.Store(bs.Mode == policy.BaselineOff)
	if a.base != nil && bs.Mode != policy.BaselineOff {
		a.base.SetMode(baselineMode(bs.Mode))
	}
}

func baselineMode(m policy.BaselineMode) baseline.Mode {
	if m == policy.BaselineEnforce {
		return baseline.ModeEnforce
	}
	return baseline.ModeLearn
}

// baselineOn reports whether requests are observed at all.
func (a *Agent) baselineOn() bool { return a.base != nil && !a.baseOff.Load() }

// baselineChecked reports whether a policy of set that applies to t
// weighs baseline deviations (unseen_destinations or rug_pull not off).
func baselineChecked(set *policy.Set, t policy.Target) bool {
	on := func(l policy.Level) bool { return l != "" && l != policy.LevelOff }
	for _, p := range set.Policies {
		if (on(p.Rules.UnseenDestinations) || on(p.Rules.RugPull)) && p.Applies(t) {
			return true
		}
	}
	return false
}

// baselineOf records (complete messages and requests) or checks (early:
// in progress) a request to dest with recipients in domains (none but
// for mail) of the process of ctx against the baseline of what it
// runs, and returns the deviation, nil when none.
func (a *Agent) baselineOf(set *policy.Set, ctx judge.Context, dest string, domains []string, early bool, now time.Time) *judge.Baseline {
	if !a.baselineOn() || dest == "" {
		return nil
	}
	id := a.identityOf(set, ctx)
	if id == nil {
		return nil
	}
	key := id.key
	var r baseline.Result
	switch {
	case key.Hash == "" && id.exeFile != "":
		sum, err := a.exeHash.Sum(id.exeFile, a.exeHashWait(), a.observeLater(key, dest, domains, early, now))
		if err == nil {
			id.key.Hash, id.exeFile = sum, ""
			key.Hash = sum
			r = a.see(key, dest, domains, early, now)
			break
		}
		if !errors.Is(err, pkgid.ErrHashPending) {
			a.log.Debug("executable not hashed: judged by path", "pid", ctx.PID, "exe", key.Package, "err", err)
		}
		r = a.base.CheckUnhashed(key.Package, dest, domains, now)
	default:
		r = a.see(key, dest, domains, early, now)
	}
	return a.deviation(r)
}

// warmBaseline looks up, at a held write that completed nothing to
// judge, what the process runs and starts hashing its executable: the
// process is alive now, and its next requests may go unheld (an HTTP/2
// client's HEADERS after its held preface) and be judged after it
// exited.
func (a *Agent) warmBaseline(ev *probe.Event) {
	if !a.baselineOn() {
		return
	}
	f := a.facts.of(a.procs, ev)
	id := a.identityOf(a.loaded.Load().Set, a.context(f, ""))
	if id != nil && id.key.Hash == "" && id.exeFile != "" {
		if sum, err := a.exeHash.Sum(id.exeFile, a.exeHashWait(), nil); err == nil {
			id.key.Hash, id.exeFile = sum, ""
		}
	}
}

func (a *Agent) see(key baseline.Key, dest string, domains []string, early bool, now time.Time) baseline.Result {
	if early {
		return a.base.Check(key, dest, domains, now)
	}
	return a.base.Observe(key, dest, domains, now)
}

// deviation turns a result into what the judge weighs (nil: none).
func (a *Agent) deviation(r baseline.Result) *judge.Baseline {
	if r.FirstChange && !r.Violation() {
		a.log.Info("a package changed since its baseline was learned, and keeps to it", "package", r.Key.String(), "previous", r.Previous.String())
	}
	if !r.Violation() {
		return nil
	}
	b := &judge.Baseline{Package: r.Key.String(), RugPull: r.Verdict == baseline.RugPull}
	if r.HashPending {
		b.Package += " (hash pending)"
	}
	if b.RugPull {
		b.Previous = r.Previous.String()
	}
	if r.UnseenDest != "" {
		b.Unseen = append(b.Unseen, r.UnseenDest)
	}
	b.Unseen = append(b.Unseen, r.UnseenDomains...)
	return b
}

// observeLater returns what observes a complete request once its
// executable's hash is known (nil for a request in progress: it is
// observed when complete). It runs on the hasher's goroutine; the store
// locks itself.
func (a *Agent) observeLater(key baseline.Key, dest string, domains []string, early bool, now time.Time) func(string, error) {
	if early {
		return nil
	}
	domains = slices.Clone(domains)
	return func(sum string, err error) {
		if err != nil {
			return
		}
		key.Hash = sum
		if b := a.deviation(a.base.Observe(key, dest, domains, now)); b != nil {
			a.log.Warn("a request left the baseline, found once its executable was hashed (it had gone by path)",
				"package", b.Package, "previous", b.Previous, "rug_pull", b.RugPull, "unseen", b.Unseen)
		}
	}
}

// procIdent is what a process runs, for the baseline: its key (the
// executable's without its hash until exeFile, the agent's path to it
// through /proc, has been hashed). Looked up once per process and kept
// with its facts: a request judged after the process exited is still
// known.
type procIdent struct {
	key     baseline.Key
	exeFile string
}

// identityOf returns what the process of ctx runs, for the baseline; nil
// when it is not observed: no MCP server and in the scope of no policy
// that checks the baseline, or not identified.
func (a *Agent) identityOf(set *policy.Set, ctx judge.Context) *procIdent {
	if s := a.mcpServer(ctx); s != nil {
		if s.PackageErr != nil {
			return nil
		}
		key := baseline.KeyOf(s.Package)
		key.MCP = true
		return &procIdent{key: key}
	}
	if !baselineChecked(set, ctx.ScopeTarget()) {
		return nil
	}
	if f, ok := a.facts[ctx.PID]; ok && f.ident != nil && f.start == ctx.StartTime {
		return f.ident
	}
	id, err := a.ids.Lookup(ctx.PID)
	if err != nil {
		a.log.Debug("process not identified: no baseline", "pid", ctx.PID, "err", err)
		return nil
	}
	pi := &procIdent{key: baseline.KeyOf(id)}
	if id.Kind == pkgid.KindExe {
		pi.key.Hash, pi.exeFile = "", a.procs.Path(ctx.PID, "exe")
	}
	a.facts.setIdent(ctx.PID, pi)
	return pi
}

// mcpServer returns the MCP server of ctx's process (or of an ancestor);
// ctx.MCP says whether there is one (factsOf looked).
func (a *Agent) mcpServer(ctx judge.Context) *pipeline.MCPServer {
	if ctx.MCP == nil {
		return nil
	}
	return a.pipe.MCP(ctx.PID)
}

// smtpDest is where an SMTP session of pid goes, for the baseline: its
// peer (SMTP names no server), "" when it cannot be told.
func smtpDest(pid uint32) string {
	peers, err := act.Peers(pid)
	if err != nil {
		return ""
	}
	if p := choosePeer("", peers); p.IsValid() {
		return p.String()
	}
	return ""
}

// recipientDomains are the distinct domains of a message's recipients.
func recipientDomains(m *mail.Message) []string {
	var out []string
	for _, r := range m.Recipients() {
		if d := r.Domain(); d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// requestMessage is what the judge weighs of a request that is no mail:
// nothing but where it goes (the baseline's findings).
func requestMessage(endpoint string) *mail.Message {
	return &mail.Message{Provider: "request", Endpoint: endpoint}
}

// closeBaseline writes what the baseline learned.
func (a *Agent) closeBaseline() {
	if a.base == nil {
		return
	}
	a.exeHash.Close()
	if err := a.base.Close(); err != nil {
		a.log.Error("cannot save the behavioural baseline", "err", err)
	}
}
