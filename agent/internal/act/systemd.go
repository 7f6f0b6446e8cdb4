package act

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// ErrNoUnit means the process is not in a systemd unit's cgroup.
var ErrNoUnit = errors.New("not in a systemd unit")

// Unit is the systemd unit a process belongs to.
type Unit struct {
	// Name is the innermost unit: the last element of the process's cgroup
	// v2 path that ends in ".service" or ".scope", e.g. "postfix.service"
	// or "app-firefox-1234.scope".
	Name string
	// Manager is "" when the system manager runs Name, and the user
	// manager's own unit, e.g. "user@1000.service", when Name lives under
	// it (a user unit, stopped through that user's manager).
	Manager string
	// Cgroup is the cgroup v2 path of the unit, relative to the cgroup2
	// mount, e.g. "/system.slice/postfix.service". The process itself may
	// be in a child cgroup of it.
	Cgroup string
}

// UnitOf returns the name of the systemd unit of pid (Unit.Name).
func UnitOf(pid uint32) (string, error) {
	u, err := LookupUnit(pid)
	return u.Name, err
}

// LookupUnit reads the systemd unit of pid from /proc/PID/cgroup.
func LookupUnit(pid uint32) (Unit, error) {
	cg, err := proc.FS{}.CgroupPath(pid)
	if err != nil {
		if proc.Gone(err) {
			err = ErrGone
		}
		return Unit{}, fmt.Errorf("unit of pid %d: %w", pid, err)
	}
	u, ok := ParseUnit(cg)
	if !ok {
		return Unit{}, fmt.Errorf("unit of pid %d (cgroup %q): %w", pid, cg, ErrNoUnit)
	}
	return u, nil
}

// ParseUnit finds the unit in a cgroup v2 path as systemd lays them out:
// "/system.slice/x.service", "/user.slice/user-1000.slice/session-3.scope",
// "/user.slice/user-1000.slice/user@1000.service/app.slice/y.service/sub".
func ParseUnit(cgroup string) (Unit, bool) {
	elems := strings.Split(strings.Trim(cgroup, "/"), "/")
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if !isUnitName(e) {
			continue
		}
		u := Unit{Name: e, Cgroup: "/" + path.Join(elems[:i+1]...)}
		for j := i - 1; j >= 0; j-- {
			if strings.HasPrefix(elems[j], "user@") && strings.HasSuffix(elems[j], ".service") {
				u.Manager = elems[j]
				break
			}
		}
		return u, true
	}
	return Unit{}, false
}

func isUnitName(e string) bool {
	for _, suf := range []string{".service", ".scope"} {
		if name, ok := strings.CutSuffix(e, suf); ok && name != "" {
			return true
		}
	}
	return false
}

// SystemBus is the address DialSystemd takes for the system bus.
const SystemBus = ""

// DialSystemd connects to a systemd manager. With address SystemBus it
// connects through the system D-Bus; otherwise address is the path of a
// manager's private socket (/run/systemd/private for the system manager,
// $XDG_RUNTIME_DIR/systemd/private for a "systemd --user"), spoken to
// directly without a bus daemon. Close the connection when done.
func DialSystemd(ctx context.Context, address string) (*sdbus.Conn, error) {
	if address == SystemBus {
		c, err := sdbus.NewSystemConnectionContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("connect to systemd on the system bus: %w", err)
		}
		return c, nil
	}
	c, err := sdbus.NewConnection(func() (*dbus.Conn, error) {
		conn, err := dbus.Dial("unix:path="+dbusEscape(address), dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			_ = conn.Close() // the authentication error is the one to report
			return nil, err
		}
		return conn, nil
	})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd at %s: %w", address, err)
	}
	return c, nil
}

// dbusEscape escapes a value of a D-Bus address.
func dbusEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_/.\\*", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// QueueStopUnit asks systemd to stop unit (mode "replace") and returns once
// the job is queued, without waiting for it: the agent's event loop must
// never wait for a unit's stop commands (ExecStop= may run a program the
// agent holds until its own loop has examined it).
func QueueStopUnit(ctx context.Context, conn *sdbus.Conn, unit string) error {
	if _, err := conn.StopUnitContext(ctx, unit, "replace", nil); err != nil {
		return fmt.Errorf("stop unit %s: %w", unit, err)
	}
	return nil
}

// StopUnit stops unit (mode "replace") and waits until the stop job has
// finished or ctx is done. Every process of the unit is then gone (the
// unit's KillMode permitting).
func StopUnit(ctx context.Context, conn *sdbus.Conn, unit string) error {
	ch := make(chan string, 1)
	if _, err := conn.StopUnitContext(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("stop unit %s: %w", unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("stop unit %s: job %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop unit %s: %w", unit, ctx.Err())
	}
}
