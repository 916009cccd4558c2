/**
 * The facade's sending side over the shared-memory ring (in-memory store):
 * moves queued batches into free slots (a batch larger than a slot takes
 * several, in order), collects the answered slots in order, and decides how
 * to wait for the next answer: a short spin when one is due soon, otherwise
 * `Atomics.waitAsync` on the ring's reply counter (the thread stays free).
 *
 * @module
 */

import { toWireError } from "../core/errors.ts";
import type { Batch } from "./call_queue.ts";
import type { InFlight } from "./in_flight.ts";
import { ARITY, type ReplyMessage } from "./protocol.ts";
import { type MainChannel, SLOT_OPS } from "./shared_channel.ts";
import { type BatchEncoder, Status } from "./wire.ts";
import { type DecodedReply, decodeReply } from "./wire_reply.ts";

/** A batch not yet fully sent: `op`/`arg` are where its unsent part starts. */
export interface Outgoing extends Batch {
  /** First op not sent yet. */
  op: number;
  /** First argument not sent yet. */
  arg: number;
}

/** What a {@linkcode RingSender} needs from the facade that owns it. */
export interface RingHost {
  /** The pieces in flight (shared with the message path). */
  readonly pending: InFlight;
  /** Posts a message to the worker (a piece's `extras`). */
  post(message: unknown): void;
  /** Settles one answered piece. */
  answer(id: number, reply: DecodedReply | ReplyMessage): void;
  /** Something is in flight: the watchdog should run. */
  armWatchdog(): void;
  /** Nothing is in flight any more. */
  disarmWatchdog(): void;
}

/** A piece of at most this many ops, alone in flight, is waited for by spinning... */
const LONE_OPS = 4;
/**
 * ...at most this long (µs): enough for a spinning worker (about 1 µs) or one
 * woken from `Atomics.wait` (tens of µs); past it, `Atomics.waitAsync`.
 */
const LONE_SPIN_US = 50;
/**
 * With nothing to settle and the worker awake (working or spinning), the
 * facade spins this long (µs) for the oldest reply before it waits without
 * blocking: that wake-up costs tens of µs, the worker's next reply a few.
 */
const BUSY_SPIN_US = 30;
/**
 * Longest `Atomics.waitAsync` for a reply before looking again (ms). The
 * watchdog, not this, notices a worker that stopped answering.
 */
const WAIT_MS = 1_000;

/** Sends batches through one worker's ring. */
export class RingSender {
  readonly #channel: MainChannel;
  readonly #encoder: BatchEncoder;
  readonly #host: RingHost;
  /** Batches waiting for a free slot, in order. */
  #outbox: Outgoing[] = [];
  #drained: (() => void) | null = null;
  /** Replies too large for their slot, arrived as messages, by piece id. */
  readonly #overflow = new Map<number, ReplyMessage>();
  /** A `whenReplied` wait is out. */
  #waiting = false;
  readonly #woken = () => {
    this.#waiting = false;
    this.harvest();
  };

  constructor(channel: MainChannel, encoder: BatchEncoder, host: RingHost) {
    this.#channel = channel;
    this.#encoder = encoder;
    this.#host = host;
  }

  /** Wakes a sleeping worker (for a control message). */
  wake(): void {
    this.#channel.wake();
  }

  /** Queues a batch and sends what fits. */
  send(batch: Outgoing): void {
    this.#outbox.push(batch);
    this.#pump();
  }

  /** Calls waiting for a free slot (for metrics). */
  backlog(): number {
    let calls = 0;
    for (const batch of this.#outbox) calls += batch.ops.length - batch.op;
    return calls;
  }

  /** Resolves once every queued batch is in a slot (at once when none waits). */
  drained(): Promise<void> {
    if (this.#outbox.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drained = resolve);
  }

  /** A reply that did not fit its slot, arrived as a message. */
  overflowed(message: ReplyMessage): void {
    this.#overflow.set(message.id, message);
    this.harvest();
  }

  /** Rejects every call not sent yet with `error` (the worker is gone). */
  rejectUnsent(error: Error): void {
    const outbox = this.#outbox;
    this.#outbox = [];
    this.#overflow.clear();
    this.#drained?.();
    this.#drained = null;
    for (const batch of outbox) {
      for (let i = batch.op; i < batch.reject.length; i++) batch.reject[i](error);
    }
  }

  /** Moves queued batches into free slots, then collects what is answered. */
  #pump(): void {
    const channel = this.#channel;
    const { pending } = this.#host;
    for (let frame = channel.nextFrame(); frame !== null; frame = channel.nextFrame()) {
      const batch = this.#outbox[0];
      if (batch === undefined) break;
      const { ops, args, op, arg } = batch;
      const end = Math.min(ops.length, op + SLOT_OPS);
      const n = this.#encoder.encode(frame, ops, args, op, end, arg);
      let argEnd = arg;
      for (let i = op; i < op + n; i++) argEnd += ARITY[ops[i]];
      const whole = op === 0 && n === ops.length;
      const piece: Batch = whole ? batch : {
        ops: ops.slice(op, op + n),
        args: args.slice(arg, argEnd),
        resolve: batch.resolve.slice(op, op + n),
        reject: batch.reject.slice(op, op + n),
      };
      batch.op += n;
      batch.arg = argEnd;
      if (batch.op === ops.length) this.#outbox.shift();
      const id = pending.add(piece);
      const extras = this.#encoder.extras;
      if (extras.length > 0) {
        try {
          this.#host.post({ kind: "extras", id, values: extras });
        } catch (err) {
          pending.fail(id, { name: "InvalidInputError", message: String(err) });
          continue; // the slot was not published: the next piece reuses it
        }
      }
      channel.publish(id);
    }
    if (this.#outbox.length === 0) {
      this.#drained?.();
      this.#drained = null;
    }
    if (pending.size === 0) return;
    this.#host.armWatchdog();
    // A lone small call to an awake worker: its answer is a few µs away. A sleeping worker takes
    // tens of µs to wake, better spent on this thread's other work until its reply wakes us.
    if (channel.inFlight === 1 && pending.size === 1 && channel.workerAwake()) {
      if (pending.oldest()!.ops.length <= LONE_OPS) channel.spin(LONE_SPIN_US);
    }
    this.harvest();
  }

  /** Collects answered slots in order, settles their calls, refills the ring. */
  harvest(): void {
    const channel = this.#channel;
    let freed = false;
    let spun = false;
    for (;;) {
      const slot = channel.replied();
      if (slot === null) {
        if (channel.inFlight === 0) break;
        // Nothing else to do yet: an awake worker answers sooner than a wake-up would come.
        if (!freed && !spun && channel.workerAwake()) {
          spun = true;
          if (channel.spin(BUSY_SPIN_US)) continue;
        }
        // Wait for the worker's next reply without blocking; one waiter at a time (it is
        // woken by the next reply, whoever harvests it), none once nothing is in flight.
        if (this.#waiting || this.#host.pending.size === 0) break;
        const replied = channel.whenReplied(WAIT_MS);
        if (replied === null) continue;
        this.#waiting = true;
        replied.then(this.#woken);
        break;
      }
      let reply: DecodedReply | ReplyMessage;
      try {
        reply = decodeReply(slot.frame);
      } catch (err) {
        reply = { status: Status.Failed, results: [], error: toWireError(err) };
      }
      if (reply.status === Status.Overflow) {
        const message = this.#overflow.get(slot.id);
        if (message === undefined) break; // its message is on the way
        this.#overflow.delete(slot.id);
        reply = message;
      }
      channel.release();
      freed = true;
      this.#host.answer(slot.id, reply);
    }
    if (freed && this.#outbox.length > 0) this.#pump();
    else if (this.#host.pending.size === 0) this.#host.disarmWatchdog();
  }
}
