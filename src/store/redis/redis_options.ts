/**
 * Options of the Redis store, and their validation. Shared by `redis.ts` (which
 * checks them on the caller's side) and the worker-side backend; this file
 * does not import the Redis client.
 *
 * @module
 */

import { InvalidInputError } from "../../core/errors.ts";
import { checkOptionKeys } from "../../core/options_check.ts";
import { checkCount } from "../../core/validate.ts";

/**
 * Options of `redisStore`.
 *
 * @example
 * ```ts
 * import { redisStore, type RedisStoreOptions } from "@mcp-guard/session/redis";
 *
 * const options: RedisStoreOptions = { url: "redis://127.0.0.1:6379", prefix: "my-app:" };
 * console.log(redisStore(options).kind); // "module"
 * ```
 */
export interface RedisStoreOptions {
  /**
   * Server address, `redis[s]://[[username][:password]@][host][:port][/db-number]`.
   * Default `redis://127.0.0.1:6379`.
   */
  url?: string;
  /**
   * Prefix of every key and pub/sub channel this store uses (1 to 128
   * visible ASCII characters). Registries that should share state use the
   * same prefix; separate deployments on one server use different ones.
   * Default `"mcp-guard:"`.
   */
  prefix?: string;
  /**
   * Owner bindings not used for this long (no `bind`, `authorizeAttach`,
   * `touch` or `unpin`) are dropped; pinned bindings (a live listening
   * stream) never expire. Every owner registry on the store sweeps them
   * about every second (or every quarter of this TTL, when shorter), and
   * each expired binding is announced once to every process sharing the
   * store (`SessionOwnerRegistry.onRemoved`, cause `"expired"`), wherever the
   * session lives. `0` or unset: bindings never expire (only the LRU bounds
   * apply).
   */
  idleTtlMs?: number;
  /**
   * Cancellation entries older than this are dropped (the request becomes
   * uncancellable). Bounds what a crashed process leaves behind: its
   * entries are otherwise held until `maxEntries` is reached. `0` or unset: never.
   */
  requestTtlMs?: number;
  /**
   * How long one (re)connect attempt may take, and how long the first call
   * waits for the first connection before it fails. Default 2,000 ms.
   */
  connectTimeoutMs?: number;
}

/** Validated, defaulted {@linkcode RedisStoreOptions}: plain data for the worker. */
export interface ResolvedRedisOptions {
  url: string;
  prefix: string;
  idleTtlMs: number;
  requestTtlMs: number;
  connectTimeoutMs: number;
}

const PREFIX = /^[\x21-\x7e]{1,128}$/;

/** Every key {@linkcode RedisStoreOptions} has; any other key is a typo. */
const OPTION_KEYS: readonly (keyof RedisStoreOptions)[] = [
  "url",
  "prefix",
  "idleTtlMs",
  "requestTtlMs",
  "connectTimeoutMs",
];

/**
 * Validates and defaults Redis store options; throws `InvalidInputError`
 * naming the bad option (an unknown key is named with the nearest valid one:
 * `urll` is a typo, not a default).
 */
export function resolveRedisOptions(options: unknown = {}): ResolvedRedisOptions {
  // Also refuses anything that is not an options object.
  checkOptionKeys("redisStore", options, OPTION_KEYS);
  const o = options as Record<string, unknown>;
  const url = o.url ?? "redis://127.0.0.1:6379";
  let parsed: URL | null = null;
  try {
    parsed = typeof url === "string" ? new URL(url) : null;
  } catch {
    parsed = null;
  }
  if (parsed === null || (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:")) {
    throw new InvalidInputError(
      `redisStore: url must be a redis:// or rediss:// URL, got ${describe(url, true)}`,
    );
  }
  const prefix = o.prefix ?? "mcp-guard:";
  if (typeof prefix !== "string" || !PREFIX.test(prefix)) {
    throw new InvalidInputError(
      `redisStore: prefix must be 1 to 128 visible ASCII characters, got ${describe(prefix)}`,
    );
  }
  return {
    url: url as string,
    prefix,
    idleTtlMs: checkCount("redisStore: idleTtlMs", o.idleTtlMs ?? 0, 0),
    requestTtlMs: checkCount("redisStore: requestTtlMs", o.requestTtlMs ?? 0, 0),
    connectTimeoutMs: checkCount(
      "redisStore: connectTimeoutMs",
      o.connectTimeoutMs ?? 2_000,
      1,
    ),
  };
}

/** The URL without credentials, for error messages. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.href;
  } catch {
    return "(invalid url)";
  }
}

function describe(value: unknown, isUrl = false): string {
  if (typeof value !== "string") return String(value);
  return JSON.stringify(isUrl ? safeUrl(value) : value);
}
