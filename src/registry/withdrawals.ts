/**
 * When a tracked request's registration may be withdrawn before it is sent
 * (its deregistration then withdraws both; see `CancellationRegistry.track`):
 * only when the worker, applying every call in order, would answer every
 * other call exactly as it does without the pair. Two things could change
 * that, and either keeps the pair on the wire:
 *
 * - another live entry with the same key: the registration would displace
 *   it, and the deregistration would then drop the slot, so neither can be
 *   reached by key any more;
 * - a table that may have been full since the registration (as many live
 *   entries as `maxEntries`): the pair then decides who else is refused,
 *   and whether this registration itself would have been.
 *
 * Live entries are counted on the caller's side (in call order, every entry
 * registered and not yet deregistered), an upper bound of the table's size
 * at each registration, since the in-memory store has no other writer. On a
 * shared store other processes write too, and neither rule sees their
 * entries. Withdrawing there is still an order the store could have applied:
 * both calls of the pair at once, in the window before the registration was
 * sent, which nobody was told of (a same-key entry of another process is
 * then not displaced, a cancel through another process in that window finds
 * nothing); only when that process's entries filled the table meanwhile
 * does the pair count as registered where the store would have refused it,
 * for a request that could not be reached either way.
 *
 * @module
 */

import { SessionMaps } from "../core/session_maps.ts";

/** What {@linkcode Withdrawals.add} noted about one live entry. */
export interface PairMark {
  /** Its registry key: session id and request id (`1` and `"1"` differ). */
  readonly sessionId: string;
  readonly requestId: string | number;
  /** The fullness count when it was registered. */
  readonly full: number;
}

/** Live entries per key and the table's possible fullness, for one registry. */
export class Withdrawals {
  readonly #maxEntries: number;
  /**
   * Live entries per key, by session id then request id: a session id is
   * hashed once per request, and a numeric request id not at all (a combined
   * key would be a fresh string to hash on every registration).
   */
  readonly #perKey = new SessionMaps<number>();
  /** Bumped by every registration that may have found the table full. */
  #full = 0;
  /** Registrations withdrawn so far (the worker never counted them). */
  withdrawn = 0;

  /** For a table of at most `maxEntries` entries. */
  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  /** Notes a new live entry; `live`: entries live before it. */
  add(sessionId: string, requestId: string | number, live: number): PairMark {
    const counts = this.#perKey.of(sessionId);
    counts.set(requestId, (counts.get(requestId) ?? 0) + 1);
    const mark = { sessionId, requestId, full: this.#full };
    if (live >= this.#maxEntries) this.#full++;
    return mark;
  }

  /** Whether the live entry marked `mark` may be withdrawn now. */
  allows(mark: PairMark): boolean {
    return mark.full === this.#full &&
      this.#perKey.get(mark.sessionId)?.get(mark.requestId) === 1;
  }

  /** The entry marked `mark` is no longer live (deregistered, refused or failed). */
  remove(mark: PairMark): void {
    const counts = this.#perKey.get(mark.sessionId);
    if (counts === undefined) return;
    const count = counts.get(mark.requestId) ?? 0;
    if (count > 1) counts.set(mark.requestId, count - 1);
    else counts.delete(mark.requestId);
  }
}
