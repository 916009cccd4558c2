/**
 * Puts the Redis backend, which only a registry's worker loads (by the URL in
 * the `redisStore()` descriptor), into the static module graph of `redis.ts`,
 * so `deno cache redis.ts` caches it and `npm:redis`, and `deno compile`
 * embeds them. See `worker_graph.ts` for the why.
 *
 * Never called: the backend runs in the worker, not on the main thread.
 *
 * @module
 */

/** The Redis backend `redisStore()` names by URL. Never called: it exists for the module graph. */
export const redisBackendModule = (): Promise<unknown> => import("./redis_backend.ts");
