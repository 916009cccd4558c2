/**
 * Puts the modules a registry's worker loads into the static module graph.
 *
 * The worker starts from `new Worker(new URL("./worker.ts", import.meta.url))`
 * and loads a store's backend with `import(url)`, the URL taken from the store
 * descriptor. Neither is an edge that `deno cache`, `deno compile` or JSR
 * follow, so `deno cache mod.ts` used to leave them out and
 * `deno run --cached-only` failed with "worker crashed: Specifier not found
 * in cache". The literal imports below are edges they follow (measured with
 * Deno 2.9: `deno cache` follows literal dynamic and type-only imports,
 * `deno compile` embeds literal dynamic imports only). Every registry
 * imports this module (see `registry_options.ts`).
 *
 * The functions are never called. Calling {@linkcode workerModule} would run
 * the worker's message loop on the main thread.
 *
 * Everything reachable from here is part of the published graph, where JSR
 * refuses `/// <reference lib="..." />` (`banned-triple-slash-directives`):
 * worker code types the worker scope it uses itself.
 *
 * The Redis backend has its own edge in `redis_graph.ts`, reached only from
 * `redis.ts`: only that entry point depends on `npm:redis`.
 *
 * @module
 */

/** The worker entry module. Never called: it exists for the module graph. */
export const workerModule = (): Promise<unknown> => import("./worker.ts");

/** The Deno KV backend `kvStore()` names by URL. Never called: it exists for the module graph. */
export const kvBackendModule = (): Promise<unknown> => import("../store/kv/kv_backend.ts");
