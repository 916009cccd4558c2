/**
 * Options every registry facade shares, and the plumbing that turns them into
 * an {@linkcode ActorClient}.
 *
 * @module
 */

import { ActorClient, type ActorClientOptions } from "../actor/actor_client.ts";
import type { ActorThread } from "../actor/actor_thread.ts";
import { InvalidInputError } from "../core/errors.ts";
import type { InitMessage, WorkerEvent } from "../actor/protocol.ts";
import type { RegistryStore } from "../store/store.ts";
import { checkCount } from "../core/validate.ts";
// Edges to the worker and the KV backend, for `deno cache` / `deno compile` (never called).
import "../actor/worker_graph.ts";

/**
 * Options shared by `SessionOwnerRegistry` and `CancellationRegistry`.
 *
 * @example
 * ```ts
 * import { memoryStore, type RegistryOptions, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * const shared: RegistryOptions = { store: memoryStore(), callTimeoutMs: 1_000, maxBatch: 256 };
 * await using owners = new SessionOwnerRegistry(shared);
 * console.log(await owners.size()); // 0
 * ```
 */
export interface RegistryOptions {
  /** Where the state lives. Default: the in-memory store in the registry's worker. */
  store?: RegistryStore;
  /**
   * A batch that gets no answer for this long rejects with
   * `RegistryUnavailableError` and the worker is restarted. Default 5,000 ms.
   * It counts from when the worker is ready (its store started): a worker
   * still booting gets 10 s more, so a cold start is not taken for a hang.
   */
  callTimeoutMs?: number;
  /**
   * Send every call made in one tick as one message (default `true`). `false`
   * sends each call on its own; only useful to measure what batching buys.
   */
  batching?: boolean;
  /**
   * Most calls carried by one message (default 512). A tick with more calls
   * is sent in several messages, still applied in call order, so the worker
   * works on the first chunk while the caller queues the rest; `Infinity`
   * sends every call of a tick as exactly one message.
   */
  maxBatch?: number;
}

/** The keys of {@linkcode RegistryOptions}, for rejecting unknown ones. */
export const REGISTRY_OPTION_KEYS: readonly string[] = [
  "store",
  "callTimeoutMs",
  "batching",
  "maxBatch",
];

/** Each facade's worker client, for tests that simulate a crash (not exported from mod.ts). */
export const clients: WeakMap<object, ActorClient> = new WeakMap();

/** Validates the shared options and builds the worker client. */
export function makeClient(
  name: string,
  options: RegistryOptions,
  init: Omit<InitMessage, "kind" | "store" | "instanceId">,
  hooks: {
    instanceId: string;
    onSpawn?: (restart: boolean) => void;
    onEvent?: (event: WorkerEvent) => void;
    onReply?: ActorClientOptions["onReply"];
    onFault?: () => void;
    /** The worker to share (a registry derived from another is hosted in that one's worker). */
    thread?: ActorThread;
  },
): ActorClient {
  const store = options.store ?? { kind: "memory" };
  if (
    typeof store !== "object" || store === null ||
    !(store.kind === "memory" || (store.kind === "module" && typeof store.url === "string"))
  ) {
    throw new InvalidInputError(`${name}: store must be a RegistryStore, got ${String(store)}`);
  }
  if (store.kind === "memory" && store.idleTtlMs !== undefined) {
    checkCount(`${name}: memoryStore idleTtlMs`, store.idleTtlMs, 0);
  }
  if (store.kind === "module") {
    // The store's settings travel to the worker in a message: plain data only.
    try {
      structuredClone(store);
    } catch (err) {
      throw new InvalidInputError(
        `${name}: the options of store ${store.url} must be plain data a worker can receive ` +
          `(no functions, class instances or symbols): ${(err as Error).message}`,
      );
    }
  }
  const callTimeoutMs = checkCount("callTimeoutMs", options.callTimeoutMs ?? 5_000, 1);
  const maxBatch = options.maxBatch === Infinity
    ? Infinity
    : checkCount("maxBatch", options.maxBatch ?? 512, 1);
  return new ActorClient({
    name,
    init: { kind: "init", store, instanceId: hooks.instanceId, ...init },
    callTimeoutMs,
    batching: options.batching ?? true,
    maxBatch,
    onSpawn: hooks.onSpawn,
    onEvent: hooks.onEvent,
    onReply: hooks.onReply,
    onFault: hooks.onFault,
    thread: hooks.thread,
  });
}

/**
 * Hosts `registry`'s store in `host`'s worker (both registry facades made
 * by this library, e.g. a guard's cancellations in its owners' worker), if
 * `registry`'s worker never started and both keep their state the same way.
 * Returns whether it will.
 */
export function shareWorker(registry: object, host: object): boolean {
  const client = clients.get(registry);
  const hostClient = clients.get(host);
  if (client === undefined || hostClient === undefined) return false;
  return client.share(hostClient.thread, hostClient.store);
}

/**
 * Starts the worker of `host` (a registry facade made by this library) and,
 * in it, the store of each of `registries` it hosts, so that their first
 * calls do not wait for the worker to boot or for their store to start.
 * Registries hosted by another worker, and objects this library did not
 * make (`undefined` included), are left alone. A closed registry starts
 * nothing. A worker that cannot start fails the next call, as if that call
 * had started it.
 */
export function startWorker(host: object, ...registries: readonly unknown[]): void {
  const hostClient = clients.get(host);
  if (hostClient === undefined) return;
  hostClient.start();
  for (const registry of registries) {
    if (typeof registry !== "object" || registry === null) continue;
    const client = clients.get(registry);
    if (client !== undefined && client.thread === hostClient.thread) client.start();
  }
}
