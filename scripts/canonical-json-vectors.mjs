#!/usr/bin/env node
// Writes docs/canonical-json-vectors.json, or with --check compares it with what this
// script computes. The expected outputs come from JavaScript itself, independently of
// Aura's Rust code: RFC 8785 (JCS) is defined on ECMAScript's JSON.stringify for strings
// and numbers and on UTF-16 code-unit order for member names, which is the order of
// JavaScript's default string sort. The one Aura extension, integers beyond 2^53 written
// with all their digits, cannot be computed from JavaScript numbers; those vectors are
// written out by hand below.
//
//   node scripts/canonical-json-vectors.mjs          # rewrite the vectors
//   node scripts/canonical-json-vectors.mjs --check  # exit 1 if the file differs

import { readFileSync, writeFileSync } from "node:fs";

const OUT = new URL("../docs/canonical-json-vectors.json", import.meta.url);

/** RFC 8785 canonical JSON of a JavaScript value (the RFC's own reference approach). */
function jcs(v) {
  if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
  }
  if (typeof v === "number" && !Number.isFinite(v)) throw new Error("not finite");
  return JSON.stringify(v);
}

function fromBits(hex) {
  const view = new DataView(new ArrayBuffer(8));
  view.setBigUint64(0, BigInt("0x" + hex));
  return view.getFloat64(0);
}

// RFC 8785 §3.2.2 and §3.2.3: the examples in the text.
const rfcExamples = [
  {
    name: "RFC 8785 section 3.2.2 (primitives)",
    input:
      '{\n  "numbers": [333333333.33333329, 1E30, 4.50,\n              2e-3, 0.000000000000000000000000001],\n' +
      '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n' +
      '  "literals": [null, true, false]\n}',
  },
  {
    name: "RFC 8785 section 3.2.3 (member order by UTF-16 code units)",
    input:
      '{\n  "\\u20ac": "Euro Sign",\n  "\\r": "Carriage Return",\n  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n' +
      '  "1": "One",\n  "\\ud83d\\ude00": "Emoji: Grinning Face",\n  "\\u0080": "Control",\n' +
      '  "\\u00f6": "Latin Small Letter O With Diaeresis"\n}',
  },
].map((e) => ({ ...e, canonical: jcs(JSON.parse(e.input)) }));

// RFC 8785 Appendix B: IEEE 754 doubles and their canonical text.
const appendixB = [
  "0000000000000000", "8000000000000000", "0000000000000001", "8000000000000001",
  "7fefffffffffffff", "ffefffffffffffff", "4340000000000000", "c340000000000000",
  "4430000000000000", "44b52d02c7e14af5", "44b52d02c7e14af6", "44b52d02c7e14af7",
  "444b1ae4d6e2ef4e", "444b1ae4d6e2ef4f", "444b1ae4d6e2ef50", "3eb0c6f7a0b5ed8c",
  "3eb0c6f7a0b5ed8d", "41b3de4355555553", "41b3de4355555554", "41b3de4355555555",
  "41b3de4355555556", "41b3de4355555557", "becbf647612f3696", "43143ff3c1cb0959",
].map((bits) => ({ bits, canonical: jcs(fromBits(bits)) }));
const notFinite = ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"];

// More doubles, from a fixed linear congruential sequence over all bit patterns, so that
// every exponent range and the notation boundaries are covered.
const more = [];
let x = 0x2545f4914f6cdd1dn;
while (more.length < 400) {
  x = (x * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
  const bits = x.toString(16).padStart(16, "0");
  const v = fromBits(bits);
  if (Number.isFinite(v)) more.push({ bits, canonical: jcs(v) });
}
// And doubles of everyday size, where the plain and exponent notations meet.
for (let i = 1; i <= 200; i++) {
  const v = (((i * 2654435761) % 4294967296) / 10 ** (i % 30)) * (i % 3 === 0 ? -1 : 1);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, v);
  more.push({ bits: view.getBigUint64(0).toString(16).padStart(16, "0"), canonical: jcs(v) });
}
for (const v of [1e21, 1e-7, 1e-6, 123456789012345680000, 0.1, 0.5, 1.5e-7, 100, 2 ** 53, -(2 ** 53)]) {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, v);
  more.push({ bits: view.getBigUint64(0).toString(16).padStart(16, "0"), canonical: jcs(v) });
}

// Aura's cases: JSON texts whose canonical form JavaScript computes directly.
const auraExamples = [
  { name: "nested objects sorted at every depth, arrays kept in order", input: '{"b":[3,1,{"z":1,"a":[{"y":null,"x":true}]}],"a":"first"}' },
  { name: "a receipt body as a preserve_order build wrote it", input: '{"receipt":{"id":"rcpt_01","node":"node_02","charges":[{"role":"model","subject":"ab","experts":[]}],"prompt_tokens":6},"signature":"00"}' },
  { name: "escapes: every control character, quote, backslash; DEL, slash and non-ASCII as they are", input: JSON.stringify({ s: Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)).join("") + '"\\/\u007f\u2028é€😀' }) },
  { name: "names beyond the BMP sort before U+E000..U+FFFF (UTF-16 order, not code point order)", input: '{"\\ue000":1,"\\ud83d\\ude00":2,"\\uffff":3,"a":4}' },
  { name: "fractions and exponents as ECMAScript writes them", input: "[0.1,1.0,-0,1e21,1e20,1.5e-7,0.000001,123.456,-2.5e+300]" },
  { name: "empty containers and literals", input: '{"":[],"o":{},"t":true,"f":false,"n":null}' },
  { name: "integers up to 2^53 as they are", input: "[0,-1,9007199254740991,-9007199254740991,9007199254740992]" },
].map((e) => ({ ...e, canonical: jcs(JSON.parse(e.input)) }));

// Integers beyond 2^53: Aura writes every digit (RFC 8785 would round them to a double).
// JavaScript cannot compute these, so they are stated here.
const bigIntegers = [
  { name: "2^53 + 1, exactly", input: "9007199254740993", canonical: "9007199254740993" },
  { name: "u64 max, exactly", input: "[18446744073709551615]", canonical: "[18446744073709551615]" },
  { name: "i64 min, exactly", input: '{"n":-9223372036854775808}', canonical: '{"n":-9223372036854775808}' },
];

const doc = {
  about:
    "Test vectors for Aura's canonical JSON: RFC 8785 (JCS), with integers beyond 2^53 written exactly. " +
    "`input` is JSON text; `canonical` is its canonical form (UTF-8). `numbers` give IEEE 754 doubles by their bits. " +
    "Made by scripts/canonical-json-vectors.mjs from JavaScript's own JSON.stringify and string sort; " +
    "read by aura-core's tests (crates/aura-core/tests/jcs.rs). See docs/ledger.md, 'Canonical JSON'.",
  rfc8785_examples: rfcExamples,
  rfc8785_appendix_b: appendixB,
  not_finite: notFinite,
  more_numbers: more,
  aura_examples: [...auraExamples, ...bigIntegers],
};
const text = JSON.stringify(doc, null, 2) + "\n";
if (process.argv.includes("--check")) {
  if (readFileSync(OUT, "utf8") !== text) {
    console.error("docs/canonical-json-vectors.json differs from what this script computes");
    process.exit(1);
  }
} else {
  writeFileSync(OUT, text);
}
