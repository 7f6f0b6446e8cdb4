package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseTLSPorts reads --tls-ports: comma-separated TCP ports (1-65535)
// whose connections tell that a process does TLS (AARSM_UNMONITORED).
func parseTLSPorts(s string) ([]uint16, error) {
	var ports []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("--tls-ports: %q is not a TCP port (1-65535)", f)
		}
		ports = append(ports, uint16(n))
	}
	if len(ports) == 0 {
		return nil, fmt.Errorf("--tls-ports: no port in %q", s)
	}
	return ports, nil
}
