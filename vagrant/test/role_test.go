// Package vmtest checks the Ansible role and the VM scripts without a VM:
// the role's documented interface matches its defaults, tasks use fully
// qualified module names, templates carry the ansible_managed header, the
// scripts are strict bash, and the policy template renders policies that
// `aarsm policy check` accepts. The VM matrix itself is `make vm-test`.
package vmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const role = "../../ansible/roles/aarsm"

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestArgumentSpecsMatchDefaults(t *testing.T) {
	var defaults map[string]any
	readYAML(t, filepath.Join(role, "defaults/main.yml"), &defaults)
	var specs struct {
		ArgumentSpecs map[string]struct {
			Options map[string]struct {
				Type        string `yaml:"type"`
				Default     any    `yaml:"default"`
				Description any    `yaml:"description"`
			} `yaml:"options"`
		} `yaml:"argument_specs"`
	}
	readYAML(t, filepath.Join(role, "meta/argument_specs.yml"), &specs)
	opts := specs.ArgumentSpecs["main"].Options
	if len(opts) == 0 {
		t.Fatal("argument_specs.yml has no main options")
	}
	for name, def := range defaults {
		o, ok := opts[name]
		if !ok {
			t.Errorf("%s is in defaults/main.yml but not documented in meta/argument_specs.yml", name)
			continue
		}
		if !reflect.DeepEqual(o.Default, def) {
			t.Errorf("%s: argument_specs default %#v, defaults/main.yml %#v", name, o.Default, def)
		}
	}
	for name, o := range opts {
		if _, ok := defaults[name]; !ok {
			t.Errorf("%s is documented but has no default in defaults/main.yml", name)
		}
		if !strings.HasPrefix(name, "aarsm_") {
			t.Errorf("%s: public variables start with aarsm_", name)
		}
		if o.Description == nil || o.Type == "" {
			t.Errorf("%s: needs a type and a description", name)
		}
	}
}

// Task keywords that are not modules.
var taskKeywords = map[string]bool{
	"name": true, "when": true, "loop": true, "loop_control": true, "register": true,
	"notify": true, "listen": true, "tags": true, "become": true, "delegate_to": true,
	"changed_when": true, "failed_when": true, "check_mode": true, "ignore_errors": true,
	"block": true, "rescue": true, "always": true, "vars": true, "environment": true,
	"no_log": true, "run_once": true, "until": true, "retries": true, "delay": true,
}

func checkTasks(t *testing.T, file string, tasks []map[string]any) {
	for _, task := range tasks {
		var modules []string
		for k, v := range task {
			if taskKeywords[k] {
				if k == "block" || k == "rescue" || k == "always" {
					b, _ := yaml.Marshal(v)
					var inner []map[string]any
					if err := yaml.Unmarshal(b, &inner); err != nil {
						t.Fatalf("%s: %v", file, err)
					}
					checkTasks(t, file, inner)
				}
				continue
			}
			modules = append(modules, k)
		}
		if task["block"] != nil {
			continue
		}
		if task["name"] == nil {
			t.Errorf("%s: a task without a name: %v", file, task)
		}
		if len(modules) != 1 {
			t.Errorf("%s: task %q: want exactly one module, got %v", file, task["name"], modules)
			continue
		}
		if !strings.HasPrefix(modules[0], "ansible.builtin.") {
			t.Errorf("%s: task %q uses %q: use the fully qualified ansible.builtin.* name", file, task["name"], modules[0])
		}
	}
}

func TestTasksUseFQCN(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(role, "tasks/*.yml"))
	files = append(files, filepath.Join(role, "handlers/main.yml"))
	if len(files) < 6 {
		t.Fatalf("tasks missing: %v", files)
	}
	for _, f := range files {
		var tasks []map[string]any
		readYAML(t, f, &tasks)
		checkTasks(t, filepath.Base(f), tasks)
	}
}

func TestTemplatesHaveAnsibleManagedHeader(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(role, "templates/*.j2"))
	if len(files) == 0 {
		t.Fatal("no templates")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("# {{ ansible_managed }}")) {
			t.Errorf("%s: no '# {{ ansible_managed }}' header", f)
		}
	}
}

func TestScriptsAreStrict(t *testing.T) {
	files, _ := filepath.Glob("../*.sh")
	more, _ := filepath.Glob("../lib/*.sh")
	files = append(files, more...)
	sort.Strings(files)
	if len(files) < 6 {
		t.Fatalf("scripts missing: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Sourced libraries have no shebang and inherit the caller's options.
		if bytes.HasPrefix(b, []byte("#!")) && !bytes.Contains(b, []byte("\nset -euo pipefail\n")) {
			t.Errorf("%s: no 'set -euo pipefail'", f)
		}
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s: bash -n: %v\n%s", f, err, out)
		}
	}
}

// No path of a developer's machine in the committed files.
func TestNoMachinePaths(t *testing.T) {
	bad := regexp.MustCompile(`(/root/\.cache|/home/[a-z]|/w[o]rk/main|/tmp/aarsm-deb)`)
	for _, dir := range []string{"../../ansible", ".."} {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == ".vagrant" {
				return filepath.SkipDir
			}
			if d.IsDir() || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if m := bad.Find(b); m != nil {
				t.Errorf("%s contains a machine path %q", p, m)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The policy template renders the test policies (and awkward strings) into
// HCL that the agent's own checker accepts.
func TestPolicyTemplateRendersValidHCL(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped under -short: runs ansible-playbook and builds the agent")
	}
	// Missing, it fails (it does not skip: CI installs it).
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatalf("ansible-playbook is not installed: apt-get install ansible")
	}
	dir := t.TempDir()
	tpl, _ := filepath.Abs(filepath.Join(role, "templates/policy.hcl.j2"))
	vars, _ := filepath.Abs("../test-vars.yml")
	playbook := `- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [` + vars + `]
  vars:
    extra:
      - name: awkward.name_1
        description: 'braces ${x} %{y}, "quotes" and \ backslash'
        mode: monitor
        scope: [{commands: [node]}, {systemd_units: ["*-mcp.service"]}]
        internal_domains: []
        content_protection: {block_api_keys_in_emails: false}
  tasks:
    - ansible.builtin.template:
        src: ` + tpl + `
        dest: "` + dir + `/{{ item.name }}.hcl"
        mode: "0644"
      loop: "{{ aarsm_policies + extra }}"
`
	pb := filepath.Join(t.TempDir(), "render.yml")
	if err := os.WriteFile(pb, []byte(playbook), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ansible-playbook", "-i", "localhost,", "-e", "aarsm_mode=enforce", pb)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCALHOST_WARNING=false", "ANSIBLE_INVENTORY_UNPARSED_WARNING=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ansible-playbook: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "run", "../../agent/cmd/aarsm", "policy", "check", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("aarsm policy check: %v\n%s", err, out)
	}
	for _, want := range []string{"vm-test (enforce,", "awkward.name_1 (monitor,"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("policy check output lacks %q:\n%s", want, out)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "awkward.name_1.hcl"))
	if !bytes.Contains(b, []byte(`"braces $${x} %%{y}, \"quotes\" and \\ backslash"`)) {
		t.Errorf("description not escaped for HCL:\n%s", b)
	}
}
