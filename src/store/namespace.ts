/**
 * Key spaces of their own in one store: a handle or task registry shares the
 * store of the session registry beside it, under a prefix of its own, so it
 * never shares a key, an LRU or a per-principal cap with sessions.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import { type ResolvedKvOptions, resolveKvOptions } from "./kv/kv_store.ts";
import { type ResolvedRedisOptions, resolveRedisOptions } from "./redis/redis_options.ts";
import type { RegistryStore } from "./store.ts";

const REDIS_BACKEND = new URL("./redis/redis_backend.ts", import.meta.url).href;
const KV_BACKEND = new URL("./kv/kv_backend.ts", import.meta.url).href;

/** A key space: the suffix each shared store's prefix gains. */
export interface Namespace {
  /** Added to a Redis prefix: keys `<prefix><redis>o:…`. */
  redis: string;
  /** Added to a Deno KV prefix: keys `["<prefix><kv>", "o", …]`. */
  kv: string;
}

/**
 * `store` moved to the key space `namespace`: the in-memory store as is
 * (every registry has a table of its own, even in a shared worker, so
 * nothing is shared), a Redis or
 * Deno KV store with its prefix extended. Any other store is refused (its
 * key layout is unknown, so a distinct key space cannot be guaranteed), as
 * is a prefix the store refuses once extended; `who` names the caller in
 * the error.
 */
export function namespacedStore(
  store: RegistryStore | undefined,
  namespace: Namespace,
  who: string,
): RegistryStore | undefined {
  if (typeof store !== "object" || store === null || store.kind !== "module") return store;
  const derive = <T extends { prefix: string }>(
    suffix: string,
    resolve: (options: unknown) => T,
  ): RegistryStore => {
    const options = store.options as T;
    const prefix = `${options.prefix}${suffix}`;
    try {
      return { kind: "module", url: store.url, options: resolve({ ...options, prefix }) };
    } catch {
      throw new InvalidInputError(
        `${who} lives under the store prefix ${JSON.stringify(prefix)} (the store's prefix plus ${
          JSON.stringify(suffix)
        }), which that store refuses: use a shorter prefix`,
      );
    }
  };
  if (store.url === REDIS_BACKEND) {
    return derive<ResolvedRedisOptions>(namespace.redis, resolveRedisOptions);
  }
  if (store.url === KV_BACKEND) return derive<ResolvedKvOptions>(namespace.kv, resolveKvOptions);
  throw new InvalidInputError(
    `${who}: store must be memoryStore(), redisStore() or kvStore() ` +
      "(its key space is derived from the store's prefix)",
  );
}
