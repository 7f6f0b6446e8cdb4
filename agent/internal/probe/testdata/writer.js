// The node counterpart of writer.c: COUNT writes of SIZE bytes, one after
// the other (each waits for the previous one, so each is one SSL_write),
// prints the mean nanoseconds per write.
const tls = require('tls');
const [port, count, size] = process.argv.slice(2).map(Number);
const buf = Buffer.alloc(size, 'x');
const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
  let i = -1000; // warm-up writes first
  let start = 0n;
  const next = () => {
    if (i === 0) start = process.hrtime.bigint();
    if (i === count) {
      console.log((Number(process.hrtime.bigint() - start) / count).toFixed(1));
      s.end();
      return;
    }
    i++;
    s.write(buf, next);
  };
  next();
});
s.on('error', (e) => { console.error(e.message); process.exit(1); });
