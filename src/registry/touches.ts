/**
 * Coalesced touches: every request a guard allows is a use of its session,
 * but at most one touch per (caller, session) per interval reaches the
 * store; the others are absorbed, and one trailing touch at the end of the
 * interval carries the latest use. Keyed by caller too, so another
 * principal's touches (refused by the store) never use up the owner's.
 *
 * @module
 */

/** Most (caller, session) pairs remembered before stale ones are pruned. */
const MAX_REMEMBERED = 10_000;

/** Decides which touches are sent; `send` delivers one to the store. */
export class TouchCoalescer {
  readonly #intervalMs: number;
  readonly #send: (sessionId: string, fingerprint: string) => Promise<unknown>;
  /** "<fingerprint>\n<session id>" -> when a touch was last sent. */
  #sent = new Map<string, number>();
  /** Touches absorbed within their interval: sent once at its end. */
  #trailing = new Map<string, [sessionId: string, fingerprint: string]>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `intervalMs` 0: every touch is sent. */
  constructor(
    intervalMs: number,
    send: (sessionId: string, fingerprint: string) => Promise<unknown>,
  ) {
    this.#intervalMs = intervalMs;
    this.#send = send;
  }

  /** Sends the touch now, or absorbs it into the trailing one. */
  async touch(sessionId: string, fingerprint: string): Promise<void> {
    if (this.#intervalMs > 0) {
      const key = `${fingerprint}\n${sessionId}`;
      const now = performance.now();
      const last = this.#sent.get(key);
      if (last !== undefined && now - last < this.#intervalMs) {
        this.#trailing.set(key, [sessionId, fingerprint]);
        if (this.#timer === undefined) {
          this.#timer = setTimeout(this.#flush, this.#intervalMs - (now - last));
          Deno.unrefTimer(this.#timer as unknown as number);
        }
        return;
      }
      if (this.#sent.size >= MAX_REMEMBERED) this.#prune(now);
      this.#sent.set(key, now);
      this.#trailing.delete(key);
    }
    await this.#send(sessionId, fingerprint);
  }

  /** Drops pending trailing touches (the registry is closing). */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#trailing.clear();
  }

  #flush = (): void => {
    this.#timer = undefined;
    const due = this.#trailing;
    this.#trailing = new Map();
    const now = performance.now();
    for (const [key, [sid, fp]] of due) {
      this.#sent.set(key, now);
      this.#send(sid, fp).catch(() => {});
    }
  };

  #prune(now: number): void {
    for (const [key, at] of this.#sent) {
      if (now - at >= this.#intervalMs) this.#sent.delete(key);
    }
    if (this.#sent.size >= MAX_REMEMBERED) this.#sent = new Map();
  }
}
