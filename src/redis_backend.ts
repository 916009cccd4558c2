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
 * run, so the retry applies it once).
 *
 * @module
 */

import { createClient } from "npm:redis@^5.9.0";
import type { Backend, BackendContext } from "./backend.ts";
import { cancelKey } from "./cancel_table.ts";
import type { ResolvedOwnerOptions } from "./owner_table.ts";
import { ARITY, Op } from "./protocol.ts";
import { type ResolvedRedisOptions, resolveRedisOptions, safeUrl } from "./redis_options.ts";
import {
  CANCEL_INVALID,
  CANCEL_SCRIPT,
  CHUNK_OPS,
  OWNER_INVALID,
  OWNER_SCRIPT,
} from "./redis_scripts.ts";
import { isValidFingerprint, isValidRequestId, sanitizeSessionId } from "./validate.ts";

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

  local(value: unknown): void {
    this.steps.push({ value });
  }

  script(decode: Decode, ...argv: string[]): void {
    if (this.#count === CHUNK_OPS) {
      this.chunks.push(this.#current);
      this.#current = [];
      this.#count = 0;
    }
    this.#current.push(...argv);
    this.#count++;
    this.steps.push(decode);
  }

  build(): Plan {
    if (this.#count > 0) this.chunks.push(this.#current);
    return { steps: this.steps, chunks: this.chunks };
  }
}

/** Plans an owner batch; input is validated here exactly as the in-memory table does. */
function planOwner(ops: number[], args: unknown[], shared: Set<string>): Plan {
  const p = new PlanBuilder();
  const flags = (fp: string, pin: boolean) => String((shared.has(fp) ? 1 : 0) + (pin ? 2 : 0));
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Bind:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          p.script(() => "refused", String(OWNER_INVALID));
        } else p.script(bindResult, "1", a as string, b as string, flags(b as string, false));
        break;
      case Op.Attach:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          p.script(() => false, String(OWNER_INVALID));
        } else p.script(bool, "2", a as string, b as string, flags(b as string, c === true));
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

/** Plans a cancellation batch. */
function planCancel(ops: number[], args: unknown[]): Plan {
  const p = new PlanBuilder();
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Register:
        if (
          sanitizeSessionId(a) === null || !isValidRequestId(b) || typeof c !== "string" ||
          c.length === 0
        ) {
          p.script(() => false, String(CANCEL_INVALID));
        } else p.script(bool, "20", a as string, cancelKey(a as string, b as string | number), c);
        break;
      case Op.Deregister:
        if (typeof a !== "string") p.local(false);
        else p.script(bool, "21", a);
        break;
      case Op.Cancel:
        if (sanitizeSessionId(a) === null || !isValidRequestId(b)) p.local(null);
        else {
          const meta = JSON.stringify([a, b, typeof c === "string" ? c : null]);
          p.script(entryId, "22", cancelKey(a as string, b as string | number), meta);
        }
        break;
      case Op.CancelAll:
        if (sanitizeSessionId(a) === null) p.local([]);
        else {
          p.script(entryIds, "23", a as string, JSON.stringify([a, null, str(b)]));
        }
        break;
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

/** Entry point the worker calls (see `CreateBackend` in `src/backend.ts`). */
export async function createBackend(ctx: BackendContext): Promise<Backend> {
  const { init } = ctx;
  const opts = resolveRedisOptions(init.store.kind === "module" ? init.store.options : {});
  const owner = init.registry === "owner";
  const source = owner ? OWNER_SCRIPT : CANCEL_SCRIPT;
  const sha = await sha1(source);
  let head: string[];
  let shared = new Set<string>();
  if (owner) {
    const o = init.options as ResolvedOwnerOptions;
    shared = new Set(o.sharedPrincipals);
    head = [opts.prefix, String(o.maxEntries), String(o.maxPerPrincipal), String(opts.idleTtlMs)];
  } else {
    const o = init.options as { maxEntries: number };
    head = [opts.prefix, String(o.maxEntries), init.instanceId, String(opts.requestTtlMs)];
  }

  const client = makeClient(opts, false);
  const connecting = client.connect();
  connecting.catch(() => {});

  // The cancellation registry listens on its own channel for cancels sent through other
  // processes. node-redis restores the subscription after every reconnect, before the
  // connection counts as ready.
  let subscriber: Client | null = null;
  let subscribed = false;
  let subscribing: Promise<unknown> = Promise.resolve();
  if (!owner) {
    const sub = makeClient(opts, true);
    subscriber = sub;
    sub.connect().catch(() => {});
    const channel = `${opts.prefix}c:ch:${init.instanceId}`;
    subscribing = sub.subscribe(channel, (message: string) => {
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
    }).then(() => subscribed = true, () => {});
  }
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

  return {
    async run(ops, args) {
      const plan = owner ? planOwner(ops, args, shared) : planCancel(ops, args);
      if (
        subscriber !== null && !(subscribed && subscriber.isReady) &&
        ops.includes(Op.Register)
      ) {
        // A request registered now could not be cancelled from another process.
        throw storeError(opts, new Error("cancellation channel not subscribed yet"));
      }
      const raw: unknown[] = [];
      try {
        for (const chunk of plan.chunks) {
          const results = await evalChunk(chunk);
          for (const r of results) raw.push(r);
        }
      } catch (err) {
        throw storeError(opts, err);
      }
      const out = new Array(plan.steps.length);
      for (let i = 0, k = 0; i < plan.steps.length; i++) {
        const step = plan.steps[i];
        out[i] = typeof step === "function" ? step(raw[k++]) : step.value;
      }
      return out;
    },
    close() {
      for (const c of [subscriber, client]) {
        try {
          c?.destroy();
        } catch {
          // already closed
        }
      }
    },
  };
}
