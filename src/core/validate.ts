/**
 * Input validation shared by the registries and the HTTP guard.
 *
 * Session ids are never truncated or rewritten: a value is either accepted
 * exactly as given or refused, so two different ids can never collapse into
 * the same registry key.
 *
 * @module
 */

import { InvalidInputError } from "./errors.ts";

/** Longest session id accepted, in characters (session ids are ASCII: also bytes). */
export const MAX_SESSION_ID_LENGTH = 256;

/**
 * Longest principal fingerprint accepted, in UTF-8 bytes (a `fingerprint()`
 * is 64). Measured in bytes, not UTF-16 units, because that is what a store
 * holds: with the other limits here, every key a store builds from accepted
 * input fits Deno KV's 2,048-byte key limit (see `kvStore`'s `prefix`).
 */
export const MAX_FINGERPRINT_LENGTH = 1024;

/**
 * Longest string JSON-RPC request id accepted, in UTF-8 bytes (1,024 "€"
 * are 3,072 bytes, and refused). Measured in bytes for the same reason as
 * {@linkcode MAX_FINGERPRINT_LENGTH}.
 */
export const MAX_REQUEST_ID_LENGTH = 1024;

const VISIBLE_ASCII = /^[\x21-\x7e]+$/;

/**
 * Returns `raw` unchanged when it is a valid MCP session id (1 to 256 visible
 * ASCII characters, 0x21 to 0x7E, as the MCP transport spec requires), and
 * `null` otherwise. Never trims or truncates.
 *
 * @example
 * ```ts
 * import { sanitizeSessionId } from "@mcp-guard/session";
 *
 * console.log(sanitizeSessionId("3f2c9a7e-1b4d")); // "3f2c9a7e-1b4d"
 * console.log(sanitizeSessionId("has space")); // null
 * console.log(sanitizeSessionId("x".repeat(257))); // null
 * ```
 */
export function sanitizeSessionId(raw: unknown): string | null {
  if (typeof raw !== "string") return null;
  if (raw.length === 0 || raw.length > MAX_SESSION_ID_LENGTH) return null;
  return VISIBLE_ASCII.test(raw) ? raw : null;
}

/**
 * Number of bytes `value` takes in UTF-8 (an unpaired surrogate counts as the
 * 3 bytes of the U+FFFD it is encoded as), without encoding it.
 *
 * @example
 * ```ts ignore
 * utf8Length("a€"); // 4
 * ```
 */
export function utf8Length(value: string): number {
  let bytes = value.length;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) {
      bytes += 1;
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < value.length) {
      const next = value.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2; // a pair: two units, four bytes
        i++;
      } else {
        bytes += 2;
      }
    } else {
      bytes += 2;
    }
  }
  return bytes;
}

/**
 * True when `value` is well-formed (no unpaired surrogate) and at most
 * `maxBytes` bytes in UTF-8. An unpaired surrogate is refused because every
 * shared store encodes it as U+FFFD: two different strings would collapse
 * into one key.
 */
function fitsUtf8(value: string, maxBytes: number): boolean {
  // A UTF-16 unit is at least one byte and at most three.
  if (value.length > maxBytes || !value.isWellFormed()) return false;
  return value.length * 3 <= maxBytes || utf8Length(value) <= maxBytes;
}

/**
 * True when `value` is a usable principal fingerprint: a non-blank,
 * well-formed string of at most 1,024 UTF-8 bytes without control
 * characters.
 */
export function isValidFingerprint(value: unknown): value is string {
  if (typeof value !== "string") return false;
  if (value.length === 0 || !fitsUtf8(value, MAX_FINGERPRINT_LENGTH)) return false;
  if (value.trim().length === 0) return false;
  // deno-lint-ignore no-control-regex
  return !/[\x00-\x1f\x7f]/.test(value);
}

/**
 * True when `value` can be a JSON-RPC request id: a well-formed string of at
 * most 1,024 UTF-8 bytes, or a finite number. `1` and `"1"` are different
 * ids.
 */
export function isValidRequestId(value: unknown): value is string | number {
  if (typeof value === "number") return Number.isFinite(value);
  return typeof value === "string" && fitsUtf8(value, MAX_REQUEST_ID_LENGTH);
}

/** Throws {@linkcode InvalidInputError} unless `value` is an integer >= `min`. */
export function checkCount(name: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new InvalidInputError(
      `${name} must be an integer >= ${min}, got ${
        typeof value === "string" ? JSON.stringify(value) : String(value)
      }`,
    );
  }
  return value;
}

/**
 * `value` when it is a string, `null` otherwise. Used before handing
 * caller input to a worker or a store: a non-string becomes `null`, which
 * the receiving side fails closed (and which structured cloning or
 * `JSON.stringify` always accepts), instead of an arbitrary value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { str } from "./validate.ts";
 *
 * assert.equal(str("abc"), "abc");
 * assert.equal(str(42), null);
 * ```
 */
export function str(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}
