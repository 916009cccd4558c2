/**
 * The Deno KV store descriptor, {@linkcode kvStore}. The backend the worker
 * loads lives in `kv_backend.ts`.
 *
 * @module
 */

import { InvalidInputError } from "../../core/errors.ts";
import { checkOptionKeys } from "../../core/options_check.ts";
import type { RegistryStore } from "../store.ts";
import { checkCount, utf8Length } from "../../core/validate.ts";

/**
 * Longest `prefix`, in UTF-8 bytes. Deno KV refuses keys over 2,048 bytes;
 * the longest key this store builds from input the registries accept (a
 * 256-byte session id, a 1,024-byte request id or fingerprint) plus a
 * prefix this long stays well under it.
 */
export const MAX_KV_PREFIX_BYTES = 64;

/**
 * Options of {@linkcode kvStore}.
 *
 * @example
 * ```ts
 * import { kvStore, type KvStoreOptions } from "@mcp-guard/session";
 *
 * const options: KvStoreOptions = { path: "./sessions.kv", prefix: "my-app" };
 * console.log(kvStore(options).kind); // "module"
 * ```
 */
export interface KvStoreOptions {
  /**
   * The database: a file path (bindings survive restarts; several processes
   * on one host may share the file), `":memory:"` (private to one registry,
   * gone when it closes), or unset for Deno's default database of the
   * running script.
   */
  path?: string;
  /**
   * First part of every key (1 to 64 UTF-8 bytes, no NUL), so several
   * deployments can share one database. Default `"mcp-guard"`.
   */
  prefix?: string;
  /**
   * How often a registry looks for what other processes sent it through the
   * database: cancels of requests it runs (their abort latency), and owner
   * bindings evicted or expired elsewhere (`onRemoved`). Default 100 ms.
   */
  pollIntervalMs?: number;
  /**
   * Owner bindings not used for this long (no `bind`, `authorizeAttach`,
   * `touch` or `unpin`) are gone for every operation; pinned bindings (a
   * live listening stream) never expire. Every owner registry on the
   * database sweeps them about every second (or every quarter of this TTL,
   * when shorter), and each expired binding is announced to every process
   * sharing the database (`SessionOwnerRegistry.onRemoved`, cause
   * `"expired"`). `0` or unset: bindings never expire (only the LRU bounds
   * apply).
   */
  idleTtlMs?: number;
}

/** Validated, defaulted {@linkcode KvStoreOptions}. */
export interface ResolvedKvOptions {
  path: string | null;
  prefix: string;
  pollIntervalMs: number;
  idleTtlMs: number;
}

/** Every key {@linkcode KvStoreOptions} has; any other key is a typo. */
const OPTION_KEYS: readonly (keyof KvStoreOptions)[] = [
  "path",
  "prefix",
  "pollIntervalMs",
  "idleTtlMs",
];

/**
 * Validates and defaults KV options; throws `InvalidInputError` naming the
 * bad option (an unknown key is named with the nearest valid one: `pathh`
 * is a typo, not a default).
 */
export function resolveKvOptions(options: unknown = {}): ResolvedKvOptions {
  // Also refuses anything that is not an options object.
  checkOptionKeys("kvStore", options, OPTION_KEYS);
  const o = options as Record<string, unknown>;
  const path = o.path ?? null;
  if (path !== null && (typeof path !== "string" || path.length === 0 || path.includes("\0"))) {
    throw new InvalidInputError(
      `kvStore: path must be a non-empty file path or ":memory:", got ${describe(path)}`,
    );
  }
  const prefix = o.prefix ?? "mcp-guard";
  if (
    typeof prefix !== "string" || prefix.length === 0 || prefix.includes("\0") ||
    !prefix.isWellFormed() || utf8Length(prefix) > MAX_KV_PREFIX_BYTES
  ) {
    throw new InvalidInputError(
      `kvStore: prefix must be 1 to ${MAX_KV_PREFIX_BYTES} UTF-8 bytes without NUL or unpaired surrogates (so every key fits Deno KV's 2,048-byte key limit), got ${
        describe(prefix)
      }`,
    );
  }
  const pollIntervalMs = checkCount("kvStore: pollIntervalMs", o.pollIntervalMs ?? 100, 1);
  const idleTtlMs = checkCount("kvStore: idleTtlMs", o.idleTtlMs ?? 0, 0);
  return { path, prefix, pollIntervalMs, idleTtlMs };
}

function describe(value: unknown): string {
  if (typeof value !== "string") return String(value);
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}..." (${utf8Length(value)} bytes)` : text;
}

const BACKEND_URL = new URL("./kv_backend.ts", import.meta.url).href;

/**
 * A store that keeps a registry's state in Deno KV (`Deno.openKv`). Pass it
 * as `store` to `SessionOwnerRegistry` and `CancellationRegistry`.
 *
 * - Each operation is one atomic commit guarded by a versionstamp check, so
 *   processes sharing the database file never both claim one id; the bounds
 *   (`maxEntries` LRU, `maxPerPrincipal`, pinned sessions) hold across them.
 * - With a file `path`, bindings survive a restart of the process.
 * - A cancel through another process reaches the process running the
 *   request within `pollIntervalMs`; so does every eviction or idle expiry
 *   (`SessionOwnerRegistry.onRemoved`), whichever process caused it.
 * - Every key fits Deno KV's limits for any input the registries accept:
 *   one caller's odd input never fails another caller's call.
 *
 * Deno 2.9 still needs `--unstable-kv` (or `"unstable": ["kv"]` in
 * `deno.json`), plus `--allow-read --allow-write` for a file: without them
 * the registry's calls reject with `RegistryMisconfiguredError` naming the
 * flag. Throws `InvalidInputError` naming a bad or unknown option.
 *
 * @example
 * ```ts
 * import { kvStore } from "@mcp-guard/session";
 *
 * const store = kvStore({ path: "./sessions.kv" });
 * console.log(store.kind); // "module"
 * ```
 */
export function kvStore(options: KvStoreOptions = {}): RegistryStore {
  return { kind: "module", url: BACKEND_URL, options: resolveKvOptions(options) };
}
