/**
 * The session-owner state machine: pure, synchronous, no worker and no I/O.
 *
 * The worker hosts one instance per registry; tests drive it directly and use
 * it as the model the worker-backed facade must agree with.
 *
 * Rules:
 * - `bind` (on `initialize`) binds an unbound id, refreshes the caller's own
 *   binding, and refuses when another principal owns the id (no takeover).
 * - `authorizeAttach` (on the listening GET) claims an unbound id
 *   trust-on-first-use, refreshes the owner's binding, refuses anyone else.
 * - `forget` with a fingerprint drops the binding only for its owner.
 * - Bounds: a global LRU of `maxEntries` bindings and a per-principal cap of
 *   `maxPerPrincipal`; a principal at its cap evicts its own least recently
 *   used binding, never another principal's. Pinned bindings (a live
 *   listening stream) are never evicted; when nothing is evictable the
 *   answer is `"full"` (or `false` for a claim).
 * - Blank or invalid input fails closed and never changes state.
 *
 * @module
 */

import { isValidFingerprint, sanitizeSessionId } from "./validate.ts";
import { checkCount } from "./validate.ts";

/** Outcome of {@linkcode OwnerTable.bind}. */
export type BindResult = "bound" | "refused" | "full";

/** Counters reported by `stats()`. */
export interface OwnerStats {
  /** Bindings currently held. */
  size: number;
  /** Bindings currently pinned by a live stream. */
  pinned: number;
  /** Bindings dropped to make room (global LRU or per-principal cap). */
  evictions: number;
  /** Calls refused because another principal owns the session. */
  refusals: number;
  /** Unbound sessions claimed trust-on-first-use by `authorizeAttach`. */
  claims: number;
  /** Calls refused because their input was blank or invalid. */
  invalid: number;
  /** Calls answered `"full"`/`false` because every candidate was pinned. */
  full: number;
  /** Times the worker was restarted after dying (its state was lost). */
  restarts: number;
}

/** Bounds of a {@linkcode OwnerTable}. */
export interface OwnerTableOptions {
  /** Global bound on bindings. Default 10,000. */
  maxEntries?: number;
  /** Bound on bindings of one principal. Default 100. */
  maxPerPrincipal?: number;
  /** Fingerprints exempt from the per-principal cap (e.g. a shared master key). */
  sharedPrincipals?: readonly string[];
}

/** Validated, defaulted form of {@linkcode OwnerTableOptions}. */
export interface ResolvedOwnerOptions {
  maxEntries: number;
  maxPerPrincipal: number;
  sharedPrincipals: string[];
}

/** Validates and defaults owner-table options; throws `InvalidInputError` naming the bad value. */
export function resolveOwnerOptions(options: OwnerTableOptions = {}): ResolvedOwnerOptions {
  const maxEntries = checkCount("maxEntries", options.maxEntries ?? 10_000, 1);
  const maxPerPrincipal = checkCount("maxPerPrincipal", options.maxPerPrincipal ?? 100, 1);
  const shared = options.sharedPrincipals ?? [];
  if (!Array.isArray(shared) || !shared.every(isValidFingerprint)) {
    checkCount("sharedPrincipals (must be an array of non-blank strings)", NaN, 0);
  }
  return { maxEntries, maxPerPrincipal, sharedPrincipals: [...shared] };
}

interface Binding {
  owner: string;
  pins: number;
}

/**
 * In-memory owner table. Each operation is synchronous and total: it never
 * throws on bad input, it fails closed.
 */
export class OwnerTable {
  readonly #maxEntries: number;
  readonly #maxPerPrincipal: number;
  readonly #shared: Set<string>;
  /** session id -> binding, in least- to most-recently-used order. */
  readonly #sessions = new Map<string, Binding>();
  /** owner -> its session ids, in least- to most-recently-used order. */
  readonly #byOwner = new Map<string, Map<string, true>>();
  #pinned = 0;
  readonly #stats = { evictions: 0, refusals: 0, claims: 0, invalid: 0, full: 0 };

  constructor(options: OwnerTableOptions = {}) {
    const resolved = resolveOwnerOptions(options);
    this.#maxEntries = resolved.maxEntries;
    this.#maxPerPrincipal = resolved.maxPerPrincipal;
    this.#shared = new Set(resolved.sharedPrincipals);
  }

  /** Binds on `initialize`: `"bound"`, `"refused"` (other owner or bad input) or `"full"`. */
  bind(sessionId: unknown, fp: unknown): BindResult {
    if (sanitizeSessionId(sessionId) === null || !isValidFingerprint(fp)) {
      this.#stats.invalid++;
      return "refused";
    }
    const sid = sessionId as string;
    const existing = this.#sessions.get(sid);
    if (existing !== undefined) {
      if (existing.owner !== fp) {
        this.#stats.refusals++;
        return "refused";
      }
      this.#touch(sid, existing);
      return "bound";
    }
    return this.#insert(sid, fp) ? "bound" : "full";
  }

  /** Authorizes a listening-stream attach, claiming an unbound id for `fp`. */
  authorizeAttach(sessionId: unknown, fp: unknown, pin = false): boolean {
    if (sanitizeSessionId(sessionId) === null || !isValidFingerprint(fp)) {
      this.#stats.invalid++;
      return false;
    }
    const sid = sessionId as string;
    let binding = this.#sessions.get(sid);
    if (binding !== undefined) {
      if (binding.owner !== fp) {
        this.#stats.refusals++;
        return false;
      }
      this.#touch(sid, binding);
    } else {
      if (!this.#insert(sid, fp)) return false;
      this.#stats.claims++;
      binding = this.#sessions.get(sid)!;
    }
    if (pin) this.#pin(binding);
    return true;
  }

  /**
   * Drops a binding. With a fingerprint only its owner may drop it (an
   * unbound id is a no-op `true`); with `undefined`, an operator drop.
   */
  forget(sessionId: unknown, fp?: unknown): boolean {
    if (sanitizeSessionId(sessionId) === null || (fp !== undefined && !isValidFingerprint(fp))) {
      this.#stats.invalid++;
      return false;
    }
    const sid = sessionId as string;
    const binding = this.#sessions.get(sid);
    if (binding === undefined) return true;
    if (fp !== undefined && binding.owner !== fp) {
      this.#stats.refusals++;
      return false;
    }
    this.#remove(sid, binding);
    return true;
  }

  /** The owner fingerprint of `sessionId`, or `null`. Does not refresh LRU. */
  ownerOf(sessionId: unknown): string | null {
    if (sanitizeSessionId(sessionId) === null) return null;
    return this.#sessions.get(sessionId as string)?.owner ?? null;
  }

  /** Pins a bound session (one pin per live stream); `false` when unbound. */
  pin(sessionId: unknown): boolean {
    if (sanitizeSessionId(sessionId) === null) return false;
    const binding = this.#sessions.get(sessionId as string);
    if (binding === undefined) return false;
    this.#pin(binding);
    return true;
  }

  /** Releases one pin; the binding stays (a reconnecting owner keeps it). */
  unpin(sessionId: unknown): boolean {
    if (sanitizeSessionId(sessionId) === null) return false;
    const sid = sessionId as string;
    const binding = this.#sessions.get(sid);
    if (binding === undefined || binding.pins === 0) return false;
    binding.pins--;
    if (binding.pins === 0) this.#pinned--;
    this.#touch(sid, binding);
    return true;
  }

  /** Number of bindings. */
  size(): number {
    return this.#sessions.size;
  }

  /** Counters for metrics; `restarts` is always 0 here (the facade fills it in). */
  stats(): OwnerStats {
    return { size: this.#sessions.size, pinned: this.#pinned, ...this.#stats, restarts: 0 };
  }

  #pin(binding: Binding): void {
    if (binding.pins === 0) this.#pinned++;
    binding.pins++;
  }

  #touch(sid: string, binding: Binding): void {
    this.#sessions.delete(sid);
    this.#sessions.set(sid, binding);
    const own = this.#byOwner.get(binding.owner)!;
    own.delete(sid);
    own.set(sid, true);
  }

  #remove(sid: string, binding: Binding): void {
    this.#sessions.delete(sid);
    if (binding.pins > 0) this.#pinned--;
    const own = this.#byOwner.get(binding.owner)!;
    own.delete(sid);
    if (own.size === 0) this.#byOwner.delete(binding.owner);
  }

  /** Inserts a new binding after making room; false (and no change) when full. */
  #insert(sid: string, fp: string): boolean {
    const own = this.#byOwner.get(fp);
    if (own !== undefined && own.size >= this.#maxPerPrincipal && !this.#shared.has(fp)) {
      // At its own cap: the principal pays with its own oldest unpinned binding.
      if (!this.#evictFrom(own.keys())) {
        this.#stats.full++;
        return false;
      }
    } else if (this.#sessions.size >= this.#maxEntries) {
      if (!this.#evictFrom(this.#sessions.keys())) {
        this.#stats.full++;
        return false;
      }
    }
    this.#sessions.set(sid, { owner: fp, pins: 0 });
    let mine = this.#byOwner.get(fp);
    if (mine === undefined) {
      mine = new Map();
      this.#byOwner.set(fp, mine);
    }
    mine.set(sid, true);
    return true;
  }

  /** Evicts the first unpinned session of `order` (oldest first). */
  #evictFrom(order: Iterable<string>): boolean {
    if (this.#pinned >= this.#sessions.size) return false;
    for (const sid of order) {
      const binding = this.#sessions.get(sid)!;
      if (binding.pins === 0) {
        this.#remove(sid, binding);
        this.#stats.evictions++;
        return true;
      }
    }
    return false;
  }
}
