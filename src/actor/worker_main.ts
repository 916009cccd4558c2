/**
 * The worker's side of the actor: hosts one registry's store and applies its
 * batches one at a time, in order. Never dies on a malformed message: it
 * answers `fail` with a typed error and keeps serving.
 *
 * With the in-memory store, batches come through the shared-memory ring,
 * served by `worker_ring.ts`; stores that need the event loop between
 * batches (Redis, KV) get them as messages instead.
 *
 * @module
 */

import {
  type Backend,
  type CreateBackend,
  createMemoryBackend,
  validateBatch,
} from "../store/backend.ts";
import { InvalidInputError, toWireError } from "../core/errors.ts";
import type { FromWorker, InitMessage, WorkerEvent } from "./protocol.ts";
import { WorkerChannel } from "./shared_channel.ts";
import { decodeBatch, frameOver, newFrame } from "./wire.ts";
import { failures, RingServer } from "./worker_ring.ts";
import { ReplyEncoder } from "./wire_reply.ts";

/**
 * The parts of the dedicated worker scope this module uses, typed here:
 * JSR refuses `/// <reference lib="deno.worker" />` in a module of the
 * published graph (`banned-triple-slash-directives`), and this one is in it
 * (see `../worker_graph.ts`).
 */
declare const self: {
  postMessage(message: FromWorker, transfer: Transferable[]): void;
  close(): void;
  onmessage: ((event: MessageEvent) => void) | null;
  onmessageerror: ((event: MessageEvent) => void) | null;
};

/** Test hooks (a fixture worker substitutes misbehaviour). */
export interface WorkerHooks {
  /**
   * Sees each batch's arguments before it is applied. `"drop"`: the batch
   * is never answered (the worker hangs). Throwing crashes the worker.
   */
  inspect?(args: readonly unknown[]): "drop" | void;
}

let hooks: WorkerHooks = {};
let init: InitMessage | null = null;
let backend: Backend | null = null;
let backendError: unknown = null;
let busy = false;
let stopped = false;
let ring: RingServer | null = null;
const queue: unknown[] = [];
const replies = new ReplyEncoder();

function send(message: FromWorker, transfer?: Transferable[]): void {
  self.postMessage(message, transfer ?? []);
}

function fail(id: number | null, err: unknown): void {
  send({ kind: "fail", id, error: toWireError(err) });
}

function plainReply(id: number, results: unknown[]): void {
  try {
    const removed = backend?.takeRemoved?.();
    const failed = failures(results, false);
    send({
      kind: "reply",
      id,
      results,
      ...(removed === undefined ? {} : { removed }),
      ...(failed === undefined ? {} : { failed }),
    });
  } catch (err) {
    fail(id, err); // e.g. a store returned something structured clone rejects
  }
}

/** Encodes a reply into a fresh frame, growing it until it fits, and posts it. */
function wireReply(id: number, results: unknown[] | null, error?: unknown): void {
  try {
    const removed = results === null ? undefined : backend?.takeRemoved?.();
    if (results !== null) failures(results, true);
    for (let words = 64 + 4 * (results?.length ?? 0), units = 1_024;; words *= 2, units *= 2) {
      const frame = newFrame(words, 64, units);
      const ok = results === null
        ? replies.encodeFailure(frame, toWireError(error))
        : replies.encode(frame, results, removed);
      if (ok) {
        const buffer = frame.i32.buffer as ArrayBuffer;
        send({ kind: "wreply", id, buffer, words: frame.i32.length, nums: 64 }, [buffer]);
        return;
      }
    }
  } catch (err) {
    fail(id, err);
  }
}

function idOf(message: unknown): number | null {
  const id = (message as { id?: unknown } | null)?.id;
  return typeof id === "number" && Number.isSafeInteger(id) ? id : null;
}

function isInit(message: Record<string, unknown>): boolean {
  const store = message.store as Record<string, unknown> | null;
  return (message.registry === "owner" || message.registry === "cancel") &&
    typeof message.options === "object" && message.options !== null &&
    typeof message.instanceId === "string" && typeof store === "object" && store !== null &&
    (store.kind === "memory" || (store.kind === "module" && typeof store.url === "string")) &&
    (message.channel === undefined || message.channel instanceof SharedArrayBuffer);
}

async function startBackend(message: InitMessage): Promise<Backend> {
  if (message.store.kind === "memory") return createMemoryBackend(message, send);
  const mod = await import(message.store.url) as { createBackend?: CreateBackend };
  if (typeof mod.createBackend !== "function") {
    throw new InvalidInputError(`store module ${message.store.url} exports no createBackend`);
  }
  return await mod.createBackend({
    init: message,
    emit: (event: WorkerEvent) => send(event),
  });
}

/** Checks a batch and hands it to the store (the hook first). */
function run(ops: unknown, args: unknown): unknown[] | Promise<unknown[]> | "drop" {
  if (init === null) throw new InvalidInputError("batch before init");
  if (backend === null) throw backendError ?? new Error("store failed to start");
  if (Array.isArray(args) && inspect(args)) return "drop";
  validateBatch(ops, args, init.registry);
  return backend.run(ops as number[], args as unknown[]);
}

/** Runs the test hook; a throw crashes the worker (uncaught, out of every handler). */
function inspect(args: readonly unknown[]): boolean {
  try {
    return hooks.inspect?.(args) === "drop";
  } catch (err) {
    stopped = true;
    setTimeout(() => {
      throw err;
    });
    return true;
  }
}

function onInit(msg: Record<string, unknown>): void | Promise<void> {
  if (init !== null || !isInit(msg)) {
    fail(
      null,
      new InvalidInputError(init !== null ? "worker already initialized" : "malformed init"),
    );
    return;
  }
  init = msg as unknown as InitMessage;
  if (init.channel !== undefined) {
    ring = new RingServer(new WorkerChannel(init.channel), {
      run,
      takeRemoved: () => backend?.takeRemoved?.(),
      send,
      stopped: () => stopped,
    });
  }
  const ready = () => {
    send({ kind: "ready" });
    // The ring is served once the store is up (or failed: each batch then fails with its error).
    if (ring !== null) {
      ring.serve(backend?.timerMs).catch((err) => {
        // Out of the serving loop, an error is a crash (as an uncaught one would be).
        setTimeout(() => {
          throw err;
        });
      });
    }
  };
  try {
    return startBackend(init).then((b) => {
      backend = b;
    }, (err) => {
      backendError = err;
    }).finally(ready);
  } catch (err) {
    backendError = err;
    ready();
  }
}

/** Handles one message; returns a promise only when it had to wait on I/O. */
function handle(message: unknown): void | Promise<void> {
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    fail(null, new InvalidInputError("message is not an object"));
    return;
  }
  const msg = message as Record<string, unknown>;
  switch (msg.kind) {
    case "init":
      return onInit(msg);
    case "batch":
    case "wbatch": {
      const id = idOf(msg);
      const wire = msg.kind === "wbatch";
      try {
        if (id === null) throw new InvalidInputError("batch without a numeric id");
        let ops = msg.ops, args = msg.args;
        if (wire) {
          const { buffer, words, nums } = msg;
          if (!(buffer instanceof ArrayBuffer) || typeof words !== "number") {
            throw new InvalidInputError("wbatch needs `buffer` and `words`");
          }
          const units = (buffer.byteLength - ((words + 1) & ~1) * 4 - (nums as number) * 8) / 2;
          const frame = frameOver(buffer, 0, words, nums as number, units);
          ({ ops, args } = decodeBatch(frame, (msg.extras ?? []) as unknown[]));
        }
        const results = run(ops, args);
        if (results === "drop") return;
        const answer = wire ? wireReply : plainReply;
        if (Array.isArray(results)) return answer(id, results);
        return results.then(
          (r) => answer(id, r),
          (err) => wire ? wireReply(id, null, err) : fail(id, err),
        );
      } catch (err) {
        if (wire && id !== null) wireReply(id, null, err);
        else fail(id, err);
      }
      return;
    }
    case "extras": {
      const id = idOf(msg);
      if (id === null || !Array.isArray(msg.values)) {
        fail(id, new InvalidInputError("extras need `id` and `values`"));
        return;
      }
      ring?.extras(id, msg.values);
      return;
    }
    case "close": {
      const id = idOf(msg) ?? 0;
      ring?.drain();
      stopped = true;
      const closing = backend?.close();
      const done = () => {
        send({ kind: "closed", id });
        self.close();
      };
      return closing instanceof Promise ? closing.then(done, done) : done();
    }
    default:
      fail(
        idOf(msg),
        new InvalidInputError(`unknown message kind ${JSON.stringify(String(msg.kind))}`),
      );
  }
}

function handleSafely(message: unknown): void | Promise<void> {
  try {
    return handle(message);
  } catch (err) {
    // Last line of defence (e.g. a result that cannot be cloned): report, keep serving.
    fail(idOf(message), err);
  }
}

function drain(): void {
  while (queue.length > 0) {
    const pending = handleSafely(queue.shift());
    if (pending instanceof Promise) {
      busy = true;
      pending.finally(() => {
        busy = false;
        drain();
      });
      return;
    }
  }
}

/** Starts serving this worker's messages (the entry module calls it once). */
export function startWorker(workerHooks: WorkerHooks = {}): void {
  hooks = workerHooks;
  self.onmessage = (event: MessageEvent) => {
    queue.push(event.data);
    if (!busy) drain();
  };
  self.onmessageerror = () => {
    fail(null, new InvalidInputError("message could not be deserialized"));
  };
}
