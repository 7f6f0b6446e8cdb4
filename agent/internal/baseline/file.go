package baseline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The file, <state dir>/baseline/baseline.json: one JSON object, written
// by the agent (observations) and by "aarsm baseline" (forget, learn),
// always whole (a temporary file renamed into place).
//
//	{
//	  "format": "aarsm-baseline",
//	  "version": 2,
//	  "updated": "2025-09-25T10:00:00Z",
//	  "mode": "enforce",                      // the agent's mode when it last wrote
//	  "learn_until": "...",                   // optional: every package learns until then
//	  "packages": [{
//	    "package": "npm:postmark-mcp",        // kind:name, or exe:/path, script:/path
//	    "mcp": true,                          // optional: seen as an MCP server's package
//	    "first_seen": "...", "last_used": "...",
//	    "learn_until": "...",                 // optional: this package learns until then
//	    "builds": [{
//	      "version": "1.0.15", "hash": "sha256:...",
//	      "first_seen": "...", "last_seen": "...",
//	      "destinations": [{"value": "api.postmarkapp.com:443", "given": ["api.postmarkapp.com"],
//	                        "first_seen": "...", "last_seen": "...", "count": 12}],
//	      "domains": [{"value": "company.com", "first_seen": "...", "last_seen": "...", "count": 3}]
//	    }]
//	  }]
//	}

// FileFormat and FileVersion identify the file. Version 1 (agents that
// observed MCP servers' mail only) is read too: every package of such a
// file is an MCP server's (Package.MCP); it is written back as version 2.
const (
	FileFormat   = "aarsm-baseline"
	FileVersion  = 2
	fileVersion1 = 1
)

// MaxFileBytes bounds the file: a bigger one is corrupt. The store's
// default bounds (DefaultMaxEntries entries of at most ~1.3 KiB of JSON
// each with their forms) keep it far below.
const MaxFileBytes = 64 << 20

// ErrCorrupt is wrapped by the errors of a file that cannot be decoded or
// does not follow the format.
var ErrCorrupt = errors.New("baseline file corrupt")

// File is the baseline file's contents. Times are UTC.
type File struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Updated time.Time `json:"updated,omitzero"`
	// Mode is the agent's mode (learn, enforce) when it last wrote the
	// file; "" when no agent wrote it. For people: the agent's mode comes
	// from its configuration, never from here.
	Mode string `json:"mode,omitempty"`
	// LearnUntil: every package learns until then ("aarsm baseline learn"
	// without a package).
	LearnUntil time.Time `json:"learn_until,omitzero"`
	Packages   []Package `json:"packages"`
}

// Package is what one package (whatever its version or content) has been
// seen to do, build by build.
type Package struct {
	// Name is the kind and name: "npm:postmark-mcp", "python:NAME",
	// "exe:/usr/bin/curl" or "script:/srv/tool.js" (Key.Package).
	Name      string    `json:"package"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	// LearnUntil: the package learns until then (set by "aarsm baseline
	// learn", or at its first sight by an enforcing store:
	// Options.FirstLearn).
	LearnUntil time.Time `json:"learn_until,omitzero"`
	// FirstLearnOnly: LearnUntil is the window of its first sight, which
	// trusts the build first seen and no other.
	FirstLearnOnly bool `json:"first_learn_only,omitempty"`
	// MCP: the package was seen as an MCP server's (the process, or an
	// ancestor, spoke MCP on its stdio); else it is a program of a
	// process in a policy's scope.
	MCP    bool    `json:"mcp,omitempty"`
	Builds []Build `json:"builds"`
}

// Package kinds, as "aarsm baseline show" prints them (Package.Kind).
const (
	KindMCP     = "mcp"     // an MCP server's package
	KindPackage = "package" // an npm package or Python distribution
	KindScript  = "script"  // a script outside any package
	KindExe     = "exe"     // an executable, by path and content hash
)

// Kind returns the package's kind: KindMCP for an MCP server's, else by
// its name: KindPackage (npm:, python:), KindScript or KindExe.
func (p Package) Kind() string {
	if p.MCP {
		return KindMCP
	}
	switch prefix, _, _, _ := splitKind(p.Name); prefix {
	case "npm:", "python:":
		return KindPackage
	case "script:":
		return KindScript
	}
	return KindExe
}

// Build is one version and content hash of a package and what it was
// seen to do.
type Build struct {
	Version      string    `json:"version,omitempty"`
	Hash         string    `json:"hash,omitempty"`
	FirstSeen    time.Time `json:"first_seen,omitzero"`
	LastSeen     time.Time `json:"last_seen,omitzero"`
	Destinations []Entry   `json:"destinations"`
	Domains      []Entry   `json:"domains"`
}

// Entry is one destination (host:port, normalised: NormalizeDest) or
// recipient domain (NormalizeDomain).
type Entry struct {
	Value string `json:"value"`
	// Given are the forms the destination was given in (the SNI or Host
	// header as sent) when they differ from Value; at most 4.
	Given     []string  `json:"given,omitempty"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	Count     uint64    `json:"count"`
}

// NewFile returns an empty file.
func NewFile() *File {
	return &File{Format: FileFormat, Version: FileVersion, Packages: []Package{}}
}

// Decode parses and checks a baseline file. Every error wraps ErrCorrupt:
// not JSON, another format or version, a package name without a known
// kind, a value that is not in its normal form, a duplicate, a string or
// list over its bound, a time outside years 1..9999. Times are returned
// in UTC, empty lists as empty (not nil) slices. A file Decode accepts is
// written back by Encode as it was read (a version 1 file as version 2:
// FileVersion).
func Decode(data []byte) (*File, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrCorrupt, len(data), MaxFileBytes)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrCorrupt)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return &f, nil
}

// Encode returns the file as written: indented JSON and a newline.
func (f *File) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encode baseline: %w", err)
	}
	return buf.Bytes(), nil
}

// check verifies f against the format and normalises it in place (UTC
// times, empty lists).
func (f *File) check() error {
	if f.Format != FileFormat {
		return fmt.Errorf("format %q, not %q", cut(f.Format, 64), FileFormat)
	}
	v1 := f.Version == fileVersion1
	if f.Version != FileVersion && !v1 {
		return fmt.Errorf("format version %d not supported (this agent reads versions %d and %d)", f.Version, fileVersion1, FileVersion)
	}
	f.Version = FileVersion
	if f.Mode != "" {
		if _, err := ParseMode(f.Mode); err != nil {
			return err
		}
	}
	if err := times(&f.Updated, &f.LearnUntil); err != nil {
		return err
	}
	if f.Packages == nil {
		f.Packages = []Package{}
	}
	names := make(map[string]bool, len(f.Packages))
	for i := range f.Packages {
		p := &f.Packages[i]
		if err := checkPackageName(p.Name); err != nil {
			return err
		}
		if names[p.Name] {
			return fmt.Errorf("package %q listed twice", cut(p.Name, 256))
		}
		names[p.Name] = true
		if err := p.check(); err != nil {
			return fmt.Errorf("package %q: %w", cut(p.Name, 256), err)
		}
		if v1 {
			p.MCP = true // version 1 kept MCP servers' packages only
		}
	}
	return nil
}

func (p *Package) check() error {
	if err := times(&p.FirstSeen, &p.LastUsed, &p.LearnUntil); err != nil {
		return err
	}
	if p.Builds == nil {
		p.Builds = []Build{}
	}
	type bk struct{ v, h string }
	seen := make(map[bk]bool, len(p.Builds))
	for i := range p.Builds {
		b := &p.Builds[i]
		if err := checkText("version", b.Version, maxVersionLen); err != nil {
			return err
		}
		if err := checkText("hash", b.Hash, maxHashLen); err != nil {
			return err
		}
		if seen[bk{b.Version, b.Hash}] {
			return fmt.Errorf("build %q %q listed twice", b.Version, b.Hash)
		}
		seen[bk{b.Version, b.Hash}] = true
		if err := times(&b.FirstSeen, &b.LastSeen); err != nil {
			return err
		}
		var err error
		if b.Destinations, err = checkEntries(b.Destinations, NormalizeDest, true); err != nil {
			return fmt.Errorf("destinations: %w", err)
		}
		if b.Domains, err = checkEntries(b.Domains, NormalizeDomain, false); err != nil {
			return fmt.Errorf("domains: %w", err)
		}
	}
	return nil
}

func checkEntries(es []Entry, norm func(string) (string, bool), forms bool) ([]Entry, error) {
	if es == nil {
		return []Entry{}, nil
	}
	seen := make(map[string]bool, len(es))
	for i := range es {
		e := &es[i]
		if n, ok := norm(e.Value); !ok || n != e.Value {
			return nil, fmt.Errorf("%q is not in normal form", cut(e.Value, 256))
		}
		if seen[e.Value] {
			return nil, fmt.Errorf("%q listed twice", e.Value)
		}
		seen[e.Value] = true
		if len(e.Given) == 0 {
			e.Given = nil
		}
		if len(e.Given) > 0 && !forms {
			return nil, fmt.Errorf("%q: forms given for a domain", e.Value)
		}
		if len(e.Given) > maxGiven {
			return nil, fmt.Errorf("%q: %d forms given, at most %d", e.Value, len(e.Given), maxGiven)
		}
		for _, g := range e.Given {
			if len(g) > maxGivenLen || !utf8.ValidString(g) {
				return nil, fmt.Errorf("%q: a form given over %d bytes or not UTF-8", e.Value, maxGivenLen)
			}
		}
		if err := times(&e.FirstSeen, &e.LastSeen); err != nil {
			return nil, err
		}
	}
	return es, nil
}

// splitKind returns the kind prefix of a package name ("npm:", as
// pkgid.Kind's String and a colon) and the rest; path says the rest is a
// path (exe:, script:); ok is false without a known kind.
func splitKind(name string) (prefix, rest string, path, ok bool) {
	prefix, rest, found := strings.Cut(name, ":")
	if !found {
		return "", name, false, false
	}
	switch prefix {
	case "npm", "python":
		return prefix + ":", rest, false, true
	case "exe", "script":
		return prefix + ":", rest, true, true
	}
	return "", name, false, false
}

func checkPackageName(name string) error {
	_, rest, _, ok := splitKind(name)
	switch {
	case !ok:
		return fmt.Errorf("package %q has no known kind (npm:, python:, exe:, script:)", cut(name, 256))
	case rest == "":
		return fmt.Errorf("package %q has no name", name)
	case len(name) > maxPackageLen || !utf8.ValidString(name):
		return fmt.Errorf("package name over %d bytes or not UTF-8", maxPackageLen)
	}
	return nil
}

func checkText(what, s string, max int) error {
	if len(s) > max || !utf8.ValidString(s) {
		return fmt.Errorf("%s over %d bytes or not UTF-8", what, max)
	}
	return nil
}

// times puts each time in UTC and checks it can be written back (years
// 1..9999; the zero time stays zero).
func times(ts ...*time.Time) error {
	for _, t := range ts {
		if t.IsZero() {
			*t = time.Time{}
			continue
		}
		u := t.UTC()
		if y := u.Year(); y < 1 || y > 9999 {
			return fmt.Errorf("time %s out of range", u.Format(time.RFC3339))
		}
		*t = u
	}
	return nil
}
