/**
 * The guard's signal of each tracked request, by session and request id,
 * for `signalFor`. Kept per session rather than under one combined key: a
 * session id already looked up in this request is hashed once, and a
 * numeric request id costs no hashing at all, where a combined key is a
 * fresh string to hash (about half a microsecond in V8) on every request.
 *
 * @module
 */

import { SessionMaps } from "../core/session_maps.ts";

/** Signals of in-flight requests, by session id then request id (`1` and `"1"` differ). */
export class InflightSignals {
  readonly #sessions = new SessionMaps<AbortSignal>();

  /** The signal of request `requestId` of session `sid`, if it is in flight. */
  get(sid: string, requestId: string | number): AbortSignal | undefined {
    return this.#sessions.get(sid)?.get(requestId);
  }

  /** Request `requestId` of session `sid` is in flight with `signal` (the latest wins). */
  set(sid: string, requestId: string | number, signal: AbortSignal): void {
    this.#sessions.of(sid).set(requestId, signal);
  }

  /** Forgets the request, while `signal` is still its signal (a later one keeps its own). */
  delete(sid: string, requestId: string | number, signal: AbortSignal): void {
    const requests = this.#sessions.get(sid);
    if (requests === undefined || requests.get(requestId) !== signal) return;
    requests.delete(requestId);
  }
}
