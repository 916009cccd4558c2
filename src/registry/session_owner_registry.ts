/**
 * {@linkcode SessionOwnerRegistry}: who created each MCP session.
 *
 * @module
 */

import type { ActorClient } from "../actor/actor_client.ts";
import type { ActorThread } from "../actor/actor_thread.ts";
import { InvalidInputError, RegistryClosedError } from "../core/errors.ts";
import { type Namespace, namespacedStore } from "../store/namespace.ts";
import {
  type BindResult,
  keepMsOf,
  MAX_KEEP_MS,
  type OwnerStats,
  resolveOwnerOptions,
} from "../core/owner_table.ts";
import { KnownOwners } from "./known_owners.ts";
import { DONE, TouchCoalescer } from "./touches.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import { Op } from "../actor/protocol.ts";
import { clients, makeClient, REGISTRY_OPTION_KEYS } from "./registry_options.ts";
import { OWNER_BOUND_KEYS } from "../core/owner_table.ts";
import { checkCount, str } from "../core/validate.ts";

export type { BindResult, OwnerBounds, OwnerStats } from "../core/owner_table.ts";
export type {
  AttachOptions,
  BindOptions,
  RemovedSessions,
  SessionOwnerRegistryOptions,
} from "./owner_options.ts";
import {
  type AttachOptions,
  type BindOptions,
  idleTtlOf,
  type RemovedSessions,
  type SessionOwnerRegistryOptions,
} from "./owner_options.ts";

/**
 * The worker the registry being constructed joins (set by `derive` around
 * the constructor call: a derived registry is hosted in its parent's worker).
 */
let joining: ActorThread | undefined;

/**
 * Whether the registry being constructed counts its per-principal caps by
 * the first word of each fingerprint (set by `derive` for a `"mirror"`).
 */
let byFirstWord = false;

/** Set by `SessionOwnerRegistry`'s static block: it reads private fields. */
let derive: (
  registry: SessionOwnerRegistry,
  namespace: Namespace,
  bounds: DerivedBounds,
) => SessionOwnerRegistry;

/**
 * Binds MCP session ids to the fingerprint of the principal that created them.
 * State lives in a dedicated worker that applies calls one at a time, in call
 * order; every method is async.
 *
 * Trust model: `bind` (on `initialize`) is authoritative and never hands an
 * owned id to another principal; `authorizeAttach` (on the listening GET)
 * claims an unseen id trust-on-first-use. Blank input fails closed.
 *
 * @example Bind on initialize, then check an attach
 * ```ts
 * import { fingerprint, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry({ maxEntries: 1_000 });
 * const alice = await fingerprint("alice-token");
 * const mallory = await fingerprint("mallory-token");
 *
 * console.log(await owners.bind("session-1", alice)); // "bound"
 * console.log(await owners.bind("session-1", mallory)); // "refused"
 * console.log(await owners.authorizeAttach("session-1", mallory)); // false
 * console.log(await owners.authorizeAttach("session-1", alice)); // true
 * ```
 */
export class SessionOwnerRegistry implements AsyncDisposable {
  readonly #client: ActorClient;
  /** Registries made from this one's options (`derivedRegistry`), closed with it. */
  readonly #derived = new Map<string, SessionOwnerRegistry>();
  readonly #options: SessionOwnerRegistryOptions;
  /** Owners the worker confirmed and has not reported gone since (in-memory store only). */
  readonly #known: KnownOwners | null;
  readonly #listeners = new Set<(event: RemovedSessions) => void>();
  readonly #touches: TouchCoalescer;

  /** Creates the registry; its worker starts on the first call. Throws `InvalidInputError` on bad options. */
  constructor(options: SessionOwnerRegistryOptions = {}) {
    checkOptionKeys("SessionOwnerRegistry", options, [
      ...REGISTRY_OPTION_KEYS,
      ...OWNER_BOUND_KEYS,
      "knownOwners",
      "touchIntervalMs",
    ]);
    const resolved = resolveOwnerOptions(options);
    if (byFirstWord) resolved.capByFirstWord = true;
    byFirstWord = false;
    this.#options = options;
    const touchIntervalMs = checkCount("touchIntervalMs", options.touchIntervalMs ?? 1_000, 0);
    const ttl = idleTtlOf(options.store);
    if (ttl > 0 && touchIntervalMs * 2 > ttl) {
      throw new InvalidInputError(
        `SessionOwnerRegistry: touchIntervalMs (${touchIntervalMs}) must be at most half the store's idleTtlMs (${ttl}), or an active session could expire`,
      );
    }
    this.#touches = new TouchCoalescer(
      touchIntervalMs,
      (sid, fp) => this.#client.call(Op.Touch, sid, fp),
    );
    const memory = (options.store?.kind ?? "memory") === "memory";
    const known = memory && options.knownOwners !== false ? new KnownOwners() : null;
    this.#known = known;
    const thread = joining;
    joining = undefined;
    this.#client = makeClient("SessionOwnerRegistry", options, {
      registry: "owner",
      options: resolved,
    }, {
      thread,
      instanceId: crypto.randomUUID(),
      onReply: known === null ? undefined : (ops, args, results, removed) => {
        known.record(ops, args, results, removed);
      },
      onFault: known === null ? undefined : () => known.clear(),
      onEvent: (event) => {
        if (event.kind !== "removed") return;
        for (const sid of event.sessionIds) known?.forget(sid);
        const heard: RemovedSessions = { cause: event.cause, sessionIds: event.sessionIds };
        for (const listener of this.#listeners) {
          try {
            listener(heard);
          } catch {
            // One listener's failure must not keep the others from hearing it.
          }
        }
      },
    });
    clients.set(this, this.#client);
  }

  /**
   * The owner of `sessionId` as far as this process already knows, without
   * asking the worker: a fingerprint the worker confirmed (by `bind`,
   * `authorizeAttach` or `ownerOf`) and has not reported forgotten or evicted
   * since, else `undefined` (unknown: ask {@linkcode ownerOf}). It never names
   * a principal the worker did not confirm, and forgets everything when the
   * worker fails. It can lag by the calls still in flight: an eviction
   * caused by a `bind` not yet answered is seen when that answer arrives.
   *
   * It learns from the first time it is asked (so a registry nobody asks
   * spends nothing on it): bindings confirmed before that are unknown until
   * the worker confirms them again. The HTTP guard asks once when it is
   * created, and then lets a session's own owner through on it without a
   * round trip to the worker. Only the in-memory store keeps it (another
   * process can change a shared store); elsewhere, or with
   * `knownOwners: false`, it always answers `undefined`.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * console.log(owners.knownOwner("s-1")); // undefined
   * await owners.bind("s-1", "fp-alice");
   * console.log(owners.knownOwner("s-1")); // "fp-alice"
   * await owners.forget("s-1", "fp-alice");
   * console.log(owners.knownOwner("s-1")); // undefined
   * ```
   */
  knownOwner(sessionId: string): string | undefined {
    return typeof sessionId === "string" ? this.#known?.get(sessionId) : undefined;
  }

  /**
   * Binds `sessionId` to `fingerprint` (call it when `initialize` created the
   * session, or a task was created). `"bound"`: new binding, or the caller's
   * own refreshed. `"refused"`: another principal owns it, or the input is
   * blank/invalid. `"full"`: every evictable slot is pinned by a live
   * stream (or, for a shared principal, is another principal's). Rejects
   * with `InvalidInputError` naming `keepMs` when it is not an integer from
   * 0 to 30 days.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { memoryStore, SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry({
   *   store: memoryStore({ idleTtlMs: 60_000 }),
   * });
   * assert.equal(await owners.bind("s-1", "fp-alice"), "bound");
   * assert.equal(await owners.bind("s-1", "fp-bob"), "refused");
   * assert.equal(await owners.bind("", "fp-bob"), "refused");
   * // A task that lives an hour keeps its binding an hour, idle or not.
   * assert.equal(await owners.bind("task-1", "fp-alice", { keepMs: 3_600_000 }), "bound");
   * await assert.rejects(owners.bind("task-2", "fp-alice", { keepMs: -1 }), /keepMs/);
   * ```
   */
  bind(sessionId: string, fingerprint: string, options?: BindOptions): Promise<BindResult> {
    const keepMs = keepMsOf(options?.keepMs);
    if (keepMs === null) {
      const got = options?.keepMs;
      return Promise.reject(
        new InvalidInputError(
          `SessionOwnerRegistry.bind: keepMs must be an integer from 0 to ${MAX_KEEP_MS} (30 days), got ${
            typeof got === "string" ? JSON.stringify(got) : String(got)
          }`,
        ),
      );
    }
    return this.#client.call(
      Op.Bind,
      str(sessionId),
      str(fingerprint),
      options?.shared === true,
      // Sent only when set: a plain bind carries no number.
      keepMs === 0 ? undefined : keepMs,
    );
  }

  /**
   * Counts a use of `fingerprint`'s own session, as the guard does for every
   * request it allows: the binding becomes the most recently used (last to
   * be evicted) and its idle timer restarts. Another principal's or an
   * unbound session is left alone (never claimed). Coalesced: at most one
   * touch per session per `touchIntervalMs` reaches the store, riding in the
   * same message as other calls; the others resolve at once, and one
   * trailing touch at the end of the interval carries the latest use.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry({ maxEntries: 2 });
   * await owners.bind("s-1", "fp-alice");
   * await owners.bind("s-2", "fp-bob");
   * await owners.touch("s-1", "fp-alice"); // s-1 is now the most recently used
   * await owners.bind("s-3", "fp-carol"); // evicts s-2, not s-1
   * console.log(await owners.ownerOf("s-1")); // "fp-alice"
   * console.log(await owners.ownerOf("s-2")); // null
   * ```
   */
  touch(sessionId: string, fingerprint: string): Promise<void> {
    if (typeof sessionId !== "string" || typeof fingerprint !== "string") return DONE;
    if (this.#client.closed) return this.#client.call<void>(Op.Touch, sessionId, fingerprint);
    return this.#touches.touch(sessionId, fingerprint);
  }

  /**
   * Calls `listener` whenever bindings go away without their owner asking:
   * evicted to make room, or expired idle. The HTTP guard closes those
   * sessions in its handler. With a shared store every process hears every
   * removal (the session may live in any of them). Returns a function that
   * stops listening.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry({ maxEntries: 1 });
   * const gone: string[] = [];
   * const stop = owners.onRemoved(({ sessionIds }) => gone.push(...sessionIds));
   * await owners.bind("s-1", "fp-alice");
   * await owners.bind("s-2", "fp-bob"); // the global LRU evicts s-1
   * await owners.size();
   * stop();
   * console.log(gone); // ["s-1"]
   * ```
   */
  onRemoved(listener: (event: RemovedSessions) => void): () => void {
    if (typeof listener !== "function") {
      throw new InvalidInputError("onRemoved: listener must be a function");
    }
    const entry = (event: RemovedSessions) => listener(event);
    this.#listeners.add(entry);
    return () => {
      this.#listeners.delete(entry);
    };
  }

  /**
   * Authorizes a listening-stream attach: an unbound id is claimed for
   * `fingerprint` (trust on first use) and `true`; the owner gets `true`;
   * anyone else, or blank input, gets `false`.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * console.log(await owners.authorizeAttach("bus-7", "fp-a", { pin: true })); // true
   * console.log(await owners.authorizeAttach("bus-7", "fp-b")); // false
   * await owners.unpin("bus-7");
   * ```
   */
  authorizeAttach(
    sessionId: string,
    fingerprint: string,
    options?: AttachOptions,
  ): Promise<boolean> {
    return this.#client.call(Op.Attach, str(sessionId), str(fingerprint), options?.pin === true);
  }

  /**
   * Drops a binding (on DELETE). With `fingerprint`, only the owner may drop
   * it: `true` when dropped or already unbound, `false` for another owner or
   * blank input. Without `fingerprint`, an operator drop.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * await owners.bind("s-1", "fp-alice");
   * console.log(await owners.forget("s-1", "fp-bob")); // false
   * console.log(await owners.forget("s-1", "fp-alice")); // true
   * ```
   */
  forget(sessionId: string, fingerprint?: string): Promise<boolean> {
    if (typeof sessionId === "string") {
      this.#known?.drop(sessionId);
    }
    return this.#client.call(
      Op.Forget,
      str(sessionId),
      fingerprint === undefined ? undefined : str(fingerprint),
    );
  }

  /**
   * The owner fingerprint of `sessionId`, or `null`. Does not refresh LRU order.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * await owners.bind("s-1", "fp-alice");
   * console.log(await owners.ownerOf("s-1")); // "fp-alice"
   * ```
   */
  ownerOf(sessionId: string): Promise<string | null> {
    return this.#client.call(Op.OwnerOf, str(sessionId));
  }

  /**
   * Pins a bound session (one pin per live stream) so it is never evicted;
   * `false` when the session is unbound.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * await owners.bind("s-1", "fp-alice");
   * console.log(await owners.pin("s-1")); // true
   * console.log(await owners.unpin("s-1")); // true
   * ```
   */
  pin(sessionId: string): Promise<boolean> {
    return this.#client.call(Op.Pin, str(sessionId));
  }

  /**
   * Releases one pin. The binding stays, so a reconnecting owner keeps it.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * await owners.authorizeAttach("s-1", "fp-alice", { pin: true });
   * console.log(await owners.unpin("s-1")); // true
   * console.log(await owners.ownerOf("s-1")); // "fp-alice"
   * ```
   */
  unpin(sessionId: string): Promise<boolean> {
    return this.#client.call(Op.Unpin, str(sessionId));
  }

  /**
   * Number of bindings held.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * console.log(await owners.size()); // 0
   * ```
   */
  size(): Promise<number> {
    return this.#client.call(Op.OwnerSize);
  }

  /**
   * Counters for metrics: size, pinned, evictions, refusals, claims, invalid,
   * full, and `restarts` (workers restarted after a crash; each lost the
   * in-memory bindings).
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * await using owners = new SessionOwnerRegistry();
   * await owners.bind("s-1", "fp-alice");
   * await owners.bind("s-1", "fp-bob");
   * const { size, refusals } = await owners.stats();
   * console.log(size, refusals); // 1 1
   * ```
   */
  async stats(): Promise<OwnerStats> {
    const stats = await this.#client.call<OwnerStats>(Op.OwnerStats);
    return { ...stats, restarts: this.#client.restarts };
  }

  /**
   * Stops the worker after the calls already made are answered. Later calls
   * reject with `RegistryClosedError`. Idempotent.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * const owners = new SessionOwnerRegistry();
   * await owners.bind("s-1", "fp-alice");
   * await owners.close();
   * ```
   */
  async close(): Promise<void> {
    this.#touches.clear();
    const derived = [...this.#derived.values()];
    this.#derived.clear();
    await Promise.all([this.#client.close(), ...derived.map((registry) => registry.close())]);
  }

  static {
    derive = (registry, namespace, bounds) => {
      const key = `${namespace.redis}\n${namespace.kv}`;
      let derived = registry.#derived.get(key);
      if (derived === undefined) {
        if (registry.#client.closed) {
          throw new RegistryClosedError("SessionOwnerRegistry");
        }
        const options = registry.#options;
        let mirror: SessionOwnerRegistryOptions = {};
        if (bounds === "mirror") {
          // Twice the table, and per principal (counted by the first word of each record, its
          // owner's fingerprint) twice the most bindings any principal may hold, but never more
          // than the table: one principal's records, live or left behind, never outnumber the
          // room the live records of everyone else leave, so they evict only their own.
          const { maxEntries, maxPerPrincipal, maxPerSharedPrincipal } = resolveOwnerOptions(
            options,
          );
          const own = Math.min(2 * Math.max(maxPerPrincipal, maxPerSharedPrincipal), maxEntries);
          mirror = {
            maxEntries: 2 * maxEntries,
            maxPerPrincipal: own,
            sharedPrincipals: [],
            maxPerSharedPrincipal: own,
          };
        }
        const store = namespacedStore(options.store, namespace, "SessionOwnerRegistry");
        // Hosted in this registry's worker: no worker of its own.
        joining = registry.#client.thread;
        byFirstWord = bounds === "mirror";
        try {
          derived = new SessionOwnerRegistry({ ...options, ...mirror, store });
        } finally {
          joining = undefined;
          byFirstWord = false;
        }
        registry.#derived.set(key, derived);
      }
      return derived;
    };
  }

  /**
   * Same as {@linkcode SessionOwnerRegistry.close}, for `await using`.
   *
   * @example
   * ```ts
   * import { SessionOwnerRegistry } from "@mcp-guard/session";
   *
   * {
   *   await using owners = new SessionOwnerRegistry();
   *   await owners.bind("s-1", "fp-alice");
   * } // closed here
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * How a derived registry is bounded: `"same"`, with `registry`'s bounds;
 * `"mirror"`, for records kept one per binding of `registry` (and dropped
 * with it), each record starting with its owner's fingerprint and a space:
 * an LRU of twice its `maxEntries`, with a cap per principal (counted by
 * that first word, so whatever else the records hold) of twice the most
 * bindings one principal may hold (`maxPerPrincipal` or
 * `maxPerSharedPrincipal`), at most `maxEntries`, and no shared principals.
 * A principal's own live records never reach its cap, and one principal's
 * records, live or left behind by bindings already gone, never fill the
 * room the live records of the others leave: a principal at its cap evicts
 * its own least recently used record, never another principal's.
 */
export type DerivedBounds = "same" | "mirror";

/**
 * A registry with `registry`'s options (idle expiry, store, and its bounds
 * as `bounds` says) over a namespace of its own in the same store (a shared
 * store's `prefix` gains `namespace`; the in-memory store gets a table of
 * its own), hosted in `registry`'s worker (a store of its own there, its
 * calls applied in order as `registry`'s are), made once per namespace and
 * closed with `registry`. The guard
 * binds tasks in one, so tasks never count against sessions' bounds, and
 * keeps in another what the credential that opened each session allowed.
 * Throws `RegistryClosedError` once `registry` is closed,
 * `InvalidInputError` when the store cannot hold the namespace.
 */
export function derivedRegistry(
  registry: SessionOwnerRegistry,
  namespace: Namespace,
  bounds: DerivedBounds = "same",
): SessionOwnerRegistry {
  return derive(registry, namespace, bounds);
}
