// COUNT sequential fetch POSTs of SIZE bytes to URL over one keep-alive
// connection, after 100 warm-up ones; prints the mean nanoseconds per
// request. (Bun's own TLS sockets coalesce small writes: a request is
// the unit a program sees.)
const [url, count, size] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const body = new Uint8Array(size).fill(120);
let start = 0n;
for (let i = -100; i < count; i++) {
  if (i === 0) start = process.hrtime.bigint();
  const res = await fetch(url, { method: "POST", body });
  await res.arrayBuffer();
  if (res.status !== 200) { console.error("status " + res.status); process.exit(1); }
}
console.log((Number(process.hrtime.bigint() - start) / count).toFixed(1));
