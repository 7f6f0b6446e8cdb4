package egress

import (
	"net/netip"
	"os"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/policy"
)

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

// The kernel takes the longest match only: a longer prefix must carry the
// policies of the shorter ones that cover it, per port.
func TestTablesFoldShorterPrefixes(t *testing.T) {
	set, diags := policy.ParseSource("t.hcl", []byte(`
egress_policy "a" {
  scope { cgroups = ["/a"] }
  allow {
    cidrs = ["10.0.0.0/8"]
    ports = [443]
  }
  allow { cidrs = ["::/0"] }
}
egress_policy "b" {
  scope { cgroups = ["/b"] }
  allow {
    cidrs = ["10.1.0.0/16"]
    ports = [443, 25]
  }
  allow { hosts = ["mail.test"] }
}`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	addrs := func(h string) []netip.Addr {
		if h == "mail.test" {
			return []netip.Addr{netip.MustParseAddr("10.1.2.3")}
		}
		return nil
	}
	tb, err := buildTables(rules(set.Egress, addrs))
	if err != nil {
		t.Fatal(err)
	}
	for dest, want := range map[string]uint64{
		"10.1.2.4:443":        0b11, // a's /8 and b's /16
		"10.2.0.1:443":        0b01,
		"10.1.2.4:25":         0b10,
		"10.1.2.4:80":         0,
		"10.1.2.3:80":         0b10, // mail.test, any port
		"[2001::1]:80":        0b01,
		"11.0.0.1:443":        0,
		"[::ffff:10.1.2.3]:9": 0b10,
	} {
		if got := tb.allowedBy(netip.MustParseAddrPort(dest)); got != want {
			t.Errorf("%s: %b, want %b", dest, got, want)
		}
	}
}
