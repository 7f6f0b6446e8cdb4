package probe

import (
	"fmt"
	"reflect"
	"sort"

	"github.com/cilium/ebpf"
)

// ProgramStat is what the kernel counts of one of the sensor's programs.
type ProgramStat struct {
	Name string // the program's name in bpf/ssl/ssl.c
	// Missed counts the runs the kernel skipped: the program was due
	// while another BPF program ran on the same CPU (recursion misses;
	// Linux 5.12+, uprobes and tracepoints 6.6+). A write whose probe was
	// missed is neither seen nor held.
	Missed uint64
}

// ProgramStats returns, per loaded program of the sensor, the runs the
// kernel missed, sorted by name.
func (s *Sensor) ProgramStats() ([]ProgramStat, error) {
	v := reflect.ValueOf(&s.objs.SensorPrograms).Elem()
	var out []ProgramStat
	for i := range v.NumField() {
		p, ok := v.Field(i).Interface().(*ebpf.Program)
		if !ok || p == nil {
			continue
		}
		name := v.Type().Field(i).Tag.Get("ebpf")
		st, err := p.Stats()
		if err != nil {
			return out, fmt.Errorf("stats of program %s: %w", name, err)
		}
		out = append(out, ProgramStat{Name: name, Missed: st.RecursionMisses})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
