/**
 * The caller's side of the worker actor: queues calls, sends each tick's calls
 * as one batch, matches replies by id, and handles the worker's death.
 *
 * - Calls made in one tick travel together as one batch (in chunks of at
 *   most `maxBatch` calls) and are applied in call order, so a facade
 *   behaves exactly like one object guarded by a mutex. A batch is encoded
 *   in the compact format of `actor/wire.ts`; with the in-memory store it
 *   goes through the shared-memory ring of `actor/shared_channel.ts` (a
 *   batch larger than a slot takes several, still in order), otherwise (or
 *   without `SharedArrayBuffer`) as a message.
 * - If the worker crashes, is terminated, or stops answering for
 *   `callTimeoutMs`, every pending call rejects with
 *   `RegistryUnavailableError` and the next call starts a fresh worker.
 * - `close()` flushes queued calls, lets the worker close its store, then
 *   terminates it; later calls reject with `RegistryClosedError`.
 *
 * @module
 */

import {
  RegistryClosedError,
  RegistryMisconfiguredError,
  RegistryUnavailableError,
  toWireError,
} from "../core/errors.ts";
import { ActorThread, type Seat, type ThreadMember } from "./actor_thread.ts";
import { CallQueue, type QueuedAt, type Settler } from "./call_queue.ts";
import { InFlight, type InFlightHooks } from "./in_flight.ts";
import type {
  ExtrasMessage,
  FromWorker,
  InitMessage,
  ReplyMessage,
  ToWorker,
  WorkerEvent,
} from "./protocol.ts";
import { type Outgoing, type RingHost, RingSender } from "./ring_sender.ts";
import { MainChannel } from "./shared_channel.ts";
import {
  BatchEncoder,
  frameOver,
  HEADER_WORDS,
  MAX_INLINE_UNITS,
  newFrame,
  Status,
} from "./wire.ts";
import { type DecodedReply, decodeReply } from "./wire_reply.ts";

/** Settings of an {@linkcode ActorClient}. */
export interface ActorClientOptions extends InFlightHooks {
  /** Name used in error messages, e.g. `SessionOwnerRegistry`. */
  name: string;
  /** What the worker hosts. */
  init: InitMessage;
  /** The worker module (tests substitute a fixture). Defaults to `./worker.ts`. */
  workerUrl?: URL;
  /**
   * The worker to host this client's store in, shared with other clients
   * (a registry and the registries derived from it). Default: a worker of
   * its own, started from `workerUrl`.
   */
  thread?: ActorThread;
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
}

/**
 * Sees every call a client queues (telemetry: latency, failures). It must
 * not throw, and must leave `promise` to its caller (it may only listen).
 */
export interface CallObserver {
  /** `op` was queued (`lazy`: to travel with the next message); `promise` settles with it. */
  call(op: number, promise: Promise<unknown>, lazy: boolean): void;
}

/** How a client's worker keeps up, for metrics: see {@linkcode ActorClient.health}. */
export interface ActorHealth {
  /** A worker was ever started (a registry nobody used has none). */
  started: boolean;
  /** Calls queued or sent and not answered yet. */
  waiting: number;
  /** How long (ms) the oldest call sent and not answered yet has waited; 0 when none. */
  oldestMs: number;
}

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

/**
 * A queue of mostly withdrawn calls is sent once it holds this many times
 * `maxBatch` calls: withdrawn calls never travel, and every batch that
 * carries live ones may have to wake the worker (costly on a busy machine).
 */
const WITHDRAWN_SLACK = 8;

/** Sends registry operations to a worker and awaits their results. */
export class ActorClient {
  readonly #opts: ActorClientOptions;
  #thread: ActorThread;
  /** This client's place in the running worker, or `null` while it has none. */
  #seat: Seat | null = null;
  readonly #member: ThreadMember;
  /** The shared-memory ring of the live worker (in-memory store), else `null`: messages. */
  #ring: RingSender | null = null;
  readonly #encoder = new BatchEncoder();
  #ready = false;
  #everStarted = false;
  #restarts = 0;
  #closed = false;
  #closing: Promise<void> | null = null;
  #batches = 0;
  readonly #queue = new CallQueue();
  #scheduled = false;
  /** The last call was queued (not refused at once). */
  #lastQueued = false;
  #lazyTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #pending: InFlight;
  #closeWaiter: (() => void) | null = null;
  /** Set when the worker cannot start as configured: every later call fails the same way. */
  #fatal: RegistryMisconfiguredError | null = null;
  #watchdog: ReturnType<typeof setTimeout> | undefined;

  readonly #host: RingHost;
  /** Telemetry's listener on every call, or `null` (the default: no cost but this check). */
  observer: CallObserver | null = null;

  constructor(options: ActorClientOptions) {
    this.#opts = options;
    this.#thread = options.thread ?? new ActorThread(options.workerUrl);
    this.#member = {
      message: (message) => this.#onMessage(message),
      lost: (reason, permission) => this.#lost(reason, permission),
      severed: () => this.#ring = null,
    };
    const pending = this.#pending = new InFlight(options);
    this.#host = {
      pending,
      post: (message) => {
        const seat = this.#seat!;
        seat.post({ ...(message as ExtrasMessage), host: seat.host });
      },
      answer: (id, reply) => this.#answer(id, reply),
      armWatchdog: () => this.#armWatchdog(),
      disarmWatchdog: () => this.#disarmWatchdog(),
    };
  }

  /** Workers started after the first one (each restart lost the worker's state). */
  get restarts(): number {
    return this.#restarts;
  }

  /** Where the worker keeps its state (for metrics: which store answers). */
  get store(): InitMessage["store"] {
    return this.#opts.init.store;
  }

  /** Calls waiting for the worker and the age of the oldest one sent. */
  health(): ActorHealth {
    const oldest = this.#pending.oldest();
    return {
      started: this.#everStarted,
      waiting: this.#queue.length + (this.#ring?.backlog() ?? 0) + this.#pending.calls(),
      oldestMs: oldest === undefined ? 0 : Math.max(0, performance.now() - oldest.sentAt),
    };
  }

  /** Batches sent so far (each carries every call of one tick, or `maxBatch` of them). */
  get batches(): number {
    return this.#batches;
  }

  /** The live worker, if any (for tests that simulate a crash). */
  get worker(): Worker | null {
    return this.#seat?.worker ?? null;
  }

  /** The worker this client's store lives in (shared with the clients that share it). */
  get thread(): ActorThread {
    return this.#thread;
  }

  /**
   * Starts the worker now instead of on the first call, so that it boots
   * while the caller does other work. Nothing happens when one runs
   * already, or the client is closed or cannot start its worker as
   * configured. A worker that fails to start is reported by the next call,
   * as if that call had started it.
   */
  start(): void {
    if (this.#seat === null && !this.#closed && this.#fatal === null) this.#spawn();
  }

  /**
   * Hosts this client's store in `thread` (another client's worker) instead
   * of a worker of its own: only before its first worker started, and only
   * when both keep their state the same way (both in memory, through a ring;
   * both in a store module, through messages). Returns whether it will.
   */
  share(thread: ActorThread, store: InitMessage["store"]): boolean {
    if (this.#everStarted || this.#closed || this.#thread === thread) {
      return this.#thread === thread;
    }
    if (store.kind !== this.#opts.init.store.kind) return false;
    this.#thread = thread;
    return true;
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one operation. `a`, `b`, `c`, `d` are its arguments; how many are
   * sent is fixed by the opcode's arity. It is sent at the end of this tick,
   * together with every other call queued by then.
   */
  call<T>(op: number, a?: unknown, b?: unknown, c?: unknown, d?: unknown): Promise<T> {
    const promise = this.#enqueue<T>(op, a, b, c, d, false);
    if (this.observer !== null) this.observer.call(op, promise, false);
    return promise;
  }

  /**
   * Queues an operation nobody waits on (bookkeeping such as a deregistration):
   * it keeps its place in call order but is not sent on its own before
   * {@linkcode LAZY_FLUSH_MS} have passed, so it travels with the next
   * ordinary call, or with the other lazy calls of that window. Under load
   * this turns many tiny messages into a few large ones.
   */
  callLazy<T>(op: number, a?: unknown, b?: unknown, c?: unknown): Promise<T> {
    const promise = this.#enqueue<T>(op, a, b, c, undefined, true);
    if (this.observer !== null) this.observer.call(op, promise, true);
    return promise;
  }

  #enqueue<T>(
    op: number,
    a: unknown,
    b: unknown,
    c: unknown,
    d: unknown,
    lazy: boolean,
  ): Promise<T> {
    const refused = this.#admit();
    if (refused !== null) return Promise.reject(refused);
    const promise = this.#queue.push<T>(op, a, b, c, lazy, d);
    this.#lastQueued = true;
    this.#schedule(lazy);
    return promise;
  }

  /**
   * Like {@linkcode call} (`lazy`: {@linkcode callLazy}), settled through
   * `resolve` or `reject` instead of a promise, for a caller that only
   * needs a callback: they run while the reply is read, so they must not
   * throw. A call refused at once (a closed registry) is rejected in a
   * microtask, as the promise would be.
   */
  callWith(
    op: number,
    a: unknown,
    b: unknown,
    c: unknown,
    lazy: boolean,
    resolve: Settler,
    reject: Settler,
  ): void {
    if (this.observer !== null) {
      // Telemetry listens on a promise.
      (lazy ? this.callLazy(op, a, b, c) : this.call(op, a, b, c)).then(resolve, reject);
      return;
    }
    const refused = this.#admit();
    if (refused !== null) {
      queueMicrotask(() => reject(refused));
      return;
    }
    this.#queue.pushSettled(op, a, b, c, lazy, resolve, reject);
    this.#lastQueued = true;
    this.#schedule(lazy);
  }

  /**
   * Before a call is queued: why it is refused at once (a closed registry,
   * a worker that cannot start as configured), else `null`, with the worker
   * started if none runs.
   */
  #admit(): Error | null {
    this.#lastQueued = false;
    if (this.#closed) return new RegistryClosedError(this.#opts.name);
    if (this.#fatal !== null) return this.#fatal;
    if (this.#seat === null) this.#spawn();
    return this.#fatal;
  }

  /** Sends the queue now when full, else at the end of this tick (`lazy`: within a window). */
  #schedule(lazy: boolean): void {
    const queue = this.#queue;
    const max = this.#opts.maxBatch;
    // Withdrawn calls do not count (they never travel), up to a bound on the queue's memory.
    if (!this.#opts.batching || queue.live >= max || queue.length >= WITHDRAWN_SLACK * max) {
      this.#flush();
    } else if (!this.#scheduled) {
      if (!lazy) {
        this.#scheduled = true;
        queueMicrotask(this.#flush);
      } else if (this.#lazyTimer === undefined) {
        this.#lazyTimer = setTimeout(this.#flush, LAZY_FLUSH_MS);
      }
    }
  }

  /**
   * Where the last call sits in the queue, for {@linkcode withdraw}; `null`
   * when it was refused (a closed registry) instead of queued.
   */
  lastQueued(): QueuedAt | null {
    return this.#lastQueued ? this.#queue.lastQueued() : null;
  }

  /**
   * Withdraws a lazy call that has not been sent yet (see
   * `CallQueue.withdraw`): its promise resolves with `value` and the worker
   * never sees it. Returns whether it did.
   */
  withdraw(at: QueuedAt, value: unknown): boolean {
    return this.#queue.withdraw(at, value);
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
    const seat = this.#seat;
    if (seat === null) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#opts.callTimeoutMs);
    });
    // Every queued call goes out before the close (the worker answers them first).
    if (this.#ring !== null) await Promise.race([this.#ring.drained(), timeout]);
    const done = new Promise<void>((resolve) => this.#closeWaiter = resolve);
    if (this.#seat === seat) {
      // The last member's close lets the worker exit; otherwise only this host closes.
      const exit = seat.leave();
      seat.post({ kind: "close", id: 0, host: seat.host, exit });
      await Promise.race([done, timeout]);
    } else {
      seat.leave();
    }
    clearTimeout(timer);
    this.#drop(new RegistryClosedError(this.#opts.name));
    seat.release();
  }

  #spawn(): void {
    const seat = this.#thread.join(this.#member);
    this.#seat = seat;
    this.#ready = false;
    const init = this.#opts.init;
    // Stores that need the worker's event loop between batches (Redis, KV) use messages.
    const channel = init.store.kind === "memory" && seat.bell !== null
      ? new MainChannel(seat.bell)
      : null;
    this.#ring = channel === null ? null : new RingSender(channel, this.#encoder, this.#host);
    try {
      seat.post(
        channel === null
          ? { ...init, host: seat.host }
          : { ...init, host: seat.host, channel: channel.buffer, bell: seat.bell! },
      );
    } catch (err) {
      // Its settings cannot be sent to a worker (not plain data): retrying cannot help, and a
      // worker without them would refuse every batch. Every call fails with the reason.
      this.#seat = null;
      this.#ring = null;
      seat.leave();
      seat.release();
      this.#fatal = new RegistryMisconfiguredError(
        `${this.#opts.name} cannot start its worker: its store settings cannot be sent to it ` +
          `(${err instanceof Error ? err.message : String(err)})`,
      );
      return;
    }
    const restart = this.#everStarted;
    if (restart) this.#restarts++;
    this.#everStarted = true;
    this.#opts.onSpawn?.(restart);
  }

  #flush = (): void => {
    this.#scheduled = false;
    this.#clearLazyTimer();
    if (this.#queue.length === 0) return;
    const batch = this.#queue.take() as Outgoing;
    if (batch.ops.length === 0) return; // every call was withdrawn
    this.#batches++;
    batch.op = 0;
    batch.arg = 0;
    if (this.#ring === null) this.#sendMessage(batch);
    else this.#ring.send(batch);
  };

  /** Message path: the whole batch as one `wbatch` with a transferred frame. */
  #sendMessage(batch: Outgoing): void {
    const id = this.#pending.add(batch);
    const { ops, args } = batch;
    try {
      let nums = 1, units = 1;
      for (const x of args) {
        if (typeof x === "number") nums++;
        else if (typeof x === "string" && x.length <= MAX_INLINE_UNITS) units += x.length + 2;
      }
      const frame = newFrame(HEADER_WORDS + ops.length + args.length, nums, units);
      this.#encoder.encode(frame, ops, args, 0, ops.length, 0);
      const extras = this.#encoder.extras;
      const buffer = frame.i32.buffer as ArrayBuffer;
      const host = this.#seat!.host;
      const message = { kind: "wbatch", id, buffer, words: frame.i32.length, nums, extras, host };
      this.#seat!.post(message as ToWorker, [buffer]);
    } catch (err) {
      // An argument structured clone cannot copy (a function, a symbol): fail this batch only.
      this.#pending.fail(id, { name: "InvalidInputError", message: String(err) });
      return;
    }
    this.#armWatchdog();
  }

  /** Settles one answered piece. */
  #answer(id: number, reply: DecodedReply | ReplyMessage): void {
    // An answer can overtake the `ready` message (the ring is faster).
    if (this.#pending.answer(id, reply)) this.#ready = true;
  }

  #onMessage(message: FromWorker): void {
    switch (message?.kind) {
      case "ready": {
        // Timeouts count from now: batches sent during the boot were not late.
        this.#ready = true;
        this.#pending.restartClocks();
        this.#disarmWatchdog();
        if (this.#pending.size > 0) this.#armWatchdog();
        return;
      }
      case "wreply": {
        let reply: DecodedReply;
        try {
          const { buffer, words, nums } = message;
          const units = (buffer.byteLength - ((words + 1) & ~1) * 4 - nums * 8) / 2;
          reply = decodeReply(frameOver(buffer, 0, words, nums, units));
        } catch (err) {
          reply = { status: Status.Failed, results: [], error: toWireError(err) };
        }
        this.#answer(message.id, reply);
        break;
      }
      case "reply":
        if (this.#ring === null) this.#answer(message.id, message);
        else this.#ring.overflowed(message);
        break;
      case "fail":
        if (message.id === null) return; // not ours to settle (a malformed message)
        this.#pending.fail(message.id, message.error);
        break;
      case "abort":
      case "removed":
        this.#opts.onEvent?.(message);
        return;
      case "closed":
        this.#ring?.harvest(); // replies the worker wrote before closing
        this.#closeWaiter?.();
        return;
    }
    if (this.#pending.size === 0) this.#disarmWatchdog();
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
    const oldest = this.#pending.oldest();
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

  /**
   * The worker stopped answering (or answered nonsense): stop it, for every
   * client it hosts; each rejects what it has in flight.
   */
  #die(reason: string): void {
    const seat = this.#seat;
    if (seat !== null) seat.kill(reason);
    else this.#lost(reason, null);
  }

  /** The worker is gone: reject everything in flight; the next call respawns. */
  #lost(reason: string, permission: string | null): void {
    if (permission !== null) {
      // Retrying cannot help (a permission is not granted at run time): say which one is
      // missing, and fail every later call the same way instead of respawning.
      this.#fatal = new RegistryMisconfiguredError(
        `${this.#opts.name} cannot start its worker: ${permission}`,
      );
    }
    this.#drop(
      this.#fatal ?? new RegistryUnavailableError(`${this.#opts.name} unavailable: ${reason}`),
    );
  }

  /** Forgets the worker and rejects everything in flight or queued with `error`. */
  #drop(error: Error): void {
    this.#disarmWatchdog();
    this.#clearLazyTimer();
    this.#seat = null;
    const ring = this.#ring;
    this.#ring = null;
    this.#opts.onFault?.();
    this.#pending.rejectAll(error);
    // Calls queued but not yet sent belong to the dead worker's era as well.
    ring?.rejectUnsent(error);
    this.#queue.rejectAll(error);
    // A close waiting for the worker's `closed` waits no longer: there is no worker to close.
    this.#closeWaiter?.();
  }
}
