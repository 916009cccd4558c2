/**
 * The guard's signal of each tracked request, by session and request id,
 * for `signalFor`. Kept per session rather than under one combined key: a
 * session id already looked up in this request is hashed once, and a
 * numeric request id costs no hashing at all, where a combined key is a
 * fresh string to hash (about half a microsecond in V8) on every request.
 *
 * The guard refuses a request whose id is already in flight in its session
 * (`duplicate-request-id`), so there is at most one entry per id; `set` and
 * `delete` still tell sources apart, should a caller set the same id twice.
 *
 * @module
 */

import { SessionMaps } from "../core/session_maps.ts";

/** What makes a tracked request's signal, when it is first asked for. */
export interface SignalSource {
  readonly signal: AbortSignal;
}

/** Signals of in-flight requests, by session id then request id (`1` and `"1"` differ). */
export class InflightSignals {
  readonly #sessions = new SessionMaps<SignalSource>();

  /** The signal of request `requestId` of session `sid`, if it is in flight. */
  get(sid: string, requestId: string | number): AbortSignal | undefined {
    return this.#sessions.get(sid)?.get(requestId)?.signal;
  }

  /**
   * Whether request `requestId` of session `sid` is in flight (from its
   * registration to the end of its answer). Makes no signal, unlike `get`.
   */
  has(sid: string, requestId: string | number): boolean {
    return this.#sessions.get(sid)?.has(requestId) === true;
  }

  /** Request `requestId` of session `sid` is in flight, its signal from `source` (the latest wins). */
  set(sid: string, requestId: string | number, source: SignalSource): void {
    this.#sessions.of(sid).set(requestId, source);
  }

  /** Forgets the request, while `source` is still its source (a later one keeps its own). */
  delete(sid: string, requestId: string | number, source: SignalSource): void {
    const requests = this.#sessions.get(sid);
    if (requests === undefined || requests.get(requestId) !== source) return;
    requests.delete(requestId);
  }
}
