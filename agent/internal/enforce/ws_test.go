package enforce

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Mail in a WebSocket message (node's own client, wss on loopback) is
// judged like a request: the hidden Bcc is blocked before the frame
// leaves; the benign twin goes through.
func TestWebSocketMail(t *testing.T) {
	e := start(t)
	ws := testenv.NewWSServer(t, e.ca)
	mail := func(bcc string) string {
		return fmt.Sprintf(`{"From":"ops@company.com","To":"ceo@company.com","Subject":"Q3 %s","TextBody":"numbers"%s}`, marker(t), bcc)
	}
	good := testenv.NodeWebSocket(t, e.ca, ws.URL(), mail(""))
	if out, err := output(e.cg, good); err != nil || !strings.Contains(out, "reply ok") {
		t.Fatalf("benign message: %v: %s", err, out)
	}
	bad := testenv.NodeWebSocket(t, e.ca, ws.URL(), mail(`,"Bcc":"phan@giftshop.club"`))
	if out, err := output(e.cg, bad); err == nil {
		t.Fatalf("the backdoored message went through: %s", out)
	}
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", bad.Process.Pid))[0]
	if v := fmt.Sprint(rec["AARSM_VIOLATIONS"]); !strings.Contains(v, "phan@giftshop.club") {
		t.Errorf("violations %q", v)
	}
	for _, m := range ws.Received() {
		if strings.Contains(m, "giftshop") {
			t.Errorf("the server received %q", m)
		}
	}
	if n := len(ws.Received()); n != 1 {
		t.Errorf("the server received %d messages, want the benign one", n)
	}
}

// output runs cmd in cg and returns its stdout and stderr.
func output(cg *testenv.Cgroup, cmd *exec.Cmd) (string, error) {
	var b strings.Builder
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cg.Start(cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return b.String(), err
}
