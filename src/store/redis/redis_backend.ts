/**
 * The Redis store backend, loaded by a registry's worker (see
 * `redisStore` in `redis.ts`). It owns the worker's Redis connections and
 * turns each batch into one script call per {@linkcode CHUNK_OPS} operations:
 * one round trip for a whole tick of calls, each operation atomic across
 * every process sharing the server.
 *
 * Failure: commands are never queued while the connection is down
 * (`disableOfflineQueue`), so a batch fails at once and the facade rejects
 * its calls with `RegistryUnavailableError`; the client reconnects in the
 * background and later batches succeed. A script the server forgot (a
 * restart, `SCRIPT FLUSH`) is re-sent in full (`NOSCRIPT` means it did not
 * run, so the retry applies it once). One operation's failure never fails
 * another of the same batch: input is validated before it is sent (invalid
 * input gets its fail-closed answer), and an error one operation raises
 * inside the script fails that operation alone (`OpFailure`); only losing
 * the connection fails a whole batch. A process without the net permission
 * for the server fails at once with `RegistryMisconfiguredError`.
 *
 * Removals: every binding the owner script evicts or idle-expires is
 * published on `<prefix>o:ev`; every owner backend subscribes and reports
 * it to its facade (this process's own removals come straight from the
 * script's answer). With `idleTtlMs`, a timer sweeps expired bindings even
 * when nobody touches them. A cancellation backend that closes drops the
 * entries its instance registered.
 *
 * @module
 */

import { createClient } from "npm:redis@^5.9.0";
import { type Backend, type BackendContext, OpFailure } from "../backend.ts";
import { cancelKey } from "../../core/cancel_table.ts";
import { InvalidInputError, RegistryMisconfiguredError } from "../../core/errors.ts";
import type { ResolvedOwnerOptions } from "../../core/owner_table.ts";
import { ARITY, Op, type RemovalCause } from "../../actor/protocol.ts";
import { type ResolvedRedisOptions, resolveRedisOptions, safeUrl } from "./redis_options.ts";
import {
  CANCEL_CLOSE,
  CANCEL_INVALID,
  CHUNK_OPS,
  OWNER_INVALID,
  OWNER_SCRIPT,
  OWNER_SWEEP,
  REMOVED_CHANNEL,
} from "./redis_scripts.ts";
import { CANCEL_SCRIPT } from "./cancel_script.ts";
import { isValidFingerprint, isValidRequestId, sanitizeSessionId } from "../../core/validate.ts";

type Client = ReturnType<typeof createClient>;

/** Decodes one script result into the facade's result for that op. */
type Decode = (raw: unknown) => unknown;

/** One batch prepared for the script: the script ops, and how to fill each result. */
interface Plan {
  /** Per batch op: a ready result, or a decoder of the script's next result. */
  steps: ({ value: unknown } | Decode)[];
  /** Script ARGV tail per chunk (op codes and arguments). */
  chunks: string[][];
}

/**
 * Longest cancel reason forwarded to other processes, in characters. A longer
 * one fails that `cancel` alone with `InvalidInputError` (the HTTP guard
 * forwards at most 200 characters).
 */
export const MAX_REASON_LENGTH = 65_536;

/** Longest entry id accepted (the facade's are about 40 characters). */
const MAX_ENTRY_ID_LENGTH = 1_024;

/** Most argument characters one script call carries, so no call grows unbounded. */
const CHUNK_CHARS = 4 * 1024 * 1024;

/** Most idle-expired bindings one periodic sweep drops (besides the per-call sweep). */
const SWEEP_LIMIT = 500;

/** The periodic sweep runs at least this often (or every quarter of `idleTtlMs`). */
const SWEEP_MS = 1_000;

const BIND_RESULT = ["refused", "bound", "full"] as const;
const bool: Decode = (raw) => raw === 1;
const num: Decode = (raw) => Number(raw);
const ownerOf: Decode = (raw) => (typeof raw === "string" ? raw : null);
const bindResult: Decode = (raw) => BIND_RESULT[raw as number] ?? "refused";
const ownerStats: Decode = (raw) => {
  const [size, pinned, evictions, refusals, claims, invalid, full] = (raw as number[]).map(Number);
  return { size, pinned, evictions, refusals, claims, invalid, full, restarts: 0 };
};
const cancelStats: Decode = (raw) => {
  const [size, registered, ignored, displaced, cancelled] = (raw as number[]).map(Number);
  return { size, registered, ignored, displaced, cancelled, restarts: 0 };
};
const entryId: Decode = (raw) => (typeof raw === "string" ? raw : null);
const entryIds: Decode = (raw) => (Array.isArray(raw) ? raw.map(String) : []);

class PlanBuilder {
  readonly steps: Plan["steps"] = [];
  readonly chunks: string[][] = [];
  #current: string[] = [];
  #count = 0;
  #chars = 0;

  local(value: unknown): void {
    this.steps.push({ value });
  }

  script(decode: Decode, ...argv: string[]): void {
    let chars = 0;
    for (const a of argv) chars += a.length;
    if (this.#count === CHUNK_OPS || (this.#count > 0 && this.#chars + chars > CHUNK_CHARS)) {
      this.chunks.push(this.#current);
      this.#current = [];
      this.#count = 0;
      this.#chars = 0;
    }
    this.#current.push(...argv);
    this.#count++;
    this.#chars += chars;
    this.steps.push(decode);
  }

  build(): Plan {
    if (this.#count > 0) this.chunks.push(this.#current);
    return { steps: this.steps, chunks: this.chunks };
  }
}

/**
 * Plans an owner batch. Input is validated here exactly as the in-memory
 * table does, before anything is sent: invalid input becomes that op's
 * fail-closed answer and never reaches (or fails) the script.
 */
function planOwner(ops: number[], args: unknown[], shared: Set<string>): Plan {
  const p = new PlanBuilder();
  const flags = (fp: string, exempt: boolean, pin: boolean) =>
    String((exempt || shared.has(fp) ? 1 : 0) + (pin ? 2 : 0));
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Bind:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          p.script(() => "refused", String(OWNER_INVALID));
        } else p.script(bindResult, "1", a as string, b, flags(b, c === true, false));
        break;
      case Op.Attach:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          p.script(() => false, String(OWNER_INVALID));
        } else p.script(bool, "2", a as string, b, flags(b, false, c === true));
        break;
      case Op.Touch:
        // Never counted: a touch that finds nothing of the caller's is not a refusal.
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) p.local(false);
        else p.script(bool, "9", a as string, b);
        break;
      case Op.Forget:
        if (sanitizeSessionId(a) === null || (b !== undefined && !isValidFingerprint(b))) {
          p.script(() => false, String(OWNER_INVALID));
        } else p.script(bool, "3", a as string, b === undefined ? "" : b as string);
        break;
      case Op.OwnerOf:
        if (sanitizeSessionId(a) === null) p.local(null);
        else p.script(ownerOf, "4", a as string);
        break;
      case Op.Pin:
      case Op.Unpin:
        if (sanitizeSessionId(a) === null) p.local(false);
        else p.script(bool, ops[i] === Op.Pin ? "5" : "6", a as string);
        break;
      case Op.OwnerSize:
        p.script(num, "7");
        break;
      default:
        p.script(ownerStats, "8");
    }
    at += ARITY[ops[i]];
  }
  return p.build();
}

/** A cancel reason the store cannot forward fails that op alone. */
function reasonTooLong(reason: unknown): OpFailure | null {
  if (typeof reason !== "string" || reason.length <= MAX_REASON_LENGTH) return null;
  return new OpFailure(
    new InvalidInputError(
      `cancel reason is ${reason.length} characters; the Redis store forwards at most ${MAX_REASON_LENGTH}`,
    ),
  );
}

/** Plans a cancellation batch, validating input as {@linkcode planOwner} does. */
function planCancel(ops: number[], args: unknown[]): Plan {
  const p = new PlanBuilder();
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Register:
        if (
          sanitizeSessionId(a) === null || !isValidRequestId(b) || typeof c !== "string" ||
          c.length === 0 || c.length > MAX_ENTRY_ID_LENGTH
        ) {
          p.script(() => false, String(CANCEL_INVALID));
        } else p.script(bool, "20", a as string, cancelKey(a as string, b), c);
        break;
      case Op.Deregister:
        if (typeof a !== "string" || a.length === 0 || a.length > MAX_ENTRY_ID_LENGTH) {
          p.local(false);
        } else p.script(bool, "21", a);
        break;
      case Op.Cancel: {
        const tooLong = reasonTooLong(c);
        if (tooLong !== null) p.local(tooLong);
        else if (sanitizeSessionId(a) === null || !isValidRequestId(b)) p.local(null);
        else {
          const meta = JSON.stringify([a, b, str(c)]);
          p.script(entryId, "22", cancelKey(a as string, b), meta);
        }
        break;
      }
      case Op.CancelAll: {
        const tooLong = reasonTooLong(b);
        if (tooLong !== null) p.local(tooLong);
        else if (sanitizeSessionId(a) === null) p.local([]);
        else p.script(entryIds, "23", a as string, JSON.stringify([a, null, str(b)]));
        break;
      }
      case Op.CancelSize:
        p.script(num, "24");
        break;
      default:
        p.script(cancelStats, "25");
    }
    at += ARITY[ops[i]];
  }
  return p.build();
}

function str(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function storeError(opts: ResolvedRedisOptions, cause: unknown): Error {
  const detail = cause instanceof Error ? cause.message || cause.name : String(cause);
  const err = new Error(`Redis store ${safeUrl(opts.url)} unavailable: ${detail}`);
  err.name = "RedisStoreError";
  return err;
}

/** Waits for `promise` at most `ms`; never rejects. */
async function waitAtMost(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
  try {
    await Promise.race([promise.then(() => {}, () => {}), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function makeClient(opts: ResolvedRedisOptions, offlineQueue: boolean): Client {
  const client = createClient({
    url: opts.url,
    disableOfflineQueue: !offlineQueue,
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
async function checkNetPermission(opts: ResolvedRedisOptions): Promise<void> {
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

/** A Redis error one operation raised inside the script; the other operations stand. */
function opError(opts: ResolvedRedisOptions, message: unknown): OpFailure {
  const err = new Error(`Redis store ${safeUrl(opts.url)} failed the operation: ${message}`);
  err.name = "RedisStoreError";
  return new OpFailure(err);
}

/** Reads a published removal event; `null` when the message is not one. */
function parseRemoved(
  message: string,
): { cause: RemovalCause; sessionIds: string[]; from: unknown } | null {
  try {
    const event = JSON.parse(message);
    const cause = event?.cause;
    if ((cause !== "evicted" && cause !== "expired") || !Array.isArray(event.sessionIds)) {
      return null;
    }
    // cjson encodes an empty array as {}: never published, but never trusted either.
    return { cause, sessionIds: event.sessionIds.map(String), from: event.from };
  } catch {
    return null; // not ours (someone published garbage on the channel)
  }
}

/** Entry point the worker calls (see `CreateBackend` in `src/backend.ts`). */
export async function createBackend(ctx: BackendContext): Promise<Backend> {
  const { init } = ctx;
  const opts = resolveRedisOptions(init.store.kind === "module" ? init.store.options : {});
  await checkNetPermission(opts);
  const owner = init.registry === "owner";
  const source = owner ? OWNER_SCRIPT : CANCEL_SCRIPT;
  const sha = await sha1(source);
  let head: string[];
  let shared = new Set<string>();
  if (owner) {
    const o = init.options as ResolvedOwnerOptions;
    shared = new Set(o.sharedPrincipals);
    head = [
      opts.prefix,
      String(o.maxEntries),
      String(o.maxPerPrincipal),
      String(opts.idleTtlMs),
      init.instanceId,
    ];
  } else {
    const o = init.options as { maxEntries: number };
    head = [opts.prefix, String(o.maxEntries), init.instanceId, String(opts.requestTtlMs)];
  }

  const client = makeClient(opts, false);
  const connecting = client.connect();
  connecting.catch(() => {});

  // Every registry listens on a channel: the cancellation registry on its own, for cancels
  // sent through other processes; the owner registry on the store's, for bindings evicted
  // or expired by any process (the session may live here). node-redis restores the
  // subscription after every reconnect, before the connection counts as ready.
  const sub = makeClient(opts, true);
  sub.connect().catch(() => {});
  let subscribed = false;
  let subscribing: Promise<unknown>;
  if (owner) {
    subscribing = sub.subscribe(`${opts.prefix}${REMOVED_CHANNEL}`, (message: string) => {
      const event = parseRemoved(message);
      // This instance's own removals were emitted from the script's answer already.
      if (event === null || event.from === init.instanceId || event.sessionIds.length === 0) {
        return;
      }
      ctx.emit({ kind: "removed", cause: event.cause, sessionIds: event.sessionIds });
    });
  } else {
    subscribing = sub.subscribe(`${opts.prefix}c:ch:${init.instanceId}`, (message: string) => {
      const nl = message.indexOf("\n");
      try {
        const [sessionId, requestId, reason] = JSON.parse(message.slice(0, nl));
        const ids = JSON.parse(message.slice(nl + 1));
        if (!Array.isArray(ids) || typeof sessionId !== "string") return;
        ctx.emit({
          kind: "abort",
          entryIds: ids.map(String),
          sessionId,
          requestId: typeof requestId === "string" || typeof requestId === "number"
            ? requestId
            : null,
          ...(typeof reason === "string" ? { reason } : {}),
        });
      } catch {
        // Not ours (someone published garbage on our channel): ignore.
      }
    });
  }
  subscribing = subscribing.then(() => subscribed = true, () => {});
  await waitAtMost(Promise.all([connecting, subscribing]), opts.connectTimeoutMs);

  const evalChunk = async (argv: string[]): Promise<unknown[]> => {
    const all = [...head, ...argv];
    try {
      return await client.sendCommand(["EVALSHA", sha, "0", ...all]) as unknown[];
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      // The script did not run; EVAL runs it once and caches it for the next EVALSHA.
      return await client.sendCommand(["EVAL", source, "0", ...all]) as unknown[];
    }
  };

  /**
   * Runs the chunks in order. Returns one raw result per script op (an
   * `OpFailure` for an op that raised an error) and, for the owner script,
   * announces the bindings the calls evicted or expired to this process (the
   * script published them to the others).
   */
  const runChunks = async (chunks: string[][]): Promise<unknown[]> => {
    const raw: unknown[] = [];
    const gone: Record<RemovalCause, string[]> = { evicted: [], expired: [] };
    try {
      for (const chunk of chunks) {
        const reply = await evalChunk(chunk) as unknown[][];
        const base = raw.length;
        for (const r of reply[0]) raw.push(r);
        const failed = reply[1];
        for (let k = 0; k + 1 < failed.length; k += 2) {
          raw[base + Number(failed[k]) - 1] = opError(opts, failed[k + 1]);
        }
        if (owner) {
          for (const sid of reply[2]) gone.evicted.push(String(sid));
          for (const sid of reply[3]) gone.expired.push(String(sid));
        }
      }
    } finally {
      // Whatever applied before a failure was published to the others: tell this process too.
      for (const cause of ["evicted", "expired"] as const) {
        if (gone[cause].length > 0) {
          ctx.emit({ kind: "removed", cause, sessionIds: gone[cause] });
        }
      }
    }
    return raw;
  };

  // Idle expiry needs nobody to look: sweep on a timer. Each sweep is one atomic script
  // call, so processes sweeping at once each drop (and announce) a binding at most once.
  let timer: ReturnType<typeof setInterval> | undefined;
  if (owner && opts.idleTtlMs > 0) {
    let sweeping = false;
    timer = setInterval(() => {
      if (sweeping || !client.isReady) return;
      sweeping = true;
      runChunks([[String(OWNER_SWEEP), String(SWEEP_LIMIT)]])
        .catch(() => {}) // unreachable now: the next tick tries again
        .finally(() => sweeping = false);
    }, Math.max(10, Math.min(SWEEP_MS, Math.floor(opts.idleTtlMs / 4))));
    Deno.unrefTimer(timer);
  }

  return {
    async run(ops, args) {
      const plan = owner ? planOwner(ops, args, shared) : planCancel(ops, args);
      if (!owner && !(subscribed && sub.isReady) && ops.includes(Op.Register)) {
        // A request registered now could not be cancelled from another process.
        throw storeError(opts, new Error("cancellation channel not subscribed yet"));
      }
      let raw: unknown[];
      try {
        raw = await runChunks(plan.chunks);
      } catch (err) {
        throw storeError(opts, err);
      }
      const out = new Array(plan.steps.length);
      for (let i = 0, k = 0; i < plan.steps.length; i++) {
        const step = plan.steps[i];
        if (typeof step !== "function") out[i] = step.value;
        else {
          const r = raw[k++];
          out[i] = r instanceof OpFailure ? r : step(r);
        }
      }
      return out;
    },
    async close() {
      clearInterval(timer);
      if (!owner && client.isReady) {
        // Nobody will abort this instance's requests any more: a cancel sent through another
        // process must not find them. One atomic call; if Redis cannot be reached now,
        // `requestTtlMs` (when set) drops them later.
        await waitAtMost(evalChunk([String(CANCEL_CLOSE)]), opts.connectTimeoutMs);
      }
      for (const c of [sub, client]) {
        try {
          c.destroy();
        } catch {
          // already closed
        }
      }
    },
  };
}
