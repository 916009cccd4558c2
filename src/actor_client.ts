/**
 * The caller's side of the worker actor: queues calls, sends each tick's calls
 * as one batch, matches replies by id, and handles the worker's death.
 *
 * - Calls made in one tick travel together as one `batch` message (in chunks
 *   of at most `maxBatch` calls) and are applied in call order, so a facade
 *   behaves exactly like one object guarded by a mutex.
 * - If the worker crashes, is terminated, or stops answering for
 *   `callTimeoutMs`, every pending call rejects with
 *   `RegistryUnavailableError` and the next call starts a fresh worker.
 * - `close()` flushes queued calls, lets the worker close its store, then
 *   terminates it; later calls reject with `RegistryClosedError`.
 *
 * @module
 */

import {
  fromWireError,
  missingPermission,
  RegistryClosedError,
  RegistryMisconfiguredError,
  RegistryUnavailableError,
  type WireError,
} from "./errors.ts";
import { ARITY, type FromWorker, type InitMessage, type WorkerEvent } from "./protocol.ts";

/** Settings of an {@linkcode ActorClient}. */
export interface ActorClientOptions {
  /** Name used in error messages, e.g. `SessionOwnerRegistry`. */
  name: string;
  /** What the worker hosts. */
  init: InitMessage;
  /** The worker module (tests substitute a fixture). Defaults to `./worker.ts`. */
  workerUrl?: URL;
  /** Reject pending calls and restart when a batch gets no answer for this long. */
  callTimeoutMs: number;
  /** Send each tick's calls together (default) or every call on its own. */
  batching: boolean;
  /**
   * Most calls per message: a tick with more calls is sent in chunks, so the
   * worker starts on the first chunk while the caller still queues the rest.
   */
  maxBatch: number;
  /** Called after a fresh worker started, before queued calls are sent. */
  onSpawn?: (restart: boolean) => void;
  /** Events pushed by the store (aborts; evicted or expired bindings). */
  onEvent?: (event: WorkerEvent) => void;
  /**
   * Sees every answered batch (its ops, args and results, and the bindings the
   * store reported removed) before any caller's promise settles, in reply order.
   */
  onReply?: (ops: number[], args: unknown[], results: unknown[], removed?: string[]) => void;
  /** Called when a batch failed or the worker died: what the facade inferred may be stale. */
  onFault?: () => void;
}

interface Pending {
  resolve: ((value: unknown) => void)[];
  reject: ((reason: unknown) => void)[];
  sentAt: number;
  ops: number[];
  args: unknown[];
}

type Settler = (value: unknown) => void;

/**
 * Extra time a batch may wait while a fresh worker boots (loads its modules,
 * connects its store) before the worker counts as hung.
 */
const BOOT_GRACE_MS = 10_000;

/**
 * How long a lazy call (see {@linkcode ActorClient.callLazy}) may wait for
 * company before it is sent on its own.
 */
export const LAZY_FLUSH_MS = 10;

const DEFAULT_WORKER_URL = new URL("./worker.ts", import.meta.url);

/** Sends registry operations to a worker and awaits their results. */
export class ActorClient {
  readonly #opts: ActorClientOptions;
  #worker: Worker | null = null;
  #ready = false;
  #everStarted = false;
  #restarts = 0;
  #closed = false;
  #closing: Promise<void> | null = null;
  #nextId = 1;
  #ops: number[] = [];
  #args: unknown[] = [];
  #resolve: Settler[] = [];
  #reject: Settler[] = [];
  #scheduled = false;
  #lazyTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #pending = new Map<number, Pending>();
  #closeWaiter: (() => void) | null = null;
  /** Set when the worker cannot start as configured: every later call fails the same way. */
  #fatal: RegistryMisconfiguredError | null = null;
  #watchdog: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ActorClientOptions) {
    this.#opts = options;
  }

  /** Workers started after the first one (each restart lost the worker's state). */
  get restarts(): number {
    return this.#restarts;
  }

  /** Batch messages sent so far (each carries every call of one tick). */
  get batches(): number {
    return this.#nextId - 1;
  }

  /** The live worker, if any (for tests that simulate a crash). */
  get worker(): Worker | null {
    return this.#worker;
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one operation. `a`, `b`, `c` are its arguments; how many are sent
   * is fixed by the opcode's arity. It is sent at the end of this tick,
   * together with every other call queued by then.
   */
  call<T>(op: number, a?: unknown, b?: unknown, c?: unknown): Promise<T> {
    return this.#enqueue<T>(op, a, b, c, false);
  }

  /**
   * Queues an operation nobody waits on (bookkeeping such as a deregistration):
   * it keeps its place in call order but is not sent on its own before
   * {@linkcode LAZY_FLUSH_MS} have passed, so it travels with the next
   * ordinary call, or with the other lazy calls of that window. Under load
   * this turns many tiny messages into a few large ones.
   */
  callLazy<T>(op: number, a?: unknown, b?: unknown, c?: unknown): Promise<T> {
    return this.#enqueue<T>(op, a, b, c, true);
  }

  #enqueue<T>(op: number, a: unknown, b: unknown, c: unknown, lazy: boolean): Promise<T> {
    if (this.#closed) return Promise.reject(new RegistryClosedError(this.#opts.name));
    if (this.#fatal !== null) return Promise.reject(this.#fatal);
    if (this.#worker === null) this.#spawn();
    const arity = ARITY[op];
    this.#ops.push(op);
    if (arity > 0) this.#args.push(a);
    if (arity > 1) this.#args.push(b);
    if (arity > 2) this.#args.push(c);
    const promise = new Promise<T>((resolve, reject) => {
      this.#resolve.push(resolve as Settler);
      this.#reject.push(reject);
    });
    if (!this.#opts.batching || this.#resolve.length >= this.#opts.maxBatch) this.#flush();
    else if (!this.#scheduled) {
      if (!lazy) {
        this.#scheduled = true;
        queueMicrotask(this.#flush);
      } else if (this.#lazyTimer === undefined) {
        this.#lazyTimer = setTimeout(this.#flush, LAZY_FLUSH_MS);
      }
    }
    return promise;
  }

  #clearLazyTimer(): void {
    if (this.#lazyTimer === undefined) return;
    clearTimeout(this.#lazyTimer);
    this.#lazyTimer = undefined;
  }

  /** Flushes queued calls, closes the worker's store and stops the worker. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#closing = this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#flush();
    const worker = this.#worker;
    if (worker === null) return;
    const done = new Promise<void>((resolve) => this.#closeWaiter = resolve);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#opts.callTimeoutMs);
    });
    worker.postMessage({ kind: "close", id: 0 });
    await Promise.race([done, timeout]);
    clearTimeout(timer);
    this.#die("registry closed", new RegistryClosedError(this.#opts.name));
  }

  #spawn(): void {
    const worker = new Worker(this.#opts.workerUrl ?? DEFAULT_WORKER_URL, { type: "module" });
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      // A late message from a worker already replaced settles nothing (its batches were
      // rejected when it died) and must not cut the new worker's boot grace.
      if (this.#worker === worker) this.#onMessage(event.data);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      if (this.#worker !== worker) return;
      const permission = missingPermission(event.message);
      if (permission === null) this.#die(`worker crashed: ${event.message}`);
      else {
        // Retrying cannot help (a permission is not granted at run time): say which one is
        // missing, and fail every later call the same way instead of respawning.
        this.#fatal = new RegistryMisconfiguredError(
          `${this.#opts.name} cannot start its worker: ${permission}`,
        );
        this.#die("missing permission", this.#fatal);
      }
    };
    worker.onmessageerror = () => {
      if (this.#worker === worker) this.#die("worker sent an unreadable message");
    };
    this.#worker = worker;
    this.#ready = false;
    worker.postMessage(this.#opts.init);
    const restart = this.#everStarted;
    if (restart) this.#restarts++;
    this.#everStarted = true;
    this.#opts.onSpawn?.(restart);
  }

  #flush = (): void => {
    this.#scheduled = false;
    this.#clearLazyTimer();
    if (this.#ops.length === 0) return;
    const id = this.#nextId++;
    const message = { kind: "batch", id, ops: this.#ops, args: this.#args };
    this.#pending.set(id, {
      resolve: this.#resolve,
      reject: this.#reject,
      sentAt: performance.now(),
      ops: this.#ops,
      args: this.#args,
    });
    this.#ops = [];
    this.#args = [];
    this.#resolve = [];
    this.#reject = [];
    try {
      this.#worker!.postMessage(message);
    } catch (err) {
      // An argument structured clone cannot copy (a function, a symbol): fail this batch only.
      this.#settleFailure(id, { name: "InvalidInputError", message: String(err) });
      return;
    }
    this.#armWatchdog();
  };

  #onMessage(message: FromWorker): void {
    switch (message?.kind) {
      case "ready": {
        // Timeouts count from now: batches sent during the boot were not late.
        this.#ready = true;
        const now = performance.now();
        for (const pending of this.#pending.values()) pending.sentAt = now;
        this.#disarmWatchdog();
        if (this.#pending.size > 0) this.#armWatchdog();
        return;
      }
      case "reply": {
        const pending = this.#pending.get(message.id);
        if (pending === undefined) return;
        this.#pending.delete(message.id);
        const { resolve, reject } = pending;
        const results = message.results;
        const failed = message.failed;
        if (failed !== undefined) {
          // Those calls alone failed: reject them, and resolve nobody with their result
          // slots (placeholders `null`, which `onReply` reads as "not confirmed").
          for (const [i, wire] of failed) {
            const settle = reject[i];
            resolve[i] = () => {};
            settle?.(fromWireError(wire));
          }
        }
        this.#opts.onReply?.(pending.ops, pending.args, results, message.removed);
        for (let i = 0; i < resolve.length; i++) resolve[i](results[i]);
        break;
      }
      case "fail":
        if (message.id === null) return; // not ours to settle (a malformed message)
        this.#settleFailure(message.id, message.error);
        break;
      case "abort":
      case "removed":
        this.#opts.onEvent?.(message);
        return;
      case "closed":
        this.#closeWaiter?.();
        return;
    }
    if (this.#pending.size === 0) this.#disarmWatchdog();
  }

  #settleFailure(id: number, wire: WireError): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#opts.onFault?.();
    this.#pending.delete(id);
    const error = fromWireError(wire);
    for (const reject of pending.reject) reject(error);
  }

  /** How long a batch may go unanswered: longer while the worker boots. */
  #limit(): number {
    return this.#opts.callTimeoutMs + (this.#ready ? 0 : BOOT_GRACE_MS);
  }

  #armWatchdog(): void {
    if (this.#watchdog !== undefined) return;
    this.#watchdog = setTimeout(this.#checkWatchdog, this.#limit());
  }

  #disarmWatchdog(): void {
    if (this.#watchdog === undefined) return;
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
  }

  #checkWatchdog = (): void => {
    this.#watchdog = undefined;
    const oldest = this.#pending.values().next().value;
    if (oldest === undefined) return;
    const age = performance.now() - oldest.sentAt;
    const limit = this.#limit();
    if (age >= limit) {
      this.#die(
        this.#ready
          ? `worker did not answer within ${this.#opts.callTimeoutMs} ms`
          : `worker did not start within ${limit} ms`,
      );
    } else {
      this.#watchdog = setTimeout(this.#checkWatchdog, limit - age);
    }
  };

  /** Stops the worker and rejects everything in flight; the next call respawns. */
  #die(
    reason: string,
    error: Error = new RegistryUnavailableError(
      `${this.#opts.name} unavailable: ${reason}`,
    ),
  ): void {
    this.#disarmWatchdog();
    this.#clearLazyTimer();
    const worker = this.#worker;
    this.#worker = null;
    worker?.terminate();
    this.#opts.onFault?.();
    for (const pending of this.#pending.values()) {
      for (const reject of pending.reject) reject(error);
    }
    this.#pending.clear();
    // Calls queued but not yet sent belong to the dead worker's era as well.
    const queued = this.#reject;
    this.#ops = [];
    this.#args = [];
    this.#resolve = [];
    this.#reject = [];
    for (const reject of queued) reject(error);
  }
}
