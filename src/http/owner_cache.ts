/**
 * Owners the registry confirmed, trusted for `ownerCacheMs` on POSTs (a
 * shared store's round trip saved), and the DELETE epoch that keeps a lookup
 * begun before a session ended from being cached after it.
 *
 * @module
 */

/** Most sessions whose owner the guard remembers. */
const OWNER_CACHE_ENTRIES = 10_000;

/** Confirmed owners, each trusted until `ms` after the registry said so. */
export class OwnerCache {
  readonly #ms: number;
  readonly #entries = new Map<string, { fp: string; until: number }>();
  /** Sessions ended so far (DELETE let through, or closed after an eviction). */
  #ended = 0;

  /** `ms` 0 disables the cache (the epoch still counts). */
  constructor(ms: number) {
    this.#ms = ms;
  }

  /** Changes whenever a session ends: compare before and after a lookup. */
  get epoch(): number {
    return this.#ended;
  }

  /** True when `fp` is a live cached owner of `sid`. */
  has(sid: string, fp: string): boolean {
    if (this.#ms === 0) return false;
    const hit = this.#entries.get(sid);
    return hit !== undefined && hit.fp === fp && hit.until > performance.now();
  }

  /** The live cached owner of `sid`, if any. */
  get(sid: string): string | undefined {
    if (this.#ms === 0) return undefined;
    const hit = this.#entries.get(sid);
    return hit !== undefined && hit.until > performance.now() ? hit.fp : undefined;
  }

  /**
   * Remembers a confirmed owner, unless a session ended since `epoch` (the
   * answer may predate that end). A live entry is not extended: at most
   * `ms` after the registry last said so, it is asked again.
   */
  remember(sid: string, fp: string, epoch = this.#ended): void {
    if (this.#ms === 0 || epoch !== this.#ended) return;
    const now = performance.now();
    const live = this.#entries.get(sid);
    if (live !== undefined && live.fp === fp && live.until > now) return;
    if (this.#entries.size >= OWNER_CACHE_ENTRIES && !live) this.#entries.clear();
    this.#entries.set(sid, { fp, until: now + this.#ms });
  }

  /** Forgets `sid` (refused, or answered 404 by the handler). */
  drop(sid: string): void {
    this.#entries.delete(sid);
  }

  /** A session ended: forget it, and do not cache lookups that began before. */
  ended(sid: string): void {
    this.#ended++;
    this.#entries.delete(sid);
  }
}
