/**
 * {@linkcode CancellationRegistry}: in-flight cancellable requests, scoped to
 * the session that started them.
 *
 * @module
 */

import type { ActorClient } from "../actor/actor_client.ts";
import { noop, type QueuedAt } from "../actor/call_queue.ts";
import { type CancelStats, isTrackable } from "../core/cancel_table.ts";
import { RequestCancelledError } from "../core/errors.ts";
import { type AbortEvent, Op } from "../actor/protocol.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import {
  clients,
  makeClient,
  REGISTRY_OPTION_KEYS,
  type RegistryOptions,
} from "./registry_options.ts";
import { checkCount, str } from "../core/validate.ts";
import { type PairMark, Withdrawals } from "./withdrawals.ts";
import { registryEvents } from "./observers.ts";

export type { CancelStats } from "../core/cancel_table.ts";

/**
 * Options of {@linkcode CancellationRegistry}.
 *
 * @example
 * ```ts
 * import { CancellationRegistry, type CancellationRegistryOptions } from "@mcp-guard/session";
 *
 * const options: CancellationRegistryOptions = { maxEntries: 10_000 };
 * await using cancels = new CancellationRegistry(options);
 * console.log(await cancels.size()); // 0
 * ```
 */
export interface CancellationRegistryOptions extends RegistryOptions {
  /**
   * Most requests tracked at once (default 100,000). Beyond it `register`
   * answers `null` and the request runs uncancellable.
   */
  maxEntries?: number;
}

/**
 * What {@linkcode CancellationRegistry.register} hands back.
 *
 * @example
 * ```ts
 * import { CancellationRegistry, type Registration } from "@mcp-guard/session";
 *
 * await using cancels = new CancellationRegistry();
 * const reg: Registration | null = await cancels.register("s-1", 1);
 * reg?.signal.addEventListener("abort", () => console.log("stopped:", reg.signal.reason));
 * await cancels.cancel("s-1", 1, "user pressed stop"); // logs "stopped: user pressed stop"
 * ```
 */
export interface Registration {
  /** Opaque token; pass it to `deregister` when the request finishes. */
  entryId: string;
  /** Aborted when the request is cancelled; `reason` says why. */
  signal: AbortSignal;
}

/**
 * What {@linkcode CancellationRegistry.track} hands back at once, before the
 * registration reached the worker.
 *
 * @example
 * ```ts
 * import { CancellationRegistry, type Tracked } from "@mcp-guard/session";
 *
 * await using cancels = new CancellationRegistry();
 * const tracked: Tracked = cancels.track("s-1", 7);
 * console.log(await tracked.registered); // true
 * ```
 */
export interface Tracked extends Registration {
  /**
   * Settles once the worker applied the registration: `true` when the request
   * is cancellable, `false` when the registry refused it (blank session id,
   * invalid request id, full), rejects with `RegistryUnavailableError` when
   * the registry could not be reached. Nothing is lost by not awaiting it.
   */
  registered: Promise<boolean>;
}

interface Local {
  /** Its entry id (the local map is keyed by its number, which is cheaper to hash). */
  entryId: string;
  controller: AbortController | Abortable;
  sessionId: string;
  requestId: string | number;
  /** Counted for withdrawals (in-memory store, valid ids), else `null`. */
  mark: PairMark | null;
  /** Its lazy registration, while it may still be waiting to be sent. */
  queued: QueuedAt | null;
}

const TRUE = Promise.resolve(true);

/**
 * What {@linkcode trackQuietly} aborts instead of an `AbortController`: the
 * HTTP guard's tracked request, which makes its signal only when someone
 * asks for it. `abort` does what `AbortController.abort` does (nothing once
 * aborted).
 */
export interface Abortable {
  readonly aborted: boolean;
  abort(reason: unknown): void;
}

/** Whether a local entry's request was aborted. */
function aborted(controller: AbortController | Abortable): boolean {
  return controller instanceof AbortController ? controller.signal.aborted : controller.aborted;
}

/**
 * `registry.track(sessionId, requestId, controller)` for the HTTP guard,
 * without a promise per request, and with an {@linkcode Abortable} for
 * the controller: returns the entry's number (for
 * {@linkcode deregisterQuietly}); `registered` is told
 * what `Tracked.registered` resolves with, `failed` what it rejects with.
 * Both may run while the registry reads a reply or withdraws a call, so
 * they must not throw (`failed` should defer its work).
 */
export let trackQuietly: (
  registry: CancellationRegistry,
  sessionId: string,
  requestId: string | number,
  controller: Abortable,
  registered: (ok: boolean) => void,
  failed: (err: unknown) => void,
) => number;

/**
 * `registry.deregister(entryId)` of the entry number `slot` (from
 * {@linkcode trackQuietly}) for the HTTP guard, without a promise:
 * `failed` is told what the promise would reject with (it must not throw).
 */
export let deregisterQuietly: (
  registry: CancellationRegistry,
  slot: number,
  failed: (err: unknown) => void,
) => void;

/**
 * Tracks in-flight requests by `(sessionId, requestId)` so a
 * `notifications/cancelled` can abort them, but only from the same session:
 * a caller who guesses another session's request ids cancels nothing.
 *
 * The key table lives in the registry's worker; the `AbortController`s stay
 * on the caller's side, keyed by entry id.
 *
 * @example Register, cancel from the same session, deregister
 * ```ts
 * import { CancellationRegistry } from "@mcp-guard/session";
 *
 * await using cancels = new CancellationRegistry();
 * const reg = await cancels.register("session-a", 1);
 * if (reg === null) throw new Error("not cancellable");
 *
 * console.log(await cancels.cancel("session-b", 1)); // false: other session
 * console.log(await cancels.cancel("session-a", 1, "user hit stop")); // true
 * console.log(reg.signal.aborted, reg.signal.reason); // true "user hit stop"
 * await cancels.deregister(reg.entryId);
 * ```
 */
export class CancellationRegistry implements AsyncDisposable {
  readonly #client: ActorClient;
  /** Local entries by the number in their entry id (`<prefix>.<number in base 36>`). */
  readonly #local = new Map<number, Local>();
  readonly #prefix: string;
  /** The store is shared with other processes (not the in-memory one). */
  readonly #shared: boolean;
  #next = 0;
  /** When a registration may be withdrawn. */
  readonly #pairs: Withdrawals;

  /** Creates the registry; its worker starts on the first call. Throws `InvalidInputError` on bad options. */
  constructor(options: CancellationRegistryOptions = {}) {
    checkOptionKeys("CancellationRegistry", options, [...REGISTRY_OPTION_KEYS, "maxEntries"]);
    const maxEntries = checkCount("maxEntries", options.maxEntries ?? 100_000, 1);
    this.#prefix = crypto.randomUUID();
    this.#shared = (options.store?.kind ?? "memory") !== "memory";
    this.#pairs = new Withdrawals(maxEntries);
    this.#client = makeClient("CancellationRegistry", options, {
      registry: "cancel",
      options: { maxEntries },
    }, {
      instanceId: this.#prefix,
      onSpawn: (restart) => {
        // A new in-memory worker counts anew (a shared store keeps its counters) and has lost
        // the entries: register again the requests still running here.
        if (restart && !this.#shared) {
          this.#pairs.withdrawn = 0;
          this.#replay();
        }
      },
      onEvent: (event) => {
        if (event.kind === "abort") this.#onAbortEvent(event);
      },
    });
    clients.set(this, this.#client);
  }

  /**
   * Tracks a request. Returns its entry id and `AbortSignal`, or `null` when
   * it cannot be cancelled: blank/invalid session id (a request outside any
   * session), invalid request id, or a full registry. A second registration
   * under the same key takes the slot (last writer wins).
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * console.log(await cancels.register("", 1)); // null
   * const reg = await cancels.register("s-1", "req-1", new AbortController());
   * console.log(typeof reg?.entryId); // "string"
   * ```
   */
  async register(
    sessionId: string,
    requestId: string | number,
    controller: AbortController = new AbortController(),
  ): Promise<Registration | null> {
    const { entryId, signal, registered } = this.#track(sessionId, requestId, controller, false);
    return (await registered) ? { entryId, signal } : null;
  }

  /**
   * Like {@linkcode register}, without waiting: returns the entry id and
   * signal at once and sends the registration with the next message to the
   * worker (within 10 ms). A request that finishes before then costs the
   * worker (and a shared store) nothing: its deregistration withdraws the
   * registration still waiting to be sent (both resolve `true` at once, and
   * `stats().registered` counts it), whenever every other call is answered
   * as if both had been applied: not after a call somebody waits on, nor
   * while another live entry of this registry has the same key, nor when its
   * table may have been full meanwhile. Calls on this registry still apply in
   * call order: a `cancel` made after `track` always sees the registration.
   * With a shared store, a cancel made through another process (another
   * registry) finds the request once its registration is sent, so within
   * 10 ms of `track`: one made before finds nothing, as one that overtakes
   * its request does. `registered` tells how it went.
   *
   * This is what the HTTP guard uses; prefer `register` when the caller must
   * know the request is cancellable before it starts.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * const { entryId, signal } = cancels.track("s-1", 1);
   * console.log(await cancels.cancel("s-1", 1, "stop")); // true
   * console.log(signal.aborted, signal.reason); // true "stop"
   * await cancels.deregister(entryId);
   * ```
   */
  track(
    sessionId: string,
    requestId: string | number,
    controller: AbortController = new AbortController(),
  ): Tracked {
    return this.#track(sessionId, requestId, controller, true);
  }

  /**
   * Stops tracking a finished request. Removes the slot only while `entryId`
   * still owns it, so an older registration's cleanup never evicts a newer
   * one under the same key. Returns whether it removed the slot. Nobody
   * needs to wait for that answer, so it is sent with the next message to the
   * worker (within 10 ms), not on its own.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * const first = await cancels.register("s-1", 1);
   * const second = await cancels.register("s-1", 1); // takes the slot
   * console.log(await cancels.deregister(first!.entryId)); // false
   * console.log(await cancels.cancel("s-1", 1)); // true: the newer one
   * console.log(second!.signal.aborted); // true
   * ```
   */
  deregister(entryId: string): Promise<boolean> {
    const id = str(entryId);
    const slot = id === null ? -1 : this.#slotOf(id);
    if (slot !== -1 && this.#release(slot)) return TRUE;
    return this.#client.callLazy(Op.Deregister, id);
  }

  /** The entry id of local entry number `slot`. */
  #entryIdOf(slot: number): string {
    return `${this.#prefix}.${slot.toString(36)}`;
  }

  /** The number of local entry `entryId`, or -1 when it is none of this process's live ones. */
  #slotOf(entryId: string): number {
    const prefix = this.#prefix;
    if (
      entryId.length <= prefix.length + 1 || entryId.charCodeAt(prefix.length) !== 46 ||
      !entryId.startsWith(prefix)
    ) return -1;
    const slot = parseInt(entryId.slice(prefix.length + 1), 36);
    return this.#local.get(slot)?.entryId === entryId ? slot : -1;
  }

  /**
   * Forgets local entry number `slot`, if any: true when its registration
   * was withdrawn with it (then there is nothing to send).
   */
  #release(slot: number): boolean {
    const local = this.#local.get(slot);
    if (local === undefined) return false;
    const pairs = this.#pairs;
    const withdrawn = local.queued !== null && pairs.allows(local.mark!) &&
      this.#client.withdraw(local.queued, true);
    this.#forget(slot, local);
    if (withdrawn) pairs.withdrawn++;
    return withdrawn;
  }

  static {
    trackQuietly = (registry, sessionId, requestId, controller, registered, failed) =>
      registry.#enter(sessionId, requestId, controller, true, registered, failed);
    deregisterQuietly = (registry, slot, failed) => {
      if (registry.#release(slot)) return;
      const entryId = registry.#entryIdOf(slot);
      registry.#client.callWith(Op.Deregister, entryId, undefined, undefined, true, noop, failed);
    };
  }

  /**
   * Cancels the live request `(sessionId, requestId)`: aborts its signal
   * (once) with `reason`, default a `RequestCancelledError`. Only a caller
   * presenting the same session reaches it. Returns whether a live request
   * was found.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * const reg = await cancels.register("s-1", 42);
   * console.log(await cancels.cancel("s-2", 42)); // false
   * console.log(await cancels.cancel("s-1", 42)); // true
   * console.log(await cancels.cancel("s-1", 42)); // false: already cancelled
   * console.log(reg!.signal.aborted); // true
   * ```
   */
  async cancel(sessionId: string, requestId: string | number, reason?: unknown): Promise<boolean> {
    const sid = str(sessionId);
    const rid = typeof requestId === "number" || typeof requestId === "string" ? requestId : null;
    const entryId = await this.#client.call<string | null>(
      Op.Cancel,
      sid,
      rid,
      typeof reason === "string" ? reason : undefined,
    );
    if (entryId === null) return false;
    this.#abort(
      entryId,
      reason === undefined ? new RequestCancelledError(sid!, rid!) : reason,
    );
    return true;
  }

  /**
   * Cancels every live request of `sessionId` (on session termination) and
   * returns how many were cancelled.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * await cancels.register("s-1", 1);
   * await cancels.register("s-1", 2);
   * await cancels.register("s-2", 1);
   * console.log(await cancels.cancelAll("s-1")); // 2
   * ```
   */
  async cancelAll(sessionId: string, reason?: unknown): Promise<number> {
    const sid = str(sessionId);
    const entryIds = await this.#client.call<string[]>(
      Op.CancelAll,
      sid,
      typeof reason === "string" ? reason : undefined,
    );
    for (const entryId of entryIds) {
      this.#abort(entryId, reason === undefined ? new RequestCancelledError(sid!, null) : reason);
    }
    return entryIds.length;
  }

  /**
   * Number of requests tracked.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * await cancels.register("s-1", 1);
   * console.log(await cancels.size()); // 1
   * ```
   */
  size(): Promise<number> {
    return this.#client.call(Op.CancelSize);
  }

  /**
   * Counters for metrics (size, registered, ignored, displaced, cancelled,
   * restarts).
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * await using cancels = new CancellationRegistry();
   * await cancels.register("", 1);
   * console.log((await cancels.stats()).ignored); // 1
   * ```
   */
  async stats(): Promise<CancelStats> {
    const withdrawn = this.#pairs.withdrawn; // the ones before this call
    const stats = await this.#client.call<CancelStats>(Op.CancelStats);
    return {
      ...stats,
      registered: stats.registered + withdrawn,
      restarts: this.#client.restarts,
    };
  }

  /**
   * Stops the worker after the calls already made are answered; later calls
   * reject with `RegistryClosedError`. In-flight requests are not aborted.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * const cancels = new CancellationRegistry();
   * await cancels.close();
   * ```
   */
  close(): Promise<void> {
    return this.#client.close();
  }

  /**
   * Same as {@linkcode CancellationRegistry.close}, for `await using`.
   *
   * @example
   * ```ts
   * import { CancellationRegistry } from "@mcp-guard/session";
   *
   * {
   *   await using cancels = new CancellationRegistry();
   *   await cancels.register("s-1", 1);
   * } // closed here
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Queues a registration (`lazy`: with the next message) and remembers its controller. */
  #track(
    sessionId: string,
    requestId: string | number,
    controller: AbortController,
    lazy: boolean,
  ): Tracked {
    if (!(controller instanceof AbortController)) controller = new AbortController();
    let resolve!: (ok: boolean) => void;
    let reject!: (err: unknown) => void;
    const registered = new Promise<boolean>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    registered.catch(() => {}); // a caller that does not look must not crash the process
    const slot = this.#enter(sessionId, requestId, controller, lazy, resolve, reject);
    return { entryId: this.#entryIdOf(slot), signal: controller.signal, registered };
  }

  /**
   * Queues the registration of a new local entry (`lazy`: with the next
   * message) and remembers its controller; `registered` or `failed` hears
   * how it went (while the reply is read: they must not throw). Returns the
   * entry's number.
   */
  #enter(
    sessionId: string,
    requestId: string | number,
    controller: AbortController | Abortable,
    lazy: boolean,
    registered: (ok: boolean) => void,
    failed: (err: unknown) => void,
  ): number {
    const slot = this.#next++;
    const entryId = this.#entryIdOf(slot);
    const sid = str(sessionId);
    const rid = typeof requestId === "number" || typeof requestId === "string" ? requestId : null;
    const live = this.#local.size;
    const local: Local = {
      entryId,
      controller,
      sessionId: sid ?? "",
      requestId: rid ?? "",
      mark: null,
      queued: null,
    };
    this.#client.callWith(Op.Register, sid, rid, entryId, lazy, (ok) => {
      if (!ok) this.#forget(slot, local);
      registered(ok as boolean);
    }, (err) => {
      this.#forget(slot, local);
      failed(err);
    });
    // A valid lazy registration still queued when its request ends may be withdrawn.
    if (isTrackable(sid, rid)) {
      local.mark = this.#pairs.add(sid!, rid!, live);
      if (lazy) local.queued = this.#client.lastQueued();
    }
    // Queued first, remembered second: a worker restarted by this very call replays the
    // entries it finds in #local, and must not find this one (it would be registered twice).
    this.#local.set(slot, local);
    return slot;
  }

  /** Drops a local entry (once: a later call for the same entry does nothing). */
  #forget(slot: number, local: Local): void {
    if (this.#local.get(slot) !== local) return;
    this.#local.delete(slot);
    if (local.mark !== null) this.#pairs.remove(local.mark);
  }

  /** Aborts a local request; `remote`: the cancellation came through another process. */
  #abort(entryId: string, reason: unknown, remote = false): void {
    const slot = typeof entryId === "string" ? this.#slotOf(entryId) : -1;
    const controller = slot === -1 ? undefined : this.#local.get(slot)?.controller;
    if (controller === undefined || aborted(controller)) return;
    const heard = registryEvents.get(this)?.cancelled;
    if (heard !== undefined) {
      heard(
        remote
          ? "other-process"
          : reason instanceof RequestCancelledError && reason.origin === "client"
          ? "client"
          : "server",
      );
    }
    controller.abort(reason);
  }

  #onAbortEvent(event: AbortEvent): void {
    for (const entryId of event.entryIds) {
      this.#abort(
        entryId,
        event.reason ?? new RequestCancelledError(event.sessionId, event.requestId),
        true,
      );
    }
  }

  /** After a worker restart, re-registers the requests still running here, in order. */
  #replay(): void {
    for (const local of this.#local.values()) {
      if (aborted(local.controller)) continue;
      this.#client.call(Op.Register, local.sessionId, local.requestId, local.entryId).catch(
        () => {},
      );
    }
  }
}
