/**
 * What a state handle looks like (format, randomness, limits), the options
 * of {@linkcode HandleRegistry}, and the key space handles get in a shared
 * store.
 *
 * @module
 */

import type { OwnerBounds } from "../core/owner_table.ts";
import { toBase64url } from "../core/base64url.ts";
import { type Namespace, namespacedStore } from "../store/namespace.ts";
import type { RegistryStore } from "../store/store.ts";
import type { RegistryOptions } from "./registry_options.ts";

/**
 * Options of {@linkcode HandleRegistry}: the same bounds and shared options as
 * a `SessionOwnerRegistry` (`maxEntries`, `maxPerPrincipal`,
 * `sharedPrincipals`, `maxPerSharedPrincipal`, `store`, `callTimeoutMs`, ...). They bound handles
 * only: handles never share a key space, an LRU or a per-principal cap with
 * session bindings (see {@linkcode HandleRegistry}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandleRegistry, type HandleRegistryOptions } from "@mcp-guard/session";
 *
 * const options: HandleRegistryOptions = { maxEntries: 50_000, maxPerPrincipal: 200 };
 * await using handles = new HandleRegistry(options);
 * assert.equal(await handles.size(), 0);
 * ```
 */
export interface HandleRegistryOptions extends OwnerBounds, RegistryOptions {}

/**
 * Options of {@linkcode HandleRegistry.mint}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fingerprint, HandleRegistry, type MintOptions } from "@mcp-guard/session";
 *
 * await using handles = new HandleRegistry();
 * const options: MintOptions = { prefix: "cart_" };
 * const cart = await handles.mint(await fingerprint("alice"), options);
 * assert.match(cart, /^cart_[A-Za-z0-9_-]{32}$/);
 * ```
 */
export interface MintOptions {
  /**
   * A readable prefix put before the random part, e.g. `"cart_"`: up to 64
   * characters from `A-Z a-z 0-9 _ - . :`. It carries no authority (every
   * check is on the whole handle); it only helps people and logs tell
   * handles apart. Default: none.
   */
  prefix?: string;
}

/** Random bytes per handle: 192 bits, 32 base64url characters. */
const RANDOM_BYTES = 24;
/** Longest prefix `mint` accepts. */
export const MAX_PREFIX_LENGTH = 64;
/**
 * Longest handle `authorize` looks up (a minted one is at most 64 + 32
 * characters); anything longer is refused without a round trip.
 */
const MAX_HANDLE_LENGTH = 128;
export const PREFIX = /^[A-Za-z0-9_.:-]*$/;
const HANDLE = /^[\x21-\x7e]+$/;
/** Draws `mint` makes before giving up (a clash is a 2^-192 event). */
export const MINT_ATTEMPTS = 3;

/** The key space handles get in a shared store: keys `<prefix>h:o:…` (Redis), `["<prefix>:h", "o", …]` (KV). */
const HANDLES: Namespace = { redis: "h:", kv: ":h" };

/** True when `value` can be a handle: 1 to 128 visible ASCII characters. */
export function isHandle(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_HANDLE_LENGTH &&
    HANDLE.test(value);
}

/** 192 random bits from `crypto.getRandomValues`, base64url without padding. */
export function randomPart(): string {
  return toBase64url(crypto.getRandomValues(new Uint8Array(RANDOM_BYTES)));
}

/**
 * The store a handle registry uses for `store`: the in-memory store as is, a
 * Redis or Deno KV store moved to the handles' own key space. Any other store
 * is refused: its key layout is unknown.
 */
export function handleStore(store: RegistryStore | undefined): RegistryStore | undefined {
  return namespacedStore(store, HANDLES, "HandleRegistry");
}
