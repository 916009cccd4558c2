/**
 * The Redis store backend's connections: how a worker's connection to one
 * server or to a Redis Cluster is made (no offline queue for commands,
 * reconnect forever in the background), the net-permission check done
 * before any connection attempt, and the errors a failed batch or
 * operation surfaces with.
 *
 * @module
 */

import { createClient, createCluster } from "npm:redis@^6.4.0";
import { OpFailure } from "../backend.ts";
import { RegistryMisconfiguredError } from "../../core/errors.ts";
import { type ResolvedRedisOptions, safeUrl, serverNodes } from "./redis_options.ts";

/**
 * A worker's connection: one node-redis client for a single server, or a
 * cluster client. Every key and channel of one registry hashes to one slot,
 * so everything it sends goes to one node (the one serving `key`).
 */
export interface Connection {
  /** Sends one command to the node that serves `key`. */
  send(key: string, args: string[]): Promise<unknown>;
  /**
   * Listens on `channel`: plain pub/sub on a single server, sharded pub/sub
   * (`SSUBSCRIBE`, on the node serving the channel's slot) on a cluster.
   * Restored by the client after every reconnect.
   */
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  /** Whether commands can be sent now. */
  readonly isReady: boolean;
  /** Settles once connected; never rejects (it keeps trying in the background). */
  readonly connected: Promise<void>;
  /** Closes at once; pending commands fail. */
  destroy(): void;
}

/**
 * No Redis Enterprise maintenance notifications (node-redis 6 asks for them
 * by default): the handshake would cost a command on every connection, and
 * the client reads environment variables for it, which a store that only
 * needs `--allow-net` may not do.
 */
const MAINT = "disabled" as const;

/** Reconnect backoff: 20 ms doubling to 1 s, forever. */
const backoff = (retries: number) => Math.min(20 * 2 ** Math.min(retries, 10), 1_000);

/**
 * A connection for `opts` (connecting in the background). With
 * `offlineQueue` false, commands fail at once while the connection is down
 * instead of waiting for it; either way it reconnects in the background,
 * forever.
 */
export function connect(opts: ResolvedRedisOptions, offlineQueue: boolean): Connection {
  return opts.cluster === undefined
    ? single(opts.url, opts, offlineQueue)
    : cluster(opts.cluster.rootNodes, opts, offlineQueue);
}

function single(url: string, opts: ResolvedRedisOptions, offlineQueue: boolean): Connection {
  const client = createClient({
    url,
    disableOfflineQueue: !offlineQueue,
    // No client-side command deadline (node-redis 6 defaults to 5 s): a hung server is caught
    // by the registry's `callTimeoutMs`, which restarts the worker and so the connection.
    commandOptions: { timeout: undefined },
    maintNotifications: MAINT,
    socket: { connectTimeout: opts.connectTimeoutMs, reconnectStrategy: backoff },
  });
  // An unhandled 'error' event would throw inside the worker; failures surface per batch instead.
  client.on("error", () => {});
  // The client retries on its own after a failed first attempt.
  const connected = client.connect().then(() => {}, () => {});
  return {
    send: (_key, args) => client.sendCommand(args),
    subscribe: (channel, listener) => client.subscribe(channel, listener),
    get isReady() {
      return client.isReady;
    },
    connected,
    destroy: () => client.destroy(),
  };
}

function cluster(
  rootNodes: string[],
  opts: ResolvedRedisOptions,
  offlineQueue: boolean,
): Connection {
  // Credentials and TLS come from the root nodes' URLs (validated to agree) and apply to every
  // node the client discovers, not only to the root nodes.
  const first = new URL(rootNodes[0]);
  const client = createCluster({
    rootNodes: rootNodes.map((url) => ({ url })),
    defaults: {
      ...(first.username === "" ? {} : { username: decodeURIComponent(first.username) }),
      ...(first.password === "" ? {} : { password: decodeURIComponent(first.password) }),
      disableOfflineQueue: !offlineQueue,
      maintNotifications: MAINT,
      socket: {
        connectTimeout: opts.connectTimeoutMs,
        reconnectStrategy: backoff,
        ...(first.protocol === "rediss:" ? { tls: true as const } : {}),
      },
    },
    commandOptions: { timeout: undefined }, // as for one server: `callTimeoutMs` decides
    // The subscriber needs no connection to every master, only to its channel's.
    minimizeConnections: offlineQueue,
  });
  client.on("error", () => {});
  let closed = false;
  // A cluster client gives up when no root node answers its first discovery: retry until one
  // does (calls fail meanwhile), as a single server's client does on its own.
  const connected = (async () => {
    for (let attempt = 0; !closed; attempt++) {
      try {
        await client.connect();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, backoff(attempt)));
      }
    }
  })();
  return {
    async send(key, args) {
      if (!client.isReady) throw new Error("Redis Cluster not connected yet");
      return await client.sendCommand(key, false, args);
    },
    async subscribe(channel, listener) {
      await connected;
      if (closed) throw new Error("closed");
      await client.sSubscribe(channel, listener);
    },
    get isReady() {
      return client.isReady;
    },
    connected,
    destroy() {
      closed = true;
      if (client.isOpen) client.destroy();
    },
  };
}

/**
 * Fails fast, before any connection attempt, when this process may not
 * connect to the server (each root node, for a cluster): without the
 * permission every attempt would fail and be retried forever, which looks
 * like an outage but is configuration.
 */
export async function checkNetPermission(opts: ResolvedRedisOptions): Promise<void> {
  for (const node of serverNodes(opts)) {
    const url = new URL(node);
    const host = `${url.hostname}:${url.port === "" ? "6379" : url.port}`;
    let state: Deno.PermissionState;
    try {
      ({ state } = await Deno.permissions.query({ name: "net", host }));
    } catch {
      continue; // a host the permission API cannot parse: let the connection attempt tell
    }
    if (state === "granted") continue;
    throw new RegistryMisconfiguredError(
      `${describeServer(opts)}: this process lacks the net permission for ${host}; ` +
        `run it with --allow-net=${host} (or a broader --allow-net)`,
    );
  }
}

/** `Redis store <url>` or `Redis Cluster store <root nodes>`, without credentials. */
export function describeServer(opts: ResolvedRedisOptions): string {
  return opts.cluster === undefined
    ? `Redis store ${safeUrl(opts.url)}`
    : `Redis Cluster store ${opts.cluster.rootNodes.map(safeUrl).join(", ")}`;
}

/** The error a whole batch fails with when the server cannot be reached. */
export function storeError(opts: ResolvedRedisOptions, cause: unknown): Error {
  const detail = cause instanceof Error ? cause.message || cause.name : String(cause);
  const err = new Error(`${describeServer(opts)} unavailable: ${detail}`);
  err.name = "RedisStoreError";
  return err;
}

/** A Redis error one operation raised inside the script; the other operations stand. */
export function opError(opts: ResolvedRedisOptions, message: unknown): OpFailure {
  const err = new Error(`${describeServer(opts)} failed the operation: ${message}`);
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
