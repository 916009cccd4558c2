/**
 * The Redis store backend's connections: how a worker's clients are made
 * (no offline queue for commands, reconnect forever in the background), the
 * net-permission check done before any connection attempt, and the errors a
 * failed batch or operation surfaces with.
 *
 * @module
 */

import { createClient } from "npm:redis@^6.4.0";
import { OpFailure } from "../backend.ts";
import { RegistryMisconfiguredError } from "../../core/errors.ts";
import { type ResolvedRedisOptions, safeUrl } from "./redis_options.ts";

/** One node-redis client. */
export type Client = ReturnType<typeof makeClient>;

/**
 * No Redis Enterprise maintenance notifications (node-redis 6 asks for them
 * by default): the handshake would cost a command on every connection, and
 * the client reads environment variables for it, which a store that only
 * needs `--allow-net` may not do.
 */
const MAINT = "disabled" as const;

/**
 * A client for `opts.url` (not connected yet). With `offlineQueue` false,
 * commands fail at once while the connection is down instead of waiting for
 * it; either way it reconnects in the background, forever.
 */
export function makeClient(opts: ResolvedRedisOptions, offlineQueue: boolean) {
  const client = createClient({
    url: opts.url,
    disableOfflineQueue: !offlineQueue,
    // No client-side command deadline (node-redis 6 defaults to 5 s): a hung server is caught
    // by the registry's `callTimeoutMs`, which restarts the worker and so the connection.
    commandOptions: { timeout: undefined },
    maintNotifications: MAINT,
    socket: {
      connectTimeout: opts.connectTimeoutMs,
      // Retry forever, quickly at first: calls fail fast meanwhile (no offline queue).
      reconnectStrategy: (retries: number) => Math.min(20 * 2 ** Math.min(retries, 10), 1_000),
    },
  });
  // An unhandled 'error' event would throw inside the worker; failures surface per batch instead.
  client.on("error", () => {});
  return client;
}

/**
 * Fails fast, before any connection attempt, when this process may not
 * connect to the server: without the permission every attempt would fail
 * and be retried forever, which looks like an outage but is configuration.
 */
export async function checkNetPermission(opts: ResolvedRedisOptions): Promise<void> {
  const url = new URL(opts.url);
  const host = `${url.hostname}:${url.port === "" ? "6379" : url.port}`;
  let state: Deno.PermissionState;
  try {
    ({ state } = await Deno.permissions.query({ name: "net", host }));
  } catch {
    return; // a host the permission API cannot parse: let the connection attempt tell
  }
  if (state === "granted") return;
  throw new RegistryMisconfiguredError(
    `Redis store ${safeUrl(opts.url)}: this process lacks the net permission for ${host}; ` +
      `run it with --allow-net=${host} (or a broader --allow-net)`,
  );
}

/** The error a whole batch fails with when the server cannot be reached. */
export function storeError(opts: ResolvedRedisOptions, cause: unknown): Error {
  const detail = cause instanceof Error ? cause.message || cause.name : String(cause);
  const err = new Error(`Redis store ${safeUrl(opts.url)} unavailable: ${detail}`);
  err.name = "RedisStoreError";
  return err;
}

/** A Redis error one operation raised inside the script; the other operations stand. */
export function opError(opts: ResolvedRedisOptions, message: unknown): OpFailure {
  const err = new Error(`Redis store ${safeUrl(opts.url)} failed the operation: ${message}`);
  err.name = "RedisStoreError";
  return new OpFailure(err);
}

/** Waits for `promise` at most `ms`; never rejects. */
export async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
  try {
    await Promise.race([promise.then(() => {}, () => {}), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The hex SHA-1 of `text`: the name `EVALSHA` knows a script by. */
export async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
