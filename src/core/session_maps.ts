/**
 * Maps of request ids, one per session: what the guard and a cancellation
 * registry keep per `(session id, request id)` without building a combined
 * string key per request (V8 spends about half a microsecond hashing a
 * fresh string the first time it keys a Map).
 *
 * A session's map stays when it empties, so a session with one request at a
 * time does not make a new one per request; empty maps are swept once the
 * sessions outnumber twice those that had entries at the last sweep.
 *
 * @module
 */

/** Sessions swept at the earliest beyond this many. */
const MIN_SWEEP = 1_024;

/** Per-session maps of request ids (`1` and `"1"` differ). */
export class SessionMaps<V> {
  readonly #sessions = new Map<string, Map<string | number, V>>();
  #sweepAt = MIN_SWEEP;

  /** The map of session `sid`, if it has one. */
  get(sid: string): Map<string | number, V> | undefined {
    return this.#sessions.get(sid);
  }

  /** The map of session `sid`, made when it has none. */
  of(sid: string): Map<string | number, V> {
    let requests = this.#sessions.get(sid);
    if (requests === undefined) {
      if (this.#sessions.size >= this.#sweepAt) this.#sweep();
      requests = new Map();
      this.#sessions.set(sid, requests);
    }
    return requests;
  }

  /** Sessions with a map (empty ones included), for tests. */
  get size(): number {
    return this.#sessions.size;
  }

  /** Drops the empty maps. */
  #sweep(): void {
    for (const [sid, requests] of this.#sessions) {
      if (requests.size === 0) this.#sessions.delete(sid);
    }
    this.#sweepAt = Math.max(MIN_SWEEP, 2 * this.#sessions.size);
  }
}
