/**
 * The Deno KV store descriptor, {@linkcode kvStore}. The backend the worker
 * loads lives in `kv_backend.ts`.
 *
 * @module
 */

import { InvalidInputError } from "./errors.ts";
import type { RegistryStore } from "./store.ts";
import { checkCount } from "./validate.ts";

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
   * First part of every key (1 to 64 characters), so several deployments
   * can share one database. Default `"mcp-guard"`.
   */
  prefix?: string;
  /**
   * How often a cancellation registry looks for cancels sent through another
   * process (their abort latency). Default 100 ms.
   */
  pollIntervalMs?: number;
}

/** Validated, defaulted {@linkcode KvStoreOptions}. */
export interface ResolvedKvOptions {
  path: string | null;
  prefix: string;
  pollIntervalMs: number;
}

/** Validates and defaults KV options; throws `InvalidInputError` naming the bad option. */
export function resolveKvOptions(options: unknown = {}): ResolvedKvOptions {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new InvalidInputError("kvStore: options must be an object");
  }
  const o = options as Record<string, unknown>;
  const path = o.path ?? null;
  if (path !== null && (typeof path !== "string" || path.length === 0 || path.includes("\0"))) {
    throw new InvalidInputError(
      `kvStore: path must be a non-empty file path or ":memory:", got ${describe(path)}`,
    );
  }
  const prefix = o.prefix ?? "mcp-guard";
  if (typeof prefix !== "string" || prefix.length === 0 || prefix.length > 64) {
    throw new InvalidInputError(
      `kvStore: prefix must be a string of 1 to 64 characters, got ${describe(prefix)}`,
    );
  }
  const pollIntervalMs = checkCount("kvStore: pollIntervalMs", o.pollIntervalMs ?? 100, 1);
  return { path, prefix, pollIntervalMs };
}

function describe(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
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
 *   request within `pollIntervalMs`.
 *
 * Deno 2.9 still needs `--unstable-kv` (or `"unstable": ["kv"]` in
 * `deno.json`), plus `--allow-read --allow-write` for a file. Throws
 * `InvalidInputError` naming a bad option.
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
