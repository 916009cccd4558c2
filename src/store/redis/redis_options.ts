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
   * Not with `cluster`.
   *
   * @default {"redis://127.0.0.1:6379"}
   */
  url?: string;
  /**
   * A Redis Cluster instead of one server (`url`): the registries use the
   * `redis` client's cluster API, which discovers every node from the root
   * nodes and follows slot moves and failovers.
   *
   * Every key and channel of one store prefix hashes to ONE slot: the store
   * wraps the prefix in a hash tag itself (keys `{<prefix>}o:own`, ...), so
   * each multi-key script runs on one node, and the prefix may not contain
   * `{` or `}`. The handle and task registries derived from the store have
   * prefixes of their own (`<prefix>h:`, `<prefix>t:`), hence slots of
   * their own. Pub/sub is sharded (`SPUBLISH` / `SSUBSCRIBE` on that slot),
   * so an event stays on the node that holds the keys. See
   * `docs/stores.md` for what one slot carries.
   *
   * `rootNodes`: 1 to 64 `redis[s]://` URLs of some of the cluster's nodes
   * (three or more is best); every one with the same scheme and credentials
   * (used for every node discovered), and no database number other than 0.
   *
   * @default {undefined} (one server, at `url`)
   *
   * @example A prefix with braces is refused: the store adds the hash tag
   * ```ts
   * import assert from "node:assert/strict";
   * import { InvalidInputError } from "@mcp-guard/session";
   * import { redisStore } from "@mcp-guard/session/redis";
   *
   * const cluster = { rootNodes: ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"] };
   * assert.equal(redisStore({ cluster, prefix: "my-app:" }).kind, "module");
   * assert.throws(() => redisStore({ cluster, prefix: "{my-app}:" }), InvalidInputError);
   * assert.throws(() => redisStore({ cluster, url: "redis://10.0.0.1:6379" }), InvalidInputError);
   * ```
   */
  cluster?: { rootNodes: string[] };
  /**
   * Prefix of every key and pub/sub channel this store uses (1 to 128
   * visible ASCII characters). Registries that should share state use the
   * same prefix; separate deployments on one server use different ones.
   *
   * @default {"mcp-guard:"}
   */
  prefix?: string;
  /**
   * Owner bindings not used for this long (no `bind`, `authorizeAttach`,
   * `touch` or `unpin`) are dropped; pinned bindings (a live listening
   * stream) never expire. Every owner registry on the store sweeps them
   * about every second (or every quarter of this TTL, when shorter), and
   * each expired binding is announced once to every process sharing the
   * store (`SessionOwnerRegistry.onRemoved`, cause `"expired"`), wherever the
   * session lives. `0`: bindings never expire (only the LRU bounds apply).
   *
   * @default {0}
   */
  idleTtlMs?: number;
  /**
   * Cancellation entries older than this are dropped (the request becomes
   * uncancellable). Bounds what a crashed process leaves behind: its
   * entries are otherwise held until `maxEntries` is reached. `0`: never.
   *
   * @default {0}
   */
  requestTtlMs?: number;
  /**
   * How long one (re)connect attempt may take, and how long the first call
   * waits for the first connection before it fails.
   *
   * @default {2000}
   */
  connectTimeoutMs?: number;
}

/**
 * Validated, defaulted {@linkcode RedisStoreOptions}: plain data for the
 * worker, and valid input again (a derived store re-resolves it with a
 * longer prefix). Exactly one of `url` and `cluster` is set.
 */
export type ResolvedRedisOptions =
  & { prefix: string; idleTtlMs: number; requestTtlMs: number; connectTimeoutMs: number }
  & ({ url: string; cluster?: undefined } | { url?: undefined; cluster: { rootNodes: string[] } });

/** Most root nodes `cluster` takes. */
const MAX_ROOT_NODES = 64;

const PREFIX = /^[\x21-\x7e]{1,128}$/;

/** Every key {@linkcode RedisStoreOptions} has; any other key is a typo. */
const OPTION_KEYS: readonly (keyof RedisStoreOptions)[] = [
  "url",
  "cluster",
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
  const prefix = o.prefix ?? "mcp-guard:";
  if (typeof prefix !== "string" || !PREFIX.test(prefix)) {
    throw new InvalidInputError(
      `redisStore: prefix must be 1 to 128 visible ASCII characters, got ${describe(prefix)}`,
    );
  }
  const rest = {
    prefix,
    idleTtlMs: checkCount("redisStore: idleTtlMs", o.idleTtlMs ?? 0, 0),
    requestTtlMs: checkCount("redisStore: requestTtlMs", o.requestTtlMs ?? 0, 0),
    connectTimeoutMs: checkCount(
      "redisStore: connectTimeoutMs",
      o.connectTimeoutMs ?? 2_000,
      1,
    ),
  };
  if (o.cluster === undefined) {
    const url = o.url ?? "redis://127.0.0.1:6379";
    checkUrl("url", url);
    return { ...rest, url: url as string };
  }
  if (o.url !== undefined) {
    throw new InvalidInputError(
      "redisStore: give url (one server) or cluster (a Redis Cluster), not both",
    );
  }
  checkOptionKeys("redisStore: cluster", o.cluster, ["rootNodes"]);
  const rootNodes = (o.cluster as { rootNodes?: unknown } | undefined)?.rootNodes;
  if (
    !Array.isArray(rootNodes) || rootNodes.length === 0 || rootNodes.length > MAX_ROOT_NODES
  ) {
    throw new InvalidInputError(
      `redisStore: cluster.rootNodes must be an array of 1 to ${MAX_ROOT_NODES} redis:// or ` +
        "rediss:// URLs",
    );
  }
  let first: URL | undefined;
  for (const [i, node] of rootNodes.entries()) {
    const url = checkUrl(`cluster.rootNodes[${i}]`, node);
    if (url.pathname !== "" && url.pathname !== "/" && url.pathname !== "/0") {
      throw new InvalidInputError(
        `redisStore: cluster.rootNodes[${i}] names database ${
          JSON.stringify(url.pathname.slice(1))
        }; a Redis Cluster has only database 0`,
      );
    }
    first ??= url;
    if (
      url.protocol !== first.protocol || url.username !== first.username ||
      url.password !== first.password
    ) {
      throw new InvalidInputError(
        `redisStore: cluster.rootNodes[${i}] differs from cluster.rootNodes[0] in scheme or ` +
          "credentials; every node is reached with the same ones",
      );
    }
  }
  if (prefix.includes("{") || prefix.includes("}")) {
    throw new InvalidInputError(
      `redisStore: with cluster, the prefix may not contain "{" or "}", got ${describe(prefix)}: ` +
        `the store wraps it in a hash tag itself ({${prefix}}) so that all of a registry's ` +
        "keys share one hash slot",
    );
  }
  return { ...rest, cluster: { rootNodes: [...rootNodes as string[]] } };
}

/** The parsed URL, or an `InvalidInputError` naming option `name`. */
function checkUrl(name: string, url: unknown): URL {
  let parsed: URL | null = null;
  try {
    parsed = typeof url === "string" ? new URL(url) : null;
  } catch {
    parsed = null;
  }
  if (parsed === null || (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:")) {
    throw new InvalidInputError(
      `redisStore: ${name} must be a redis:// or rediss:// URL, got ${describe(url, true)}`,
    );
  }
  return parsed;
}

/** The server's URL, or the cluster's root nodes. */
export function serverNodes(opts: ResolvedRedisOptions): string[] {
  return opts.cluster === undefined ? [opts.url] : opts.cluster.rootNodes;
}

/**
 * What every key and channel name of the store starts with: the prefix, in
 * a hash tag (`{<prefix>}`) on a cluster, so that all of them hash to one
 * slot.
 */
export function keyPrefix(opts: ResolvedRedisOptions): string {
  return opts.cluster === undefined ? opts.prefix : `{${opts.prefix}}`;
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
