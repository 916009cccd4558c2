/**
 * The Redis store backend, loaded by a registry's worker (see
 * `redisStore` in `redis.ts`). It owns the worker's Redis connections and
 * turns each batch into one script call per {@linkcode CHUNK_OPS} operations:
 * one round trip for a whole tick of calls, each operation atomic across
 * every process sharing the server. A batch of owner lookups alone (the
 * guard's owner check) skips the owner script: a plain `HMGET`, or a small
 * read-only script with idle expiry (`owner_read.ts`).
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
 * Parts: batch planning and input validation in `redis_plan.ts`, client
 * setup and errors in `redis_connection.ts`, the channel listeners in
 * `redis_events.ts`; this module runs the script calls.
 *
 * @module
 */

import type { Backend, BackendContext } from "../backend.ts";
import type { ResolvedOwnerOptions } from "../../core/owner_table.ts";
import { Op, type RemovalCause } from "../../core/operations.ts";
import { keyPrefix, resolveRedisOptions } from "./redis_options.ts";
import { CANCEL_CLOSE, OWNER_SWEEP, ownerScript } from "./redis_scripts.ts";
import { cancelScript } from "./cancel_script.ts";
import { planCancel, planOwner, planResults } from "./redis_plan.ts";
import { onlyOwnerLookups, OWNER_READ_SCRIPT, ownerIn, planLookups } from "./owner_read.ts";
import {
  checkNetPermission,
  connect,
  opError,
  sha1,
  storeError,
  waitAtMost,
} from "./redis_connection.ts";
import { subscribeEvents } from "./redis_events.ts";

export { MAX_REASON_LENGTH } from "./redis_plan.ts";

/** Most idle-expired bindings one periodic sweep drops (besides the per-call sweep). */
const SWEEP_LIMIT = 500;

/** The periodic sweep runs at least this often (or every quarter of `idleTtlMs`). */
const SWEEP_MS = 1_000;

/** Entry point the worker calls (see `CreateBackend` in `src/backend.ts`). */
export async function createBackend(ctx: BackendContext): Promise<Backend> {
  const { init } = ctx;
  const opts = resolveRedisOptions(init.store.kind === "module" ? init.store.options : {});
  await checkNetPermission(opts);
  const owner = init.registry === "owner";
  const clustered = opts.cluster !== undefined;
  // Every key and channel starts with `P`: `{prefix}` on a cluster, so all share one slot.
  const P = keyPrefix(opts);
  const publish = clustered ? "SPUBLISH" : "PUBLISH";
  const source = owner ? ownerScript(publish) : cancelScript(publish);
  const sha = await sha1(source);
  // The one key each call declares: the cluster client routes the call by it.
  const routeKey = `${P}${owner ? "o" : "c"}:meta`;
  let head: string[];
  let shared = new Set<string>();
  if (owner) {
    const o = init.options as ResolvedOwnerOptions;
    shared = new Set(o.sharedPrincipals);
    head = [
      P,
      String(o.maxEntries),
      String(o.maxPerPrincipal),
      String(opts.idleTtlMs),
      init.instanceId,
      String(o.maxPerSharedPrincipal),
      o.capByFirstWord === true ? "1" : "0",
    ];
  } else {
    const o = init.options as { maxEntries: number };
    head = [P, String(o.maxEntries), init.instanceId, String(opts.requestTtlMs)];
  }

  const client = connect(opts, false);

  // Every registry listens on a channel (see `redis_events.ts`).
  const sub = connect(opts, true);
  const subscription = subscribeEvents(sub, P, ctx);
  await waitAtMost(Promise.all([client.connected, subscription.settled]), opts.connectTimeoutMs);

  /** Runs `script` (known by `hash`) with one key, `key`, and `argv`. */
  const evalScript = async (
    script: string,
    hash: string,
    key: string,
    argv: string[],
  ): Promise<unknown[]> => {
    try {
      return await client.send(key, ["EVALSHA", hash, "1", key, ...argv]) as unknown[];
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      // The script did not run; EVAL runs it once and caches it for the next EVALSHA (on that
      // node: each node of a cluster has its own script cache).
      return await client.send(key, ["EVAL", script, "1", key, ...argv]) as unknown[];
    }
  };
  const evalChunk = (argv: string[]) => evalScript(source, sha, routeKey, [...head, ...argv]);

  // A batch of owner lookups only (the guard's owner check): a plain HMGET without idle
  // expiry, else a small read-only script; the owner script's answers (see `owner_read.ts`).
  const own = `${P}o:own`;
  const readSha = owner && opts.idleTtlMs > 0 ? await sha1(OWNER_READ_SCRIPT) : "";
  const lookUp = async (args: unknown[]): Promise<unknown[]> => {
    const plan = planLookups(args);
    const raw: unknown[] = [];
    for (const sids of plan.chunks) {
      if (opts.idleTtlMs === 0) {
        const reply = await client.send(own, ["HMGET", own, ...sids]) as unknown[];
        for (const v of reply) {
          if (typeof v !== "string") raw.push(null);
          else {
            const fp = ownerIn(v);
            raw.push(fp ?? opError(opts, `mcp-guard: malformed binding ${v}`));
          }
        }
      } else {
        const argv = [P, String(opts.idleTtlMs), ...sids];
        const reply = await evalScript(OWNER_READ_SCRIPT, readSha, own, argv) as unknown[][];
        const base = raw.length;
        for (const r of reply[0]) raw.push(typeof r === "string" ? r : null);
        const failed = reply[1];
        for (let k = 0; k + 1 < failed.length; k += 2) {
          raw[base + Number(failed[k]) - 1] = opError(opts, failed[k + 1]);
        }
      }
    }
    return plan.index.map((k) => k === null ? null : raw[k]);
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
      if (owner && onlyOwnerLookups(ops)) {
        try {
          return await lookUp(args);
        } catch (err) {
          throw storeError(opts, err);
        }
      }
      const plan = owner ? planOwner(ops, args, shared) : planCancel(ops, args);
      if (!owner && !(subscription.subscribed && sub.isReady) && ops.includes(Op.Register)) {
        // A request registered now could not be cancelled from another process.
        throw storeError(opts, new Error("cancellation channel not subscribed yet"));
      }
      let raw: unknown[];
      try {
        raw = await runChunks(plan.chunks);
      } catch (err) {
        throw storeError(opts, err);
      }
      return planResults(plan, raw);
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
