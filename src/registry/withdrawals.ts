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
 * at each registration, since the in-memory store has no other writer.
 *
 * @module
 */

import { cancelKey } from "../core/cancel_table.ts";

/** What {@linkcode Withdrawals.add} noted about one live entry. */
export interface PairMark {
  /** Its registry key. */
  readonly key: string;
  /** The fullness count when it was registered. */
  readonly full: number;
}

/** Live entries per key and the table's possible fullness, for one registry. */
export class Withdrawals {
  readonly #maxEntries: number;
  readonly #perKey = new Map<string, number>();
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
    return this.addKey(cancelKey(sessionId, requestId), live);
  }

  /** {@linkcode add} of an entry whose registry key is `key`. */
  addKey(key: string, live: number): PairMark {
    this.#perKey.set(key, (this.#perKey.get(key) ?? 0) + 1);
    const mark = { key, full: this.#full };
    if (live >= this.#maxEntries) this.#full++;
    return mark;
  }

  /** Whether the live entry marked `mark` may be withdrawn now. */
  allows(mark: PairMark): boolean {
    return mark.full === this.#full && this.#perKey.get(mark.key) === 1;
  }

  /** The entry marked `mark` is no longer live (deregistered, refused or failed). */
  remove(mark: PairMark): void {
    const count = this.#perKey.get(mark.key) ?? 0;
    if (count <= 1) this.#perKey.delete(mark.key);
    else this.#perKey.set(mark.key, count - 1);
  }
}
