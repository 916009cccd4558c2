/**
 * The calls a facade queued in the current tick, in call order: the next
 * batch. Each call is an opcode, its arguments (as many as the opcode's
 * arity) and the two settlers of the promise its caller awaits.
 *
 * Built for the hot path: the arrays of the next batch are allocated at the
 * size of the last one (no growth while a large tick queues its calls), and
 * every promise comes from one shared executor (no closure per call).
 *
 * A call not sent yet can be withdrawn ({@linkcode CallQueue.withdraw}):
 * its promise settles at once and it never travels. A request that starts
 * and ends within one lazy window then costs the worker nothing.
 *
 * @module
 */

import { ARITY } from "./protocol.ts";

/** Settles one call's promise (its `resolve` or its `reject`). */
export type Settler = (value: unknown) => void;

/** Settles nothing: stands in for a settler already used. */
export const noop: Settler = () => {};

/** A batch of calls: `ops[i]` is answered through `resolve[i]` or `reject[i]`. */
export interface Batch {
  /** Opcodes, in call order. */
  ops: number[];
  /** Every call's arguments, flattened in call order. */
  args: unknown[];
  /** Resolves call `i`'s promise. */
  resolve: Settler[];
  /** Rejects call `i`'s promise. */
  reject: Settler[];
}

// One executor for every call's promise: no closure allocated per call.
let capturedResolve: Settler = noop;
let capturedReject: Settler = noop;
const capture = (resolve: Settler, reject: Settler): void => {
  capturedResolve = resolve;
  capturedReject = reject;
};

/** Smallest capacity a fresh batch starts with. */
const MIN_CAPACITY = 8;

/** Opcode of a withdrawn call (dropped when the batch is taken). */
const WITHDRAWN = -1;

/** Where a queued call sits: valid until its batch is taken. */
export interface QueuedAt {
  /** Which batch (increments at every take). */
  batch: number;
  /** Its index in that batch. */
  index: number;
}

/** The calls of this tick, not yet sent. */
export class CallQueue {
  #ops: number[];
  #args: unknown[];
  #resolve: Settler[];
  #reject: Settler[];
  #count = 0;
  #argCount = 0;
  /** Where each call's arguments start in `#args`. */
  #argAt: number[];
  /** Increments at every take: a {@linkcode QueuedAt} of an older batch is stale. */
  #batch = 0;
  /** Index of the last call queued without `lazy` (-1: none in this batch). */
  #lastEager = -1;
  #withdrawn = 0;
  #lastBatch = -1;
  #lastIndex = -1;

  constructor() {
    this.#ops = new Array(MIN_CAPACITY);
    this.#args = new Array(3 * MIN_CAPACITY);
    this.#resolve = new Array(MIN_CAPACITY);
    this.#reject = new Array(MIN_CAPACITY);
    this.#argAt = new Array(MIN_CAPACITY);
  }

  /** Calls queued. */
  get length(): number {
    return this.#count;
  }

  /** Calls queued and not withdrawn (the ones the next batch carries). */
  get live(): number {
    return this.#count - this.#withdrawn;
  }

  /**
   * Where the call queued last sits (for {@linkcode withdraw}), even if its
   * batch was taken since (it is then stale).
   */
  lastQueued(): QueuedAt {
    return { batch: this.#lastBatch, index: this.#lastIndex };
  }

  /**
   * Queues one call (arguments `a`, `b`, `c`, `d`, as many as its opcode's
   * arity); its promise settles when the batch is answered. `lazy`: nobody
   * waits on it (a call after it does not stop an earlier call from being
   * withdrawn).
   */
  push<T>(op: number, a: unknown, b: unknown, c: unknown, lazy = false, d?: unknown): Promise<T> {
    const n = this.#put(op, a, b, c, lazy, d);
    const promise = new Promise(capture) as Promise<T>;
    this.#resolve[n] = capturedResolve;
    this.#reject[n] = capturedReject;
    return promise;
  }

  /**
   * Like {@linkcode push}, settled through `resolve` or `reject` instead of
   * a promise: no promise for a call whose answer only a callback reads.
   * They run while a reply is read (or a call is withdrawn), so they must
   * not throw.
   */
  pushSettled(
    op: number,
    a: unknown,
    b: unknown,
    c: unknown,
    lazy: boolean,
    resolve: Settler,
    reject: Settler,
  ): void {
    const n = this.#put(op, a, b, c, lazy, undefined);
    this.#resolve[n] = resolve;
    this.#reject[n] = reject;
  }

  /** Queues one call's opcode and arguments; its index. */
  #put(op: number, a: unknown, b: unknown, c: unknown, lazy: boolean, d: unknown): number {
    const arity = ARITY[op];
    const n = this.#count++;
    this.#ops[n] = op;
    this.#lastBatch = this.#batch;
    this.#lastIndex = n;
    if (!lazy) this.#lastEager = n;
    let at = this.#argCount;
    this.#argAt[n] = at;
    if (arity > 0) this.#args[at++] = a;
    if (arity > 1) this.#args[at++] = b;
    if (arity > 2) this.#args[at++] = c;
    if (arity > 3) this.#args[at++] = d;
    this.#argCount = at;
    return n;
  }

  /**
   * Withdraws the call at `at` before it is sent: its promise resolves with
   * `value` at once (possibly before calls queued earlier settle) and it never
   * reaches the worker. Only while its batch is still queued and no call
   * somebody waits on was queued after it; the caller makes sure no other
   * call's answer depends on it. Returns whether it did.
   */
  withdraw(at: QueuedAt, value: unknown): boolean {
    const i = at.index;
    if (at.batch !== this.#batch || i < 0 || i >= this.#count || this.#lastEager > i) return false;
    if (this.#ops[i] === WITHDRAWN) return false;
    this.#ops[i] = WITHDRAWN;
    this.#withdrawn++;
    const settle = this.#resolve[i];
    this.#resolve[i] = this.#reject[i] = noop;
    settle(value);
    return true;
  }

  /** Hands over the queued calls as one batch and starts an empty one. */
  take(): Batch {
    if (this.#withdrawn > 0) this.#compact();
    const count = this.#count;
    const batch: Batch = {
      ops: this.#ops,
      args: this.#args,
      resolve: this.#resolve,
      reject: this.#reject,
    };
    batch.ops.length = count;
    batch.args.length = this.#argCount;
    batch.resolve.length = count;
    batch.reject.length = count;
    // The next tick likely queues as many calls as this one: no growth while it does.
    const capacity = Math.max(MIN_CAPACITY, count);
    this.#ops = new Array(capacity);
    this.#args = new Array(3 * capacity);
    this.#resolve = new Array(capacity);
    this.#reject = new Array(capacity);
    this.#argAt = new Array(capacity);
    this.#count = 0;
    this.#argCount = 0;
    this.#batch++;
    this.#lastEager = -1;
    return batch;
  }

  /** Drops the withdrawn calls, keeping the others in order. */
  #compact(): void {
    const ops = this.#ops, args = this.#args, resolve = this.#resolve, reject = this.#reject;
    let n = 0, a = 0;
    for (let i = 0; i < this.#count; i++) {
      const op = ops[i];
      if (op === WITHDRAWN) continue;
      const from = this.#argAt[i], arity = ARITY[op];
      for (let k = 0; k < arity; k++) args[a + k] = args[from + k];
      ops[n] = op;
      resolve[n] = resolve[i];
      reject[n] = reject[i];
      n++;
      a += arity;
    }
    this.#count = n;
    this.#argCount = a;
    this.#withdrawn = 0;
  }

  /** Rejects every queued call with `error` and empties the queue. */
  rejectAll(error: Error): void {
    const { reject } = this.take();
    for (const settle of reject) settle(error);
  }
}
