/**
 * Scope-bound sessions: what the credential that opened a session allowed
 * (its scopes, its OAuth client), kept beside the session's owner, and the
 * check every later request of the session passes (the guard's
 * `credentials` option, strict mode).
 *
 * Every session an `initialize` opens gets a record, bound once its owner
 * is, on the issued id only, in a registry of its own keyed by session id:
 * `<fingerprint>` when the credential imposes nothing (a string
 * `principal()`, no scopes, no client id), else, space-separated, the
 * fingerprint, `c:<tag>` (a hash of the client id) and `s:<scope> <scope>
 * ...` (distinct, sorted; scope tokens hold no space), or, when the scopes
 * would not fit a binding's 1,024 bytes, `h:<their hash>`. The fingerprint
 * keeps one principal's records apart from another's. A session bound without a record (lost, or opened by a
 * guard that kept none) is refused, never let through unchecked: a missing
 * record cannot tell "nothing to check" from "forgotten".
 *
 * The records follow their sessions: touched when the session is, pinned
 * while its stream is, forgotten with it (and whenever its binding is
 * evicted or expires, whether or not this guard still holds the session); a
 * derived registry is an LRU of twice the owners' table with a cap per
 * principal, counted by the fingerprint a record starts with, so one
 * principal's records only ever evict its own (see `DerivedBounds`).
 *
 * @module
 */

import { MAX_FINGERPRINT_LENGTH } from "../core/validate.ts";
import { hmacSha256Key, sha256 } from "../core/hmac_sha256.ts";
import { OwnerCache } from "./owner_cache.ts";
import { registry } from "./registry_failure.ts";
import type { GuardContext, GuardCredentialOwners } from "./types.ts";
import type { BindResult } from "../registry/session_owner_registry.ts";

/** What a record holds besides the fingerprint. */
export interface Held {
  /** The client's tag. */
  client?: string;
  /** The scopes, distinct and sorted. */
  scopes?: readonly string[];
  /** The scopes' hash, when they do not fit. */
  hash?: string;
}

/** Why a credential may not use a session, and what the caller is told. */
export type Verdict =
  | null
  | { reason: "credentials-missing" }
  | { reason: "other-client" }
  /** `scopes`: the session's, for the challenge; `null` when only their hash is kept. */
  | { reason: "insufficient-scope"; scopes: readonly string[] | null };

const encoder = new TextEncoder();

function hex(bytes: Uint8Array, length = bytes.length): string {
  let out = "";
  for (let i = 0; i < length; i++) out += bytes[i].toString(16).padStart(2, "0");
  return out;
}

/** Most parsed records kept (a session's requests reuse its record). */
const PARSED_ENTRIES = 1_024;

/** The records of one guard, and the check. */
export class SessionCredentials {
  readonly registry: GuardCredentialOwners;
  readonly #matchClient: boolean;
  readonly #mac: ((data: Uint8Array) => Uint8Array) | null;
  readonly #tags = new Map<string, string>();
  readonly #parsed = new Map<string, Held | null>();
  /** Records the registry confirmed, trusted for `ownerCacheMs` on POSTs, as owners are. */
  readonly cache: OwnerCache;

  /**
   * `secret`: the guard's, so client tags in a shared store cannot be
   * tested offline; `cacheMs`: its `ownerCacheMs`.
   */
  constructor(
    records: GuardCredentialOwners,
    matchClient: boolean,
    secret: string | Uint8Array | undefined,
    cacheMs: number,
  ) {
    this.registry = records;
    this.#matchClient = matchClient;
    this.cache = new OwnerCache(cacheMs);
    if (secret !== undefined) {
      // A key of its own: 0xff never starts UTF-8, so no fingerprint input can be this one's.
      const bytes = typeof secret === "string" ? encoder.encode(secret) : secret;
      const key = hmacSha256Key(new Uint8Array([0xff, ...encoder.encode("client-tag"), ...bytes]));
      this.#mac = (data) => key.sign(data);
    } else {
      this.#mac = null;
    }
    // The registry learns owners from the first time `knownOwner` is asked: ask now.
    records.knownOwner?.("");
  }

  /** 128 bits of a (keyed) hash of a client id. */
  #tag(clientId: string): string {
    let tag = this.#tags.get(clientId);
    if (tag === undefined) {
      const data = encoder.encode(clientId);
      tag = hex(this.#mac === null ? sha256(data) : this.#mac(data), 16);
      if (this.#tags.size >= PARSED_ENTRIES) this.#tags.clear();
      this.#tags.set(clientId, tag);
    }
    return tag;
  }

  /** The record of a session `ctx`'s caller opens. */
  recordOf(ctx: GuardContext): string {
    let record = ctx.fingerprint!;
    if (this.#matchClient && ctx.clientId !== undefined) {
      record += ` c:${this.#tag(ctx.clientId)}`;
    }
    const scopes = ctx.scopes ?? [];
    if (scopes.length === 0) return record;
    const listed = `${record} s:${scopes.join(" ")}`;
    // Scope tokens and tags are ASCII: characters are bytes.
    return listed.length <= MAX_FINGERPRINT_LENGTH ? listed : `${record} h:${scopeHash(scopes)}`;
  }

  /** Binds the record of the session `ctx`'s caller just opened (after its owner). */
  bind(sid: string, ctx: GuardContext): Promise<BindResult> {
    return this.registry.bind(sid, this.recordOf(ctx));
  }

  /**
   * The record of `sid`: what this process already knows (the in-memory
   * store's `knownOwner`; with `cached`, a record confirmed less than
   * `ownerCacheMs` ago), else the registry's answer (a failure becomes a
   * `RegistryFailure`, and never goes unhandled).
   */
  lookup(sid: string, cached = false): string | null | Promise<string | null> {
    const known = this.registry.knownOwner?.(sid) ?? (cached ? this.cache.get(sid) : undefined);
    if (known !== undefined) return known;
    const promise = registry(this.registry.ownerOf(sid));
    promise.catch(() => {}); // a request refused before it looks must not crash the process
    return promise;
  }

  /** What `record` holds, or `null` when it is not a record of `fp` this guard wrote. */
  #parse(record: string, fp: string): Held | null {
    let held = this.#parsed.get(record);
    if (held !== undefined) return held;
    held = parseRecord(record, fp);
    if (this.#parsed.size >= PARSED_ENTRIES) this.#parsed.clear();
    this.#parsed.set(record, held);
    return held;
  }

  /** `null` when `ctx`'s credential may use the session whose record is `record`. */
  check(record: string | null, ctx: GuardContext): Verdict {
    const fp = ctx.fingerprint;
    if (record === fp && fp !== null) return null;
    if (record === null || fp === null) return { reason: "credentials-missing" };
    const held = this.#parse(record, fp);
    if (held === null) return { reason: "credentials-missing" };
    if (
      held.client !== undefined && this.#matchClient &&
      (ctx.clientId === undefined || this.#tag(ctx.clientId) !== held.client)
    ) {
      return { reason: "other-client" };
    }
    const has = ctx.scopes ?? [];
    if (held.scopes !== undefined) {
      for (const scope of held.scopes) {
        if (!has.includes(scope)) return { reason: "insufficient-scope", scopes: held.scopes };
      }
    } else if (held.hash !== undefined && scopeHash(has) !== held.hash) {
      // Only the hash is kept: the very same scopes pass, anything else is refused.
      return { reason: "insufficient-scope", scopes: null };
    }
    return null;
  }
}

/** The hash a record keeps of scopes too long to list (distinct, sorted). */
function scopeHash(scopes: readonly string[]): string {
  return hex(sha256(encoder.encode(scopes.join(" "))));
}

/**
 * What `record` holds, or `null` when it is not a record of `fp`:
 * `<fp>[ c:<tag>][ s:<scope> <scope>...| h:<hash>]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseRecord } from "./credentials.ts";
 *
 * assert.deepEqual(parseRecord("fp-a c:0f1e s:mcp:read mcp:write", "fp-a"), {
 *   client: "0f1e",
 *   scopes: ["mcp:read", "mcp:write"],
 * });
 * assert.deepEqual(parseRecord("fp-a", "fp-a"), {});
 * assert.equal(parseRecord("fp-a s:mcp:read", "fp-b"), null); // another principal's
 * assert.equal(parseRecord("fp-a x:1", "fp-a"), null); // not a record the guard wrote
 * ```
 */
export function parseRecord(record: string, fp: string): Held | null {
  const parts = record.split(" ");
  if (parts[0] !== fp) return null;
  const held: Held = {};
  let i = 1;
  if (parts[i]?.startsWith("c:")) held.client = parts[i++].slice(2);
  const part = parts[i];
  if (part?.startsWith("s:")) {
    held.scopes = [part.slice(2), ...parts.slice(i + 1)];
    if (held.scopes.includes("")) return null;
  } else if (part?.startsWith("h:") && i === parts.length - 1) {
    held.hash = part.slice(2);
  } else if (i !== parts.length) {
    return null;
  }
  return held;
}

/**
 * The `WWW-Authenticate` value of a 403 for scopes a credential lacks
 * (RFC 6750, section 3.1; MCP's step-up authorization): the session's
 * scopes, and `resource_metadata` when the guard has it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { insufficientScope } from "./credentials.ts";
 *
 * assert.equal(
 *   insufficientScope(["mcp:read", "mcp:write"], "https://mcp.example.com/.well-known/oauth-protected-resource"),
 *   'Bearer error="insufficient_scope", scope="mcp:read mcp:write", ' +
 *     'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"',
 * );
 * assert.equal(insufficientScope(null, undefined), 'Bearer error="insufficient_scope"');
 * ```
 */
export function insufficientScope(
  scopes: readonly string[] | null,
  resourceMetadata: string | undefined,
): string {
  let challenge = 'Bearer error="insufficient_scope"';
  // Scope tokens hold no quote and no backslash: nothing to escape.
  if (scopes !== null) challenge += `, scope="${scopes.join(" ")}"`;
  if (resourceMetadata !== undefined) challenge += `, resource_metadata="${resourceMetadata}"`;
  return challenge;
}
