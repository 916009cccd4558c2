/**
 * The worker's side of the actor: hosts the stores of one or more registries
 * (each a host, see `actor/protocol.ts`) and applies each one's batches one
 * at a time, in order. Never dies on a malformed message: it
 * answers `fail` with a typed error and keeps serving.
 *
 * With the in-memory store, batches come through the shared-memory ring,
 * served by `worker_ring.ts` (one loop for every host's ring); stores that need the event loop between
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
import { BELL_BYTES, postedSince, WorkerChannel } from "./shared_channel.ts";
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

/** One hosted registry: its store and, with the in-memory store, its ring. */
interface Host {
  readonly key: number;
  readonly init: InitMessage;
  backend: Backend | null;
  backendError: unknown;
  /** Its ring is served (in-memory store with shared memory). */
  ring: boolean;
}

const hosts = new Map<number, Host>();
let busy = false;
/** A close said no host joins any more. */
let exiting = false;
/** Messages received so far (the bell counts those posted: see `postedSince`). */
let received = 0;
let stopped = false;
/** Serves every host's ring; made by the first host that has one. */
let server: RingServer | null = null;
const queue: unknown[] = [];
const replies = new ReplyEncoder();

function send(message: FromWorker, transfer?: Transferable[]): void {
  self.postMessage(message, transfer ?? []);
}

/** `message` tagged for host `key` (host 0 untagged, as a single-host worker speaks). */
function tagged<T extends FromWorker>(message: T, key: number): T {
  if (key !== 0) message.host = key;
  return message;
}

function fail(id: number | null, err: unknown, key = 0): void {
  send(tagged({ kind: "fail", id, error: toWireError(err) }, key));
}

function plainReply(host: Host, id: number, results: unknown[]): void {
  try {
    const removed = host.backend?.takeRemoved?.();
    const failed = failures(results, false);
    send(tagged({
      kind: "reply",
      id,
      results,
      ...(removed === undefined ? {} : { removed }),
      ...(failed === undefined ? {} : { failed }),
    }, host.key));
  } catch (err) {
    fail(id, err, host.key); // e.g. a store returned something structured clone rejects
  }
}

/** Encodes a reply into a fresh frame, growing it until it fits, and posts it. */
function wireReply(host: Host, id: number, results: unknown[] | null, error?: unknown): void {
  try {
    const removed = results === null ? undefined : host.backend?.takeRemoved?.();
    if (results !== null) failures(results, true);
    for (let words = 64 + 4 * (results?.length ?? 0), units = 1_024;; words *= 2, units *= 2) {
      const frame = newFrame(words, 64, units);
      const ok = results === null
        ? replies.encodeFailure(frame, toWireError(error))
        : replies.encode(frame, results, removed);
      if (ok) {
        const buffer = frame.i32.buffer as ArrayBuffer;
        const message = { kind: "wreply", id, buffer, words: frame.i32.length, nums: 64 } as const;
        send(tagged({ ...message }, host.key), [buffer]);
        return;
      }
    }
  } catch (err) {
    fail(id, err, host.key);
  }
}

function idOf(message: unknown): number | null {
  const id = (message as { id?: unknown } | null)?.id;
  return typeof id === "number" && Number.isSafeInteger(id) ? id : null;
}

/** The host a message names: 0 when absent, `null` when it is not a valid host number. */
function keyOf(message: Record<string, unknown>): number | null {
  const key = message.host ?? 0;
  return typeof key === "number" && Number.isSafeInteger(key) && key >= 0 ? key : null;
}

function isInit(message: Record<string, unknown>): boolean {
  const store = message.store as Record<string, unknown> | null;
  return (message.registry === "owner" || message.registry === "cancel") &&
    typeof message.options === "object" && message.options !== null &&
    typeof message.instanceId === "string" && typeof store === "object" && store !== null &&
    (store.kind === "memory" || (store.kind === "module" && typeof store.url === "string")) &&
    (message.channel === undefined || message.channel instanceof SharedArrayBuffer) &&
    (message.bell === undefined ||
      (message.bell instanceof SharedArrayBuffer && message.bell.byteLength === BELL_BYTES));
}

async function startBackend(message: InitMessage, key: number): Promise<Backend> {
  const emit = (event: WorkerEvent) => send(tagged({ ...event }, key));
  if (message.store.kind === "memory") return createMemoryBackend(message, emit);
  const mod = await import(message.store.url) as { createBackend?: CreateBackend };
  if (typeof mod.createBackend !== "function") {
    throw new InvalidInputError(`store module ${message.store.url} exports no createBackend`);
  }
  return await mod.createBackend({ init: message, emit });
}

/** Checks a batch for `host` and hands it to its store (the hook first). */
function run(
  host: Host | undefined,
  ops: unknown,
  args: unknown,
): unknown[] | Promise<unknown[]> | "drop" {
  if (host === undefined) throw new InvalidInputError("batch before init");
  if (host.backend === null) throw host.backendError ?? new Error("store failed to start");
  if (Array.isArray(args) && inspect(args)) return "drop";
  validateBatch(ops, args, host.init.registry);
  return host.backend.run(ops as number[], args as unknown[]);
}

/** Runs the test hook; a throw crashes the worker (uncaught, out of every handler). */
function inspect(args: readonly unknown[]): boolean {
  try {
    return hooks.inspect?.(args) === "drop";
  } catch (err) {
    stopped = true;
    crash(err);
    return true;
  }
}

/** Out of every handler, an error is a crash (as an uncaught one would be). */
function crash(err: unknown): void {
  setTimeout(() => {
    throw err;
  });
}

function onInit(msg: Record<string, unknown>): void | Promise<void> {
  const key = keyOf(msg);
  if (key === null || hosts.has(key) || !isInit(msg)) {
    fail(
      null,
      new InvalidInputError(
        key !== null && hosts.has(key) ? "worker already initialized" : "malformed init",
      ),
      key ?? 0,
    );
    return;
  }
  const init = msg as unknown as InitMessage;
  const host: Host = { key, init, backend: null, backendError: null, ring: false };
  hosts.set(key, host);
  const ready = () => {
    send(tagged({ kind: "ready" }, key));
    // The ring is served once the store is up (or failed: each batch then fails with its error).
    if (init.channel === undefined || hosts.get(key) !== host) return;
    const channel = new WorkerChannel(init.channel);
    if (server === null) {
      const bell = init.bell === undefined ? null : new Int32Array(init.bell);
      server = new RingServer(
        bell ?? channel.ctrl,
        () => stopped,
        crash,
        bell === null ? () => false : () => postedSince(bell, received),
      );
    }
    host.ring = true;
    server.add(key, channel, {
      run: (ops, args) => run(host, ops, args),
      takeRemoved: () => host.backend?.takeRemoved?.(),
      send: (message) => send(tagged(message, key)),
    }, host.backend?.timerMs);
  };
  try {
    return startBackend(init, key).then((b) => {
      host.backend = b;
    }, (err) => {
      host.backendError = err;
    }).finally(ready);
  } catch (err) {
    host.backendError = err;
    ready();
  }
}

function onBatch(msg: Record<string, unknown>): void | Promise<void> {
  const id = idOf(msg);
  const key = keyOf(msg)!;
  const host = hosts.get(key);
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
    const results = run(host, ops, args);
    if (results === "drop") return;
    if (Array.isArray(results)) return answer(host!, id, wire, results);
    return results.then(
      (r) => answer(host!, id, wire, r),
      (err) => wire ? wireReply(host!, id, null, err) : fail(id, err, key),
    );
  } catch (err) {
    if (wire && id !== null && host !== undefined) wireReply(host, id, null, err);
    else fail(id, err, key);
  }
}

function answer(host: Host, id: number, wire: boolean, results: unknown[]): void {
  if (wire) wireReply(host, id, results);
  else plainReply(host, id, results);
}

function onClose(msg: Record<string, unknown>): void | Promise<void> {
  const id = idOf(msg) ?? 0;
  const key = keyOf(msg)!;
  // No host joins after a close that lets the worker exit: it exits once no host is left.
  exiting ||= msg.exit !== false;
  const host = hosts.get(key);
  if (host?.ring) {
    server?.drain(key);
    server?.remove(key);
  }
  hosts.delete(key);
  const exit = exiting && hosts.size === 0;
  if (exit) stopped = true;
  const closing = host?.backend?.close();
  const done = () => {
    send(tagged({ kind: "closed", id }, key));
    if (exit) self.close();
  };
  return closing instanceof Promise ? closing.then(done, done) : done();
}

/** Handles one message; returns a promise only when it had to wait on I/O. */
function handle(message: unknown): void | Promise<void> {
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    fail(null, new InvalidInputError("message is not an object"));
    return;
  }
  const msg = message as Record<string, unknown>;
  if (keyOf(msg) === null) {
    // Never another host's: answered with no id, so no pending batch of any host matches it.
    let host: string;
    try {
      host = JSON.stringify(msg.host) ?? String(msg.host);
    } catch {
      host = typeof msg.host;
    }
    fail(null, new InvalidInputError(`message names no valid host: ${host.slice(0, 64)}`));
    return;
  }
  switch (msg.kind) {
    case "init":
      return onInit(msg);
    case "batch":
    case "wbatch":
      return onBatch(msg);
    case "extras": {
      const id = idOf(msg);
      const key = keyOf(msg)!;
      if (id === null || !Array.isArray(msg.values)) {
        fail(id, new InvalidInputError("extras need `id` and `values`"), key);
        return;
      }
      server?.extras(key, id, msg.values);
      return;
    }
    case "close":
      return onClose(msg);
    default:
      fail(
        idOf(msg),
        new InvalidInputError(`unknown message kind ${JSON.stringify(String(msg.kind))}`),
        keyOf(msg)!,
      );
  }
}

function handleSafely(message: unknown): void | Promise<void> {
  try {
    return handle(message);
  } catch (err) {
    // Last line of defence (e.g. a result that cannot be cloned): report, keep serving.
    const key = typeof message === "object" && message !== null
      ? keyOf(message as Record<string, unknown>)
      : 0;
    if (key === null) fail(null, err);
    else fail(idOf(message), err, key);
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
    received++;
    queue.push(event.data);
    if (!busy) drain();
  };
  self.onmessageerror = () => {
    received++; // counted as posted: the ring loop must not wait for it
    fail(null, new InvalidInputError("message could not be deserialized"));
  };
}
