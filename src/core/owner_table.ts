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
 *   used binding, never another principal's. A shared principal
 *   (`sharedPrincipals`, or a bind with `shared`) has a cap of its own,
 *   `maxPerSharedPrincipal`, and never evicts another principal's binding:
 *   at its cap, and when the table is full, it evicts its own least recently
 *   used binding. Pinned bindings (a live listening stream) are never
 *   evicted; when nothing is evictable the answer is `"full"` (or `false`
 *   for a claim).
 * - Idle expiry (`idleTtlMs`): an unpinned binding unused for longer is
 *   gone. A bind with `keepMs` sets a floor: idle expiry does not drop the
 *   binding before `keepMs` after that bind (a later use never lowers the
 *   floor). The bounds still apply to it.
 * - Blank or invalid input fails closed and never changes state.
 *
 * @module
 */

import {
  type BindResult,
  capKey,
  keepMsOf,
  type OwnerStats,
  type OwnerTableOptions,
  type RemoveCause,
  resolveOwnerOptions,
} from "./owner_types.ts";
import { checkCount, isValidFingerprint, sanitizeSessionId } from "./validate.ts";

export * from "./owner_types.ts";

/** One binding; a node in the global LRU list and in its principal's list. */
interface Binding {
  sid: string;
  /** Its owner's fingerprint (with `capByFirstWord`, its principal's key is only a prefix of it). */
  fp: string;
  owner: Principal;
  pins: number;
  /** When it was last used (the table's clock). */
  used: number;
  /** Idle expiry never drops it up to this time (the table's clock); `-Infinity`: no floor. */
  keep: number;
  prev: Binding | null;
  next: Binding | null;
  pPrev: Binding | null;
  pNext: Binding | null;
}

/** A principal's own bindings, least recently used first. */
interface Principal {
  /** Its key: the fingerprint, or with `capByFirstWord` its first word. */
  key: string;
  head: Binding | null;
  tail: Binding | null;
  size: number;
}

/**
 * In-memory owner table. Each operation is synchronous, O(1) apart from
 * skipping pinned bindings during eviction, and total: it never throws on bad
 * input, it fails closed.
 *
 * LRU order is kept in intrusive doubly linked lists (one global, one per
 * principal), so a refresh is a relink rather than a rehash.
 */
export class OwnerTable {
  readonly #maxEntries: number;
  readonly #maxPerPrincipal: number;
  readonly #maxPerShared: number;
  readonly #shared: Set<string>;
  readonly #capByFirstWord: boolean;
  readonly #sessions = new Map<string, Binding>();
  readonly #principals = new Map<string, Principal>();
  /** Global LRU list: head is the least recently used. */
  #head: Binding | null = null;
  #tail: Binding | null = null;
  #pinned = 0;
  /** Last fingerprint that passed validation (callers repeat theirs). */
  #lastFp: string | null = null;
  readonly #stats = { evictions: 0, refusals: 0, claims: 0, invalid: 0, full: 0 };

  readonly #onRemove: ((sessionId: string, cause: RemoveCause) => void) | undefined;
  readonly #ttl: number;
  readonly #now: () => number;

  /**
   * `onRemove` hears of every binding that goes (forgotten, evicted or
   * expired); the worker uses it to tell its facade which owners it may no
   * longer assume, and which sessions to close.
   */
  constructor(
    options: OwnerTableOptions = {},
    onRemove?: (sessionId: string, cause: RemoveCause) => void,
  ) {
    this.#onRemove = onRemove;
    const resolved = resolveOwnerOptions(options);
    this.#maxEntries = resolved.maxEntries;
    this.#maxPerPrincipal = resolved.maxPerPrincipal;
    this.#maxPerShared = resolved.maxPerSharedPrincipal;
    this.#shared = new Set(resolved.sharedPrincipals);
    this.#capByFirstWord = options.capByFirstWord === true;
    this.#ttl = checkCount("idleTtlMs", options.idleTtlMs ?? 0, 0);
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Binds on `initialize`: `"bound"`, `"refused"` (other owner or bad input)
   * or `"full"`. `shared` makes this call follow the rules of a shared
   * principal (`maxPerSharedPrincipal`, never evicting anyone else), as
   * `sharedPrincipals` does. `keepMs` (an integer from 0 to `MAX_KEEP_MS`;
   * anything else is bad input): idle expiry does not drop the binding
   * before `keepMs` from now; an earlier, later floor stays.
   */
  bind(sessionId: unknown, fp: unknown, shared = false, keepMs: unknown = 0): BindResult {
    const binding = this.#find(sessionId);
    const keep = keepMsOf(keepMs);
    if (binding === null || !this.#validFp(fp) || keep === null) {
      this.#stats.invalid++;
      return "refused";
    }
    if (binding !== undefined) {
      if (binding.fp !== fp) {
        this.#stats.refusals++;
        return "refused";
      }
      this.#touch(binding);
      if (keep > 0) this.#keep(binding, keep);
      return "bound";
    }
    const inserted = this.#insert(sessionId as string, fp as string, shared);
    if (inserted === null) return "full";
    if (keep > 0) this.#keep(inserted, keep);
    return "bound";
  }

  /**
   * Counts a use of `fp`'s own session (LRU recency and idle expiry), as any
   * allowed request does: `true` when `fp` owns it, else `false` and
   * nothing changes (never a claim).
   */
  touch(sessionId: unknown, fp: unknown): boolean {
    const binding = this.#find(sessionId);
    if (!binding || binding.fp !== fp) return false;
    this.#touch(binding);
    return true;
  }

  /**
   * Drops every unpinned binding idle for longer than `idleTtlMs` and past
   * its `keepMs` floor (each is reported to `onRemove` as `"expired"`);
   * returns how many. Operations never see an expired binding even before a
   * sweep.
   */
  sweep(): number {
    if (this.#ttl === 0) return 0;
    const now = this.#now();
    const cutoff = now - this.#ttl;
    let dropped = 0;
    // Last-use times grow along the LRU list, so every idle binding is before the first one
    // used since the cutoff; pinned and kept ones among them stay (and are stepped over).
    for (let b = this.#head; b !== null && b.used < cutoff;) {
      const next = b.next;
      if (b.pins === 0 && b.keep < now) {
        this.#remove(b, "expired");
        dropped++;
      }
      b = next;
    }
    return dropped;
  }

  /** Authorizes a listening-stream attach, claiming an unbound id for `fp`. */
  authorizeAttach(sessionId: unknown, fp: unknown, pin = false): boolean {
    let binding = this.#find(sessionId);
    if (binding === null || !this.#validFp(fp)) {
      this.#stats.invalid++;
      return false;
    }
    if (binding !== undefined) {
      if (binding.fp !== fp) {
        this.#stats.refusals++;
        return false;
      }
      this.#touch(binding);
    } else {
      binding = this.#insert(sessionId as string, fp as string);
      if (binding === null) return false;
      this.#stats.claims++;
    }
    if (pin) this.#pin(binding);
    return true;
  }

  /**
   * Drops a binding. With a fingerprint only its owner may drop it (an
   * unbound id is a no-op `true`); with `undefined`, an operator drop.
   */
  forget(sessionId: unknown, fp?: unknown): boolean {
    const binding = this.#find(sessionId);
    if (binding === null || (fp !== undefined && !this.#validFp(fp))) {
      this.#stats.invalid++;
      return false;
    }
    if (binding === undefined) return true;
    if (fp !== undefined && binding.fp !== fp) {
      this.#stats.refusals++;
      return false;
    }
    this.#remove(binding, "forgotten");
    return true;
  }

  /** The owner fingerprint of `sessionId`, or `null`. Does not refresh LRU. */
  ownerOf(sessionId: unknown): string | null {
    return this.#find(sessionId)?.fp ?? null;
  }

  /** Pins a bound session (one pin per live stream); `false` when unbound. */
  pin(sessionId: unknown): boolean {
    const binding = this.#find(sessionId);
    if (!binding) return false;
    this.#pin(binding);
    return true;
  }

  /** Releases one pin; the binding stays (a reconnecting owner keeps it). */
  unpin(sessionId: unknown): boolean {
    const binding = this.#find(sessionId);
    if (!binding || binding.pins === 0) return false;
    binding.pins--;
    if (binding.pins === 0) this.#pinned--;
    this.#touch(binding);
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

  /**
   * The binding of a valid session id, `undefined` when unbound, `null` when
   * the id is invalid. A bound id was validated when it was inserted, so the
   * common path (an existing session) costs one map lookup.
   */
  #find(sessionId: unknown): Binding | undefined | null {
    if (typeof sessionId !== "string") return null;
    const binding = this.#sessions.get(sessionId);
    if (binding !== undefined) {
      if (this.#ttl === 0 || binding.pins > 0) return binding;
      const now = this.#now();
      if (now - binding.used <= this.#ttl || now <= binding.keep) return binding;
      this.#remove(binding, "expired");
      return undefined;
    }
    return sanitizeSessionId(sessionId) === null ? null : undefined;
  }

  #validFp(fp: unknown): boolean {
    if (typeof fp === "string" && fp === this.#lastFp) return true;
    if (!isValidFingerprint(fp)) return false;
    this.#lastFp = fp;
    return true;
  }

  #pin(binding: Binding): void {
    if (binding.pins === 0) this.#pinned++;
    binding.pins++;
  }

  /** Raises a binding's expiry floor to `keepMs` from now (never lowers it). */
  #keep(b: Binding, keepMs: number): void {
    if (this.#ttl === 0) return;
    const until = this.#now() + keepMs;
    if (until > b.keep) b.keep = until;
  }

  /** Moves a binding to the most-recently-used end of both its lists. */
  #touch(b: Binding): void {
    if (this.#ttl > 0) b.used = this.#now();
    if (this.#tail !== b) {
      this.#unlinkGlobal(b);
      this.#appendGlobal(b);
    }
    const p = b.owner;
    if (p.tail !== b) {
      this.#unlinkPrincipal(p, b);
      this.#appendPrincipal(p, b);
    }
  }

  #remove(b: Binding, cause: RemoveCause): void {
    this.#sessions.delete(b.sid);
    if (b.pins > 0) this.#pinned--;
    this.#unlinkGlobal(b);
    const p = b.owner;
    this.#unlinkPrincipal(p, b);
    if (--p.size === 0) this.#principals.delete(p.key);
    this.#onRemove?.(b.sid, cause);
  }

  /** Inserts a new binding after making room; `null` (and no change) when full. */
  #insert(sid: string, fp: string, shared = false): Binding | null {
    if (this.#ttl > 0 && this.#sessions.size >= this.#maxEntries) this.sweep();
    const key = capKey(fp, this.#capByFirstWord);
    let p = this.#principals.get(key);
    if (shared || this.#shared.has(fp)) {
      // A shared principal pays with its own oldest unpinned binding, at its own cap and when
      // the table is full: it stands for many callers, so it never pushes anyone else out.
      const own = p === undefined ? 0 : p.size;
      if (own >= this.#maxPerShared || this.#sessions.size >= this.#maxEntries) {
        if (!this.#evictFrom(p?.head ?? null, true)) {
          this.#stats.full++;
          return null;
        }
      }
    } else if (p !== undefined && p.size >= this.#maxPerPrincipal) {
      // At its own cap: the principal pays with its own oldest unpinned binding.
      if (!this.#evictFrom(p.head, true)) {
        this.#stats.full++;
        return null;
      }
    } else if (this.#sessions.size >= this.#maxEntries) {
      if (!this.#evictFrom(this.#head, false)) {
        this.#stats.full++;
        return null;
      }
    }
    if (p === undefined || p.size === 0) {
      p = this.#principals.get(key);
      if (p === undefined) {
        p = { key, head: null, tail: null, size: 0 };
        this.#principals.set(key, p);
      }
    }
    const b: Binding = {
      sid,
      fp,
      owner: p,
      pins: 0,
      used: this.#ttl > 0 ? this.#now() : 0,
      keep: -Infinity,
      prev: null,
      next: null,
      pPrev: null,
      pNext: null,
    };
    this.#sessions.set(sid, b);
    this.#appendGlobal(b);
    this.#appendPrincipal(p, b);
    p.size++;
    return b;
  }

  /** Evicts the first unpinned binding of a list, oldest first. */
  #evictFrom(start: Binding | null, ownList: boolean): boolean {
    if (this.#pinned >= this.#sessions.size) return false;
    for (let b = start; b !== null; b = ownList ? b.pNext : b.next) {
      if (b.pins === 0) {
        this.#remove(b, "evicted");
        this.#stats.evictions++;
        return true;
      }
    }
    return false;
  }

  #appendGlobal(b: Binding): void {
    b.prev = this.#tail;
    b.next = null;
    if (this.#tail !== null) this.#tail.next = b;
    else this.#head = b;
    this.#tail = b;
  }

  #unlinkGlobal(b: Binding): void {
    if (b.prev !== null) b.prev.next = b.next;
    else this.#head = b.next;
    if (b.next !== null) b.next.prev = b.prev;
    else this.#tail = b.prev;
    b.prev = b.next = null;
  }

  #appendPrincipal(p: Principal, b: Binding): void {
    b.pPrev = p.tail;
    b.pNext = null;
    if (p.tail !== null) p.tail.pNext = b;
    else p.head = b;
    p.tail = b;
  }

  #unlinkPrincipal(p: Principal, b: Binding): void {
    if (b.pPrev !== null) b.pPrev.pNext = b.pNext;
    else p.head = b.pNext;
    if (b.pNext !== null) b.pNext.pPrev = b.pPrev;
    else p.tail = b.pPrev;
    b.pPrev = b.pNext = null;
  }
}
