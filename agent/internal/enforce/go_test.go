package enforce

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// goMail is the request of a mail body to the fake Postmark API.
func goMail(body string) testenv.Request {
	return testenv.Request{
		Method: "POST",
		Path:   "/email",
		Header: map[string]string{"Content-Type": "application/json", "X-Postmark-Server-Token": "server-token"},
		Body:   []byte(body),
	}
}

// Go programs (crypto/tls, net/http) over HTTP/1.1 and HTTP/2 (net/http's
// default by ALPN), stripped or not: the backdoored mail is blocked before
// a byte of it reaches the API, its benign twin is delivered.
func TestGoClientMail(t *testing.T) {
	e := start(t)
	for _, stripped := range []bool{false, true} {
		bin := testenv.BuildGoClient(t, stripped)
		for _, proto := range []string{"h1", "h2"} {
			t.Run(fmt.Sprintf("%s stripped=%v", proto, stripped), func(t *testing.T) {
				mark := marker(t)
				bad, twin := evasionBodies(mark, "")
				for _, v := range []struct {
					body string
					bad  bool
				}{{bad, true}, {twin, false}} {
					api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
						return testenv.GoClient(t, bin, e.ca, api.URL(), goMail(v.body), proto)
					})
					checkGoMail(t, api, v.bad, killed, out, err, mark, proto)
				}
			})
		}
	}
}

// A Go program run from a path that exists only in its own mount
// namespace: held at exec until examined through /proc/PID/root, its
// backdoored mail blocked, the benign twin delivered.
func TestGoClientMailInMountNS(t *testing.T) {
	e := start(t)
	bin := testenv.BuildGoClient(t, true)
	mark := marker(t)
	bad, twin := evasionBodies(mark, "")
	for _, v := range []struct {
		body string
		bad  bool
	}{{bad, true}, {twin, false}} {
		api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
			cmd, _ := testenv.GoClientInMountNS(t, bin, e.ca, api.URL(), goMail(v.body), "h2")
			return cmd
		})
		checkGoMail(t, api, v.bad, killed, out, err, mark, "h2")
	}
}

func checkGoMail(t *testing.T, api *testenv.MailAPI, bad, killed bool, out string, err error, mark, proto string) {
	t.Helper()
	if bad {
		if !killed {
			t.Errorf("backdoored mail: client %v, want killed\n%s", err, out)
		}
		// Not one byte of the mail: its JSON starts `{"From"`.
		if rcv := api.Received(); bytes.Contains(rcv, []byte(mark+"-bad")) || bytes.Contains(rcv, []byte(`{"From"`)) || len(api.Requests()) != 0 {
			t.Errorf("the backdoored mail reached the API (%d requests, %d bytes of plaintext)", len(api.Requests()), len(api.Received()))
		}
		return
	}
	wantProto := map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0"}[proto]
	reqs := api.Requests()
	if err != nil || len(reqs) != 1 || !strings.Contains(string(reqs[0].Body), mark+"-twi") || reqs[0].Proto != wantProto {
		t.Errorf("benign twin: client %v, requests %+v\n%s", err, reqs, out)
	}
}

// A Go program that was running before the agent started (found by the
// scan of running processes, its connection unknown to the kernel) is
// held and judged all the same.
func TestGoStartedBeforeAgentIsBlocked(t *testing.T) {
	testenv.RequireRoot(t)
	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	bin := testenv.BuildGoClient(t, true)
	cg := testenv.NewCgroup(t)
	mark := marker(t)
	bad, _ := evasionBodies(mark, "")
	req := goMail(bad)
	req.WaitForStdinLine = true
	cmd := testenv.GoClient(t, bin, ca, api.URL(), req, "h2")
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, 10*time.Second)

	e := startWith(t, companyPolicy(t), cg, nil)
	gate.Go(t)
	err := cmd.Wait()
	var ee *exec.ExitError
	killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", pid))
	checkGoMail(t, api, true, killed, string(gate.Stdout()), err, mark, "h2")
}
