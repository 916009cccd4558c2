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

/**
 * Derives the fingerprint of a principal (a user id, an API key, a bearer
 * token): 64 lowercase hex characters of SHA-256, or of HMAC-SHA-256 keyed
 * with `options.secret`. Throws {@linkcode InvalidInputError} for a blank or
 * non-string principal, so an anonymous caller can never share a fingerprint
 * with another anonymous caller by accident.
 *
 * @example
 * ```ts
 * import { fingerprint } from "@mcp-guard/session";
 *
 * const a = await fingerprint("Bearer alice-token");
 * const b = await fingerprint("Bearer alice-token", { secret: "cluster-secret" });
 * console.log(a.length, b.length, a !== b); // 64 64 true
 * ```
 */
export async function fingerprint(
  principal: string,
  options: FingerprintOptions = {},
): Promise<string> {
  if (typeof principal !== "string" || principal.trim().length === 0) {
    throw new InvalidInputError(
      `principal must be a non-blank string, got ${
        typeof principal === "string" ? JSON.stringify(principal) : typeof principal
      }`,
    );
  }
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
