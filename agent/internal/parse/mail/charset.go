package mail

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
)

// charsetReader converts text in a named charset to UTF-8. It is used for
// encoded-words and for text parts of MIME messages.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	cs := strings.ToLower(strings.TrimSpace(charset))
	switch cs {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return nil, fmt.Errorf("unknown charset %q: %w", charset, err)
	}
	return enc.NewDecoder().Reader(input), nil
}

// toUTF8 converts b from charset to UTF-8, returning b unchanged when the
// charset is unknown.
func toUTF8(charset string, b []byte) []byte {
	cs := strings.ToLower(strings.TrimSpace(charset))
	switch cs {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return b
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return b
	}
	out, err := enc.NewDecoder().Bytes(b)
	if err != nil {
		return b
	}
	return out
}
