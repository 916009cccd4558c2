/**
 * The caller's side memory behind `SessionOwnerRegistry.knownOwner`: owners
 * the worker confirmed, minus every binding it reported removed since.
 *
 * It starts learning when it is first asked: a registry whose `knownOwner`
 * nobody calls (say, one used only for `authorizeAttach` at full speed)
 * spends nothing on it. Starting late is safe: an owner it has not seen is
 * simply unknown.
 *
 * @module
 */

import { ARITY, Op } from "../actor/protocol.ts";

/** Owners confirmed by the worker and not reported gone since. */
export class KnownOwners {
  readonly #owners = new Map<string, string>();
  /**
   * Sessions with a `forget` not yet answered, and how many: a reply to an
   * older call may not bring them back before the forget's own reply is seen.
   */
  readonly #forgetting = new Map<string, number>();
  /** Learning since the first `get`. */
  #active = false;

  /**
   * Learns from one answered batch, in reply order. Confirmations first, then
   * every removal the worker reported: a removal in the same batch wins, which
   * can only forget too much, never remember a stale owner.
   */
  record(ops: number[], args: unknown[], results: unknown[], removed?: string[]): void {
    if (!this.#active && this.#forgetting.size === 0) return;
    for (let i = 0, at = 0; i < ops.length; at += ARITY[ops[i]], i++) {
      const op = ops[i];
      const result = results[i];
      if (!this.#active && op !== Op.Forget) continue;
      if (op === Op.Bind) {
        if (result === "bound") this.#confirm(args[at] as string, args[at + 1] as string);
      } else if (op === Op.Attach) {
        if (result === true) this.#confirm(args[at] as string, args[at + 1] as string);
      } else if (op === Op.OwnerOf) {
        if (typeof result === "string") this.#confirm(args[at] as string, result);
        else this.#owners.delete(args[at] as string);
      } else if (op === Op.Forget) {
        const sid = args[at] as string;
        this.#owners.delete(sid);
        const pending = this.#forgetting.get(sid);
        if (pending === 1) this.#forgetting.delete(sid);
        else if (pending !== undefined) this.#forgetting.set(sid, pending - 1);
      }
    }
    if (removed !== undefined) { for (const sid of removed) this.#owners.delete(sid); }
  }

  /** The owner of `sessionId` as far as the answered batches tell, or `undefined`. */
  get(sessionId: string): string | undefined {
    this.#active = true;
    return this.#owners.get(sessionId);
  }

  /**
   * Forgets one session now (a `forget` was called), and keeps it forgotten
   * until that forget's reply: answers to calls made before it do not count.
   */
  drop(sessionId: string): void {
    this.#owners.delete(sessionId);
    this.#forgetting.set(sessionId, (this.#forgetting.get(sessionId) ?? 0) + 1);
  }

  /** Forgets one session the store reported evicted or expired. */
  forget(sessionId: string): void {
    this.#owners.delete(sessionId);
  }

  /** Forgets everything (the worker failed: pending forgets will never be answered). */
  clear(): void {
    this.#owners.clear();
    this.#forgetting.clear();
  }

  #confirm(sessionId: string, fingerprint: string): void {
    if (!this.#forgetting.has(sessionId)) this.#owners.set(sessionId, fingerprint);
  }
}
