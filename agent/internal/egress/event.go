package egress

import (
	"encoding/binary"

	"github.com/aarsm/aarsm/bpf/cgroup"
)

// eventSize is the size of struct egress_event.
const eventSize = 8 + 8 + 4 + 4 + 2 + 1 + 1 + 1 + 3 + 16 + 16 + 8 + 4 + 4

// decodeEvent decodes a struct egress_event (little-endian, the only
// target built).
func decodeEvent(b []byte, ev *cgroup.EgressEgressEvent) {
	le := binary.LittleEndian
	ev.Cgroup = le.Uint64(b[0:])
	ev.Policies = le.Uint64(b[8:])
	ev.Pid = le.Uint32(b[16:])
	ev.Tid = le.Uint32(b[20:])
	ev.Port = le.Uint16(b[24:])
	ev.Family = b[26]
	ev.Hook = b[27]
	ev.Blocked = b[28]
	ev.Protocol = b[29]
	copy(ev.Addr[:], b[32:48])
	for i := range ev.Comm {
		ev.Comm[i] = int8(b[48+i])
	}
	ev.ExeIno = le.Uint64(b[64:])
	ev.ExeDev = le.Uint32(b[72:])
}
