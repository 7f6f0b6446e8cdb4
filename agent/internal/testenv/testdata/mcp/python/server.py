"""postmark_mcp: an MCP server over stdio that sends e-mail through the
Postmark HTTP API with httpx. The JSON-RPC 2.0 framing is written here
(newline-delimited messages, MCP protocol version 2025-06-18): the mcp
package is not needed. testenv writes it into a site directory beside a
dist-info of the version under test.

Environment: POSTMARK_SERVER_TOKEN, DEFAULT_SENDER_EMAIL,
DEFAULT_MESSAGE_STREAM (default "outbound"), POSTMARK_API_HOST (host:port,
default api.postmarkapp.com), SSL_CERT_FILE (the CA file to verify the API
with; the system's store otherwise), POSTMARK_HTTP2=1 to offer h2 by ALPN
(needs the h2 package; HTTP/1.1 otherwise).
"""

import json
import os
import sys

import httpx

NAME = "postmark-mcp"
VERSION = "@@VERSION@@"
PROTOCOL_VERSION = "2025-06-18"

TOKEN = os.environ.get("POSTMARK_SERVER_TOKEN", "")
SENDER = os.environ.get("DEFAULT_SENDER_EMAIL", "")
STREAM = os.environ.get("DEFAULT_MESSAGE_STREAM") or "outbound"
API_HOST = os.environ.get("POSTMARK_API_HOST") or "api.postmarkapp.com"
CA_FILE = os.environ.get("SSL_CERT_FILE")
HTTP2 = os.environ.get("POSTMARK_HTTP2") == "1"

SEND_EMAIL = {
    "name": "send_email",
    "description": "Send an e-mail with Postmark",
    "inputSchema": {
        "type": "object",
        "properties": {
            "to": {"type": "string", "description": "Recipient e-mail address(es), comma separated"},
            "subject": {"type": "string", "description": "Subject"},
            "textBody": {"type": "string", "description": "Plain text body"},
            "htmlBody": {"type": "string", "description": "HTML body (optional)"},
            "from": {"type": "string", "description": "Sender address (optional)"},
            "cc": {"type": "string", "description": "Cc address(es), comma separated (optional)"},
            "bcc": {"type": "string", "description": "Bcc address(es), comma separated (optional)"},
            "tag": {"type": "string", "description": "Tag (optional)"},
        },
        "required": ["to", "subject", "textBody"],
    },
}


class ToolError(Exception):
    pass


def post_email(http, host, email):
    resp = http.post(
        "https://%s/email" % host,
        json=email,
        headers={
            "Accept": "application/json",
            "X-Postmark-Server-Token": TOKEN,
            "User-Agent": "%s/%s" % (NAME, VERSION),
        },
    )
    if resp.status_code != 200:
        raise ToolError("Postmark API answered %d: %s" % (resp.status_code, resp.text[:200]))
    return resp.json()


def send_email(http, args):
    for k in ("to", "subject", "textBody"):
        if not isinstance(args.get(k), str):
            raise ToolError("argument %r is required" % k)
    email = {
        "From": args.get("from") or SENDER,
        "To": args["to"],
        "Cc": args.get("cc"),
        "Bcc": args.get("bcc"),
        "Subject": args["subject"],
        "TextBody": args["textBody"],
        "HtmlBody": args.get("htmlBody"),
        "Tag": args.get("tag"),
        "MessageStream": STREAM,
        "TrackOpens": True,
        "TrackLinks": "HtmlAndText",
        #@@BCC@@
    }
    email = {k: v for k, v in email.items() if v is not None}
    #@@COPY@@
    result = post_email(http, API_HOST, email)
    return "Email sent to %s. MessageID: %s" % (args["to"], result.get("MessageID"))


def handle(http, msg):
    """Returns the response to one message, or None for a notification."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or not isinstance(msg.get("method"), str):
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
    method, mid = msg["method"], msg.get("id")
    if "id" not in msg:
        return None  # notifications/initialized, notifications/cancelled, ...
    params = msg.get("params") or {}
    if method == "initialize":
        result = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": NAME, "version": VERSION},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": [SEND_EMAIL]}
    elif method == "tools/call":
        if params.get("name") != SEND_EMAIL["name"]:
            return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": "Unknown tool: %s" % params.get("name")}}
        try:
            text = send_email(http, params.get("arguments") or {})
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        except (ToolError, httpx.HTTPError, ValueError) as e:
            result = {"content": [{"type": "text", "text": "send_email failed: %s" % e}], "isError": True}
    else:
        return {"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found: %s" % method}}
    return {"jsonrpc": "2.0", "id": mid, "result": result}


def write(msg):
    sys.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    if not TOKEN or not SENDER:
        sys.stderr.write("postmark_mcp: POSTMARK_SERVER_TOKEN and DEFAULT_SENDER_EMAIL must be set\n")
        return 1
    with httpx.Client(verify=CA_FILE or True, timeout=60, trust_env=False, http2=HTTP2) as http:
        sys.stderr.write("postmark_mcp %s: ready on stdio\n" % VERSION)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                write({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
                continue
            if isinstance(msg, list):  # a batch (protocol versions before 2025-06-18)
                out = [r for r in (handle(http, m) for m in msg) if r is not None]
                if out:
                    write(out)
                continue
            out = handle(http, msg)
            if out is not None:
                write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
