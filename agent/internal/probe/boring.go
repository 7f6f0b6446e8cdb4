package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/aarsm/aarsm/agent/internal/boring"
)

// findBoringSSL looks, in a file that carries an SSL library but exports
// no SSL_write, for a statically linked BoringSSL (Bun, and executables
// Bun builds) and takes its SSL_write and SSL_read as if exported. A file
// with BoringSSL whose functions are not found with certainty keeps the
// reason (info.unprobed): it is reported, never probed at a guess.
func (i *elfInfo) findBoringSSL(f *elf.File, r io.ReaderAt) {
	res, err := boring.Find(f, r)
	switch {
	case errors.Is(err, boring.ErrNotBoringSSL):
		return
	case err != nil:
		i.unprobed = fmt.Errorf("carries BoringSSL, statically linked and stripped, but its SSL_write was not found: %w", err)
		return
	}
	i.symbols[symWrite] = res.Write.Offset
	i.symbols[symRead] = res.Read.Offset
	i.lib = "boringssl"
	i.build = res.Build.String()
}
