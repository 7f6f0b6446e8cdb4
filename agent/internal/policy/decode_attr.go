package policy

import (
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// Attribute values of every block: each decoded with its diagnostics, which
// point at the value (file:line:column) or at the element of a list that
// is wrong.

func typeError(a *hcl.Attribute, want string, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Incorrect attribute value type",
		Detail:   fmt.Sprintf("Inappropriate value for attribute %q: %s required%s.", a.Name, want, detail),
		Subject:  a.Expr.Range().Ptr(),
		Context:  a.Range.Ptr(),
	}
}

func value(a *hcl.Attribute) (cty.Value, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	if v.IsNull() {
		return cty.NilVal, hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing value",
			Detail:   fmt.Sprintf("Attribute %q must not be null.", a.Name),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, hcl.Diagnostics{typeError(a, "a literal value", "")}
	}
	return v, nil
}

func stringAttr(a *hcl.Attribute) (string, hcl.Diagnostics) {
	v, diags := value(a)
	if diags.HasErrors() {
		return "", diags
	}
	if v.Type() != cty.String {
		return "", hcl.Diagnostics{typeError(a, "string", ", got "+v.Type().FriendlyName())}
	}
	return v.AsString(), nil
}

func boolAttr(a *hcl.Attribute, dst *bool) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return diags
	}
	if v.Type() != cty.Bool {
		return hcl.Diagnostics{typeError(a, "bool", ", got "+v.Type().FriendlyName())}
	}
	*dst = v.True()
	return nil
}

func intAttr(a *hcl.Attribute, lo, hi int, dst *int) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return diags
	}
	if v.Type() != cty.Number {
		return hcl.Diagnostics{typeError(a, "number", ", got "+v.Type().FriendlyName())}
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() || bf.Cmp(big.NewFloat(float64(lo))) < 0 || bf.Cmp(big.NewFloat(float64(hi))) > 0 {
		return hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Value out of range",
			Detail:   fmt.Sprintf("Attribute %q must be a whole number from %d to %d, got %s.", a.Name, lo, hi, bf.Text('g', 10)),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	n, _ := bf.Int64()
	*dst = int(n)
	return nil
}

var dayPrefix = regexp.MustCompile(`^(\d+)d(.*)$`)

// ParseDuration parses a Go duration ("90m", "1h30m") with an optional
// leading day count ("7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if m := dayPrefix.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 32)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("invalid day count in %q", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = m[2]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse duration: %w", err)
	}
	return days + d, nil
}

func durationAttr(a *hcl.Attribute, lo, hi time.Duration, dst *time.Duration) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	s, diags := stringAttr(a)
	if diags.HasErrors() {
		return diags
	}
	d, err := ParseDuration(s)
	if err != nil || d < lo || d > hi {
		why := fmt.Sprintf("must be between %s and %s", fmtDuration(lo), fmtDuration(hi))
		if err != nil {
			why = "is not a duration"
		}
		return hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid duration",
			Detail:   fmt.Sprintf("%q %s. Write a duration such as \"30m\", \"24h\" or \"7d\".", s, why),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	*dst = d
	return nil
}

func fmtDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return strings.TrimSuffix(strings.TrimSuffix(d.String(), "0s"), "0m")
}

type item struct {
	val string
	rng hcl.Range
}

// stringListAttr decodes a list of strings, keeping the range of each
// element of a literal list for diagnostics.
func stringListAttr(a *hcl.Attribute) ([]item, hcl.Diagnostics) {
	if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
		var diags hcl.Diagnostics
		var out []item
		for _, e := range tup.Exprs {
			v, d := e.Value(nil)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Incorrect attribute value type",
					Detail:   fmt.Sprintf("Inappropriate value for attribute %q: every element must be a string.", a.Name),
					Subject:  e.Range().Ptr(),
					Context:  a.Range.Ptr(),
				})
				continue
			}
			out = append(out, item{val: v.AsString(), rng: e.Range()})
		}
		return out, diags
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return nil, diags
	}
	lv, err := convert.Convert(v, cty.List(cty.String))
	if err != nil || lv.IsNull() {
		return nil, hcl.Diagnostics{typeError(a, "list of string", "")}
	}
	var out []item
	for it := lv.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			return nil, hcl.Diagnostics{typeError(a, "list of string", "")}
		}
		out = append(out, item{val: e.AsString(), rng: a.Expr.Range()})
	}
	return out, nil
}

// domainsAttr decodes and normalises a list of domains.
func domainsAttr(a *hcl.Attribute) ([]string, hcl.Diagnostics) {
	if a == nil {
		return nil, nil
	}
	items, diags := stringListAttr(a)
	var out []string
	for _, it := range items {
		raw := strings.TrimSpace(it.val)
		d, ok := mail.NormalizeDomain(raw)
		msg := ""
		switch {
		case strings.Contains(raw, "*"):
			msg = "has a wildcard, which is not needed: a domain always includes its subdomains, so write \"" + strings.TrimLeft(raw, "@*.") + "\""
		case strings.Count(raw, "@") > 1 || (strings.Contains(raw, "@") && !strings.HasPrefix(raw, "@")):
			msg = "is an address, not a domain; write the domain, such as \"@company.com\""
		case !ok:
			msg = "is not a valid domain name; write a domain such as \"company.com\" or \"@company.com\""
		case !strings.Contains(d, "."):
			msg = "is a top-level domain; allowing it would allow the whole TLD"
		}
		if msg != "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Malformed domain",
				Detail:   fmt.Sprintf("%q in %s %s.", it.val, a.Name, msg),
				Subject:  it.rng.Ptr(),
			})
			continue
		}
		out = append(out, d)
	}
	return out, diags
}

func unknownValue(a *hcl.Attribute, what, got string, valid []string) *hcl.Diagnostic {
	detail := fmt.Sprintf("%q is not a valid %s. Valid values: %s.", got, what, quoteList(valid))
	if s := suggest(got, valid); s != "" {
		detail = fmt.Sprintf("%q is not a valid %s. Did you mean %q? Valid values: %s.", got, what, s, quoteList(valid))
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Unknown " + what,
		Detail:   detail,
		Subject:  a.Expr.Range().Ptr(),
	}
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// suggest returns the valid value closest to got, if close enough.
func suggest(got string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(got), v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
