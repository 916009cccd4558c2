/**
 * The Redis store: registries in several processes (and across restarts)
 * share one Redis, so every process agrees on who owns a session and a
 * cancel sent through any process aborts the request where it runs.
 *
 * Import it from `@mcp-guard/session/redis`; only this entry point (and the
 * worker module it names) depends on `npm:redis`. Needs Redis 7 or newer.
 *
 * @example Two registries sharing one Redis
 * ```ts ignore
 * import { CancellationRegistry, SessionOwnerRegistry } from "@mcp-guard/session";
 * import { redisStore } from "@mcp-guard/session/redis";
 *
 * const store = redisStore({ url: "redis://127.0.0.1:6379", prefix: "my-app:" });
 * await using owners = new SessionOwnerRegistry({ store });
 * await using cancels = new CancellationRegistry({ store });
 *
 * console.log(await owners.bind("session-1", "fp-alice")); // "bound" (in every process)
 * const reg = await cancels.register("session-1", 1);
 * ```
 *
 * @module
 */

import type { RegistryStore } from "./src/store/store.ts";
import { type RedisStoreOptions, resolveRedisOptions } from "./src/store/redis/redis_options.ts";
// Edge to the Redis backend, for `deno cache` / `deno compile` (never called).
import "./src/store/redis/redis_graph.ts";

export type { RedisStoreOptions } from "./src/store/redis/redis_options.ts";

const BACKEND_URL = new URL("./src/store/redis/redis_backend.ts", import.meta.url).href;

/**
 * A store that keeps a registry's state in Redis. Pass it as `store` to
 * `SessionOwnerRegistry` and `CancellationRegistry`; each registry's worker
 * opens its own connection(s).
 *
 * - Owner operations run as Lua scripts, so each is one atomic step on the
 *   server: two processes racing to claim one id never both win. The bounds
 *   (`maxEntries` LRU, `maxPerPrincipal`, pinned sessions) hold across every
 *   process using the same `prefix`.
 * - `cancel` / `cancelAll` through any process abort the request in the
 *   process that registered it (pub/sub), still only for the same session.
 * - Bindings the store drops on its own, evicted (global LRU or
 *   `maxPerPrincipal`) or idle-expired (`idleTtlMs`, swept about every
 *   second), are announced to every owner registry sharing the store
 *   (`SessionOwnerRegistry.onRemoved`), so the process where the session
 *   lives can close it.
 * - While Redis is unreachable, calls reject with `RegistryUnavailableError`
 *   at once (fail closed); the connection is retried in the background. A
 *   process without the net permission for the server is misconfigured, not
 *   facing an outage: its calls reject at once with
 *   `RegistryMisconfiguredError` naming the flag to add (e.g.
 *   `--allow-net=127.0.0.1:6379`), and nothing is retried.
 * - Closing a `CancellationRegistry` drops the requests it registered from
 *   the store, so a cancel through another process no longer finds them.
 * - `cluster: { rootNodes }` instead of `url` runs the same on a Redis
 *   Cluster: every key and channel of one prefix hashes to one slot (the
 *   store wraps the prefix in a hash tag, `{prefix}`), events travel over
 *   sharded pub/sub, and a master that is down fails only the registries
 *   whose slot it serves (closed, as above) until it is back.
 *
 * Throws `InvalidInputError` naming the bad option, or the unknown key and
 * the nearest valid one (`{ urll: ... }` -> did you mean "url"?).
 *
 * @example
 * ```ts
 * import { redisStore } from "@mcp-guard/session/redis";
 *
 * const store = redisStore({ url: "redis://127.0.0.1:6379", idleTtlMs: 24 * 3600_000 });
 * console.log(store.kind); // "module"
 * ```
 *
 * @example On a Redis Cluster
 * ```ts
 * import assert from "node:assert/strict";
 * import { redisStore } from "@mcp-guard/session/redis";
 *
 * const store = redisStore({
 *   cluster: { rootNodes: ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"] },
 *   prefix: "my-app:", // keys {my-app:}o:own, ... in one slot
 * });
 * assert.equal(store.kind, "module");
 * ```
 */
export function redisStore(options: RedisStoreOptions = {}): RegistryStore {
  return { kind: "module", url: BACKEND_URL, options: resolveRedisOptions(options) };
}
