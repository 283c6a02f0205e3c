// Byte helpers shared by the ledger and approval code: hex, base64, Crockford base32 ids,
// big-endian integers, and a bounds-checked reader that never reads past its input.

export function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

export function unhex(s: string): Uint8Array {
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) throw new Error("not hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/** 16 bytes as 26 Crockford base32 digits (the first carries 3 bits), as Aura writes ids. */
export function base32(bytes: Uint8Array): string {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let s = "";
  for (let i = 0; i < 26; i++) {
    s = ALPHABET[Number(n & 31n)] + s;
    n >>= 5n;
  }
  return s;
}

export function unbase32(s: string): Uint8Array {
  if (s.length !== 26) throw new Error("an id has 26 base32 digits");
  let n = 0n;
  for (let i = 0; i < 26; i++) {
    const v = ALPHABET.indexOf(s[i].toLowerCase());
    if (v < 0 || (i === 0 && v > 7)) throw new Error("not a base32 id");
    n = (n << 5n) | BigInt(v);
  }
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/** `prefix_<base32>` (or `node` for the node's own stream) to its 16 bytes. */
export function idBytes(id: string, prefix: string): Uint8Array {
  if (prefix === "agent" && id === "node") return new Uint8Array(16);
  if (!id.startsWith(prefix + "_")) throw new Error(`not a ${prefix} id`);
  return unbase32(id.slice(prefix.length + 1));
}

export function idString(bytes: Uint8Array, prefix: string): string {
  if (prefix === "agent" && bytes.every((b) => b === 0)) return "node";
  return `${prefix}_${base32(bytes)}`;
}

/** Writes Aura's canonical encoding: big-endian integers and raw bytes. */
export class Writer {
  private parts: Uint8Array[] = [];
  u8(v: number): this {
    this.parts.push(Uint8Array.of(v & 0xff));
    return this;
  }
  u16(v: number): this {
    this.parts.push(Uint8Array.of((v >> 8) & 0xff, v & 0xff));
    return this;
  }
  u32(v: number): this {
    this.parts.push(Uint8Array.of((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff));
    return this;
  }
  u64(v: bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v);
    this.parts.push(b);
    return this;
  }
  raw(b: Uint8Array): this {
    this.parts.push(b);
    return this;
  }
  finish(): Uint8Array {
    return concat(...this.parts);
  }
}

/** Reads Aura's canonical encoding; every read is bounds-checked and names its field. */
export class Reader {
  private at = 0;
  private view: DataView;
  constructor(private bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(n: number, field: string): void {
    if (this.at + n > this.bytes.length) {
      throw new Error(`truncated at byte ${this.at}: ${field} needs ${n} bytes`);
    }
  }
  u8(field: string): number {
    this.need(1, field);
    return this.bytes[this.at++];
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.at);
    this.at += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = this.view.getBigUint64(this.at);
    this.at += 8;
    return v;
  }
  take(n: number, field: string): Uint8Array {
    this.need(n, field);
    const out = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  get position(): number {
    return this.at;
  }
  finish(): void {
    if (this.at !== this.bytes.length) {
      throw new Error(`${this.bytes.length - this.at} trailing bytes`);
    }
  }
}
