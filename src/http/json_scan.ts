/**
 * Whether UTF-8 JSON bytes hold the JSON-RPC response to a request, decided
 * on the bytes: the same answer as `carriesResponse(decode(bytes), id)`
 * (`./response_watch.ts`), without decoding the text or building its
 * values. The whole text is validated as `JSON.parse` validates it; only
 * the members of the top-level object (or of a batch's objects) are looked
 * at: `id` (the last one, as `JSON.parse` keeps it), `method`, `result`,
 * `error`.
 *
 * Bytes that are not UTF-8 decode to U+FFFD, which JSON allows wherever it
 * allows a character other than a quote, a backslash or a control character
 * (inside a string), and ASCII bytes are never part of a bad sequence: so
 * the JSON structure is read on the bytes alone.
 *
 * @module
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

function ws(b: Uint8Array, i: number, n: number): number {
  while (i < n) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

function isHex(c: number): boolean {
  return (c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** The end of the string token starting at `i` (a quote), or -1. Sets `escaped`. */
let escaped = false;
function skipString(b: Uint8Array, i: number, n: number): number {
  escaped = false;
  i++;
  for (;;) {
    // Plain characters, up to a quote, a backslash or a control character.
    let c = 0;
    while (i < n) {
      c = b[i];
      if (c < 0x20 || c === QUOTE || c === BACKSLASH) break;
      i++;
    }
    if (i >= n || c < 0x20) return -1;
    if (c === QUOTE) return i + 1;
    escaped = true;
    const e = b[i + 1];
    if (e === 0x75) { // \uXXXX
      if (
        i + 5 >= n || !isHex(b[i + 2]) || !isHex(b[i + 3]) || !isHex(b[i + 4]) ||
        !isHex(b[i + 5])
      ) return -1;
      i += 6;
    } else if (
      e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 ||
      e === 0x6e || e === 0x72 || e === 0x74
    ) {
      i += 2;
    } else {
      return -1;
    }
  }
}

function digits(b: Uint8Array, i: number, n: number): number {
  while (i < n && b[i] >= ZERO && b[i] <= NINE) i++;
  return i;
}

/** The end of the number token starting at `i`, or -1. */
function skipNumber(b: Uint8Array, i: number, n: number): number {
  if (b[i] === MINUS) i++;
  if (i >= n) return -1;
  if (b[i] === ZERO) i++;
  else if (b[i] > ZERO && b[i] <= NINE) i = digits(b, i + 1, n);
  else return -1;
  if (i < n && b[i] === DOT) {
    const at = digits(b, i + 1, n);
    if (at === i + 1) return -1;
    i = at;
  }
  if (i < n && (b[i] === 0x65 || b[i] === 0x45)) {
    i++;
    if (i < n && (b[i] === PLUS || b[i] === MINUS)) i++;
    const at = digits(b, i, n);
    if (at === i) return -1;
    i = at;
  }
  return i;
}

function literal(b: Uint8Array, i: number, n: number, word: string): number {
  if (i + word.length > n) return -1;
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word.charCodeAt(k)) return -1;
  return i + word.length;
}

/** The end of the JSON value starting at `i` (after whitespace), or -1 when it is not one. */
function skipValue(b: Uint8Array, i: number, n: number): number {
  // Open containers, innermost last: true for an object. No recursion: any depth.
  const open: boolean[] = [];
  for (;;) {
    // A value is expected at i.
    i = ws(b, i, n);
    if (i >= n) return -1;
    const c = b[i];
    if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      const object = c === OPEN_OBJECT;
      i = ws(b, i + 1, n);
      if (i < n && b[i] === (object ? CLOSE_OBJECT : CLOSE_ARRAY)) {
        i++;
      } else {
        open.push(object);
        if (object) {
          i = member(b, i, n);
          if (i === -1) return -1;
        }
        continue;
      }
    } else if (c === QUOTE) {
      i = skipString(b, i, n);
    } else if (c === MINUS || (c >= ZERO && c <= NINE)) {
      i = skipNumber(b, i, n);
    } else if (c === 0x74) {
      i = literal(b, i, n, "true");
    } else if (c === 0x66) {
      i = literal(b, i, n, "false");
    } else if (c === 0x6e) {
      i = literal(b, i, n, "null");
    } else {
      return -1;
    }
    if (i === -1) return -1;
    // After a value: close containers, or go on to the next element or member.
    for (;;) {
      if (open.length === 0) return i;
      i = ws(b, i, n);
      if (i >= n) return -1;
      const object = open[open.length - 1];
      if (b[i] === COMMA) {
        i++;
        if (object) {
          i = member(b, ws(b, i, n), n);
          if (i === -1) return -1;
        }
        break;
      }
      if (b[i] !== (object ? CLOSE_OBJECT : CLOSE_ARRAY)) return -1;
      open.pop();
      i++;
    }
  }
}

/** A member's key and colon at `i`: the index after the colon, or -1. */
function member(b: Uint8Array, i: number, n: number): number {
  if (i >= n || b[i] !== QUOTE) return -1;
  i = skipString(b, i, n);
  if (i === -1) return -1;
  i = ws(b, i, n);
  return i < n && b[i] === COLON ? i + 1 : -1;
}

/** The key of the string token `b[from, to)`. */
function keyOf(b: Uint8Array, from: number, to: number, escapedKey: boolean): string {
  const text = decoder.decode(b.subarray(from, to));
  return escapedKey ? JSON.parse(text) as string : text.slice(1, -1);
}

/** True when the string token `b[from, to)` (without escapes) spells `word`. */
function spells(b: Uint8Array, from: number, to: number, word: string): boolean {
  if (to - from !== word.length + 2) return false;
  for (let k = 0; k < word.length; k++) if (b[from + 1 + k] !== word.charCodeAt(k)) return false;
  return true;
}

/** The value of the JSON token `b[from, to)` when it is a string or a number, else `null`. */
function idValue(b: Uint8Array, from: number, to: number): string | number | null {
  const c = b[from];
  if (c === QUOTE) {
    if (to - from <= 66) {
      // A short ASCII string without escapes (as ids are): its characters are its bytes.
      let text = "";
      for (let k = from + 1; k < to - 1; k++) {
        const byte = b[k];
        if (byte >= 0x80 || byte === BACKSLASH) return stringToken(b, from, to);
        text += String.fromCharCode(byte);
      }
      return text;
    }
    return stringToken(b, from, to);
  }
  if (c === MINUS || (c >= ZERO && c <= NINE)) {
    const sign = c === MINUS ? -1 : 1;
    const start = c === MINUS ? from + 1 : from;
    if (to - start <= 15) {
      // Up to 15 digits and nothing else: an exact integer.
      let value = 0;
      let k = start;
      for (; k < to; k++) {
        const digit = b[k] - ZERO;
        if (digit < 0 || digit > 9) break;
        value = value * 10 + digit;
      }
      if (k === to) return sign * value;
    }
    // A JSON number reads as Number() reads it.
    return Number(decoder.decode(b.subarray(from, to)));
  }
  return null;
}

/** The value of the string token `b[from, to)`. */
function stringToken(b: Uint8Array, from: number, to: number): string {
  const text = decoder.decode(b.subarray(from, to));
  return text.includes("\\") ? JSON.parse(text) as string : text.slice(1, -1);
}

/** Object scan result: the end of the object at `i` (or -1), and whether it answers `id`. */
let matched = false;
/**
 * Scans the object at `i`; returns its end or -1, and sets `matched`. Returns
 * -2 when the object has a `method` (it never answers; the rest need not be
 * read).
 */
function inspectObject(b: Uint8Array, i: number, n: number, id: string | number): number {
  matched = false;
  let idFrom = -1;
  let idTo = -1;
  let outcome = false; // a result or an error member
  i = ws(b, i + 1, n);
  if (i < n && b[i] === CLOSE_OBJECT) return i + 1;
  for (;;) {
    if (i >= n || b[i] !== QUOTE) return -1;
    const keyFrom = i;
    i = skipString(b, i, n);
    if (i === -1) return -1;
    const keyTo = i;
    let key: "id" | "method" | "outcome" | null;
    if (escaped) {
      const name = keyOf(b, keyFrom, keyTo, true);
      key = name === "id"
        ? "id"
        : name === "method"
        ? "method"
        : name === "result" || name === "error"
        ? "outcome"
        : null;
    } else {
      key = spells(b, keyFrom, keyTo, "id")
        ? "id"
        : spells(b, keyFrom, keyTo, "method")
        ? "method"
        : spells(b, keyFrom, keyTo, "result") || spells(b, keyFrom, keyTo, "error")
        ? "outcome"
        : null;
    }
    if (key === "method") return -2;
    i = ws(b, i, n);
    if (i >= n || b[i] !== COLON) return -1;
    i = ws(b, i + 1, n);
    const valueFrom = i;
    i = skipValue(b, i, n);
    if (i === -1) return -1;
    if (key === "id") {
      idFrom = valueFrom;
      idTo = i;
    } else if (key === "outcome") {
      outcome = true;
    }
    i = ws(b, i, n);
    if (i >= n) return -1;
    if (b[i] === COMMA) {
      i = ws(b, i + 1, n);
      continue;
    }
    if (b[i] !== CLOSE_OBJECT) return -1;
    matched = outcome && idFrom !== -1 && idValue(b, idFrom, idTo) === id;
    return i + 1;
  }
}

/**
 * True when the UTF-8 JSON text `bytes[from, to)` (one message or a batch)
 * holds the JSON-RPC response to `id`: exactly
 * `carriesResponse(new TextDecoder().decode(bytes.subarray(from, to)), id)`,
 * decoded with a BOM kept (a BOM is not JSON). Never throws.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { carriesResponseBytes } from "./json_scan.ts";
 *
 * const bytes = new TextEncoder().encode('{"jsonrpc":"2.0","id":7,"result":{}}');
 * assert.equal(carriesResponseBytes(bytes, 0, bytes.length, 7), true);
 * assert.equal(carriesResponseBytes(bytes, 0, bytes.length, "7"), false);
 * assert.equal(carriesResponseBytes(bytes, 0, bytes.length - 1, 7), false); // not JSON
 * ```
 */
export function carriesResponseBytes(
  bytes: Uint8Array,
  from: number,
  to: number,
  id: string | number,
): boolean {
  const n = to;
  let i = ws(bytes, from, n);
  if (i >= n) return false;
  if (bytes[i] === OPEN_OBJECT) {
    i = inspectObject(bytes, i, n, id);
    return i >= 0 && matched && ws(bytes, i, n) === n;
  }
  if (bytes[i] !== OPEN_ARRAY) return false; // a primitive, or not JSON
  let any = false;
  i = ws(bytes, i + 1, n);
  if (i < n && bytes[i] === CLOSE_ARRAY) return false; // no message
  for (;;) {
    if (i >= n) return false;
    if (bytes[i] === OPEN_OBJECT) {
      const end = inspectObject(bytes, i, n, id);
      if (end === -2) i = skipValue(bytes, i, n); // a request or notification: read on
      else {
        i = end;
        any ||= matched;
      }
    } else {
      i = skipValue(bytes, i, n);
    }
    if (i < 0) return false;
    i = ws(bytes, i, n);
    if (i >= n) return false;
    if (bytes[i] === COMMA) {
      i = ws(bytes, i + 1, n);
      continue;
    }
    if (bytes[i] !== CLOSE_ARRAY) return false;
    return any && ws(bytes, i + 1, n) === n;
  }
}
