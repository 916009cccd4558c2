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

/** What a touch nobody needs to wait for resolves with. */
export const DONE: Promise<void> = Promise.resolve();

/** One (caller, session) pair. */
interface Pair {
  readonly sessionId: string;
  readonly fingerprint: string;
  /** When a touch was last sent. */
  sent: number;
  /** A touch was absorbed since: one goes out at the end of the interval. */
  trailing: boolean;
}

/** Decides which touches are sent; `send` delivers one to the store. */
export class TouchCoalescer {
  readonly #intervalMs: number;
  readonly #send: (sessionId: string, fingerprint: string) => Promise<unknown>;
  /**
   * The session's owner's pair, by session id (the common case: only the
   * owner's requests get through to be touched, so no key is built per touch).
   */
  #bySession = new Map<string, Pair>();
  /** Pairs of other callers of a session already in `#bySession`, by "<fp>\n<session id>". */
  #others = new Map<string, Pair>();
  /** Pairs with a trailing touch due. */
  #due: Pair[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When `#timer` is due (`performance.now()` time). */
  #timerAt = 0;

  /** `intervalMs` 0: every touch is sent. */
  constructor(
    intervalMs: number,
    send: (sessionId: string, fingerprint: string) => Promise<unknown>,
  ) {
    this.#intervalMs = intervalMs;
    this.#send = send;
  }

  /** Sends the touch now, or absorbs it into the trailing one (then resolves at once). */
  touch(sessionId: string, fingerprint: string): Promise<void> {
    if (this.#intervalMs === 0) return this.#sendNow(sessionId, fingerprint);
    let pair = this.#bySession.get(sessionId);
    let others = false;
    if (pair !== undefined && pair.fingerprint !== fingerprint) {
      others = true;
      pair = this.#others.get(`${fingerprint}\n${sessionId}`);
    }
    // A trailing touch is due, and the timer that sends it fires within the pair's interval:
    // it carries this use too, without reading the clock (a busy session's common case).
    if (pair !== undefined && pair.trailing && this.#timerAt <= pair.sent + this.#intervalMs) {
      return DONE;
    }
    const now = performance.now();
    if (pair !== undefined && now - pair.sent < this.#intervalMs) {
      if (!pair.trailing) {
        pair.trailing = true;
        this.#due.push(pair);
      }
      if (this.#timer === undefined) {
        this.#timerAt = pair.sent + this.#intervalMs;
        this.#timer = setTimeout(this.#flush, this.#timerAt - now);
        Deno.unrefTimer(this.#timer as unknown as number);
      }
      return DONE;
    }
    if (pair !== undefined) {
      pair.sent = now;
      pair.trailing = false; // this touch carries the latest use
    } else {
      if (this.#bySession.size + this.#others.size >= MAX_REMEMBERED) this.#prune(now);
      pair = { sessionId, fingerprint, sent: now, trailing: false };
      if (others) this.#others.set(`${fingerprint}\n${sessionId}`, pair);
      else this.#bySession.set(sessionId, pair);
    }
    return this.#sendNow(sessionId, fingerprint);
  }

  /** Drops pending trailing touches (the registry is closing). */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const pair of this.#due) pair.trailing = false;
    this.#due = [];
  }

  async #sendNow(sessionId: string, fingerprint: string): Promise<void> {
    await this.#send(sessionId, fingerprint);
  }

  #flush = (): void => {
    this.#timer = undefined;
    const due = this.#due;
    this.#due = [];
    const now = performance.now();
    for (const pair of due) {
      if (!pair.trailing) continue; // sent meanwhile
      pair.trailing = false;
      pair.sent = now;
      this.#send(pair.sessionId, pair.fingerprint).catch(() => {});
    }
  };

  #prune(now: number): void {
    for (const map of [this.#bySession, this.#others]) {
      for (const [key, pair] of map) {
        if (!pair.trailing && now - pair.sent >= this.#intervalMs) map.delete(key);
      }
    }
    if (this.#bySession.size + this.#others.size >= MAX_REMEMBERED) {
      this.#bySession = new Map();
      this.#others = new Map();
    }
  }
}
