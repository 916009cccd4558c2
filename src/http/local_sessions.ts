/**
 * The sessions one guard bound, so it can close them in its handler when the
 * registry reports their binding evicted or expired: without that, the
 * server keeps sessions nobody can reach, and `maxPerPrincipal` bounds table
 * rows rather than live sessions. A removal heard while a session's `bind`
 * is still under way (a bind's own eviction can be announced before its
 * reply) is kept and applied once the bind is answered.
 *
 * @module
 */

/** Most sessions remembered; the oldest goes first. */
const LOCAL_SESSIONS = 100_000;

/** Why a binding went away without its owner asking. */
export type RemovalCause = "evicted" | "expired";

/** What closing a session through the handler takes. */
export interface LocalSession {
  url: string;
  principal: string | null;
  fingerprint: string | null;
}

/** Sessions bound by this guard, and binds under way. */
export class LocalSessions {
  readonly #sessions = new Map<string, LocalSession>();
  readonly #binding = new Map<string, RemovalCause | null>();
  readonly #close: (sid: string, session: LocalSession, cause: RemovalCause) => void;

  /** `close` is called once for each local session whose binding went away. */
  constructor(close: (sid: string, session: LocalSession, cause: RemovalCause) => void) {
    this.#close = close;
  }

  /** A bind of `sid` is about to be sent. */
  binding(sid: string): void {
    this.#binding.set(sid, null);
  }

  /**
   * The bind of `sid` was answered: when bound, remember the session (and
   * close it at once if its removal was already heard).
   */
  bound(sid: string, session: LocalSession | null): void {
    const removed = this.#binding.get(sid) ?? null;
    this.#binding.delete(sid);
    if (session === null) return;
    if (this.#sessions.size >= LOCAL_SESSIONS && !this.#sessions.has(sid)) {
      // Oldest first: a session this old was most likely closed by its server already.
      this.#sessions.delete(this.#sessions.keys().next().value!);
    }
    this.#sessions.set(sid, session);
    if (removed !== null) this.removed(sid, removed);
  }

  /** The session ended otherwise (its owner's DELETE, or the handler no longer knows it). */
  drop(sid: string): void {
    this.#sessions.delete(sid);
  }

  /**
   * The registry reports `sid`'s binding gone: close it if it is ours.
   * `true` when it is (closed now, or once its bind is answered), `false`
   * when this guard holds no such session (another process's, one the
   * handler already forgot, or one too old to be remembered).
   */
  removed(sid: string, cause: RemovalCause): boolean {
    const session = this.#sessions.get(sid);
    if (session === undefined) {
      if (!this.#binding.has(sid)) return false;
      this.#binding.set(sid, cause);
      return true;
    }
    this.#sessions.delete(sid);
    this.#close(sid, session, cause);
    return true;
  }
}
