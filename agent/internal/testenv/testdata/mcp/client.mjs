// An MCP client (an "AI app") on the official MCP TypeScript SDK: it
// connects to one server, lists its tools, calls one tool once per entry of
// "calls" and prints one JSON line per step on stdout. argv[2] is a JSON
// config file:
//   transport  "stdio" (spawn command/args/env/cwd) or "http" (url)
//   tool       tool name; calls: list of argument objects
//   wait       after the ready line, wait for one line on stdin before the
//              first call
//   timeout_ms the whole run; past it the client exits 124
// Lines: {"event":"ready","client_pid","server_pid","server","protocol_version","tools"}
//        {"event":"result","call":i,"result":<CallToolResult>}, one per call
//        {"event":"error","message"} then exit 1 when the session failed.
import { readFileSync } from "node:fs";
import readline from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

setTimeout(() => {
  emit({ event: "error", message: `timed out after ${cfg.timeout_ms} ms` });
  process.exit(124);
}, cfg.timeout_ms).unref();

function waitForLine() {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    let got = false;
    rl.once("line", () => {
      got = true;
      rl.close();
      process.stdin.destroy();
      resolve();
    });
    rl.once("close", () => {
      if (!got) reject(new Error("stdin closed before the go line"));
    });
  });
}

async function main() {
  let transport;
  if (cfg.transport === "http") {
    transport = new StreamableHTTPClientTransport(new URL(cfg.url));
  } else {
    transport = new StdioClientTransport({
      command: cfg.command,
      args: cfg.args,
      env: cfg.env,
      cwd: cfg.cwd || undefined,
      stderr: "inherit",
    });
  }
  // The SDK tells the transport which protocol version was negotiated.
  let negotiated = null;
  const setVersion = transport.setProtocolVersion?.bind(transport);
  transport.setProtocolVersion = (v) => {
    negotiated = v;
    setVersion?.(v);
  };
  const client = new Client({ name: "aarsm-test-client", version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  emit({
    event: "ready",
    client_pid: process.pid,
    server_pid: cfg.transport === "http" ? null : transport.pid,
    server: client.getServerVersion(),
    protocol_version: negotiated,
    tools: tools.tools.map((t) => t.name),
  });
  if (cfg.wait) await waitForLine();
  for (let i = 0; i < cfg.calls.length; i++) {
    const result = await client.callTool({ name: cfg.tool, arguments: cfg.calls[i] });
    emit({ event: "result", call: i, result });
  }
  if (cfg.transport === "http") await transport.terminateSession();
  await client.close();
}

main().then(
  () => process.exit(0),
  (e) => {
    emit({ event: "error", message: String((e && e.stack) || e) });
    process.exit(1);
  },
);
