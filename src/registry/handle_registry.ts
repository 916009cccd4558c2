/**
 * {@linkcode HandleRegistry}: server-minted application state handles (MCP
 * 2026-07-28), each bound to the principal it was minted for.
 *
 * MCP revision 2026-07-28 has no protocol sessions: state that outlives one
 * request is named by a handle the server mints and the client passes back
 * as an ordinary tool argument. Its "State Handle Hijacking" guidance: mint
 * handles from a secure random source, bind each one server-side to the
 * authenticated user, and reject a handle presented by any other principal;
 * possession of a handle is never authentication. This registry does that
 * bookkeeping with the machinery of {@linkcode SessionOwnerRegistry} (one
 * worker actor, the same bounds and stores).
 *
 * @module
 */

import {
  HandleError,
  HandleNotOwnedError,
  HandleTableFullError,
  InvalidInputError,
  RegistryClosedError,
} from "../core/errors.ts";
import { OWNER_BOUND_KEYS, type OwnerStats } from "../core/owner_table.ts";
import { REGISTRY_OPTION_KEYS } from "./registry_options.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import { SessionOwnerRegistry } from "./session_owner_registry.ts";
import { isValidFingerprint } from "../core/validate.ts";
import { handleOwners, registryEvents } from "./observers.ts";
import {
  type HandleRegistryOptions,
  handleStore,
  isHandle,
  MAX_PREFIX_LENGTH,
  MINT_ATTEMPTS,
  type MintOptions,
  PREFIX,
  randomPart,
} from "./handle_parts.ts";
export type { HandleRegistryOptions, MintOptions } from "./handle_parts.ts";

/**
 * Mints application state handles and binds each one to the fingerprint of
 * the principal it was minted for; afterwards only that principal can use
 * (`authorize` / `require`), pin or release it. Derive fingerprints from the
 * verified identity (the token's user id), never from anything the client
 * chose, and hash them with `fingerprint()`.
 *
 * - Handles: an optional readable prefix plus 192 bits from
 *   `crypto.getRandomValues`, base64url (32 characters).
 * - Fail closed: blank or malformed input is refused (`false`) and never
 *   throws; a store that cannot answer rejects with
 *   `RegistryUnavailableError`; an unknown handle and another principal's
 *   handle get the same answer, so nobody can probe which handles exist.
 * - Bounds, as for sessions: at most `maxEntries` handles (least recently
 *   used evicted first), at most `maxPerPrincipal` per principal (a
 *   principal at its cap evicts its own least recently used handle, never
 *   another's; a principal of `sharedPrincipals` has `maxPerSharedPrincipal`
 *   instead, and evicts only its own handles even when the table is full);
 *   pinned handles are never evicted. An evicted handle is
 *   unknown from then on: treat its state as gone.
 *
 * Key space: the registry runs its own `SessionOwnerRegistry` worker. With
 * the in-memory store that worker's table is private. With `redisStore` or
 * `kvStore`, handles live under a prefix derived from the store's own
 * (Redis: `<prefix>h:`, e.g. `mcp-guard:h:o:own`; Deno KV:
 * `["<prefix>:h", ...]`): pass the very store your `SessionOwnerRegistry`
 * uses, and a handle can never collide with a session id bound there, be
 * claimed through a session attach, or be evicted by session traffic
 * (handles and sessions each have their own bounds). Do not give another
 * deployment a prefix ending in that suffix. Other store modules are
 * refused (`InvalidInputError`).
 *
 * Calls on one handle are applied in call order within one registry
 * object. Across processes sharing a store, a handle its owner releases
 * while the same owner's `authorize` of it is in flight elsewhere may stay
 * bound to that owner; it is never given to anyone else.
 *
 * @example Alice's handle, Mallory's attempt
 * ```ts
 * import assert from "node:assert/strict";
 * import { fingerprint, HandleNotOwnedError, HandleRegistry } from "@mcp-guard/session";
 *
 * await using handles = new HandleRegistry({ maxPerPrincipal: 100 });
 * const alice = await fingerprint("user:alice");
 * const mallory = await fingerprint("user:mallory");
 *
 * const cart = await handles.mint(alice, { prefix: "cart_" });
 * assert.equal(await handles.authorize(cart, alice), true);
 * assert.equal(await handles.authorize(cart, mallory), false);
 * await assert.rejects(handles.require(cart, mallory), HandleNotOwnedError);
 * assert.equal(await handles.release(cart, mallory), false);
 * assert.equal(await handles.release(cart, alice), true);
 * assert.equal(await handles.authorize(cart, alice), false);
 * ```
 */
export class HandleRegistry implements AsyncDisposable {
  readonly #owners: SessionOwnerRegistry;
  /** Per handle, the end of its queue of calls (so calls on one handle apply in call order). */
  readonly #queues = new Map<string, Promise<void>>();
  #closed = false;

  /**
   * Creates the registry; its worker starts on the first call. Throws
   * `InvalidInputError` on bad options, or for a store whose handle key
   * space cannot be derived.
   */
  constructor(options: HandleRegistryOptions = {}) {
    checkOptionKeys("HandleRegistry", options, [...REGISTRY_OPTION_KEYS, ...OWNER_BOUND_KEYS]);
    const {
      maxEntries,
      maxPerPrincipal,
      sharedPrincipals,
      maxPerSharedPrincipal,
      callTimeoutMs,
      batching,
      maxBatch,
    } = options;
    this.#owners = new SessionOwnerRegistry({
      maxEntries,
      maxPerPrincipal,
      sharedPrincipals,
      maxPerSharedPrincipal,
      callTimeoutMs,
      batching,
      maxBatch,
      store: handleStore(options.store),
      knownOwners: false,
    });
    handleOwners.set(this, this.#owners);
  }

  /**
   * Mints a new handle for `fingerprint`: `options.prefix` plus 32 base64url
   * characters (192 random bits), already bound to that principal. Rejects
   * with `InvalidInputError` for a blank fingerprint or a bad prefix,
   * {@linkcode HandleTableFullError} when every handle that could make room
   * is pinned, `RegistryUnavailableError` when the store cannot answer.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * const alice = await fingerprint("user:alice");
   * const a = await handles.mint(alice, { prefix: "doc_" });
   * const b = await handles.mint(alice, { prefix: "doc_" });
   * assert.notEqual(a, b);
   * assert.ok(a.startsWith("doc_") && a.length === 4 + 32);
   * ```
   */
  async mint(fingerprint: string, options: MintOptions = {}): Promise<string> {
    this.#checkOpen();
    if (!isValidFingerprint(fingerprint)) {
      throw new InvalidInputError(
        "HandleRegistry.mint: fingerprint must be a non-blank string of at most 1024 " +
          "characters without control characters",
      );
    }
    const prefix = options?.prefix ?? "";
    if (typeof prefix !== "string" || prefix.length > MAX_PREFIX_LENGTH || !PREFIX.test(prefix)) {
      throw new InvalidInputError(
        `HandleRegistry.mint: prefix must be at most ${MAX_PREFIX_LENGTH} characters from ` +
          `A-Z a-z 0-9 _ - . :, got ${
            typeof prefix === "string" ? JSON.stringify(prefix.slice(0, 80)) : typeof prefix
          }`,
      );
    }
    for (let attempt = 0; attempt < MINT_ATTEMPTS; attempt++) {
      const handle = prefix + randomPart();
      const result = await this.#owners.bind(handle, fingerprint);
      if (result === "bound") return handle;
      if (result === "full") throw new HandleTableFullError();
      // "refused": that value is someone's handle already (a 2^-192 event): draw again.
    }
    throw new HandleError(`HandleRegistry.mint: no fresh handle in ${MINT_ATTEMPTS} draws`);
  }

  /**
   * `true` only when `handle` is bound to `fingerprint`; also counts as a
   * use (the handle becomes the most recently used, and a store's idle
   * expiry restarts). An unknown handle, another principal's handle, and
   * blank or malformed input (not a string, empty, over 128 characters, not
   * visible ASCII) all give `false`, never an exception; the store failing
   * rejects with `RegistryUnavailableError`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * const alice = await fingerprint("user:alice");
   * const cart = await handles.mint(alice, { prefix: "cart_" });
   * assert.equal(await handles.authorize(cart, alice), true);
   * assert.equal(await handles.authorize(cart, await fingerprint("user:bob")), false);
   * assert.equal(await handles.authorize("cart_unknown", alice), false);
   * assert.equal(await handles.authorize(`${cart}\n`, alice), false);
   * assert.equal(await handles.authorize(42 as unknown as string, alice), false);
   * ```
   */
  authorize(handle: string, fingerprint: string): Promise<boolean> {
    if (this.#closed) return Promise.reject(new RegistryClosedError("HandleRegistry"));
    if (!isHandle(handle) || !isValidFingerprint(fingerprint)) {
      registryEvents.get(this)?.handleRefused?.(
        "invalid-handle",
        isHandle(handle) ? handle : null,
        isValidFingerprint(fingerprint) ? fingerprint : null,
      );
      return Promise.resolve(false);
    }
    return this.#serial(handle, async () => {
      const owner = await this.#owners.ownerOf(handle);
      if (owner !== fingerprint) {
        registryEvents.get(this)?.handleRefused?.(
          owner === null ? "unknown-handle" : "not-handle-owner",
          handle,
          fingerprint,
        );
        return false;
      }
      // The owner's own binding: `bind` refreshes it (LRU order, idle expiry).
      return await this.#owners.bind(handle, fingerprint) === "bound";
    });
  }

  /**
   * The tool-side check: resolves when `fingerprint` owns `handle` (a use,
   * as for {@linkcode authorize}), else rejects with
   * {@linkcode HandleNotOwnedError}, whose message is the same for an
   * unknown handle and for another principal's.
   *
   * @example In a tool
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleNotOwnedError, HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * const carts = new Map<string, string[]>();
   *
   * async function addItem(cart: string, item: string, userId: string) {
   *   try {
   *     await handles.require(cart, await fingerprint(userId));
   *   } catch (err) {
   *     if (err instanceof HandleNotOwnedError) return { isError: true, text: err.message };
   *     throw err;
   *   }
   *   carts.get(cart)?.push(item);
   *   return { isError: false, text: "added" };
   * }
   *
   * const cart = await handles.mint(await fingerprint("alice"), { prefix: "cart_" });
   * carts.set(cart, []);
   * assert.deepEqual(await addItem(cart, "tea", "alice"), { isError: false, text: "added" });
   * const stolen = await addItem(cart, "x", "mallory");
   * const unknown = await addItem("cart_never-minted", "x", "mallory");
   * assert.equal(stolen.isError, true);
   * assert.match(stolen.text, /^Unknown or foreign handle: "cart_/);
   * assert.equal(unknown.isError, true);
   * assert.deepEqual(carts.get(cart), ["tea"]);
   * ```
   */
  async require(handle: string, fingerprint: string): Promise<void> {
    if (!(await this.authorize(handle, fingerprint))) throw new HandleNotOwnedError(handle);
  }

  /**
   * Drops `handle` when `fingerprint` owns it: `true` when the caller's
   * handle is gone, `false` for an unknown handle, another principal's, or
   * malformed input (indistinguishable, as for {@linkcode authorize}).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * const alice = await fingerprint("user:alice");
   * const cart = await handles.mint(alice);
   * assert.equal(await handles.release(cart, await fingerprint("user:bob")), false);
   * assert.equal(await handles.release(cart, alice), true);
   * assert.equal(await handles.release(cart, alice), false);
   * ```
   */
  release(handle: string, fingerprint: string): Promise<boolean> {
    return this.#ifOwner(handle, fingerprint, () => this.#owners.forget(handle, fingerprint));
  }

  /**
   * Pins `handle` (one pin per call) while, say, a long-running task uses
   * it: a pinned handle is never evicted. Owner only: `false` for an
   * unknown handle, another principal's, or malformed input. Release with
   * {@linkcode unpin}; `release` drops a handle even while pinned.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleRegistry, HandleTableFullError } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry({ maxEntries: 1 });
   * const alice = await fingerprint("user:alice");
   * const job = await handles.mint(alice, { prefix: "job_" });
   * assert.equal(await handles.pin(job, alice), true);
   * await assert.rejects(handles.mint(alice), HandleTableFullError);
   * assert.equal(await handles.unpin(job, alice), true);
   * await handles.mint(alice); // evicts the unpinned job handle
   * assert.equal(await handles.authorize(job, alice), false);
   * ```
   */
  pin(handle: string, fingerprint: string): Promise<boolean> {
    return this.#ifOwner(handle, fingerprint, () => this.#owners.pin(handle));
  }

  /**
   * Releases one pin of `handle` (owner only); the handle stays bound.
   * `false` when it was not pinned, or for anyone but its owner.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { fingerprint, HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * const alice = await fingerprint("user:alice");
   * const job = await handles.mint(alice);
   * await handles.pin(job, alice);
   * assert.equal(await handles.unpin(job, await fingerprint("user:bob")), false);
   * assert.equal(await handles.unpin(job, alice), true);
   * assert.equal(await handles.unpin(job, alice), false);
   * assert.equal(await handles.authorize(job, alice), true);
   * ```
   */
  unpin(handle: string, fingerprint: string): Promise<boolean> {
    return this.#ifOwner(handle, fingerprint, () => this.#owners.unpin(handle));
  }

  /**
   * Number of handles held (with a shared store: by every process sharing
   * it).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry();
   * await handles.mint("fp-alice");
   * assert.equal(await handles.size(), 1);
   * ```
   */
  size(): Promise<number> {
    if (this.#closed) return Promise.reject(new RegistryClosedError("HandleRegistry"));
    return this.#owners.size();
  }

  /**
   * Counters for metrics, as for sessions: `size`, `pinned`, `evictions`
   * (handles dropped to make room), `full` (mints refused because
   * everything was pinned) and `restarts` (with the in-memory store, each
   * restart lost every handle); `refusals`, `claims` and `invalid` stay 0
   * (foreign handles and malformed input are refused before the table).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { HandleRegistry } from "@mcp-guard/session";
   *
   * await using handles = new HandleRegistry({ maxPerPrincipal: 1 });
   * await handles.mint("fp-alice");
   * await handles.mint("fp-alice");
   * const { size, evictions } = await handles.stats();
   * assert.deepEqual([size, evictions], [1, 1]);
   * ```
   */
  stats(): Promise<OwnerStats> {
    if (this.#closed) return Promise.reject(new RegistryClosedError("HandleRegistry"));
    return this.#owners.stats();
  }

  /**
   * Stops the worker after the calls already made are answered. Later calls
   * reject with `RegistryClosedError`. Idempotent.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { HandleRegistry, RegistryClosedError } from "@mcp-guard/session";
   *
   * const handles = new HandleRegistry();
   * await handles.mint("fp-alice");
   * await handles.close();
   * await assert.rejects(handles.mint("fp-alice"), RegistryClosedError);
   * ```
   */
  close(): Promise<void> {
    this.#closed = true;
    return this.#owners.close();
  }

  /**
   * Same as {@linkcode HandleRegistry.close}, for `await using`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { HandleRegistry } from "@mcp-guard/session";
   *
   * let handle: string;
   * {
   *   await using handles = new HandleRegistry();
   *   handle = await handles.mint("fp-alice");
   * } // closed here
   * assert.equal(typeof handle, "string");
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #checkOpen(): void {
    if (this.#closed) throw new RegistryClosedError("HandleRegistry");
  }

  /** Runs `action` when `fingerprint` owns `handle`, else answers `false`. */
  #ifOwner(
    handle: string,
    fingerprint: string,
    action: () => Promise<boolean>,
  ): Promise<boolean> {
    if (this.#closed) return Promise.reject(new RegistryClosedError("HandleRegistry"));
    if (!isHandle(handle) || !isValidFingerprint(fingerprint)) return Promise.resolve(false);
    return this.#serial(handle, async () => {
      if (await this.#owners.ownerOf(handle) !== fingerprint) return false;
      return await action();
    });
  }

  /**
   * Runs `run` after every earlier call on `handle` settled, so a check and
   * the write that follows it are not interleaved with another call on the
   * same handle. The first call on a handle starts at once (same tick, so
   * calls on different handles still travel to the worker in one batch).
   */
  #serial<T>(handle: string, run: () => Promise<T>): Promise<T> {
    const before = this.#queues.get(handle);
    const result = before === undefined ? run() : before.then(run);
    const tail = result.then(() => {}, () => {});
    this.#queues.set(handle, tail);
    tail.then(() => {
      if (this.#queues.get(handle) === tail) this.#queues.delete(handle);
    });
    return result;
  }
}
