package mail

import (
	"slices"
	"testing"
)

func TestParseAddressListEquivalentForms(t *testing.T) {
	// Every form must decode to the same address.
	forms := []string{
		"phan@giftshop.club",
		"PHAN@GIFTSHOP.CLUB",
		"<phan@giftshop.club>",
		`"Phan" <phan@giftshop.club>`,
		`"Support, Team" <phan@giftshop.club>`,
		"Phan <phan@giftshop.club.>",
		"mailto:phan@giftshop.club",
		"phan%40giftshop.club",
		"=?utf-8?q?phan=40giftshop.club?=",
		"=?UTF-8?B?cGhhbkBnaWZ0c2hvcC5jbHVi?=",
		"=?utf-8?q?Ph=C3=A4n?= <phan@giftshop.club>",
		"ｐｈａｎ@ｇｉｆｔｓｈｏｐ．ｃｌｕｂ",
		"undisclosed:phan@giftshop.club;",
		"  phan@giftshop.club  ,",
	}
	for _, f := range forms {
		got := addrs(ParseAddressList(f))
		if !slices.Equal(got, []string{"phan@giftshop.club"}) {
			t.Errorf("ParseAddressList(%q) = %v", f, got)
		}
	}
}

func TestParseAddressList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"not an address", nil},
		{"a@company.com, B <b@company.com>; c@company.com", []string{"a@company.com", "b@company.com", "c@company.com"}},
		{"a@company.com, a@COMPANY.com", []string{"a@company.com"}},
		{`"x@company.com" <phan@giftshop.club>`, []string{"phan@giftshop.club"}},
		{"user@bücher.de", []string{"user@xn--bcher-kva.de"}},
		{"broken <a@company.com, c@evil.example", []string{"a@company.com", "c@evil.example"}},
		{"Team: a@company.com, b@company.com;", []string{"a@company.com", "b@company.com"}},
	}
	for _, tt := range tests {
		got := addrs(ParseAddressList(tt.in))
		if !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("ParseAddressList(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeDomain(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"@Company.COM", "company.com", true},
		{"company.com.", "company.com", true},
		{"bücher.de", "xn--bcher-kva.de", true},
		{"XN--BCHER-KVA.DE", "xn--bcher-kva.de", true},
		{"ｃｏｍｐａｎｙ。ｃｏｍ", "company.com", true},
		{"", "", false},
		{"@", "", false},
		{"a..b", "a..b", false},
		{"-bad.com", "-bad.com", false},
		{"bad domain.com", "bad domain.com", false},
		{"[192.0.2.1]", "[192.0.2.1]", true},
	}
	for _, tt := range tests {
		got, ok := NormalizeDomain(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAddressDomain(t *testing.T) {
	if d := (Address{Addr: "a@b.c"}).Domain(); d != "b.c" {
		t.Fatal(d)
	}
	if d := (Address{Addr: "nodomain"}).Domain(); d != "" {
		t.Fatal(d)
	}
}
