/**
 * Options and result types of {@linkcode SessionOwnerRegistry}.
 *
 * @module
 */

import type { OwnerBounds } from "../core/owner_table.ts";
import type { RegistryOptions } from "./registry_options.ts";

/**
 * Options of {@linkcode SessionOwnerRegistry}: its bounds plus the shared
 * registry options.
 *
 * @example
 * ```ts
 * import { SessionOwnerRegistry, type SessionOwnerRegistryOptions } from "@mcp-guard/session";
 *
 * const options: SessionOwnerRegistryOptions = {
 *   maxEntries: 20_000,
 *   maxPerPrincipal: 50,
 *   sharedPrincipals: ["fingerprint-of-the-master-key"],
 *   callTimeoutMs: 2_000,
 * };
 * await using owners = new SessionOwnerRegistry(options);
 * console.log(await owners.size()); // 0
 * ```
 */
export interface SessionOwnerRegistryOptions extends OwnerBounds, RegistryOptions {
  /**
   * Remember, on the caller's side, the owners the worker confirmed, for
   * {@linkcode SessionOwnerRegistry.knownOwner} (default `true`; in-memory
   * store only, since another process can change a shared store).
   */
  knownOwners?: boolean;
  /**
   * {@linkcode SessionOwnerRegistry.touch} sends at most one touch per
   * session per this many ms; the others are absorbed on the caller's side.
   * Must be at most half the store's `idleTtlMs`, so coalescing never lets
   * an active session expire.
   *
   * @default {1000}
   */
  touchIntervalMs?: number;
}

/**
 * Bindings that went away without their owner asking: evicted to make room,
 * or expired idle. Heard through {@linkcode SessionOwnerRegistry.onRemoved};
 * with a shared store, every process hears every removal.
 *
 * @example
 * ```ts
 * import { type RemovedSessions, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry({ maxPerPrincipal: 1 });
 * const heard: RemovedSessions[] = [];
 * owners.onRemoved((event) => heard.push(event));
 * await owners.bind("s-1", "fp-alice");
 * await owners.bind("s-2", "fp-alice"); // evicts s-1, Alice's oldest
 * await owners.size();
 * console.log(heard); // [{ cause: "evicted", sessionIds: ["s-1"] }]
 * ```
 */
export interface RemovedSessions {
  /** `"evicted"` (LRU or per-principal cap) or `"expired"` (idle longer than `idleTtlMs`). */
  cause: "evicted" | "expired";
  /** The session ids whose binding went away. */
  sessionIds: string[];
}

/**
 * Options of {@linkcode SessionOwnerRegistry.bind}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type BindOptions, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry({ maxPerPrincipal: 1, maxPerSharedPrincipal: 2 });
 * const master: BindOptions = { shared: true };
 * assert.equal(await owners.bind("s-1", "fp-master", master), "bound");
 * assert.equal(await owners.bind("s-2", "fp-master", master), "bound");
 * assert.equal(await owners.size(), 2);
 * assert.equal(await owners.bind("s-3", "fp-master", master), "bound"); // evicts its own s-1
 * assert.equal(await owners.ownerOf("s-1"), null);
 * // A task binding kept for the task's own ttl, whatever the store's idleTtlMs.
 * const task: BindOptions = { keepMs: 15 * 60_000 };
 * assert.equal(await owners.bind("task-1", "fp-alice", task), "bound");
 * ```
 */
export interface BindOptions {
  /**
   * Bind as a shared principal, as `sharedPrincipals` does (the guard sets
   * it for its own `sharedPrincipals`): bounded by `maxPerSharedPrincipal`
   * instead of `maxPerPrincipal`, and never evicting another principal's
   * binding, not even when the table is full (it evicts its own least
   * recently used binding, or gets `"full"`).
   *
   * @default {false}
   */
  shared?: boolean;
  /**
   * Idle expiry (the store's `idleTtlMs`) does not drop this binding for at
   * least this many ms after this bind: it expires at the later of its
   * idle expiry and this floor. For ids that must live as long as something
   * with its own lifetime, such as an MCP task and its `ttl`. A later use
   * or bind by the owner never lowers the floor (a longer `keepMs` raises
   * it). Only idle expiry waits: the bounds (`maxEntries` LRU,
   * `maxPerPrincipal`) still evict the binding, and `forget` drops it. An
   * integer from 0 to 30 days (2,592,000,000); anything else rejects the
   * call with `InvalidInputError`. Without idle expiry it changes nothing.
   *
   * @default {0}
   */
  keepMs?: number;
}

/**
 * Options of {@linkcode SessionOwnerRegistry.authorizeAttach}.
 *
 * @example
 * ```ts
 * import { type AttachOptions, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry();
 * const live: AttachOptions = { pin: true };
 * console.log(await owners.authorizeAttach("s-1", "fp-alice", live)); // true
 * console.log((await owners.stats()).pinned); // 1
 * ```
 */
export interface AttachOptions {
  /**
   * Also pin the session (atomically with the check), for a live listening
   * stream: a pinned session is never evicted. Release with `unpin`.
   */
  pin?: boolean;
}

/** The idle TTL a store descriptor sets, or 0. */
export function idleTtlOf(store: RegistryOptions["store"]): number {
  if (store === undefined || store === null || typeof store !== "object") return 0;
  const ttl = store.kind === "memory"
    ? store.idleTtlMs
    : (store.options as { idleTtlMs?: unknown } | null)?.idleTtlMs;
  return typeof ttl === "number" && Number.isFinite(ttl) && ttl > 0 ? ttl : 0;
}
