package enforce

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

const nodeH2Client = `const http2 = require('http2'), fs = require('fs');
const [url, ca, bodyFile] = process.argv.slice(2);
const c = http2.connect(url, {ca: fs.readFileSync(ca)});
c.on('error', e => { console.error(e.message); process.exit(1); });
const req = c.request({':method': 'POST', ':path': '/email', 'content-type': 'application/json',
  'x-postmark-server-token': 'server-token'});
let status = 0;
req.on('response', h => { status = h[':status']; });
req.on('data', () => {});
req.on('end', () => { c.close(); process.exit(status === 200 ? 0 : 22); });
req.end(fs.readFileSync(bodyFile));
`

const httpxH2Client = `import httpx, sys
url, ca, body_file = sys.argv[1:4]
with httpx.Client(http2=True, verify=ca) as c:
    r = c.post(url + "/email", content=open(body_file, "rb").read(),
               headers={"Content-Type": "application/json", "X-Postmark-Server-Token": "server-token"})
    sys.exit(0 if r.status_code == 200 and r.http_version == "HTTP/2" else 22)
`

// h2Client returns an unstarted command of one real HTTP/2 client that
// posts the body in file to url's /email.
func h2Client(t *testing.T, name, url, ca, file string) *exec.Cmd {
	dir := t.TempDir()
	switch name {
	case "curl", "curl --http2":
		// Debian's curl; with no protocol flag, h2 by ALPN when the server
		// offers it.
		args := []string{"-sS", "--fail", "--noproxy", "*", "--cacert", ca,
			"-H", "Content-Type: application/json", "-H", "X-Postmark-Server-Token: server-token",
			"--data-binary", "@" + file, url + "/email"}
		if name == "curl --http2" {
			args = append(args, "--http2")
		}
		return exec.Command("curl", args...)
	case "node http2":
		script := filepath.Join(dir, "client.js")
		if err := os.WriteFile(script, []byte(nodeH2Client), 0o644); err != nil {
			t.Fatal(err)
		}
		return exec.Command("node", script, url, ca, file)
	case "python httpx":
		script := filepath.Join(dir, "client.py")
		if err := os.WriteFile(script, []byte(httpxH2Client), 0o644); err != nil {
			t.Fatal(err)
		}
		// Debian's python3, where python3-httpx and python3-h2 live.
		return exec.Command("/usr/bin/python3", script, url, ca, file)
	}
	t.Fatalf("no client %s", name)
	return nil
}

// Real HTTP/2 clients against an API that offers h2 by ALPN, as the big
// providers do: the backdoored mail is blocked before a byte of it
// leaves, its benign twin is delivered over HTTP/2.
func TestHTTP2Clients(t *testing.T) {
	e := start(t)
	for _, client := range []string{"curl", "curl --http2", "node http2", "python httpx"} {
		t.Run(client, func(t *testing.T) {
			mark := marker(t)
			bad, twin := evasionBodies(mark, "")
			for _, v := range []struct {
				body string
				bad  bool
			}{{bad, true}, {twin, false}} {
				file := filepath.Join(t.TempDir(), "body.json")
				if err := os.WriteFile(file, []byte(v.body), 0o644); err != nil {
					t.Fatal(err)
				}
				api, killed, out, err := sendMail(t, e, func(api *testenv.MailAPI) *exec.Cmd {
					return h2Client(t, client, api.URL(), e.ca.CAFile, file)
				})
				if v.bad {
					if !killed {
						t.Errorf("backdoored mail: client %v, want killed\n%s", err, out)
					}
					if bytes.Contains(api.Received(), []byte(mark+"-bad")) || len(api.Requests()) != 0 {
						t.Errorf("the backdoored mail reached the API (%d requests)", len(api.Requests()))
					}
					continue
				}
				reqs := api.Requests()
				if err != nil || len(reqs) != 1 || !strings.Contains(string(reqs[0].Body), mark+"-twi") || reqs[0].Proto != "HTTP/2.0" {
					t.Errorf("benign twin: client %v, requests %+v\n%s", err, reqs, out)
				}
			}
		})
	}
}
