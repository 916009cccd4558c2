/**
 * Store descriptors: where a registry keeps its state.
 *
 * A descriptor is plain data (it crosses into the registry's worker). The
 * default is the in-memory store; `./redis` and {@linkcode kvStore} give
 * shared, durable stores.
 *
 * @module
 */

import type { StoreSpec } from "./protocol.ts";

/**
 * Where a registry keeps its state: `{ kind: "memory" }` (the default), or a
 * store module the registry's worker loads (see `redisStore` in
 * `@mcp-guard/session/redis`).
 *
 * @example
 * ```ts
 * import { memoryStore, type RegistryStore } from "@mcp-guard/session";
 *
 * const store: RegistryStore = memoryStore();
 * console.log(store.kind); // "memory"
 * ```
 */
export type RegistryStore = StoreSpec;

/**
 * The default store: state lives in the registry's worker and is lost when
 * the process exits (or the worker dies). Not shared between processes.
 *
 * @example
 * ```ts
 * import { memoryStore, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry({ store: memoryStore() });
 * console.log(await owners.size()); // 0
 * ```
 */
export function memoryStore(): RegistryStore {
  return { kind: "memory" };
}
