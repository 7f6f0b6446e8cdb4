package probe

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/aarsm/aarsm/agent/internal/rustls"
)

// rustls (Codex, Deno: Rust, statically linked, stripped) is probed where
// its record layer hands each record's plaintext to the cipher (the calls
// agent/internal/rustls finds, program rustls_encrypt), for the releases
// whose record layer was read. Any other build that carries rustls is
// reported unprobed, with the rustls version its panic locations name,
// rather than passed over in silence or probed at a guess.

// symRustls: how the probed rustls calls are listed (Target.Symbols).
const symRustls = "rustls write"

// rustlsMarker: the start of the crate directory in the source paths of
// rustls's panic locations (".../rustls-0.23.46/src/conn.rs").
var rustlsMarker = []byte("/rustls-0.")

// findRustls records, for a file with no TLS function found, that it
// carries rustls.
func (i *elfInfo) findRustls(f *elf.File, r io.ReaderAt) {
	v := rustlsVersion(f)
	if v == "" {
		return
	}
	res, err := rustls.Find(f, r)
	switch {
	case err == nil:
		for _, s := range res.Sites {
			i.rustls = append(i.rustls, s.Offset)
		}
		i.lib, i.build = "", res.String()
		return
	case !errors.Is(err, rustls.ErrNotRustls):
		i.unprobed = errors.Join(i.unprobed, fmt.Errorf("TLS through rustls %s, linked statically: %w", v, err))
		return
	}
	err = fmt.Errorf("TLS through rustls %s, linked statically: its plaintext functions cannot be located without symbols", v)
	if i.embedsOpenSSL {
		err = fmt.Errorf("%w (it also carries OpenSSL, statically linked and stripped)", err)
	}
	i.unprobed = errors.Join(i.unprobed, err)
}

// rustlsVersion returns the rustls version named in the file's read-only
// data ("0.23.46"), "" when there is none.
func rustlsVersion(f *elf.File) string {
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size > 256<<20 {
		return ""
	}
	const chunk = 1 << 20
	r := sec.Open()
	buf := make([]byte, chunk+64)
	carry := 0
	for {
		n, err := io.ReadFull(r, buf[carry:])
		b := buf[:carry+n]
		if i := bytes.Index(b, rustlsMarker); i >= 0 && (i+64 <= len(b) || err != nil) {
			v := b[i+len("/rustls-"):]
			end := 0
			for end < len(v) && end < 16 && (v[end] == '.' || v[end] >= '0' && v[end] <= '9') {
				end++
			}
			if end < len(v) && v[end] == '/' {
				return string(v[:end])
			}
		}
		if err != nil {
			return ""
		}
		keep := 63
		copy(buf, b[len(b)-keep:])
		carry = keep
	}
}
