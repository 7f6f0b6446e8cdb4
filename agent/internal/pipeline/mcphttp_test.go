package pipeline

import (
	"os"
	"path/filepath"
	"testing"
)

// The listening sockets of /proc/net/tcp{,6} that count: loopback and
// wildcard addresses, state LISTEN; not an established connection, not a
// listener bound to another address.
func TestListeners(t *testing.T) {
	dir := t.TempDir()
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0A00020F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: B80D0120000000000000000001000000:0BBA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
`
	for name, s := range map[string]string{"tcp": tcp, "tcp6": tcp6} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ports := map[string]uint16{}
	listeners(filepath.Join(dir, "tcp"), ports)
	listeners(filepath.Join(dir, "tcp6"), ports)
	want := map[string]uint16{"1001": 8080, "1002": 80, "2001": 3000, "2002": 3001}
	if len(ports) != len(want) {
		t.Errorf("listeners %v, want %v", ports, want)
	}
	for k, v := range want {
		if ports[k] != v {
			t.Errorf("inode %s: port %d, want %d (all %v)", k, ports[k], v, ports)
		}
	}
}
