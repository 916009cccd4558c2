/**
 * The worker's serving loop over the shared-memory rings (in-memory store),
 * one per registry it hosts: takes each ring's published slots in order,
 * applies each slot's batch and writes the reply over it. After a batch it spins a little for the next one
 * (adaptively, {@linkcode SPIN_MIN_US} to {@linkcode SPIN_MAX_US}: longer
 * while batches keep arriving within the spin, shorter when they do not),
 * then blocks in `Atomics.wait`, and returns to its event loop (for control
 * messages and the store's timers) whenever it is woken without a batch,
 * after each wait timeout (the waits lengthen while idle, up to
 * {@linkcode IDLE_WAIT_MAX_MS}) and at least every {@linkcode YIELD_MS} of
 * continuous work.
 *
 * @module
 */

import { OpFailure } from "../store/backend.ts";
import { toWireError, type WireError } from "../core/errors.ts";
import type { FromWorker } from "./protocol.ts";
import { idle, type WorkerChannel } from "./shared_channel.ts";
import { decodeBatch, type Frame } from "./wire.ts";
import { ReplyEncoder } from "./wire_reply.ts";

/** Shortest spin for the next batch (µs). */
export const SPIN_MIN_US = 20;
/** Longest spin for the next batch (µs). */
export const SPIN_MAX_US = 300;
/** Longest stretch of work, and first block in `Atomics.wait`, between event-loop turns. */
export const YIELD_MS = 250;
/**
 * Longest block in `Atomics.wait` once idle: each wait that times out
 * doubles the next, from {@linkcode YIELD_MS} up to this (or the store's
 * timer period, if shorter). A control message wakes the worker at once, so
 * only the store's timers need the turns; each costs a few hundred µs of CPU.
 */
export const IDLE_WAIT_MAX_MS = 2_000;

/** What the ring server needs from the worker hosting it. */
export interface RingHost {
  /** Checks and applies a batch; `"drop"`: never answer it (a test hook). */
  run(ops: unknown, args: unknown): unknown[] | Promise<unknown[]> | "drop";
  /** Bindings the store removed since last asked. */
  takeRemoved(): string[] | undefined;
  /** Posts a message to the facade. */
  send(message: FromWorker): void;
}

/**
 * Replaces per-op failures in `results` by their wire form (`{ failed }`
 * when `wire`, else `null`); returns them as `[index, error]` pairs.
 */
export function failures(results: unknown[], wire: boolean): [number, WireError][] | undefined {
  let failed: [number, WireError][] | undefined;
  for (let i = 0; i < results.length; i++) {
    const result = results[i];
    if (result instanceof OpFailure) {
      const error = toWireError(result.error);
      (failed ??= []).push([i, error]);
      results[i] = wire ? { failed: error } : null;
    }
  }
  return failed;
}

const turn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** One facade's ring, as the server keeps it. */
interface Ring {
  readonly ch: WorkerChannel;
  readonly host: RingHost;
  /** Values a slot's batch carries beside it (sent as `extras` messages), by piece id. */
  readonly extras: Map<number, unknown[]>;
  /** How often (ms) its store's timers must run (`Infinity`: none). */
  readonly timerMs: number;
}

/**
 * Serves the rings of every registry a worker hosts (one ring each), in one
 * loop listening on one bell: each ring's slots are applied in the order they
 * were published; rings take turns, a slot at a time.
 */
export class RingServer {
  readonly #bell: Int32Array;
  readonly #rings = new Map<number, Ring>();
  /** The rings' channels, for `idle` (rebuilt when a ring comes or goes). */
  #channels: WorkerChannel[] = [];
  #list: Ring[] = [];
  /** The shortest timer period of the rings' stores (`Infinity`: none). */
  #timerMs = Infinity;
  readonly #replies = new ReplyEncoder();
  #extrasArrived: (() => void) | null = null;
  #serving = false;
  /** A test hook dropped a batch: the worker never answers again. */
  #dropped = false;
  /** The whole worker stops (closing, or crashed by a hook). */
  readonly #stopped: () => boolean;
  /** Called when serving ends with an error (out of the loop, an error is a crash). */
  readonly #crash: (err: unknown) => void;

  /** Messages wait in the worker's event loop (it must not block). */
  readonly #messages: () => boolean;

  /**
   * `bell`: the worker's (shared by every ring it serves); `messages`: true
   * while messages wait in the worker's event loop.
   */
  constructor(
    bell: Int32Array,
    stopped: () => boolean,
    crash: (err: unknown) => void,
    messages: () => boolean,
  ) {
    this.#bell = bell;
    this.#messages = messages;
    this.#stopped = stopped;
    this.#crash = crash;
  }

  /** Serves ring `key` (a hosted registry's) from now on; `timerMs`: its store's timer period. */
  add(key: number, ch: WorkerChannel, host: RingHost, timerMs = Infinity): void {
    this.#rings.set(key, { ch, host, extras: new Map(), timerMs });
    this.#rebuild();
    if (!this.#serving && !this.#dropped) {
      this.#serving = true;
      this.#serve().catch(this.#crash);
    }
  }

  /** Stops serving ring `key` (its registry closed). */
  remove(key: number): void {
    if (this.#rings.delete(key)) this.#rebuild();
  }

  #rebuild(): void {
    this.#list = [...this.#rings.values()];
    this.#channels = this.#list.map((ring) => ring.ch);
    this.#timerMs = Math.min(Infinity, ...this.#list.map((ring) => ring.timerMs));
  }

  /** An `extras` message for piece `id` of ring `key` arrived. */
  extras(key: number, id: number, values: unknown[]): void {
    this.#rings.get(key)?.extras.set(id, values);
    this.#extrasArrived?.();
  }

  /** Applies every slot already published on ring `key` (before it closes). */
  drain(key: number): void {
    const ring = this.#rings.get(key);
    if (ring === undefined) return;
    const ch = ring.ch;
    for (let slot = ch.next(); slot !== null && !this.#stopped(); slot = ch.next()) {
      if (this.#runSlot(ring, slot.id, slot.frame) !== true) return;
    }
  }

  /** The serving loop; returns when no ring is left or the worker stops. */
  async #serve(): Promise<void> {
    let spinUs = SPIN_MIN_US;
    let lastTurn = performance.now();
    let idleMs = YIELD_MS;
    while (!this.#stopped() && this.#list.length > 0) {
      const timerMs = this.#timerMs;
      const waitMs = Math.min(YIELD_MS, timerMs);
      const idleMaxMs = Math.min(IDLE_WAIT_MAX_MS, timerMs);
      let worked = false;
      let waitExtras = false;
      for (const ring of this.#list) {
        const slot = ring.ch.next();
        if (slot === null) continue;
        worked = true;
        const done = this.#runSlot(ring, slot.id, slot.frame);
        if (done === "drop") {
          // Never answer again: the facades' watchdogs take over.
          this.#dropped = true;
          return;
        }
        if (!done) {
          waitExtras = true;
          break;
        }
      }
      if (waitExtras) {
        // Its extras are still in a message: let the event loop deliver them.
        await new Promise<void>((resolve) => {
          this.#extrasArrived = resolve;
          setTimeout(resolve, 10);
        });
        this.#extrasArrived = null;
        lastTurn = performance.now();
        continue;
      }
      if (worked) {
        idleMs = waitMs;
        if (performance.now() - lastTurn > waitMs) {
          await turn();
          lastTurn = performance.now();
        }
        continue;
      }
      const started = performance.now();
      const outcome = idle(
        this.#bell,
        this.#channels,
        spinUs,
        Math.min(idleMs, idleMaxMs),
        this.#messages,
      );
      idleMs = outcome === "timeout" ? Math.min(idleMaxMs, idleMs * 2) : waitMs;
      if (outcome === "caught") continue;
      if (outcome === "work") {
        // It came soon after the spin gave up: spin longer next time, up to the bound.
        const gapUs = (performance.now() - started) * 1000;
        spinUs = gapUs < SPIN_MAX_US
          ? Math.min(SPIN_MAX_US, Math.max(spinUs, gapUs * 2))
          : SPIN_MIN_US;
        continue;
      }
      spinUs = Math.max(SPIN_MIN_US, spinUs >> 1);
      await turn(); // woken for a control message, or a timeout: timers and messages run
      lastTurn = performance.now();
    }
    // At once, in the turn that saw no ring left: a ring added after this gets a new loop.
    this.#serving = false;
  }

  /** Applies one slot's batch and writes its reply over it. `false`: its extras are not here yet. */
  #runSlot(ring: Ring, id: number, frame: Frame): boolean | "drop" {
    const host = ring.host;
    try {
      let values: unknown[] = [];
      if (frame.i32[4] > 0) {
        const got = ring.extras.get(id);
        if (got === undefined) return false;
        ring.extras.delete(id);
        values = got;
      }
      const { ops, args } = decodeBatch(frame, values);
      const results = host.run(ops, args);
      if (results === "drop") return "drop";
      if (!Array.isArray(results)) throw new Error("an async store cannot use the shared channel");
      const removed = host.takeRemoved();
      failures(results, true);
      if (!this.#replies.encode(frame, results, removed)) {
        // Too large for its slot: the reply comes as a message, the slot says so.
        host.send(overflowReply(id, results, removed));
        ReplyEncoder.overflow(frame);
      }
    } catch (err) {
      this.#replies.encodeFailure(frame, toWireError(err));
    }
    ring.ch.answer();
    return true;
  }
}

/** A reply too large for its slot, as a plain `reply` message (per-op failures listed). */
function overflowReply(id: number, results: unknown[], removed?: string[]): FromWorker {
  let failed: [number, WireError][] | undefined;
  const plain = results.map((r, i) => {
    const f = (r as { failed?: WireError } | null)?.failed;
    if (f === undefined || Array.isArray(r)) return r;
    (failed ??= []).push([i, f]);
    return null;
  });
  return {
    kind: "reply",
    id,
    results: plain,
    ...(removed === undefined ? {} : { removed }),
    ...(failed === undefined ? {} : { failed }),
  };
}
