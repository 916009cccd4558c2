/**
 * The cancellation state machine: pure, synchronous, no worker and no I/O.
 *
 * It maps `(sessionId, requestId)` keys to opaque entry ids. The
 * `AbortController`s themselves never enter this table (they cannot cross a
 * worker boundary); the facade keeps them keyed by entry id and aborts the
 * entry ids this table returns.
 *
 * Rules:
 * - A registration without a valid session id is ignored (`false`); so is an
 *   invalid request id or a full table.
 * - A second registration under the same key takes the slot (last writer
 *   wins). The displaced entry stays known to its session (so `cancelAll`
 *   still stops it) but is no longer reachable by key.
 * - `deregister(entryId)` removes the slot only while that entry still owns
 *   it, so a stale registration's cleanup never evicts the newer one.
 * - `cancel` looks up by `(sessionId, requestId)`, so a caller can only reach
 *   requests of its own session; each entry is cancelled at most once.
 *
 * @module
 */

import { isValidRequestId, sanitizeSessionId } from "./validate.ts";
import { checkCount } from "./validate.ts";

/**
 * Counters reported by `CancellationRegistry.stats()`.
 *
 * @example
 * ```ts
 * import { type CancelStats, CancellationRegistry } from "@mcp-guard/session";
 *
 * await using cancels = new CancellationRegistry();
 * const stats: CancelStats = await cancels.stats();
 * console.log(stats.size, stats.cancelled); // 0 0
 * ```
 */
export interface CancelStats {
  /** Entries currently registered (including displaced ones still running). */
  size: number;
  /** Registrations accepted. */
  registered: number;
  /** Registrations ignored: blank/invalid ids or a full table. */
  ignored: number;
  /** Registrations that displaced an earlier entry under the same key. */
  displaced: number;
  /** Entries cancelled by `cancel` or `cancelAll`. */
  cancelled: number;
  /** Times the worker was restarted after dying (the facade replays live entries). */
  restarts: number;
}

/** Bounds of a {@linkcode CancelTable}. */
export interface CancelTableOptions {
  /** Most entries held at once. Default 100,000. */
  maxEntries?: number;
}

interface Entry {
  sessionId: string;
  key: string;
  cancelled: boolean;
}

/** True when `(sessionId, requestId)` can be tracked: a valid session id and request id. */
export function isTrackable(sessionId: unknown, requestId: unknown): boolean {
  return sanitizeSessionId(sessionId) !== null && isValidRequestId(requestId);
}

/** The registry key of `(sessionId, requestId)`; `1` and `"1"` differ. */
export function cancelKey(sessionId: string, requestId: string | number): string {
  // Session ids are visible ASCII, so "\n" cannot occur in them.
  return typeof requestId === "number"
    ? `${sessionId}\nn${requestId}`
    : `${sessionId}\ns${requestId}`;
}

/** In-memory cancellation table. Operations never throw on bad input. */
export class CancelTable {
  readonly #maxEntries: number;
  /** key -> entry id currently owning the slot */
  readonly #slots = new Map<string, string>();
  /** entry id -> entry */
  readonly #entries = new Map<string, Entry>();
  /** session id -> its entry ids */
  readonly #bySession = new Map<string, Set<string>>();
  readonly #stats = { registered: 0, ignored: 0, displaced: 0, cancelled: 0 };

  constructor(options: CancelTableOptions = {}) {
    this.#maxEntries = checkCount("maxEntries", options.maxEntries ?? 100_000, 1);
  }

  /**
   * Registers `entryId` under `(sessionId, requestId)`. Returns false (and
   * changes nothing) for invalid input, a reused entry id, or a full table.
   */
  register(sessionId: unknown, requestId: unknown, entryId: unknown): boolean {
    if (
      !isTrackable(sessionId, requestId) ||
      typeof entryId !== "string" || entryId.length === 0 || this.#entries.has(entryId) ||
      this.#entries.size >= this.#maxEntries
    ) {
      this.#stats.ignored++;
      return false;
    }
    const sid = sessionId as string;
    const key = cancelKey(sid, requestId as string | number);
    if (this.#slots.has(key)) this.#stats.displaced++;
    this.#slots.set(key, entryId);
    this.#entries.set(entryId, { sessionId: sid, key, cancelled: false });
    let mine = this.#bySession.get(sid);
    if (mine === undefined) {
      mine = new Set();
      this.#bySession.set(sid, mine);
    }
    mine.add(entryId);
    this.#stats.registered++;
    return true;
  }

  /**
   * Forgets `entryId`. Returns true only when it still owned its slot (and so
   * removed it); a displaced entry is dropped without touching the slot.
   */
  deregister(entryId: unknown): boolean {
    if (typeof entryId !== "string") return false;
    const entry = this.#entries.get(entryId);
    if (entry === undefined) return false;
    this.#entries.delete(entryId);
    const mine = this.#bySession.get(entry.sessionId)!;
    mine.delete(entryId);
    if (mine.size === 0) this.#bySession.delete(entry.sessionId);
    if (this.#slots.get(entry.key) !== entryId) return false;
    this.#slots.delete(entry.key);
    return true;
  }

  /**
   * Marks the live entry under `(sessionId, requestId)` cancelled and returns
   * its entry id, or `null` when there is none (other session, unknown id,
   * already cancelled, invalid input).
   */
  cancel(sessionId: unknown, requestId: unknown): string | null {
    if (!isTrackable(sessionId, requestId)) return null;
    const entryId = this.#slots.get(cancelKey(sessionId as string, requestId as string | number));
    if (entryId === undefined) return null;
    const entry = this.#entries.get(entryId)!;
    if (entry.cancelled) return null;
    entry.cancelled = true;
    this.#stats.cancelled++;
    return entryId;
  }

  /** Marks every live entry of `sessionId` cancelled and returns their entry ids. */
  cancelAll(sessionId: unknown): string[] {
    if (sanitizeSessionId(sessionId) === null) return [];
    const mine = this.#bySession.get(sessionId as string);
    if (mine === undefined) return [];
    const out: string[] = [];
    for (const entryId of mine) {
      const entry = this.#entries.get(entryId)!;
      if (!entry.cancelled) {
        entry.cancelled = true;
        out.push(entryId);
      }
    }
    this.#stats.cancelled += out.length;
    return out;
  }

  /** Number of entries held. */
  size(): number {
    return this.#entries.size;
  }

  /** Counters for metrics. */
  stats(): CancelStats {
    return { size: this.#entries.size, ...this.#stats, restarts: 0 };
  }
}
