package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
)

// Metrics the way operators collect them: the node exporter's textfile
// collector reads *.prom files of a directory (Debian's
// prometheus-node-exporter: /var/lib/prometheus/node-exporter). The agent
// opens no listener for them: it writes the file (docs/metrics.md).

// runExtras are the options of "aarsm run" kept out of main.go.
type runExtras struct {
	metricsFile     *string
	metricsInterval *time.Duration
	statusGroup     *string
}

func addRunExtras(fs *flag.FlagSet) runExtras {
	return runExtras{
		metricsFile: fs.String("metrics-textfile", "", "write the counters of \"aarsm status\" in the Prometheus text format to this file "+
			"(atomically, mode 0644), every --metrics-interval and at exit, for the node exporter's textfile collector "+
			"(Debian: /var/lib/prometheus/node-exporter/aarsm.prom); empty: none"),
		metricsInterval: fs.Duration("metrics-interval", 15*time.Second, "how often --metrics-textfile is written"),
		statusGroup:     fs.String("status-group", "", "a group (name or id) whose members may also read the status socket (mode 0660 then); empty: root only"),
	}
}

// listenStatus opens the status socket, root-only or also for the group.
func listenStatus(path, group string, report func() status.Report) (*status.Server, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	return status.ListenWith(path, status.Options{Group: gid}, report)
}

func lookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil && id >= 0 {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("status group: %w", err)
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("status group %s: gid %q: %w", name, g.Gid, err)
	}
	return id, nil
}

// metricsWriter writes the report to a textfile until stopped.
type metricsWriter struct {
	path     string
	interval time.Duration
	report   func() status.Report
	log      *slog.Logger
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	failing  bool // the last write failed (logged once until one works)
}

// startMetrics starts writing path every interval; nil when path is "".
// Stop writes it one last time.
func startMetrics(path string, interval time.Duration, report func() status.Report, log *slog.Logger) *metricsWriter {
	if path == "" {
		return nil
	}
	m := &metricsWriter{path: path, interval: max(interval, time.Second), report: report, log: log,
		stop: make(chan struct{}), done: make(chan struct{})}
	m.write()
	go m.run()
	return m
}

func (m *metricsWriter) run() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.write()
		}
	}
}

// Stop ends the writes, after a last one with the counters at exit.
func (m *metricsWriter) Stop() {
	if m == nil {
		return
	}
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		m.write()
	})
}

func (m *metricsWriter) write() {
	err := writeMetricsFile(m.path, m.report())
	switch {
	case err != nil && !m.failing:
		m.log.Warn("cannot write the metrics file (tried again every interval)", "path", m.path, "err", err)
		m.failing = true
	case err == nil && m.failing:
		m.log.Info("metrics file written again", "path", m.path)
		m.failing = false
	}
}

// writeMetricsFile replaces path with the report's exposition: a
// temporary file in the same directory (a name the textfile collector
// does not read: it reads *.prom only), mode 0644, renamed into place.
func writeMetricsFile(path string, r status.Report) error {
	var buf bytes.Buffer
	if err := status.WritePrometheus(&buf, r); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("metrics file: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(buf.Bytes())
	if werr == nil {
		werr = f.Chmod(0o644)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, werr)
	}
	return nil
}
