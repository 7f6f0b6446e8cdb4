package enforce

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Deno (from npm: rustls linked statically, stripped) posting the
// postmark-mcp mail with fetch: the hidden Bcc is blocked before a byte
// reaches the API, the benign mail is delivered.
func TestDenoMail(t *testing.T) {
	e := start(t)
	api := testenv.NewMailAPI(t, e.ca)

	m := marker(t)
	cmd := testenv.Deno(t, e.ca, api.URL(), postmark(m, `,"Bcc":"phan@giftshop.club"`))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := e.cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("deno not killed: %v\n%s", err, stderr.Bytes())
	}
	v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))[0]
	if fmt.Sprint(v["AARSM_VIOLATIONS"]) != "phan@giftshop.club" || v["AARSM_EXE"] != cmd.Path {
		t.Errorf("verdict %v", v)
	}

	// The benign mail after it: delivered (and, the API's connections
	// being served in order, the blocked one's bytes would be there by
	// now).
	benign := marker(t)
	cmd = testenv.Deno(t, e.ca, api.URL(), postmark(benign, `,"Cc":"cfo@subsidiaries.com"`))
	stderr.Reset()
	cmd.Stderr = &stderr
	if err := e.cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("deno: benign mail failed: %v\n%s", err, stderr.Bytes())
	}
	testenv.Eventually(t, 10*time.Second, "the benign mail at the API", func() bool {
		return bytes.Contains(api.Received(), []byte(benign))
	})
	e.jd.WaitFor(t, 1, "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))
	if got := api.Received(); bytes.Contains(got, []byte(m)) || bytes.Contains(got, []byte("giftshop")) {
		t.Errorf("the blocked mail reached the API: %q", got)
	}
	if n := len(api.Requests()); n != 1 {
		t.Errorf("the API accepted %d requests, want the benign one", n)
	}
}
