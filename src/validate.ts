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

/** Longest session id accepted, in characters. */
export const MAX_SESSION_ID_LENGTH = 256;

/** Longest principal fingerprint accepted, in characters. */
export const MAX_FINGERPRINT_LENGTH = 1024;

/** Longest string JSON-RPC request id accepted, in characters. */
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
 * True when `value` is a usable principal fingerprint: a non-blank string of
 * at most 1024 characters without control characters.
 */
export function isValidFingerprint(value: unknown): value is string {
  if (typeof value !== "string") return false;
  if (value.length === 0 || value.length > MAX_FINGERPRINT_LENGTH) return false;
  if (value.trim().length === 0) return false;
  // deno-lint-ignore no-control-regex
  return !/[\x00-\x1f\x7f]/.test(value);
}

/**
 * True when `value` can be a JSON-RPC request id: a string of at most 1024
 * characters, or a finite number. `1` and `"1"` are different ids.
 */
export function isValidRequestId(value: unknown): value is string | number {
  if (typeof value === "number") return Number.isFinite(value);
  return typeof value === "string" && value.length <= MAX_REQUEST_ID_LENGTH;
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
