/**
 * Store descriptors: where a registry keeps its state.
 *
 * A descriptor is plain data (it crosses into the registry's worker). The
 * default is the in-memory store; `./redis` and {@linkcode kvStore} give
 * shared, durable stores.
 *
 * @module
 */

import { checkOptionKeys } from "../core/options_check.ts";
import type { StoreSpec } from "../core/operations.ts";
import { checkCount } from "../core/validate.ts";

/**
 * Options of {@linkcode memoryStore}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memoryStore, type MemoryStoreOptions } from "@mcp-guard/session";
 *
 * const options: MemoryStoreOptions = { idleTtlMs: 30 * 60_000 };
 * assert.deepEqual(memoryStore(options), { kind: "memory", idleTtlMs: 1_800_000 });
 * ```
 */
export interface MemoryStoreOptions {
  /**
   * A session binding nobody used for this long (ms) expires, as on Redis
   * and Deno KV: every operation then treats it as unbound, and the
   * registry reports it (`onRemoved`, cause `"expired"`) so the guard closes
   * the session. A binding pinned by a live stream never expires; every
   * request the guard allows counts as use. `0`: never.
   *
   * @default {0}
   */
  idleTtlMs?: number;
}

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
 * With `idleTtlMs`, bindings unused for that long expire.
 *
 * @example
 * ```ts
 * import { memoryStore, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry({ store: memoryStore() });
 * console.log(await owners.size()); // 0
 * ```
 */
export function memoryStore(options: MemoryStoreOptions = {}): RegistryStore {
  checkOptionKeys("memoryStore", options, ["idleTtlMs"]);
  const idleTtlMs = checkCount("memoryStore: idleTtlMs", options.idleTtlMs ?? 0, 0);
  return idleTtlMs === 0 ? { kind: "memory" } : { kind: "memory", idleTtlMs };
}
