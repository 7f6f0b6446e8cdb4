package baseline

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrNotFound is returned when a selector names no package of the file.
var ErrNotFound = errors.New("no such package in the baseline")

// Selector names a package, or one version of it, as people write it:
//
//	npm:postmark-mcp            npm:postmark-mcp@1.0.15   npm:@scope/name@2.0.0
//	python:NAME[@VERSION]       exe:/usr/bin/curl         script:/srv/tool.js
//	postmark-mcp[@1.0.15]       /usr/bin/curl             (a name or path alone: the one package it names)
type Selector struct {
	Package string // "npm:postmark-mcp"; without a kind when Bare
	Version string
	// HasVersion: a version was given (only npm and Python packages, or
	// bare names, have one).
	HasVersion bool
	// Bare: no kind was given: Package is a name or a path, resolved
	// against a file (Resolve).
	Bare bool
}

// ParseSelector parses a selector (see Selector).
func ParseSelector(s string) (Selector, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Selector{}, errors.New("empty package")
	}
	var sel Selector
	prefix, rest, path, ok := splitKind(s)
	switch {
	case ok:
		sel.Package = s
	case strings.HasPrefix(s, "/"):
		sel.Bare, sel.Package, rest, path = true, s, s, true
	case strings.Contains(s, ":"):
		k, _, _ := strings.Cut(s, ":")
		return Selector{}, fmt.Errorf("%q: unknown kind %q (npm:, python:, exe:, script:)", s, k)
	default:
		sel.Bare, sel.Package, rest = true, s, s
	}
	if !path {
		if i := strings.LastIndexByte(rest, '@'); i > 0 {
			sel.Version, sel.HasVersion = rest[i+1:], true
			rest = rest[:i]
			if sel.Version == "" {
				return Selector{}, fmt.Errorf("%q: empty version after @", s)
			}
			sel.Package = prefix + rest
		}
	}
	if rest == "" {
		return Selector{}, fmt.Errorf("%q: no name after the kind", s)
	}
	if !sel.Bare {
		if err := checkPackageName(sel.Package); err != nil {
			return Selector{}, err
		}
	}
	return sel, nil
}

// String returns the selector as written.
func (s Selector) String() string {
	if s.HasVersion {
		return s.Package + "@" + s.Version
	}
	return s.Package
}

// Resolve returns the name of the package sel names in f: its own name
// when it has a kind (whether f has it or not); for a bare name or path,
// the one package of f whose name or path it is (ErrNotFound when none,
// an error listing them when several).
func (f *File) Resolve(sel Selector) (string, error) {
	if !sel.Bare {
		return sel.Package, nil
	}
	var found []string
	for _, p := range f.Packages {
		if _, rest, _, _ := splitKind(p.Name); rest == sel.Package {
			found = append(found, p.Name)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s", ErrNotFound, sel.Package)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%q names %d packages: %s; give its kind", sel.Package, len(found), strings.Join(found, ", "))
}

// Find returns the index of the package named name, -1 when f has none.
func (f *File) Find(name string) int {
	return slices.IndexFunc(f.Packages, func(p Package) bool { return p.Name == name })
}

// Select returns a copy of f with only the package sel names (and with a
// version, only its builds of that version); ErrNotFound when there is
// none.
func (f *File) Select(sel Selector) (*File, error) {
	name, err := f.Resolve(sel)
	if err != nil {
		return nil, err
	}
	i := f.Find(name)
	if i < 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	out := *f
	p := f.Packages[i]
	if sel.HasVersion {
		p.Builds = slices.DeleteFunc(slices.Clone(p.Builds), func(b Build) bool { return b.Version != sel.Version })
		if len(p.Builds) == 0 {
			return nil, fmt.Errorf("%w: %s has no version %s", ErrNotFound, name, sel.Version)
		}
	}
	out.Packages = []Package{p}
	return &out, nil
}

// Forget removes the package sel names (with a version: that version's
// builds; the package itself goes with its last build) and returns what
// it removed: the package's name, or its name@version.
func (f *File) Forget(sel Selector) (string, error) {
	name, err := f.Resolve(sel)
	if err != nil {
		return "", err
	}
	i := f.Find(name)
	if i < 0 {
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if !sel.HasVersion {
		f.Packages = slices.Delete(f.Packages, i, i+1)
		return name, nil
	}
	p := &f.Packages[i]
	n := len(p.Builds)
	p.Builds = slices.DeleteFunc(p.Builds, func(b Build) bool { return b.Version == sel.Version })
	if len(p.Builds) == n {
		return "", fmt.Errorf("%w: %s has no version %s", ErrNotFound, name, sel.Version)
	}
	if len(p.Builds) == 0 {
		f.Packages = slices.Delete(f.Packages, i, i+1)
	}
	return name + "@" + sel.Version, nil
}

// Learn lets the package sel names learn until the time given (a time
// past ends its window): a package f does not have yet is added, without
// builds, when sel gives its kind. A version is refused: a package learns
// whatever build it runs.
func (f *File) Learn(sel Selector, until time.Time) (string, error) {
	if sel.HasVersion {
		return "", fmt.Errorf("%s: a package learns whatever version it runs: name the package without @%s", sel, sel.Version)
	}
	name, err := f.Resolve(sel)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%w; to let a package learn before it is first seen, give its kind: npm:%s, python:%s, exe:/PATH or script:/PATH", err, sel.Package, sel.Package)
	}
	if err != nil {
		return "", err
	}
	i := f.Find(name)
	if i < 0 {
		f.Packages = append(f.Packages, Package{Name: name, Builds: []Build{}})
		slices.SortFunc(f.Packages, func(a, b Package) int { return strings.Compare(a.Name, b.Name) })
		i = f.Find(name)
	}
	f.Packages[i].LearnUntil = until.UTC()
	f.Packages[i].FirstLearnOnly = false
	return name, nil
}
