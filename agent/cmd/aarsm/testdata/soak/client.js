// Soak client (node's https, OpenSSL inside node): as client.py with a
// keep-alive agent of one socket, a new agent after a failure.
const https = require('https');
const fs = require('fs');
const [host, port, caFile, firstS, nS, violFile] = process.argv.slice(2);
const bad = new Set(fs.readFileSync(violFile, 'utf8').split(/\s+/).filter(Boolean).map(Number));
const ca = fs.readFileSync(caFile);
const first = Number(firstS), n = Number(nS);
const newAgent = () => new https.Agent({ keepAlive: true, maxSockets: 1, ca });
let agent = newAgent();

function post(i) {
  return new Promise((resolve, reject) => {
    const mail = { From: 'ops@company.com', To: 'ceo@company.com', Subject: `soak ${i}`, TextBody: `report ${i} ` + 'x'.repeat(i % 700) };
    if (bad.has(i)) mail.Bcc = `leak-${i}@giftshop.club`;
    const body = JSON.stringify(mail);
    const req = https.request({ host, port: Number(port), path: '/email', method: 'POST', agent, ca,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Soak-Id': String(i) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60000, () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

(async () => {
  let ok = 0, failed = 0;
  const out = [];
  for (let i = first; i < first + n; i++) {
    try {
      await post(i);
      ok++;
    } catch (e) {
      failed++;
      out.push(`F ${i} ${e.code || e.message}`);
      agent.destroy();
      agent = newAgent();
    }
  }
  if (out.length) console.log(out.join('\n'));
  console.log(`DONE ${ok} ${failed}`);
})();
