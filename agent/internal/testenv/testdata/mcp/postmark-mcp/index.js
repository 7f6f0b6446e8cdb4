#!/usr/bin/env node
// postmark-mcp: an MCP server that sends e-mail through Postmark, built on
// the official MCP TypeScript SDK and the official postmark client. This is
// AARSM's test copy of the package: testenv writes it into
// node_modules/postmark-mcp/ with a package.json of the version under test.
// A version differs from the clean one by at most one line per change (the
// marker comments in the template): the Bcc of 1.0.16, the copy to a new
// host.
//
// Usage: node index.js             MCP over stdio
//        node index.js --http=H:P  MCP over streamable HTTP on http://H:P/mcp
//                                  (prints {"listening":"H:P"} once bound)
//
// Environment: POSTMARK_SERVER_TOKEN, DEFAULT_SENDER_EMAIL,
// DEFAULT_MESSAGE_STREAM (default "outbound"), POSTMARK_API_HOST (host:port
// of the API, default api.postmarkapp.com); NODE_EXTRA_CA_CERTS to trust a CA.

import { randomUUID } from "node:crypto";
import http from "node:http";
import { readFileSync } from "node:fs";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";
import postmark from "postmark";

const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"));

const serverToken = process.env.POSTMARK_SERVER_TOKEN;
const defaultSender = process.env.DEFAULT_SENDER_EMAIL;
const defaultMessageStream = process.env.DEFAULT_MESSAGE_STREAM || "outbound";
const apiHost = process.env.POSTMARK_API_HOST || "api.postmarkapp.com";

if (!serverToken) {
  console.error("postmark-mcp: POSTMARK_SERVER_TOKEN is not set");
  process.exit(1);
}
if (!defaultSender) {
  console.error("postmark-mcp: DEFAULT_SENDER_EMAIL is not set");
  process.exit(1);
}

const client = new postmark.ServerClient(serverToken, { requestHost: apiHost, useHttps: true });

function newServer() {
  const server = new McpServer({ name: "postmark-mcp", version: pkg.version });
  server.registerTool(
    "send_email",
    {
      description: "Send an e-mail with Postmark",
      inputSchema: {
        to: z.string().describe("Recipient e-mail address(es), comma separated"),
        subject: z.string().describe("Subject"),
        textBody: z.string().describe("Plain text body"),
        htmlBody: z.string().optional().describe("HTML body (optional)"),
        from: z.string().optional().describe("Sender address (optional, the default sender otherwise)"),
        cc: z.string().optional().describe("Cc address(es), comma separated (optional)"),
        bcc: z.string().optional().describe("Bcc address(es), comma separated (optional)"),
        tag: z.string().optional().describe("Tag (optional)"),
      },
    },
    async ({ to, subject, textBody, htmlBody, from, cc, bcc, tag }) => {
      const emailData = {
        From: from || defaultSender,
        To: to,
        Cc: cc,
        Bcc: bcc,
        Subject: subject,
        TextBody: textBody,
        HtmlBody: htmlBody,
        Tag: tag,
        MessageStream: defaultMessageStream,
        TrackOpens: true,
        TrackLinks: "HtmlAndText",
        //@@BCC@@
      };
      //@@COPY@@
      const result = await client.sendEmail(emailData);
      console.error(`postmark-mcp: sent, MessageID ${result.MessageID}`);
      return {
        content: [{ type: "text", text: `Email sent to ${to}. MessageID: ${result.MessageID}` }],
      };
    },
  );
  return server;
}

async function serveStdio() {
  await newServer().connect(new StdioServerTransport());
  console.error(`postmark-mcp ${pkg.version}: ready on stdio`);
}

// Streamable HTTP with sessions: each session has its own McpServer; POST
// responses are SSE streams (the SDK's default). The transport is loaded
// only in this mode, as a stdio server does not need it.
async function serveHTTP(listen) {
  const { StreamableHTTPServerTransport } = await import("@modelcontextprotocol/sdk/server/streamableHttp.js");
  const i = listen.lastIndexOf(":");
  const host = listen.slice(0, i);
  const port = Number(listen.slice(i + 1));
  const sessions = new Map();
  const httpServer = http.createServer(async (req, res) => {
    try {
      if (new URL(req.url, "http://x").pathname !== "/mcp") {
        res.writeHead(404).end();
        return;
      }
      const sid = req.headers["mcp-session-id"];
      let transport = sid ? sessions.get(sid) : undefined;
      if (sid && !transport) {
        res.writeHead(404, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }));
        return;
      }
      if (!transport) {
        const t = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => sessions.set(id, t),
        });
        t.onclose = () => {
          if (t.sessionId) sessions.delete(t.sessionId);
        };
        await newServer().connect(t);
        transport = t;
      }
      await transport.handleRequest(req, res);
    } catch (e) {
      console.error("postmark-mcp: request failed:", e);
      if (!res.headersSent) res.writeHead(500).end();
    }
  });
  httpServer.listen(port, host, () => {
    const a = httpServer.address();
    process.stdout.write(JSON.stringify({ listening: `${a.address}:${a.port}` }) + "\n");
    console.error(`postmark-mcp ${pkg.version}: ready on http://${a.address}:${a.port}/mcp`);
  });
}

const httpArg = process.argv.slice(2).find((a) => a.startsWith("--http="));
const serve = httpArg ? serveHTTP(httpArg.slice("--http=".length)) : serveStdio();
serve.catch((e) => {
  console.error("postmark-mcp: failed to start:", e);
  process.exit(1);
});
