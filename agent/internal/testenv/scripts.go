package testenv

// pythonClient is the python3 client. argv[1] is a JSON config file
// (see pyConfig). It uses urllib.request with an ssl context built from the
// test CA; the ssl module is imported before anything else so that libssl
// is mapped when READY is printed.
const pythonClient = `import json, os, sys
import ssl
import urllib.error
import urllib.request

with open(sys.argv[1]) as f:
    cfg = json.load(f)
ctx = ssl.create_default_context(cafile=cfg["cafile"])

lib = cfg.get("expect_lib_path")
if lib:
    # Prove that the libssl this process mapped is the bind-mounted copy.
    inodes = set()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == lib:
                inodes.add(int(fields[4]))
    if inodes != {cfg["expect_lib_inode"]}:
        sys.stderr.write("testenv: %s mapped with inodes %r, want {%d}\n" % (lib, sorted(inodes), cfg["expect_lib_inode"]))
        sys.exit(3)

if cfg["wait"]:
    sys.stdout.write("READY %d\n" % os.getpid())
    sys.stdout.flush()
    if not sys.stdin.readline():
        sys.stderr.write("testenv: stdin closed before the go line\n")
        sys.exit(2)

data = None
if cfg["body_file"]:
    with open(cfg["body_file"], "rb") as f:
        data = f.read()
if cfg["chunked"]:
    body, n = data or b"", cfg["chunk_size"]
    data = iter([body[i:i + n] for i in range(0, len(body), n)])

req = urllib.request.Request(cfg["url"], data=data, method=cfg["method"])
for k, v in cfg["headers"]:
    req.add_header(k, v)
if cfg["chunked"]:
    req.add_header("Transfer-Encoding", "chunked")
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
try:
    with opener.open(req, timeout=60) as resp:
        out = resp.read()
except urllib.error.HTTPError as e:
    sys.stderr.write("testenv: HTTP status %d\n" % e.code)
    sys.exit(22)
sys.stdout.buffer.write(out)
sys.stdout.flush()
`

// nodeClient is the node client. argv[2] is a JSON config file (see
// pyConfig, shared). It uses the https module with the ca option and no
// agent.
const nodeClient = `'use strict';
const https = require('https');
const fs = require('fs');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const ca = fs.readFileSync(cfg.cafile);

function waitForLine() {
  const b = Buffer.alloc(1);
  for (;;) {
    let n;
    try {
      n = fs.readSync(0, b, 0, 1, null);
    } catch (e) {
      if (e.code === 'EAGAIN') continue;
      throw e;
    }
    if (n === 0) {
      process.stderr.write('testenv: stdin closed before the go line\n');
      process.exit(2);
    }
    if (b[0] === 10) return;
  }
}

function run() {
  const body = cfg.body_file ? fs.readFileSync(cfg.body_file) : null;
  const headers = {};
  for (const [k, v] of cfg.headers) headers[k] = v;
  if (cfg.chunked) headers['Transfer-Encoding'] = 'chunked';
  const req = https.request(new URL(cfg.url), { method: cfg.method, headers, ca, agent: false }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => {
      process.stdout.write(Buffer.concat(chunks));
      if (res.statusCode < 200 || res.statusCode > 299) {
        process.stderr.write('testenv: HTTP status ' + res.statusCode + '\n');
        process.exitCode = 22;
      }
    });
  });
  req.on('error', (e) => {
    process.stderr.write('testenv: request failed: ' + (e.stack || e) + '\n');
    process.exit(1);
  });
  if (body === null || body.length === 0) {
    req.end();
  } else if (cfg.chunked) {
    for (let i = 0; i < body.length; i += cfg.chunk_size) req.write(body.subarray(i, i + cfg.chunk_size));
    req.end();
  } else {
    req.end(body);
  }
}

if (cfg.wait) {
  process.stdout.write('READY ' + process.pid + '\n');
  waitForLine();
}
run();
`

// waitWrapper is a /bin/sh script for clients that cannot wait by
// themselves (curl, openssl): it prints READY with its PID, waits for one
// line and then execs the client, which therefore keeps the PID. The TLS
// library is mapped only after the exec, i.e. after the go line.
// $1 is a file for stdin ("" keeps stdin), the rest is the client argv.
const waitWrapper = `echo "READY $$"
IFS= read -r _ || { echo "testenv: stdin closed before the go line" >&2; exit 2; }
in=$1
shift
if [ -n "$in" ]; then exec "$@" <"$in"; fi
exec "$@"
`
