package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunPolicy(t *testing.T) {
	company := filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl")
	broken := filepath.Join("..", "..", "internal", "policy", "testdata", "broken", "values.hcl")
	tests := []struct {
		name    string
		args    []string
		code    int
		stdout  string
		stderr  string
		noLines int // exact number of stdout lines, when > 0
	}{
		{"clean file", []string{"check", company}, 0, "policy check ok: 1 policy in 1 file: company (enforce, terminate_and_alert)", "", 1},
		{"shipped directory", []string{"check", filepath.Dir(company)}, 0, "policy check ok: 3 policies in 3 files", "", 0},
		{"broken file", []string{"check", broken}, 1, "line 2, column 10", "", 0},
		{"missing file", []string{"check", "does-not-exist.hcl"}, 1, "Cannot read policy path", "", 0},
		{"no path", []string{"check"}, 2, "", "no PATH given", 0},
		{"no subcommand", nil, 2, "", "usage: aarsm policy check", 0},
		{"unknown subcommand", []string{"lint", company}, 2, "", `unknown subcommand "lint"`, 0},
		{"unknown flag", []string{"check", "-x", company}, 2, "", "flag provided but not defined", 0},
		{"help", []string{"--help"}, 0, "usage: aarsm policy check", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := runPolicy(tt.args, &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, out.String())
			}
			if !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, errb.String())
			}
			if tt.noLines > 0 && strings.Count(out.String(), "\n") != tt.noLines {
				t.Errorf("want %d line(s):\n%s", tt.noLines, out.String())
			}
		})
	}
}
