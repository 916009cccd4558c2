/**
 * The Deno KV store backend, loaded by a registry's worker (see
 * {@linkcode kvStore}): `createBackend` opens the database and runs batches
 * against the owner store (`kv_owner_store.ts`) or the cancellation store
 * (`kv_cancel_store.ts`).
 *
 * Every operation is one optimistic transaction (`kv_tx.ts`): it reads what
 * it needs, then commits its writes in one atomic operation checked against
 * the versionstamp of the registry's `meta` record. Every write also
 * rewrites `meta`, so a commit succeeds only if no other process changed
 * anything in between; otherwise the operation is re-read and re-applied.
 * Operations are thus serializable across every process sharing the
 * database, like the in-memory table's. Consecutive operations of a batch
 * share a transaction while one commit can carry them.
 *
 * One operation's failure never fails another's: every key is built from
 * validated input and fits KV's limits, and should an operation still fail
 * on its own (KV refuses a write), nothing of its transaction was written,
 * so its neighbours are re-applied without it and it alone answers with an
 * `OpFailure`. Only a store that cannot answer (locked past the retry
 * budget, too contended, closed) fails the whole batch.
 *
 * @module
 */

import { type Backend, type BackendContext, OpFailure } from "../backend.ts";
import {
  InvalidInputError,
  missingPermission,
  RegistryMisconfiguredError,
} from "../../core/errors.ts";
import type { ResolvedOwnerOptions } from "../../core/owner_table.ts";
import { ARITY, Op } from "../../core/operations.ts";
import { resolveKvOptions } from "./kv_store.ts";
import { isBusy, type Key, type Store, transact } from "./kv_tx.ts";
import { ownerStore } from "./kv_owner_store.ts";
import { cancelStore } from "./kv_cancel_store.ts";

/** How many upcoming operations' keys one transaction loads up front. */
const PREFETCH = 200;
/** The idle-expiry sweep runs at least this often. */
const SWEEP_MS = 1_000;

/**
 * True when `err` says the store as a whole cannot answer (so the batch
 * fails), false when one operation's input made KV refuse it. KV refuses an
 * operation (a key or value too large, too many mutations) with a
 * `TypeError` or `RangeError`.
 */
function isStoreFailure(err: unknown): boolean {
  return isBusy(err) || !(err instanceof TypeError || err instanceof RangeError);
}

/** The error an operation that failed on its own answers with. */
function opError(err: unknown): unknown {
  return err instanceof Error && /too large|too many|invalid key/i.test(err.message)
    ? new InvalidInputError(`Deno KV store refused the operation: ${err.message}`)
    : err;
}

/** Opens the database, turning a missing flag or permission into a named misconfiguration. */
async function openKv(path: string | null): Promise<Deno.Kv> {
  if (typeof Deno.openKv !== "function") {
    throw new RegistryMisconfiguredError(
      'kvStore: Deno KV is unavailable in this process: run Deno with --unstable-kv (or add "unstable": ["kv"] to deno.json)',
    );
  }
  try {
    return path === null ? await Deno.openKv() : await Deno.openKv(path);
  } catch (err) {
    const missing = missingPermission(err);
    if (missing === null) throw err;
    const flags = path === ":memory:"
      ? ""
      : " (a database file needs --allow-read and --allow-write)";
    throw new RegistryMisconfiguredError(
      `kvStore: cannot open ${
        path === null ? "the default database" : JSON.stringify(path)
      }: ${missing}${flags}`,
    );
  }
}

/** Entry point the worker calls (see `CreateBackend` in `src/backend.ts`). */
export async function createBackend(ctx: BackendContext): Promise<Backend> {
  const { init } = ctx;
  const opts = resolveKvOptions(init.store.kind === "module" ? init.store.options : {});
  const kv = await openKv(opts.path);
  const timers: ReturnType<typeof setInterval>[] = [];
  /** Background work in flight (a poll or a sweep), awaited by `close`. */
  const running = new Set<Promise<void>>();
  let closed = false;
  /** Runs `work` every `ms` unless the previous run is still going; the timer never keeps the process alive. */
  const every = (ms: number, work: () => Promise<void>) => {
    let busy = false;
    const timer = setInterval(() => {
      if (busy || closed) return;
      busy = true;
      const run = work().catch(() => {}).finally(() => {
        busy = false;
        running.delete(run);
      });
      running.add(run);
    }, ms);
    Deno.unrefTimer(timer);
    timers.push(timer);
  };

  let store: Store<object>;
  try {
    if (init.registry === "owner") {
      const owners = ownerStore({
        kv,
        prefix: opts.prefix,
        options: init.options as ResolvedOwnerOptions,
        idleTtlMs: opts.idleTtlMs,
        origin: `${init.instanceId}/${crypto.randomUUID()}`,
        emit: ctx.emit,
      });
      await owners.start();
      store = owners as unknown as Store<object>;
      every(opts.pollIntervalMs, owners.poll);
      if (opts.idleTtlMs > 0) {
        every(Math.max(10, Math.min(SWEEP_MS, Math.floor(opts.idleTtlMs / 4))), owners.sweep);
      }
    } else {
      const cancels = cancelStore(
        kv,
        opts.prefix,
        (init.options as { maxEntries: number }).maxEntries,
        init.instanceId,
      );
      store = cancels as unknown as Store<object>;
      every(opts.pollIntervalMs, () => cancels.poll(ctx.emit));
    }
  } catch (err) {
    kv.close();
    throw err;
  }

  /**
   * Applies ops `start` up to (not including) `limit` in one transaction, as
   * many as one commit can carry (stopping before a cancelAll); returns
   * their results. `track.at` is the op being applied when it throws (else
   * `-1`), `track.last` the last op it reached.
   */
  const chunk = (
    ops: number[],
    args: unknown[],
    at: number[],
    start: number,
    limit: number,
    track: { at: number; last: number },
  ) =>
    transact(kv, store.meta, store.empty, [], async (t) => {
      track.at = -1;
      track.last = start - 1;
      const keys: Key[] = [];
      for (let k = start; k < Math.min(limit, start + PREFETCH); k++) {
        keys.push(...store.keysOf(ops[k], args[at[k]], args[at[k] + 1], args[at[k] + 2]));
      }
      await t.prefetch(keys);
      const results: unknown[] = [];
      for (let k = start; k < limit; k++) {
        if (ops[k] === Op.CancelAll || (k > start && t.full)) break;
        track.at = track.last = k;
        const x = at[k];
        results.push(await store.apply(t, ops[k], args[x], args[x + 1], args[x + 2], args[x + 3]));
        track.at = -1;
      }
      return results;
    }, store.hooks);

  /** One op in a transaction of its own; its own failure is its result. */
  const alone = async (ops: number[], args: unknown[], at: number[], k: number) => {
    try {
      if (ops[k] === Op.CancelAll && store.cancelAll !== undefined) {
        return await store.cancelAll(args[at[k]], args[at[k] + 1]);
      }
      return (await chunk(ops, args, at, k, k + 1, { at: -1, last: -1 }))[0];
    } catch (err) {
      if (isStoreFailure(err)) throw err;
      return new OpFailure(opError(err));
    }
  };

  return {
    async run(ops, args) {
      const out = new Array(ops.length);
      const at = new Array<number>(ops.length + 1);
      at[0] = 0;
      for (let i = 0; i < ops.length; i++) at[i + 1] = at[i] + ARITY[ops[i]];
      const track = { at: -1, last: -1 };
      let i = 0;
      /** Shared transactions stop before this op (it failed in one and runs alone). */
      let barrier = ops.length;
      /** Ops before this index run one per transaction (a shared commit failed). */
      let soloUntil = 0;
      while (i < ops.length) {
        if (i === barrier || i < soloUntil || ops[i] === Op.CancelAll) {
          if (i === barrier) barrier = ops.length;
          out[i] = await alone(ops, args, at, i);
          i++;
          continue;
        }
        try {
          for (const r of await chunk(ops, args, at, i, barrier, track)) out[i++] = r;
        } catch (err) {
          if (isStoreFailure(err)) throw err;
          // Nothing of the failed transaction was written. When an op threw while
          // applied, the ops before it are re-applied together and it runs alone;
          // when the commit (or the prefetch) failed, each op it covered runs alone.
          if (track.at > i) barrier = track.at;
          else if (track.at === i) soloUntil = i + 1;
          else soloUntil = track.last >= i ? track.last + 1 : Math.min(ops.length, i + PREFETCH);
        }
      }
      return out;
    },
    async close() {
      closed = true;
      for (const timer of timers) clearInterval(timer);
      await Promise.all(running);
      kv.close();
    },
  };
}
