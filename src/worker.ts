/**
 * Worker entry: hosts one registry's store and applies its messages one at a
 * time, in arrival order (the actor). Never dies on a malformed message: it
 * answers `fail` with a typed error and keeps serving.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  type Backend,
  type CreateBackend,
  createMemoryBackend,
  OpFailure,
  validateBatch,
} from "./backend.ts";
import { InvalidInputError, toWireError, type WireError } from "./errors.ts";
import type { FromWorker, InitMessage, WorkerEvent } from "./protocol.ts";

let init: InitMessage | null = null;
let backend: Backend | null = null;
let backendError: unknown = null;
let busy = false;
const queue: unknown[] = [];

function send(message: FromWorker): void {
  self.postMessage(message);
}

function fail(id: number | null, err: unknown): void {
  send({ kind: "fail", id, error: toWireError(err) });
}

function reply(id: number, results: unknown[]): void {
  try {
    const removed = backend?.takeRemoved?.();
    let failed: [number, WireError][] | undefined;
    for (let i = 0; i < results.length; i++) {
      const result = results[i];
      if (result instanceof OpFailure) {
        (failed ??= []).push([i, toWireError(result.error)]);
        results[i] = null;
      }
    }
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

function idOf(message: unknown): number | null {
  const id = (message as { id?: unknown } | null)?.id;
  return typeof id === "number" && Number.isSafeInteger(id) ? id : null;
}

function isInit(message: Record<string, unknown>): boolean {
  const store = message.store as Record<string, unknown> | null;
  return (message.registry === "owner" || message.registry === "cancel") &&
    typeof message.options === "object" && message.options !== null &&
    typeof message.instanceId === "string" && typeof store === "object" && store !== null &&
    (store.kind === "memory" || (store.kind === "module" && typeof store.url === "string"));
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

/** Handles one message; returns a promise only when it had to wait on I/O. */
function handle(message: unknown): void | Promise<void> {
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    fail(null, new InvalidInputError("message is not an object"));
    return;
  }
  const msg = message as Record<string, unknown>;
  switch (msg.kind) {
    case "init": {
      if (init !== null || !isInit(msg)) {
        fail(
          null,
          new InvalidInputError(init !== null ? "worker already initialized" : "malformed init"),
        );
        return;
      }
      init = msg as unknown as InitMessage;
      try {
        const made = startBackend(init);
        return made.then((b) => {
          backend = b;
        }, (err) => {
          backendError = err;
        }).finally(() => send({ kind: "ready" }));
      } catch (err) {
        backendError = err;
        send({ kind: "ready" });
      }
      return;
    }
    case "batch": {
      const id = idOf(msg);
      try {
        if (id === null) throw new InvalidInputError("batch without a numeric id");
        if (init === null) throw new InvalidInputError("batch before init");
        if (backend === null) throw backendError ?? new Error("store failed to start");
        validateBatch(msg.ops, msg.args, init.registry);
        const results = backend.run(msg.ops as number[], msg.args as unknown[]);
        if (Array.isArray(results)) return reply(id, results);
        return results.then((r) => reply(id, r), (err) => fail(id, err));
      } catch (err) {
        fail(id, err);
      }
      return;
    }
    case "close": {
      const id = idOf(msg) ?? 0;
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

self.onmessage = (event: MessageEvent) => {
  queue.push(event.data);
  if (!busy) drain();
};

self.onmessageerror = () => {
  fail(null, new InvalidInputError("message could not be deserialized"));
};
