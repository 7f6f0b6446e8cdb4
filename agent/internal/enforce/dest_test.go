package enforce

import (
	"net/netip"
	"testing"
)

func TestAddressedDest(t *testing.T) {
	for host, want := range map[string]string{
		"":                        "",
		"api.postmarkapp.com":     "api.postmarkapp.com:443",
		"api.postmarkapp.com:443": "api.postmarkapp.com:443",
		"127.0.0.1:34567":         "127.0.0.1:34567",
		"127.0.0.1":               "127.0.0.1:443",
		"[::1]:8443":              "[::1]:8443",
		"[::1]":                   "[::1]:443",
		"::1":                     "[::1]:443",
		"mail.example:":           "mail.example:443",
		"a:b:c":                   "a:b:c",
		"h:abc":                   "h:abc",
	} {
		if got := addressedDest(host); got != want {
			t.Errorf("addressedDest(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestChoosePeer(t *testing.T) {
	ap := netip.MustParseAddrPort
	api, other, smtps, proxy := ap("203.0.113.5:443"), ap("198.51.100.7:5432"), ap("192.0.2.1:465"), ap("192.0.2.9:3128")
	for _, tc := range []struct {
		dest  string
		peers []netip.AddrPort
		want  netip.AddrPort
	}{
		{"api.postmarkapp.com:443", []netip.AddrPort{api}, api},
		{"api.postmarkapp.com:443", []netip.AddrPort{api, other}, api},
		{"api.postmarkapp.com:443", []netip.AddrPort{api, ap("203.0.113.6:443")}, netip.AddrPort{}},
		{"203.0.113.5:443", []netip.AddrPort{api, ap("203.0.113.6:443")}, api},
		{"[::ffff:203.0.113.5]:443", []netip.AddrPort{api, ap("203.0.113.6:443")}, api},
		{"api.postmarkapp.com:443", []netip.AddrPort{proxy}, proxy}, // through a proxy: its only connection
		{"api.postmarkapp.com:443", []netip.AddrPort{proxy, other}, netip.AddrPort{}},
		{"api.postmarkapp.com:443", nil, netip.AddrPort{}},
		{"", []netip.AddrPort{other}, other}, // SMTP on an unusual port: the only connection
		{"", []netip.AddrPort{api, smtps}, smtps},
		{"", []netip.AddrPort{api, other}, netip.AddrPort{}},
		{"", []netip.AddrPort{smtps, ap("192.0.2.2:587")}, netip.AddrPort{}},
		{"a:b:c", []netip.AddrPort{api, other}, netip.AddrPort{}},
		{"a:b:c", []netip.AddrPort{api}, api},
	} {
		if got := choosePeer(tc.dest, tc.peers); got != tc.want {
			t.Errorf("choosePeer(%q, %v) = %v, want %v", tc.dest, tc.peers, got, tc.want)
		}
	}
}
