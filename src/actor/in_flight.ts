/**
 * The batches a facade sent and its worker has not answered yet, by piece id
 * (a whole batch, or the part of one that one shared-memory slot carried),
 * and how an answer settles their calls.
 *
 * Settling drops every reference a piece holds at once: a piece that lived
 * long enough to be promoted to the old generation would otherwise keep all
 * its settled promises (and whatever awaits them) alive until a full GC,
 * which under load turned every young-generation collection into a copy of
 * megabytes.
 *
 * @module
 */

import { fromWireError, type WireError } from "../core/errors.ts";
import type { Batch } from "./call_queue.ts";
import { noop } from "./call_queue.ts";
import type { ReplyMessage } from "./protocol.ts";
import type { DecodedReply } from "./wire_reply.ts";

/** A piece of a batch in flight. */
export interface Piece extends Batch {
  /** When it was sent (`performance.now()`), for the watchdog. */
  sentAt: number;
}

/** What the owner of an {@linkcode InFlight} hears. */
export interface InFlightHooks {
  /**
   * Sees every answered piece (its ops, args and results, and the bindings the
   * store reported removed) before any caller's promise settles, in reply order.
   */
  onReply?: (ops: number[], args: unknown[], results: unknown[], removed?: string[]) => void;
  /** A piece failed as a whole: what the facade inferred may be stale. */
  onFault?: () => void;
}

/** The pieces in flight, in the order they were sent. */
export class InFlight {
  readonly #pieces = new Map<number, Piece>();
  readonly #hooks: InFlightHooks;
  #nextId = 1;

  constructor(hooks: InFlightHooks) {
    this.#hooks = hooks;
  }

  /** Pieces in flight. */
  get size(): number {
    return this.#pieces.size;
  }

  /** Records a piece just sent; returns its id. */
  add(batch: Batch): number {
    const id = this.#nextId++;
    const { ops, args, resolve, reject } = batch;
    this.#pieces.set(id, { ops, args, resolve, reject, sentAt: performance.now() });
    return id;
  }

  /** Calls in flight (every piece's), counted when asked (for metrics, not the hot path). */
  calls(): number {
    let calls = 0;
    for (const piece of this.#pieces.values()) calls += piece.ops.length;
    return calls;
  }

  /** The piece sent first and not answered yet. */
  oldest(): Piece | undefined {
    return this.#pieces.values().next().value;
  }

  /** Counts every piece's wait from now (the worker was still booting). */
  restartClocks(): void {
    const now = performance.now();
    for (const piece of this.#pieces.values()) piece.sentAt = now;
  }

  /** Settles the calls of piece `id` with its reply; false when it is not in flight. */
  answer(id: number, reply: DecodedReply | ReplyMessage): boolean {
    if ("error" in reply && reply.error !== undefined) {
      this.fail(id, reply.error);
      return false;
    }
    const piece = this.#pieces.get(id);
    if (piece === undefined) return false;
    this.#pieces.delete(id);
    const { resolve, reject } = piece;
    const { results, failed } = reply;
    if (failed !== undefined) {
      // Those calls alone failed: reject them, and resolve nobody with their result
      // slots (placeholders `null`, which `onReply` reads as "not confirmed").
      for (const [i, wire] of failed) {
        const settle = reject[i];
        resolve[i] = noop;
        settle?.(fromWireError(wire));
      }
    }
    this.#hooks.onReply?.(piece.ops, piece.args, results, reply.removed);
    for (let i = 0; i < resolve.length; i++) resolve[i](results[i]);
    release(piece);
    return true;
  }

  /** Rejects every call of piece `id` with the error its batch failed with. */
  fail(id: number, wire: WireError): void {
    const piece = this.#pieces.get(id);
    if (piece === undefined) return;
    this.#hooks.onFault?.();
    this.#pieces.delete(id);
    const error = fromWireError(wire);
    for (const reject of piece.reject) reject(error);
    release(piece);
  }

  /** Rejects every call in flight with `error` (the worker is gone). */
  rejectAll(error: Error): void {
    for (const piece of this.#pieces.values()) {
      for (const reject of piece.reject) reject(error);
      release(piece);
    }
    this.#pieces.clear();
  }
}

function release(piece: Piece): void {
  piece.resolve.length = 0;
  piece.reject.length = 0;
  piece.ops.length = 0;
  piece.args.length = 0;
}
