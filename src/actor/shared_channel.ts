/**
 * The shared-memory channel between a facade and its worker (in-memory
 * store): a `SharedArrayBuffer` holding a ring of {@linkcode SLOTS} slots.
 *
 * Layout (bytes): a 64-byte control block of 32-bit words, then the slots.
 *
 * - `REQ_SEQ` (word 0): bumped by the facade after publishing a slot (or to
 *   wake the worker for a control message); the worker `Atomics.wait`s on it.
 * - `SLEEPING` (word 1): 1 while the worker is in (or about to enter)
 *   `Atomics.wait`, so the facade calls `Atomics.notify` only then.
 *
 *   A worker serving several rings (one per registry it hosts) waits on one
 *   address: those two words then live in the worker's bell
 *   ({@linkcode newBell}), shared by all its rings, instead of each ring's
 *   control block.
 * - `BELL` (word 2): 1 while the facade waits for a reply with nothing else
 *   to do; the worker clears it and `Atomics.notify`s `REPLY_SEQ`.
 * - `REPLY_SEQ` (word 3): bumped by the worker after each reply; the facade
 *   waits on it with `Atomics.waitAsync` (its thread is never blocked).
 *
 * A slot is `[state, id]` (two words) followed by one {@linkcode Frame} of
 * fixed capacity, used first for the request, then overwritten by its reply
 * (the facade keeps the ops and arguments it needs). States: `FREE`,
 * `REQUEST` (written by the facade), `REPLY` (written by the worker). Both
 * sides walk the ring in order, so slots are applied and answered in the
 * order they were published.
 *
 * @module
 */

import { type Frame, frameBytes, frameOver, MAX_INLINE_UNITS } from "./wire.ts";

/** Slots in the ring: batches in flight at once. */
export const SLOTS = 8;
/** Most ops the facade puts in one slot (a larger batch takes several). */
export const SLOT_OPS = 128;
const WORDS = 4_096;
const NUMS = 256;
/** Room for three maximal inline strings, so any single op fits an empty slot. */
const UNITS = Math.max(16_384, 3 * (MAX_INLINE_UNITS + 2));
const CONTROL_BYTES = 64;
const SLOT_HEAD_BYTES = 8;
const SLOT_BYTES = SLOT_HEAD_BYTES + frameBytes(WORDS, NUMS, UNITS);

const REQ_SEQ = 0;
const SLEEPING = 1;
const BELL = 2;
const REPLY_SEQ = 3;

/** Slot states. */
export const Slot = { Free: 0, Request: 1, Reply: 2 } as const;

/**
 * A worker's bell: `REQ_SEQ` and `SLEEPING` (as in a ring's control block)
 * for every ring the worker serves, so one `Atomics.wait` hears them all,
 * and `POSTED` (word 2): messages posted to the worker so far, so that its
 * ring loop never blocks while a message (a host's `init`, a `close`)
 * waits in its event loop.
 */
export function newBell(): SharedArrayBuffer {
  return new SharedArrayBuffer(16);
}

/** Bytes of a bell ({@linkcode newBell}). */
export const BELL_BYTES = 16;

const POSTED = 2;

/** Counts a message about to be posted to the worker of `bell`. */
export function countPost(bell: Int32Array): void {
  Atomics.add(bell, POSTED, 1);
}

/** True when more messages were posted to the worker of `bell` than it `received`. */
export function postedSince(bell: Int32Array, received: number): boolean {
  return Atomics.load(bell, POSTED) !== received;
}

/** True when this runtime can share memory with a worker. */
export function sharedMemoryAvailable(): boolean {
  return typeof SharedArrayBuffer === "function" && typeof Atomics?.wait === "function";
}

/** The views both sides build over the buffer. */
class Ring {
  readonly ctrl: Int32Array;
  readonly heads: Int32Array[] = [];
  readonly frames: Frame[] = [];
  constructor(readonly buffer: SharedArrayBuffer) {
    if (buffer.byteLength !== CONTROL_BYTES + SLOTS * SLOT_BYTES) {
      throw new RangeError("shared channel buffer has the wrong size");
    }
    this.ctrl = new Int32Array(buffer, 0, CONTROL_BYTES / 4);
    for (let s = 0; s < SLOTS; s++) {
      const at = CONTROL_BYTES + s * SLOT_BYTES;
      this.heads.push(new Int32Array(buffer, at, 2));
      this.frames.push(frameOver(buffer, at + SLOT_HEAD_BYTES, WORDS, NUMS, UNITS));
    }
  }
}

/** The facade's end: publishes requests, collects replies in order. */
export class MainChannel {
  readonly #ring: Ring;
  /** `REQ_SEQ` and `SLEEPING`: the worker's bell, or this ring's own control block. */
  readonly #bell: Int32Array;
  #head = 0;
  #tail = 0;
  #inFlight = 0;

  /** Allocates the shared buffer; `bell`: the worker's (see {@linkcode newBell}), if it has one. */
  constructor(bell?: SharedArrayBuffer) {
    this.#ring = new Ring(new SharedArrayBuffer(CONTROL_BYTES + SLOTS * SLOT_BYTES));
    this.#bell = bell === undefined ? this.#ring.ctrl : new Int32Array(bell);
  }

  /** The buffer to hand to the worker. */
  get buffer(): SharedArrayBuffer {
    return this.#ring.buffer;
  }

  /** Slots published and not yet collected. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The frame of the next slot to publish, or `null` while every slot is in flight. */
  nextFrame(): Frame | null {
    return this.#inFlight < SLOTS ? this.#ring.frames[this.#tail] : null;
  }

  /** Hands the slot written through `nextFrame()` to the worker, as piece `id`. */
  publish(id: number): void {
    const heads = this.#ring.heads;
    const head = heads[this.#tail];
    head[1] = id;
    Atomics.store(head, 0, Slot.Request);
    this.#tail = (this.#tail + 1) % SLOTS;
    this.#inFlight++;
    this.wake();
  }

  /** Wakes a sleeping worker (after a publish, or for a control message). */
  wake(): void {
    wakeBell(this.#bell);
  }

  /** The oldest slot in flight when the worker answered it, else `null`. */
  replied(): { id: number; frame: Frame } | null {
    if (this.#inFlight === 0) return null;
    const head = this.#ring.heads[this.#head];
    if (Atomics.load(head, 0) !== Slot.Reply) return null;
    return { id: head[1], frame: this.#ring.frames[this.#head] };
  }

  /** Frees the oldest slot (after its reply was read). */
  release(): void {
    Atomics.store(this.#ring.heads[this.#head], 0, Slot.Free);
    this.#head = (this.#head + 1) % SLOTS;
    this.#inFlight--;
  }

  /** True unless the worker is blocked in (or entering) `Atomics.wait`. */
  workerAwake(): boolean {
    return Atomics.load(this.#bell, SLEEPING) === 0;
  }

  /** Spins up to `micros` for the oldest slot's reply; true when it arrived. */
  spin(micros: number): boolean {
    if (this.#inFlight === 0) return false;
    const head = this.#ring.heads[this.#head];
    const until = performance.now() + micros / 1000;
    for (let k = 1;; k++) {
      if (Atomics.load(head, 0) === Slot.Reply) return true;
      if ((k & 15) === 0 && performance.now() > until) return false;
    }
  }

  /**
   * Waits for the worker's next reply without blocking this thread: `null`
   * when a reply is already there (or came meanwhile), else a promise that
   * settles once the worker publishes one, or after `timeoutMs`.
   */
  whenReplied(timeoutMs: number): Promise<unknown> | null {
    const ctrl = this.#ring.ctrl;
    const seq = Atomics.load(ctrl, REPLY_SEQ);
    Atomics.store(ctrl, BELL, 1);
    if (this.replied() !== null) return null;
    // A reply published after `seq` was read makes this "not-equal" at once.
    const waited = Atomics.waitAsync(ctrl, REPLY_SEQ, seq, timeoutMs);
    return waited.async ? waited.value : null;
  }
}

/**
 * Wakes the worker listening on `bell` (a ring's control block or a
 * worker's bell, {@linkcode newBell}).
 */
export function wakeBell(bell: Int32Array): void {
  Atomics.add(bell, REQ_SEQ, 1);
  if (Atomics.load(bell, SLEEPING) === 1) Atomics.notify(bell, REQ_SEQ, 1);
}

/** What {@linkcode idle} saw. */
export type IdleOutcome = "caught" | "work" | "woken" | "timeout";

/** The worker's end: takes requests in order, publishes replies. */
export class WorkerChannel {
  readonly #ring: Ring;
  #head = 0;

  /** Views over the facade's buffer. */
  constructor(buffer: SharedArrayBuffer) {
    this.#ring = new Ring(buffer);
  }

  /** This ring's own control block (the bell of a worker serving only it). */
  get ctrl(): Int32Array {
    return this.#ring.ctrl;
  }

  /** True when the oldest slot holds a published request. */
  hasRequest(): boolean {
    return Atomics.load(this.#ring.heads[this.#head], 0) === Slot.Request;
  }

  /** The oldest published request, or `null`. */
  next(): { id: number; frame: Frame } | null {
    const head = this.#ring.heads[this.#head];
    if (Atomics.load(head, 0) !== Slot.Request) return null;
    return { id: head[1], frame: this.#ring.frames[this.#head] };
  }

  /** Publishes the reply written over the oldest request; wakes the facade if it waits. */
  answer(): void {
    Atomics.store(this.#ring.heads[this.#head], 0, Slot.Reply);
    this.#head = (this.#head + 1) % SLOTS;
    const ctrl = this.#ring.ctrl;
    Atomics.add(ctrl, REPLY_SEQ, 1);
    if (Atomics.load(ctrl, BELL) === 1 && Atomics.exchange(ctrl, BELL, 0) === 1) {
      Atomics.notify(ctrl, REPLY_SEQ);
    }
  }
}

function anyRequest(channels: readonly WorkerChannel[]): boolean {
  for (let i = 0; i < channels.length; i++) if (channels[i].hasRequest()) return true;
  return false;
}

/**
 * Waits for the next request on any of `channels`, listening on `bell`:
 * spins up to `spinMicros`, then blocks in `Atomics.wait` up to `waitMs`.
 * `"caught"`: a request came while spinning; `"work"`: one came while
 * blocked; `"woken"`: a facade woke the worker without one (a control
 * message is coming), or `messages()` says one waits; `"timeout"`:
 * nothing happened.
 */
export function idle(
  bell: Int32Array,
  channels: readonly WorkerChannel[],
  spinMicros: number,
  waitMs: number,
  messages: () => boolean,
): IdleOutcome {
  const until = performance.now() + spinMicros / 1000;
  const seq = Atomics.load(bell, REQ_SEQ);
  // A message posted before `seq` was read would not wake the wait below.
  if (messages()) return anyRequest(channels) ? "caught" : "woken";
  for (let k = 1;; k++) {
    if (anyRequest(channels)) return "caught";
    if ((k & 31) === 0) {
      if (Atomics.load(bell, REQ_SEQ) !== seq) return anyRequest(channels) ? "caught" : "woken";
      if (performance.now() > until) break;
    }
  }
  Atomics.store(bell, SLEEPING, 1);
  const slept = Atomics.wait(bell, REQ_SEQ, seq, waitMs);
  Atomics.store(bell, SLEEPING, 0);
  if (anyRequest(channels)) return "work";
  return slept === "timed-out" ? "timeout" : "woken";
}
