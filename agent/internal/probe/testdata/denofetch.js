// bunfetch.js for Deno: COUNT sequential fetch POSTs of SIZE bytes to URL
// over one keep-alive connection, after 100 warm-up ones; prints the mean
// nanoseconds per request.
const [url, count, size] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2])];
const body = new Uint8Array(size).fill(120);
let start = 0;
for (let i = -100; i < count; i++) {
  if (i === 0) start = performance.now();
  const res = await fetch(url, { method: "POST", body });
  await res.arrayBuffer();
  if (res.status !== 200) { console.error("status " + res.status); Deno.exit(1); }
}
console.log(((performance.now() - start) * 1e6 / count).toFixed(1));
