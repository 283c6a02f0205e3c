// Writes a gzip twin (name.gz) beside every text asset of dist/, which the node serves to
// browsers that accept gzip, and prints the sizes of the JavaScript a first load fetches.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const walk = (dir) => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));
let total = 0;
for (const file of walk(dist)) {
  if (!/\.(js|css|html|svg|json)$/.test(file)) continue;
  const raw = readFileSync(file);
  const gz = gzipSync(raw, { level: 9 });
  writeFileSync(file + ".gz", gz);
  if (file.endsWith(".js")) total += gz.length;
  console.log(`${file.slice(dist.length).padEnd(40)} ${String(raw.length).padStart(8)} B  gzip ${String(gz.length).padStart(7)} B`);
}
console.log(`all JavaScript, gzip: ${total} B`);
