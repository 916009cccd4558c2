/**
 * {@linkcode SessionOrder}: keeps the guard from reordering a session's
 * requests in a way the handler can observe.
 *
 * The guard checks a GET or DELETE with registry round trips, while a POST of
 * the session's own owner may pass on a local answer. Without a gate, a POST
 * sent right after the listening GET can reach the handler first, and a
 * server request it causes (`elicitation/create`, `sampling/createMessage`)
 * then finds no stream to travel on. A GET or DELETE holds its session's gate
 * from the moment it arrives until the handler has answered it (or the guard
 * refused it); a POST of that session waits for the gates held when it
 * arrived, and only for those.
 *
 * @module
 */

/** Per-session gates: requests that later requests of the session must not overtake. */
export class SessionOrder {
  /** session id -> resolves once every gate held so far for it is released. */
  readonly #gates = new Map<string, Promise<void>>();

  /**
   * Holds later requests of `sid` back until the returned function is called
   * (calling it again does nothing). Must be called synchronously when the
   * request arrives, before any `await`.
   */
  hold(sid: string): () => void {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => open = resolve);
    const before = this.#gates.get(sid);
    const tail = before === undefined ? gate : Promise.all([before, gate]).then(() => {});
    this.#gates.set(sid, tail);
    tail.then(() => {
      if (this.#gates.get(sid) === tail) this.#gates.delete(sid);
    });
    return open;
  }

  /**
   * What a request of `sid` arriving now must wait for before it reaches the
   * handler, or `undefined` when nothing is ahead of it. Must be called
   * synchronously when the request arrives.
   */
  ahead(sid: string): Promise<void> | undefined {
    return this.#gates.get(sid);
  }

  /** Sessions with a gate held (for tests). */
  get size(): number {
    return this.#gates.size;
  }
}
