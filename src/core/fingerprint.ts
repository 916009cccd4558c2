/**
 * Principal fingerprints: a stable, non-reversible name for the caller.
 *
 * Registries store fingerprints, never the raw credential, so a heap dump or a
 * `stats()` log cannot leak a bearer token.
 *
 * @module
 */

import { InvalidInputError } from "./errors.ts";
import { checkOptionKeys } from "./options_check.ts";

/**
 * Options for {@linkcode fingerprint}.
 *
 * @example
 * ```ts
 * import { fingerprint, type FingerprintOptions } from "@mcp-guard/session";
 *
 * const options: FingerprintOptions = { secret: "same secret on every server of the cluster" };
 * console.log((await fingerprint("user-42", options)).length); // 64
 * ```
 */
export interface FingerprintOptions {
  /**
   * When set, the fingerprint is HMAC-SHA-256 keyed with this secret, so an
   * attacker who sees fingerprints cannot test guesses of the principal
   * offline. Use the same secret on every process of a cluster.
   */
  secret?: string | Uint8Array;
}

const encoder = new TextEncoder();
const hmacKeys = new Map<string, Promise<CryptoKey>>();

function toHex(buffer: ArrayBuffer): string {
  const bytes = new Uint8Array(buffer);
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += bytes[i].toString(16).padStart(2, "0");
  return out;
}

function hmacKey(secret: string | Uint8Array): Promise<CryptoKey> {
  const raw = typeof secret === "string" ? encoder.encode(secret) : secret;
  const cacheKey = typeof secret === "string" ? `s:${secret}` : `b:${toHex(raw.slice().buffer)}`;
  let key = hmacKeys.get(cacheKey);
  if (!key) {
    key = crypto.subtle.importKey(
      "raw",
      raw.slice(),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    if (hmacKeys.size >= 16) hmacKeys.clear();
    hmacKeys.set(cacheKey, key);
  }
  return key;
}

/** Strings a `principal()` returns by mistake: a stringified `null`, `undefined` or object. */
const MISTAKES: ReadonlySet<string> = new Set(["null", "undefined", "[object Object]", "NaN"]);

/** Index of the first lone surrogate of an ill-formed string. */
function loneSurrogateAt(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0xd800 || unit > 0xdfff) continue;
    const next = text.charCodeAt(i + 1);
    if (unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) i++;
    else return i;
  }
  return -1;
}

/**
 * Why `principal` cannot name a caller, or `null` when it can. Identities are
 * compared as their UTF-8 bytes, which is lossless only for well-formed
 * strings: a lone surrogate would turn into U+FFFD, so `"a\uD835"` and
 * `"a\uD83D"` would share a fingerprint. Blank strings and the strings a
 * stringified `null`, `undefined` or object gives are bugs, never a caller.
 */
export function identityProblem(principal: unknown): string | null {
  if (typeof principal !== "string") return `must be a string, got ${typeof principal}`;
  if (principal.trim().length === 0) {
    return `must be a non-blank string, got ${JSON.stringify(principal)}`;
  }
  if (!principal.isWellFormed()) {
    const at = loneSurrogateAt(principal);
    return `must be well-formed Unicode, got a lone surrogate (\\u${
      principal.charCodeAt(at).toString(16).toUpperCase()
    }) at index ${at}; identities are compared as UTF-8 bytes, which would lose it`;
  }
  if (MISTAKES.has(principal.trim())) {
    return `looks like a stringified value, not an identity: ${JSON.stringify(principal)}`;
  }
  return null;
}

/**
 * Derives the fingerprint of a principal (a user id, an API key, a bearer
 * token): 64 lowercase hex characters of SHA-256, or of HMAC-SHA-256 keyed
 * with `options.secret`. Throws {@linkcode InvalidInputError}, naming the
 * cause, for a principal that cannot name one caller losslessly: not a
 * string, blank, not well-formed Unicode (a lone surrogate, which UTF-8 would
 * turn into U+FFFD and so merge with other identities), or a stringified
 * `null`, `undefined` or object (`"null"`, `"undefined"`, `"[object Object]"`).
 *
 * @example
 * ```ts
 * import { fingerprint } from "@mcp-guard/session";
 *
 * const a = await fingerprint("Bearer alice-token");
 * const b = await fingerprint("Bearer alice-token", { secret: "cluster-secret" });
 * console.log(a.length, b.length, a !== b); // 64 64 true
 * ```
 *
 * @example Identities that cannot name one caller are refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { fingerprint, InvalidInputError } from "@mcp-guard/session";
 *
 * await assert.rejects(fingerprint("ops-team-\uD835"), InvalidInputError);
 * await assert.rejects(fingerprint("undefined"), /stringified/);
 * ```
 */
export async function fingerprint(
  principal: string,
  options: FingerprintOptions = {},
): Promise<string> {
  const problem = identityProblem(principal);
  if (problem !== null) throw new InvalidInputError(`principal ${problem}`);
  checkOptionKeys("fingerprint", options, ["secret"]);
  const data = encoder.encode(principal);
  if (options.secret === undefined) {
    return toHex(await crypto.subtle.digest("SHA-256", data));
  }
  if (
    !(typeof options.secret === "string" || options.secret instanceof Uint8Array) ||
    options.secret.length === 0
  ) {
    throw new InvalidInputError("fingerprint secret must be a non-empty string or Uint8Array");
  }
  return toHex(await crypto.subtle.sign("HMAC", await hmacKey(options.secret), data));
}
