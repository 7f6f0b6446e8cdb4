package policy

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The egress_policy blocks: an allow list of destinations (host names,
// address prefixes, ports) for the processes of a scope, enforced by the
// kernel at connect(2) and sendmsg(2) (package egress). A safety net for
// what the TLS probes cannot read.

const (
	blockEgress      = "egress_policy"
	blockEgressAllow = "allow"
)

// MaxEgressPolicies bounds the egress policies of a set: the kernel keeps
// the policies covering a cgroup, and those allowing a destination, as
// bits of a 64-bit word.
const MaxEgressPolicies = 64

// MaxEgressHosts bounds the host names of one egress policy (each is
// resolved and refreshed at its TTL).
const MaxEgressHosts = 256

// EgressPolicy is one compiled egress_policy block.
type EgressPolicy struct {
	Name        string
	Description string
	DeclRange   hcl.Range
	// Mode: enforce refuses a destination no allow block lists (EPERM);
	// monitor lets it through and reports it.
	Mode Mode
	// Scopes: the processes it applies to (any of them): by executables,
	// or by cgroups and systemd_units, which the kernel checks at connect
	// time (the file the process runs; its cgroup).
	Scopes []Scope
	Allow  []EgressAllow
}

// EgressAllow is one allow block: a destination is allowed when its
// address is in Prefixes or is an address of one of Hosts, and its port is
// in Ports (no ports: any port).
type EgressAllow struct {
	Hosts     []string       // lower-case names, no trailing dot
	Prefixes  []netip.Prefix // masked
	Ports     []uint16
	DeclRange hcl.Range
}

// Hosts returns every host name of the policy's allow blocks, each once.
func (p *EgressPolicy) Hosts() []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range p.Allow {
		for _, h := range a.Hosts {
			if !seen[h] {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	return out
}

var egressSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "description"}, {Name: "mode"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: blockScope}, {Type: blockEgressAllow}},
}

var egressAllowSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "hosts"}, {Name: "cidrs"}, {Name: "ports"},
}}

// decodeEgress decodes an egress_policy block.
func decodeEgress(b *hcl.Block) (*EgressPolicy, hcl.Diagnostics) {
	diags := checkPolicyName(b)
	content, d := b.Body.Content(egressSchema)
	diags = append(diags, d...)
	// The policy attributes read as an email policy's do: same names, same
	// values, same default mode.
	tmp := &Policy{Name: b.Labels[0], Mode: ModeEnforce}
	diags = append(diags, decodePolicyAttributes(tmp, content.Attributes)...)
	p := &EgressPolicy{Name: tmp.Name, Description: tmp.Description, Mode: tmp.Mode, DeclRange: b.DefRange}
	hosts := 0
	for _, sb := range content.Blocks {
		switch sb.Type {
		case blockScope:
			bc, d := sb.Body.Content(scopeSchema)
			diags = append(diags, d...)
			d = decodeScope(tmp, sb, bc)
			diags = append(diags, d...)
			if !d.HasErrors() {
				diags = append(diags, checkEgressScope(bc)...)
			}
		case blockEgressAllow:
			bc, d := sb.Body.Content(egressAllowSchema)
			diags = append(diags, d...)
			a, d := decodeEgressAllow(sb, bc)
			diags = append(diags, d...)
			hosts += len(a.Hosts)
			p.Allow = append(p.Allow, a)
		}
	}
	p.Scopes = tmp.Scopes
	if len(p.Scopes) == 0 {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing scope block",
			Detail:   "An egress_policy needs a scope block (executables, cgroups or systemd_units): an allow list for every process of the host would cut off the host itself.",
			Subject:  b.DefRange.Ptr(),
		})
	}
	if len(p.Allow) == 0 {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing allow block",
			Detail:   "An egress_policy needs at least one allow block (hosts or cidrs, and optionally ports).",
			Subject:  b.DefRange.Ptr(),
		})
	}
	if hosts > MaxEgressHosts {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Too many hosts",
			Detail:   fmt.Sprintf("Egress policy %q lists %d host names; at most %d are resolved per policy.", p.Name, hosts, MaxEgressHosts),
			Subject:  b.DefRange.Ptr(),
		})
	}
	return p, diags
}

// checkEgressScope refuses the scope attributes the kernel cannot check at
// connect time, and a scope block that would need two of its checks
// combined.
func checkEgressScope(c *hcl.BodyContent) hcl.Diagnostics {
	var diags hcl.Diagnostics
	why := map[string]string{
		"commands":    "a task name is whatever the process sets (prctl), not an identity",
		"mcp_servers": "the MCP server a process is, is not known in the kernel at connect time",
	}
	for _, name := range []string{"commands", "mcp_servers"} {
		if a := c.Attributes[name]; a != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unsupported egress scope",
				Detail: fmt.Sprintf("An egress_policy scope cannot use %s: %s. Use executables, cgroups or systemd_units "+
					"(run the MCP server in a unit or cgroup of its own).", name, why[name]),
				Subject: a.NameRange.Ptr(),
			})
		}
	}
	if a := c.Attributes["executables"]; a != nil && (c.Attributes["cgroups"] != nil || c.Attributes["systemd_units"] != nil) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Unsupported egress scope",
			Detail: "In an egress_policy, a scope block names executables, or cgroups and systemd_units, not both: the kernel " +
				"checks each on its own. Write two scope blocks (a process matching either is in scope).",
			Subject: a.NameRange.Ptr(),
		})
	}
	return diags
}

func decodeEgressAllow(b *hcl.Block, c *hcl.BodyContent) (EgressAllow, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	out := EgressAllow{DeclRange: b.DefRange}
	if a := c.Attributes["hosts"]; a != nil {
		items, d := stringListAttr(a)
		diags = append(diags, d...)
		for _, it := range items {
			h, msg := checkHostname(it.val)
			if msg != "" {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid host name",
					Detail:   fmt.Sprintf("%q in hosts %s.", it.val, msg),
					Subject:  it.rng.Ptr(),
				})
				continue
			}
			out.Hosts = append(out.Hosts, h)
		}
	}
	if a := c.Attributes["cidrs"]; a != nil {
		items, d := stringListAttr(a)
		diags = append(diags, d...)
		for _, it := range items {
			p, msg := parseCIDR(it.val)
			if msg != "" {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid CIDR",
					Detail:   fmt.Sprintf("%q in cidrs %s.", it.val, msg),
					Subject:  it.rng.Ptr(),
				})
				continue
			}
			out.Prefixes = append(out.Prefixes, p)
		}
	}
	if a := c.Attributes["ports"]; a != nil {
		ports, d := portsAttr(a)
		diags = append(diags, d...)
		out.Ports = ports
	}
	if len(out.Hosts)+len(out.Prefixes) == 0 && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Empty allow block",
			Detail:   `An allow block needs hosts or cidrs (write cidrs = ["0.0.0.0/0", "::/0"] to allow every address on the ports listed).`,
			Subject:  b.DefRange.Ptr(),
		})
	}
	return out, diags
}

// checkHostname returns the normalised name, or why it is not a host name
// the agent can resolve and keep in step with DNS.
func checkHostname(raw string) (string, string) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(raw)), ".")
	if strings.Contains(h, "*") {
		return "", "has a wildcard: a wildcard cannot be enforced, since the agent resolves the names it is given " +
			"and does not see the DNS answers a process gets; list each name"
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "", "is an address; put it in cidrs"
	}
	if h == "" || len(h) > 253 {
		return "", "is not a valid host name (1 to 253 characters)"
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", "is not a valid host name: each dot-separated label has 1 to 63 letters, digits or '-', not at either end"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Sprintf("is not a valid host name: %q is not allowed (write an internationalised name in its xn-- form)", string(rune(c)))
			}
		}
	}
	return h, ""
}

// parseCIDR parses "10.0.0.0/8", "::1/128" or a bare address (one host).
func parseCIDR(raw string) (netip.Prefix, string) {
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, "is not an address or a CIDR prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\""
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), ""
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, "is not a CIDR prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\""
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, "is an IPv4-mapped IPv6 prefix; write the IPv4 prefix"
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Sprintf("has bits set past its prefix length: write %q", m.String())
	}
	return p, ""
}

// portsAttr decodes a list of port numbers (1-65535), pointing at the
// element that is wrong.
func portsAttr(a *hcl.Attribute) ([]uint16, hcl.Diagnostics) {
	tup, ok := a.Expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		return nil, hcl.Diagnostics{typeError(a, "list of port numbers", "")}
	}
	var diags hcl.Diagnostics
	var out []uint16
	for _, e := range tup.Exprs {
		v, d := e.Value(nil)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		bad := v.IsNull() || !v.IsKnown() || v.Type() != cty.Number
		if !bad {
			bf := v.AsBigFloat()
			bad = !bf.IsInt() || bf.Cmp(big.NewFloat(1)) < 0 || bf.Cmp(big.NewFloat(65535)) > 0
			if !bad {
				n, _ := bf.Int64()
				out = append(out, uint16(n))
				continue
			}
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid port",
			Detail:   "Every element of ports must be a whole number from 1 to 65535.",
			Subject:  e.Range().Ptr(),
			Context:  a.Range.Ptr(),
		})
	}
	return out, diags
}

// duplicateEgressNames reports egress policies that share a name, and a
// set over the kernel's limit.
func duplicateEgressNames(ps []*EgressPolicy) hcl.Diagnostics {
	var diags hcl.Diagnostics
	first := map[string]*EgressPolicy{}
	for _, p := range ps {
		if f, dup := first[p.Name]; dup {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate egress policy name",
				Detail:   fmt.Sprintf("An egress_policy named %q is already defined at %s.", p.Name, f.DeclRange.String()),
				Subject:  p.DeclRange.Ptr(),
			})
			continue
		}
		first[p.Name] = p
	}
	if len(ps) > MaxEgressPolicies {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Too many egress policies",
			Detail:   fmt.Sprintf("%d egress_policy blocks; at most %d are supported.", len(ps), MaxEgressPolicies),
			Subject:  ps[MaxEgressPolicies].DeclRange.Ptr(),
		})
	}
	return diags
}
