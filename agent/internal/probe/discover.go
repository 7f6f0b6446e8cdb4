package probe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// Values of known_files: 0 is written by the kernel on first sight.
const fileExamined uint8 = 1

// scanLibraries probes every libssl.so* (OpenSSL) and libgnutls.so*
// (GnuTLS) under the library directories.
func (s *Sensor) scanLibraries() {
	for _, root := range s.opts.LibraryDirs {
		base := strings.Count(filepath.Clean(root), "/")
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil //nolint:nilerr // unreadable or vanished directories are passed over, the walk goes on
			}
			if d.IsDir() {
				if strings.Count(path, "/")-base >= 4 {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasPrefix(d.Name(), "libssl.so") && !strings.HasPrefix(d.Name(), "libgnutls.so") {
				return nil
			}
			// Follows symbolic links; regular files only. A file that
			// cannot be stat'ed is passed over.
			if id, st, err := proc.StatID(path); err == nil && st.Mode&0o170000 == 0o100000 {
				s.examine(path, id)
			}
			return nil
		})
	}
}

// scanProcesses probes what running processes map.
func (s *Sensor) scanProcesses() {
	pids, err := s.opts.Proc.PIDs()
	if err != nil {
		s.log.Warn("cannot list processes; only new ones will be probed", "err", err)
		return
	}
	self := uint32(os.Getpid())
	for _, pid := range pids {
		if pid != self {
			s.examineProcess(pid, proc.FileID{})
		}
	}
}

// discover serves the kernel's reports of unknown executables and mappings.
func (s *Sensor) discover() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case d := <-s.queue:
			if d.port != 0 {
				s.checkConnect(d.pid, d.port)
				continue
			}
			if !s.examineProcess(d.pid, d.file) {
				// The mapping was not visible (yet), or the process is gone:
				// let the kernel report the file again next time.
				s.retry(d)
			}
			if d.held {
				s.releaseFileHold(d)
			}
		}
	}
}

// stopDiscovery ends the discovery goroutine (once it is done with the
// file it is examining).
func (s *Sensor) stopDiscovery() {
	s.stopDiscover.Do(func() {
		close(s.done)
		s.wg.Wait()
	})
}

// drainDiscoveries examines, after stopDiscovery, the files still queued,
// and resumes the processes held for them.
func (s *Sensor) drainDiscoveries() {
	for {
		select {
		case d := <-s.queue:
			if d.port != 0 {
				continue
			}
			s.examineProcess(d.pid, d.file)
			if d.held {
				s.releaseFileHold(d)
			}
		default:
			return
		}
	}
}

// releaseFileHold resumes a process the kernel stopped until the file it
// runs or maps was examined (and probed): its TLS writes are seen now.
func (s *Sensor) releaseFileHold(d discovery) {
	if _, err := s.Release(d.pid, d.tid); err != nil {
		s.log.Warn("cannot resume process held for discovery", "pid", d.pid, "err", err)
	}
}

// retry looks again a little later for a file the kernel reported but
// that was not found in the process's mappings.
func (s *Sensor) retry(d discovery) {
	for _, wait := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 25 * time.Millisecond} {
		select {
		case <-s.done:
			return
		case <-time.After(wait):
		}
		if s.examineProcess(d.pid, d.file) {
			return
		}
		if _, err := os.Stat(s.opts.Proc.Path(d.pid, "maps")); err != nil {
			break
		}
	}
	s.forget(d.file)
}

// forget lets the kernel report file again.
func (s *Sensor) forget(file proc.FileID) {
	if file.Ino == 0 {
		return
	}
	key := ssl.SensorInodeKey{Ino: file.Ino, Dev: file.Dev}
	if err := s.objs.KnownFiles.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		s.log.Debug("forget file", "file", file, "err", err)
	}
}

// examineProcess examines the executable and every executable mapping of
// pid. It reports whether want (if set) was among them.
func (s *Sensor) examineProcess(pid uint32, want proc.FileID) bool {
	found, _ := s.examineProcessFiles(pid, want, &processFiles{})
	return found
}

// examineProcessFiles is examineProcess, adding what it found of each file
// to files; alive: the process's mappings could be read. A process that
// runs or maps a TLS stack the sensor cannot probe is reported
// (noteUnmonitored).
func (s *Sensor) examineProcessFiles(pid uint32, want proc.FileID, files *processFiles) (found, alive bool) {
	defer func() {
		for _, t := range files.stacks {
			s.noteUnmonitored(pid, t.Stack, t.StackWhy+": "+t.Path)
		}
	}()
	if id, _, err := proc.StatID(s.opts.Proc.Path(pid, "exe")); err == nil {
		path := ""
		if exe, err := s.opts.Proc.Exe(pid); err == nil {
			path = s.openPath(pid, exe, id)
		}
		if path == "" {
			// Deleted, or under a directory the agent may not search
			// (a home directory of mode 0700 without CAP_DAC_READ_SEARCH):
			// the link opens the file itself.
			path = s.opts.Proc.Path(pid, "exe")
		}
		if s.examine(path, id) {
			if id == want {
				found = true
			}
			if t, ok := s.target(id); ok {
				files.add(t)
			}
		}
	}
	maps, err := s.opts.Proc.Maps(pid, false)
	if err != nil {
		return found, false
	}
	seen := map[proc.FileID]bool{}
	for _, m := range maps {
		id := proc.FileID{Dev: m.KernelDev(), Ino: m.Inode}
		if id == want {
			found = true
		}
		if seen[id] || !(m.Exec || id == want) {
			continue
		}
		seen[id] = true
		path := s.openPath(pid, m.Path, id)
		if m.Deleted || path == "" {
			path = s.opts.Proc.MapFile(pid, m)
		}
		if !s.examine(path, id) {
			if id == want {
				found = false // could not be opened (yet): look again
			}
		} else if t, ok := s.target(id); ok {
			files.add(t)
		}
	}
	return found, true
}

// openPath returns a path that reaches the file id that pid knows as path:
// the host's own path when it is the same file, else the path through the
// process's root (another mount namespace), else "".
func (s *Sensor) openPath(pid uint32, path string, id proc.FileID) string {
	if got, _, err := proc.StatID(path); err == nil && got == id {
		return path
	}
	inRoot := s.opts.Proc.RootPath(pid, path)
	if got, _, err := proc.StatID(inRoot); err == nil && got == id {
		return inRoot
	}
	return ""
}

// examine looks at a file once and probes it if it has TLS functions. It
// reports false when the file could not be opened through path (a process
// in the middle of an exec, a path it may not search): then nothing is
// recorded, and the kernel reports the file again when it is next run or
// mapped.
func (s *Sensor) examine(path string, id proc.FileID) bool {
	if path == "" {
		return false
	}
	// Through stacked overlays (a container root) the kernel may know the
	// mapped file by another device than stat's, while uprobes attach to
	// the same inode: probed under both identities, every call would be
	// reported (and held, and judged) twice.
	kid := id
	if mid, err := proc.MappedID(path); err == nil {
		kid = mid
	}
	s.mu.Lock()
	t0, done := s.files[id]
	if !done && kid != id {
		if t0, done = s.files[kid]; done {
			s.files[id] = t0
		}
	}
	if !done {
		t0 = &Target{ID: id, Path: path}
		s.files[id] = t0
		if kid != id {
			s.files[kid] = t0
		}
	}
	s.mu.Unlock()
	if done {
		if kid != id {
			s.markExamined(id)
		}
		return true
	}
	if s.opts.beforeExamine != nil {
		s.opts.beforeExamine(path)
	}
	info, err := readELF(path)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		s.mu.Lock()
		delete(s.files, id)
		delete(s.files, kid)
		s.mu.Unlock()
		s.forget(id)
		s.forget(kid)
		s.log.Debug("cannot open file; will look again", "path", path, "file", id, "err", err)
		return false
	}
	// Marked examined only once its probes are attached: until then the
	// kernel holds every process in scope that runs or maps it.
	defer func() {
		s.markExamined(id)
		if kid != id {
			s.markExamined(kid)
		}
	}()

	t := Target{ID: id, Path: path}
	if id == s.selfExe || kid == s.selfExe {
		info.gotls, info.goErr = nil, nil
	}
	switch {
	case errors.Is(err, errNotELF):
		return true
	case err != nil:
		t.Err = err
		s.log.Info("cannot examine file; skipped", "path", path, "file", id, "err", err)
	case info.writes() || info.gotls != nil:
		var links []link.Link
		links, t.Symbols, t.Err = s.attach(path, info)
		if t.Err != nil {
			s.log.Warn("cannot probe TLS library; skipped", "path", path, "file", id, "err", t.Err)
		} else {
			s.log.Info("probing TLS library", "path", path, "file", id, "functions", strings.Join(t.Symbols, ","), "build", info.build)
		}
		s.mu.Lock()
		if s.flinks != nil && t.Err == nil {
			s.flinks[id] = links
			s.targets++
		} else {
			_ = closeLinks(links)
		}
		s.mu.Unlock()
	case info.goErr != nil:
		// Logged once: the file is examined once. Target.Err says why
		// its TLS writes go unseen.
		t.Err = info.goErr
		s.log.Warn("cannot probe Go crypto/tls; skipped", "path", path, "file", id, "err", t.Err)
	case info.unprobed != nil:
		t.Err = info.unprobed
		s.log.Warn("cannot probe TLS library; skipped", "path", path, "file", id, "err", t.Err)
	case info.stack != "":
		t.Err = errors.New(info.stackWhy)
		s.log.Warn("cannot probe TLS library; skipped", "path", path, "file", id, "err", t.Err)
	}
	if !t.Probed() {
		t.Stack, t.StackWhy = info.stack, info.stackWhy
	}
	s.mu.Lock()
	*t0 = t
	s.mu.Unlock()
	if s.opts.OnAttach != nil {
		s.opts.OnAttach(t)
	}
	return true
}

// markExamined tells the kernel that file id needs no more examination.
func (s *Sensor) markExamined(id proc.FileID) {
	key := ssl.SensorInodeKey{Ino: id.Ino, Dev: id.Dev}
	if err := s.objs.KnownFiles.Put(&key, fileExamined); err != nil {
		s.log.Debug("mark file examined", "file", id, "err", err)
	}
}

func readELF(path string) (elfInfo, error) {
	// path is a libssl.so* under a library directory, /proc/PID/exe, a
	// /proc/PID/map_files link, or a mapped file's path (on the host or
	// under /proc/PID/root) whose inode openPath checked: opened read-only
	// to read its ELF headers and symbols.
	f, err := os.Open(path)
	if err != nil {
		return elfInfo{}, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	return examineELF(f)
}

// attach probes the TLS functions of the file at path.
func (s *Sensor) attach(path string, info elfInfo) ([]link.Link, []string, error) {
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open executable: %w", err)
	}
	type probe struct {
		sym  string
		prog *ebpf.Program
		ret  bool
	}
	probes := []probe{
		{symWrite, s.objs.SslWrite, false},
		{symWriteEx, s.objs.SslWriteEx, false},
		{symGetError, s.objs.SslGetError, false},
		{symFree, s.objs.SslFree, false},
		// GnuTLS: gnutls_record_send(session, data, size_t size) is
		// SSL_write_ex's program (rdi, rsi, rdx; a size_t length, 0
		// skipped), the session standing for the SSL*, held and judged
		// the same way; gnutls_deinit(session) ends the connection as
		// SSL_free does.
		{symGnuSend, s.objs.SslWriteEx, false},
		{symGnuSend2, s.objs.SslWriteEx, false}, // instead of gnutls_record_send (gnutls.go)
		{symGnuDeinit, s.objs.SslFree, false},
	}
	if s.opts.Reads {
		probes = append(probes,
			probe{symRead, s.objs.SslRead, false},
			probe{symRead, s.objs.SslReadRet, true},
			probe{symReadEx, s.objs.SslReadEx, false},
			probe{symReadEx, s.objs.SslReadRet, true},
			// gnutls_record_recv(session, data, size) returns an ssize_t:
			// SSL_read's programs (no readbytes pointer; the uretprobe
			// takes the low 32 bits, and a record is at most 16 KiB, so
			// a count is never cut; negative GNUTLS_E_* codes stay
			// negative and are skipped).
			probe{symGnuRecv, s.objs.SslRead, false},
			probe{symGnuRecv, s.objs.SslReadRet, true})
	}
	var links []link.Link
	var attached []string
	if info.gotls != nil {
		links, attached, err = s.attachGo(ex, info.gotls)
		if err != nil {
			return nil, nil, err
		}
	}
	// The hold guards, after each write probe (see placeWrite).
	guarded := map[uint64]bool{}
	for _, sym := range writeSymbols {
		for _, off := range info.places[sym].guards {
			if !s.opts.WriteGuard || guarded[off] {
				continue
			}
			guarded[off] = true
			l, err := ex.Uprobe(sym, s.objs.SslWriteGuard, &link.UprobeOptions{Address: off})
			if err != nil {
				_ = closeLinks(links)
				return nil, nil, fmt.Errorf("attach hold guard of %s at %#x: %w", sym, off, err)
			}
			links = append(links, l)
		}
	}
	for _, p := range probes {
		off := info.symbols[p.sym]
		if off == 0 {
			continue
		}
		if w, ok := info.places[p.sym]; ok {
			off = w.site // the first emulated instruction, arguments intact
		}
		// The offset is given, so that the library does not read the
		// whole symbol table again (seconds for node's).
		opts := &link.UprobeOptions{Address: off}
		var l link.Link
		if p.ret {
			l, err = ex.Uretprobe(p.sym, p.prog, opts)
		} else {
			l, err = ex.Uprobe(p.sym, p.prog, opts)
		}
		if err != nil {
			_ = closeLinks(links)
			return nil, nil, fmt.Errorf("attach %s: %w", p.sym, err)
		}
		links = append(links, l)
		if !p.ret {
			attached = append(attached, strings.TrimSpace(info.lib+" "+p.sym))
		}
	}
	if len(info.rustls) > 0 {
		for _, off := range info.rustls {
			l, err := ex.Uprobe(symRustls, s.objs.RustlsEncrypt, &link.UprobeOptions{Address: off})
			if err != nil {
				_ = closeLinks(links)
				return nil, nil, fmt.Errorf("attach %s at %#x: %w", symRustls, off, err)
			}
			links = append(links, l)
		}
		attached = append(attached, symRustls)
	}
	return links, attached, nil
}
