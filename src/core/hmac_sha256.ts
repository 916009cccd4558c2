/**
 * HMAC-SHA-256 (RFC 2104, FIPS 180-4), synchronous, for tagging every SSE
 * event id a guarded stream carries: WebCrypto's `crypto.subtle.sign` is
 * asynchronous and costs tens of microseconds per call, which a stream of
 * small events would pay per event.
 *
 * A key's padded blocks are absorbed once ({@linkcode hmacSha256Key}), and so
 * can a message prefix that is the same for many messages
 * (`withPrefix`): signing a short message then costs
 * two compressions. The output is the standard HMAC-SHA-256 (the tests hold
 * it to WebCrypto's over random keys and messages).
 *
 * @module
 */

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);

const IV = new Int32Array([
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
]);

const BLOCK = 64;

// Scratch space, reused: everything here is synchronous.
const W = new Int32Array(64);
const H = new Int32Array(8);
let pad = new Uint8Array(4 * BLOCK);
const inner = new Uint8Array(32);

/** Absorbs the 64-byte block of `bytes` at `at` into `h`. */
function compress(h: Int32Array, bytes: Uint8Array, at: number): void {
  for (let i = 0; i < 16; i++) {
    const j = at + i * 4;
    W[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
  }
  for (let i = 16; i < 64; i++) {
    const a = W[i - 15];
    const b = W[i - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
  }
  let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (k + s1 + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    k = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
  h[5] = (h[5] + f) | 0;
  h[6] = (h[6] + g) | 0;
  h[7] = (h[7] + k) | 0;
}

/** Absorbs `bytes` (a whole number of blocks) into a copy of `state`. */
function absorb(state: Int32Array, bytes: Uint8Array): Int32Array {
  const h = state.slice();
  for (let at = 0; at < bytes.length; at += BLOCK) compress(h, bytes, at);
  return h;
}

/**
 * The digest of the message whose first `prior` bytes (a whole number of
 * blocks) left `state`, and whose rest is `tail`, written into `out`.
 */
function finish(state: Int32Array, prior: number, tail: Uint8Array, out: Uint8Array): void {
  const n = tail.length;
  const total = ((n + 9 + BLOCK - 1) >>> 6) << 6;
  if (pad.length < total) pad = new Uint8Array(total * 2);
  // Short messages (event ids) are copied byte by byte: cheaper than a builtin call.
  if (n > BLOCK) pad.set(tail);
  else for (let i = 0; i < n; i++) pad[i] = tail[i];
  pad[n] = 0x80;
  for (let i = n + 1; i < total - 8; i++) pad[i] = 0;
  const bits = (prior + n) * 8;
  const high = Math.floor(bits / 0x100000000);
  const low = bits >>> 0;
  pad[total - 8] = high >>> 24;
  pad[total - 7] = high >>> 16;
  pad[total - 6] = high >>> 8;
  pad[total - 5] = high;
  pad[total - 4] = low >>> 24;
  pad[total - 3] = low >>> 16;
  pad[total - 2] = low >>> 8;
  pad[total - 1] = low;
  for (let i = 0; i < 8; i++) H[i] = state[i];
  for (let at = 0; at < total; at += BLOCK) compress(H, pad, at);
  for (let i = 0; i < 8; i++) {
    out[i * 4] = H[i] >>> 24;
    out[i * 4 + 1] = H[i] >>> 16;
    out[i * 4 + 2] = H[i] >>> 8;
    out[i * 4 + 3] = H[i];
  }
}

/**
 * SHA-256 of `data` (32 bytes).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sha256 } from "./hmac_sha256.ts";
 *
 * const digest = sha256(new TextEncoder().encode("abc"));
 * assert.equal(
 *   Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""),
 *   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
 * );
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(32);
  finish(IV, 0, data, out);
  return out;
}

/** An HMAC-SHA-256 key, its padded blocks absorbed once: see {@linkcode hmacSha256Key}. */
export interface HmacSha256Key {
  /** HMAC-SHA-256 of `message` (32 bytes, a fresh buffer). */
  sign(message: Uint8Array): Uint8Array<ArrayBuffer>;
  /**
   * A key that signs `prefix + message` for each `message`, the prefix (a
   * whole number of 64-byte blocks) absorbed once.
   */
  withPrefix(prefix: Uint8Array): HmacSha256Key;
}

class Key implements HmacSha256Key {
  readonly #inner: Int32Array;
  readonly #outer: Int32Array;
  readonly #prior: number;

  constructor(inner: Int32Array, outer: Int32Array, prior: number) {
    this.#inner = inner;
    this.#outer = outer;
    this.#prior = prior;
  }

  withPrefix(prefix: Uint8Array): HmacSha256Key {
    if (prefix.length % BLOCK !== 0) {
      throw new RangeError(`a prefix must be a whole number of ${BLOCK}-byte blocks`);
    }
    return new Key(absorb(this.#inner, prefix), this.#outer, this.#prior + prefix.length);
  }

  sign(message: Uint8Array): Uint8Array<ArrayBuffer> {
    finish(this.#inner, this.#prior, message, inner);
    const out = new Uint8Array(32);
    finish(this.#outer, BLOCK, inner, out);
    return out;
  }
}

/**
 * An HMAC-SHA-256 key of any length (longer than a block: hashed first, as
 * RFC 2104 says).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hmacSha256Key } from "./hmac_sha256.ts";
 *
 * const encode = (text: string) => new TextEncoder().encode(text);
 * const hex = (bytes: Uint8Array) =>
 *   Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
 * const key = hmacSha256Key(encode("key"));
 * assert.equal(
 *   hex(key.sign(encode("The quick brown fox jumps over the lazy dog"))),
 *   "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
 * );
 * // A prefix absorbed once signs the same as the whole message.
 * const prefix = new Uint8Array(64).fill(7);
 * const whole = new Uint8Array([...prefix, ...encode("event 42")]);
 * assert.deepEqual(key.withPrefix(prefix).sign(encode("event 42")), key.sign(whole));
 * ```
 */
export function hmacSha256Key(key: Uint8Array): HmacSha256Key {
  const block = new Uint8Array(BLOCK);
  block.set(key.length > BLOCK ? sha256(key) : key);
  return new Key(
    absorb(IV, block.map((b) => b ^ 0x36)),
    absorb(IV, block.map((b) => b ^ 0x5c)),
    BLOCK,
  );
}

/**
 * 32 bytes derived from a guard's `secret` for one purpose: HMAC-SHA-256,
 * keyed by the secret (a string as its UTF-8 bytes), of the byte 0xFF and
 * `label`. No UTF-8 text starts with 0xFF, and fingerprints are HMACs of
 * UTF-8 identities under the same secret: nothing derived here can equal a
 * principal's fingerprint. Each purpose (event id tags, task cursors,
 * unissued task ids) has a label of its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { deriveFromSecret, hmacSha256Key } from "./hmac_sha256.ts";
 *
 * const encode = (text: string) => new TextEncoder().encode(text);
 * const derived = deriveFromSecret("s3cret", "purpose v1");
 * assert.deepEqual(
 *   derived,
 *   hmacSha256Key(encode("s3cret")).sign(new Uint8Array([0xff, ...encode("purpose v1")])),
 * );
 * assert.notDeepEqual(derived, deriveFromSecret("s3cret", "purpose v2"));
 * ```
 */
export function deriveFromSecret(
  secret: string | Uint8Array,
  label: string,
): Uint8Array<ArrayBuffer> {
  const encoder = new TextEncoder();
  const key = hmacSha256Key(typeof secret === "string" ? encoder.encode(secret) : secret);
  return key.sign(new Uint8Array([0xff, ...encoder.encode(label)]));
}
