/**
 * The worker's serving loop over the shared-memory ring (in-memory store):
 * takes published slots in order, applies each slot's batch and writes the
 * reply over it. After a batch it spins a little for the next one
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
import type { WorkerChannel } from "./shared_channel.ts";
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
  /** True once the worker is closing (or crashed by a hook). */
  stopped(): boolean;
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

/** Serves one facade's ring. */
export class RingServer {
  readonly #ch: WorkerChannel;
  readonly #host: RingHost;
  readonly #replies = new ReplyEncoder();
  /** Values a slot's batch carries beside it (sent as `extras` messages), by piece id. */
  readonly #extras = new Map<number, unknown[]>();
  #extrasArrived: (() => void) | null = null;

  constructor(ch: WorkerChannel, host: RingHost) {
    this.#ch = ch;
    this.#host = host;
  }

  /** An `extras` message for piece `id` arrived. */
  extras(id: number, values: unknown[]): void {
    this.#extras.set(id, values);
    this.#extrasArrived?.();
  }

  /** Applies every slot already published (before a close). */
  drain(): void {
    const ch = this.#ch;
    for (let slot = ch.next(); slot !== null && !this.#host.stopped(); slot = ch.next()) {
      if (this.#runSlot(slot.id, slot.frame) !== true) return;
    }
  }

  /** The serving loop; returns when the worker stops. */
  async serve(timerMs = Infinity): Promise<void> {
    const ch = this.#ch;
    const waitMs = Math.min(YIELD_MS, timerMs);
    const idleMaxMs = Math.min(IDLE_WAIT_MAX_MS, timerMs);
    let idleMs = waitMs;
    let spinUs = SPIN_MIN_US;
    let lastTurn = performance.now();
    while (!this.#host.stopped()) {
      const slot = ch.next();
      if (slot !== null) {
        const done = this.#runSlot(slot.id, slot.frame);
        if (done === "drop") return; // never answer again: the facade's watchdog takes over
        if (!done) {
          // Its extras are still in a message: let the event loop deliver them.
          await new Promise<void>((resolve) => {
            this.#extrasArrived = resolve;
            setTimeout(resolve, 10);
          });
          this.#extrasArrived = null;
          lastTurn = performance.now();
        } else if (performance.now() - lastTurn > waitMs) {
          await turn();
          lastTurn = performance.now();
        }
        continue;
      }
      const started = performance.now();
      const outcome = ch.idle(spinUs, idleMs);
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
  }

  /** Applies one slot's batch and writes its reply over it. `false`: its extras are not here yet. */
  #runSlot(id: number, frame: Frame): boolean | "drop" {
    const host = this.#host;
    try {
      let values: unknown[] = [];
      if (frame.i32[4] > 0) {
        const got = this.#extras.get(id);
        if (got === undefined) return false;
        this.#extras.delete(id);
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
    this.#ch.answer();
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
