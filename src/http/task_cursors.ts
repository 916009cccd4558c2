/**
 * Opaque `tasks/list` cursors, sealed to the principal they were issued to.
 *
 * A server's cursor may name a task (the SDK's is the last task id of the
 * page), so the guard never shows one raw: it encrypts it (AES-256-GCM) with
 * the caller's owner as associated data. Only the same owner can open it
 * again; a cursor that does not open (forged, another principal's, raw, from
 * a guard with another key) is passed on in the sealed form, a cursor the
 * server never issued, so the caller gets exactly the server's answer to a
 * made-up one.
 *
 * The key derives from the guard's `secret` (the same on every process of a
 * fleet, so a cursor opens anywhere), else it is random per guard: cursors
 * then do not outlive the process, and a client restarts its listing.
 *
 * @module
 */

import { fromBase64url, toBase64url } from "../core/base64url.ts";
import { deriveFromSecret } from "../core/hmac_sha256.ts";

const PREFIX = "gc1.";
const IV_BYTES = 12;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** What the cursor key is derived for from a secret (see `deriveFromSecret`). */
const DERIVATION = "mcp-session-guard task cursors v1";

function deriveKey(secret: string | Uint8Array | undefined): Promise<CryptoKey> {
  const usages: KeyUsage[] = ["encrypt", "decrypt"];
  // Without a secret, 256 random bits: the same key `generateKey` would make, without the
  // 30 ms its first call blocks a Deno 2.9 process for.
  const bytes = secret === undefined
    ? crypto.getRandomValues(new Uint8Array(32))
    : deriveFromSecret(secret, DERIVATION);
  // The key (not extractable) keeps its own copy.
  return crypto.subtle.importKey("raw", bytes, "AES-GCM", false, usages)
    .finally(() => bytes.fill(0));
}

/** Seals and opens the task-list cursors of one guard. */
export class CursorSeal {
  readonly #secret: string | Uint8Array | undefined;
  /** Made on first use: a guard that never sees `tasks/list` spends nothing on it. */
  #madeKey: Promise<CryptoKey> | null = null;

  /** `secret`: the guard's; without one, a random key for this guard only. */
  constructor(secret?: string | Uint8Array) {
    this.#secret = secret;
  }

  get #key(): Promise<CryptoKey> {
    return this.#madeKey ??= deriveKey(this.#secret);
  }

  /** The opaque form of the server's `cursor`, for `owner` alone. */
  async seal(cursor: string, owner: string): Promise<string> {
    const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: encoder.encode(owner) },
        await this.#key,
        encoder.encode(cursor),
      ),
    );
    const out = new Uint8Array(IV_BYTES + sealed.length);
    out.set(iv);
    out.set(sealed, IV_BYTES);
    return PREFIX + toBase64url(out);
  }

  /**
   * A cursor the server never issued, for one that did not open: `cursor`
   * itself when it has the sealed form, else `cursor` in that form. A raw
   * cursor (another principal's task id) so never reaches the server as one
   * it knows, and every cursor that does not open gets the same answer.
   */
  static unissued(cursor: string): string {
    return cursor.startsWith(PREFIX) ? cursor : PREFIX + cursor;
  }

  /** The server's cursor inside `sealed`, or `null` when it was not sealed for `owner` here. */
  async open(sealed: string, owner: string): Promise<string | null> {
    if (!sealed.startsWith(PREFIX) || sealed.length > 8192) return null;
    const bytes = fromBase64url(sealed.slice(PREFIX.length));
    if (bytes === null || bytes.length <= IV_BYTES + 16) return null;
    try {
      const plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: bytes.subarray(0, IV_BYTES),
          additionalData: encoder.encode(owner),
        },
        await this.#key,
        bytes.subarray(IV_BYTES),
      );
      return decoder.decode(plain);
    } catch {
      return null;
    }
  }
}
