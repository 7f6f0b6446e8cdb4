package policy

import (
	"fmt"
	"path"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// The scope blocks of a policy: the processes it applies to (any of its
// scopes; none means every process).

var scopeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "executables"}, {Name: "commands"}, {Name: "systemd_units"},
	{Name: "cgroups"}, {Name: "mcp_servers"},
}}

// decodeScope adds a scope block to the policy's scopes.
func decodeScope(p *Policy, b *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics {
	var diags hcl.Diagnostics
	s := Scope{DeclRange: b.DefRange}
	globs := func(name string, dst *[]string, check func(string) string) {
		a := c.Attributes[name]
		if a == nil {
			return
		}
		items, d := stringListAttr(a)
		diags = append(diags, d...)
		for _, it := range items {
			msg := ""
			if it.val == "" {
				msg = "must not be empty"
			} else if _, err := path.Match(it.val, ""); err != nil {
				msg = "is not a valid glob pattern: " + err.Error()
			} else if check != nil {
				msg = check(it.val)
			}
			if msg != "" {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid " + name + " entry",
					Detail:   fmt.Sprintf("%q %s.", it.val, msg),
					Subject:  it.rng.Ptr(),
				})
				continue
			}
			*dst = append(*dst, it.val)
		}
	}
	globs("executables", &s.Executables, func(v string) string {
		if !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "*") {
			return "must be an absolute path or pattern"
		}
		return ""
	})
	globs("commands", &s.Commands, func(v string) string {
		if !strings.ContainsAny(v, "*?[") && len(v) > 15 {
			return "is longer than 15 bytes and can never match a comm (the kernel truncates it); use executables instead"
		}
		return ""
	})
	globs("systemd_units", &s.SystemdUnits, nil)
	globs("cgroups", &s.CgroupPrefix, func(v string) string {
		if !strings.HasPrefix(v, "/") {
			return `must be an absolute cgroup path such as "/system.slice/mcp.service"`
		}
		return ""
	})
	globs("mcp_servers", &s.MCPServers, nil)
	s.compile()
	if !s.hasCondition && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Empty scope block",
			Detail:   "A scope block needs at least one of executables, commands, systemd_units, cgroups or mcp_servers. Remove the block to apply the policy to every process.",
			Subject:  b.DefRange.Ptr(),
		})
	}
	p.Scopes = append(p.Scopes, s)
	return diags
}
