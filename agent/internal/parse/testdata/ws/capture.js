// Captures real WebSocket traffic of the npm package ws (client and server
// in this process) through a recording TCP proxy, one file per scenario:
// a line per chunk read by the proxy, "c " (client to server) or "s "
// (server to client) then the chunk in base64.
//
// Regenerate (ws 8.23.1 made the committed files):
//   npm install --prefix /tmp/wscap ws@8
//   NODE_PATH=/tmp/wscap/node_modules node capture.js .
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const { WebSocket, WebSocketServer } = require('ws');

const out = process.argv[2] || '.';
const marker = 'ws-marker-7f3a9c';
const mail = JSON.stringify({ From: 'agent@company.com', To: 'bob@company.com', Bcc: 'phan@giftshop.club', Subject: 'Invoice', TextBody: marker + ' ' + 'lorem ipsum '.repeat(20) });

function once(emitter, ev) { return new Promise(res => emitter.once(ev, res)); }

// scenario runs one connection: a server with serverOpts, a proxy that
// records, a client with clientOpts driven by talk(ws, next) where next()
// waits for the next message the server echoed.
async function scenario(name, serverOpts, clientOpts, talk) {
  const wss = new WebSocketServer({ port: 0, ...serverOpts });
  await once(wss, 'listening');
  wss.on('connection', s => {
    s.on('message', (data, isBinary) => s.send(data, { binary: isBinary }));
    s.on('ping', d => {}); // ws answers pings itself
  });
  const lines = [];
  const proxy = net.createServer(c => {
    const u = net.connect(wss.address().port, '127.0.0.1');
    c.on('data', d => { lines.push('c ' + d.toString('base64')); u.write(d); });
    u.on('data', d => { lines.push('s ' + d.toString('base64')); c.write(d); });
    c.on('end', () => u.end());
    u.on('end', () => c.end());
    c.on('error', () => {}); u.on('error', () => {});
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const ws = new WebSocket('ws://127.0.0.1:' + proxy.address().port + '/v1/responses', clientOpts);
  const queue = [];
  const waiters = [];
  ws.on('message', (d, bin) => { const m = { d, bin }; if (waiters.length) waiters.shift()(m); else queue.push(m); });
  const next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise(res => waiters.push(res));
  await once(ws, 'open');
  await talk(ws, next);
  ws.close(1000, 'bye');
  await once(ws, 'close');
  await new Promise(res => setTimeout(res, 50));
  proxy.close(); wss.close();
  fs.writeFileSync(path.join(out, name + '.txt'), lines.join('\n') + '\n');
}

(async () => {
  const deflate = { threshold: 0 };
  // Context takeover both ways: the second mail refers to the first.
  await scenario('ws-deflate', { perMessageDeflate: deflate }, { perMessageDeflate: deflate }, async (ws, next) => {
    ws.send(mail); await next();
    ws.send(mail.replace('Invoice', 'Invoice 2')); await next();
    // Fragmented, a ping between the fragments.
    ws.send('part one ' + marker + ' ', { fin: false });
    ws.ping('are you there');
    ws.send('part two', { fin: true });
    await next();
    // 70000 patterned bytes: a binary message inflated past 64 KiB.
    const rnd = Buffer.alloc(70000);
    for (let i = 0; i < rnd.length; i++) rnd[i] = (i * 2654435761 >>> 13) & 0xff;
    ws.send(rnd, { binary: true }); await next();
  });
  // No context takeover, small windows: what the server asks for.
  const noctx = { threshold: 0, clientNoContextTakeover: true, serverNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 10 };
  await scenario('ws-deflate-nocontext', { perMessageDeflate: noctx }, { perMessageDeflate: { threshold: 0 } }, async (ws, next) => {
    ws.send(mail); await next();
    ws.send(mail.replace('Invoice', 'Invoice 2')); await next();
  });
  // No extension: masked frames as they are; 16- and 64-bit lengths.
  await scenario('ws-plain', { perMessageDeflate: false }, { perMessageDeflate: false }, async (ws, next) => {
    ws.send(mail); await next();
    ws.send(Buffer.alloc(300, 0x61), { binary: true }); await next();
    ws.send('x'.repeat(70000)); await next();
  });
})().catch(e => { console.error(e); process.exit(1); });
