/**
 * The calls a facade queued in the current tick, in call order: the next
 * batch. Each call is an opcode, its arguments (as many as the opcode's
 * arity) and the two settlers of the promise its caller awaits.
 *
 * Built for the hot path: the arrays of the next batch are allocated at the
 * size of the last one (no growth while a large tick queues its calls), and
 * every promise comes from one shared executor (no closure per call).
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

/** The calls of this tick, not yet sent. */
export class CallQueue {
  #ops: number[];
  #args: unknown[];
  #resolve: Settler[];
  #reject: Settler[];
  #count = 0;
  #argCount = 0;

  constructor() {
    this.#ops = new Array(MIN_CAPACITY);
    this.#args = new Array(3 * MIN_CAPACITY);
    this.#resolve = new Array(MIN_CAPACITY);
    this.#reject = new Array(MIN_CAPACITY);
  }

  /** Calls queued. */
  get length(): number {
    return this.#count;
  }

  /** Queues one call; its promise settles when the batch is answered. */
  push<T>(op: number, a: unknown, b: unknown, c: unknown): Promise<T> {
    const arity = ARITY[op];
    const n = this.#count++;
    this.#ops[n] = op;
    let at = this.#argCount;
    if (arity > 0) this.#args[at++] = a;
    if (arity > 1) this.#args[at++] = b;
    if (arity > 2) this.#args[at++] = c;
    this.#argCount = at;
    const promise = new Promise(capture) as Promise<T>;
    this.#resolve[n] = capturedResolve;
    this.#reject[n] = capturedReject;
    return promise;
  }

  /** Hands over the queued calls as one batch and starts an empty one. */
  take(): Batch {
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
    this.#count = 0;
    this.#argCount = 0;
    return batch;
  }

  /** Rejects every queued call with `error` and empties the queue. */
  rejectAll(error: Error): void {
    const { reject } = this.take();
    for (const settle of reject) settle(error);
  }
}
