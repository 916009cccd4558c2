/**
 * The store interface the worker drives, and the in-memory store.
 *
 * A backend executes one batch of operations in order and returns one result
 * per operation. The worker never hands a backend a second batch before the
 * first one settled, so a backend sees this process's operations strictly
 * serialized; a shared store (Redis, Deno KV) makes each operation atomic
 * across processes.
 *
 * Result encoding per opcode: Bind -> "bound" | "refused" | "full";
 * Attach, Forget, Pin, Unpin, Register, Deregister -> boolean; OwnerOf ->
 * string | null; sizes -> number; stats -> a stats object; Cancel -> the
 * cancelled entry id or null; CancelAll -> entry ids.
 *
 * @module
 */

import { CancelTable } from "../core/cancel_table.ts";
import { OwnerTable, type ResolvedOwnerOptions } from "../core/owner_table.ts";
import { InvalidInputError } from "../core/errors.ts";
import {
  ARITY,
  Op,
  type RemovalCause,
  type StoreInit,
  type WorkerEvent,
} from "../core/operations.ts";

/** What a store module's `createBackend` receives. */
export interface BackendContext {
  /** The init message (registry kind, options, instance id). */
  init: StoreInit;
  /**
   * Pushes an event to this process's facade: an abort of requests this
   * process runs, or owner bindings that were evicted or expired (a shared
   * store tells every process, since the session may live in any of them).
   */
  emit(event: WorkerEvent): void;
}

/**
 * The result of one operation that failed on its own (a key too large for
 * the store, a value it rejects): the worker rejects that call alone with
 * the error, and every other operation of the batch stands.
 */
export class OpFailure {
  /** Wraps the error the operation failed with. */
  constructor(readonly error: unknown) {}
}

/** A registry store hosted by the worker. */
export interface Backend {
  /**
   * Applies `ops` in order; one result per op. An operation that fails on
   * its own yields an {@linkcode OpFailure} in its slot, never a throw: one
   * caller's bad input must not fail other callers' operations. Throwing
   * (the store is unreachable) fails the whole batch.
   */
  run(ops: number[], args: unknown[]): unknown[] | Promise<unknown[]>;
  /** Releases connections. */
  close(): void | Promise<void>;
  /**
   * Owner stores whose facade may cache owners (the in-memory one): the
   * session ids whose binding went away during the last `run`, or
   * `undefined` when there were none.
   */
  takeRemoved?(): string[] | undefined;
  /**
   * How often (ms) the store's own timers must run, if it has any (the
   * in-memory store's idle sweep): a worker that blocks between batches
   * returns to its event loop at least this often.
   */
  timerMs?: number;
}

/** Signature a store module exports as `createBackend`. */
export type CreateBackend = (ctx: BackendContext) => Backend | Promise<Backend>;

/** Checks a batch's shape before anything of it is applied. */
export function validateBatch(ops: unknown, args: unknown, kind: StoreInit["registry"]): void {
  if (!Array.isArray(ops) || !Array.isArray(args)) {
    throw new InvalidInputError("batch needs array fields `ops` and `args`");
  }
  let need = 0;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    const arity = ARITY[op as number];
    const ownerOp = (op as number) < Op.Register;
    if (typeof op !== "number" || arity === undefined || ownerOp !== (kind === "owner")) {
      throw new InvalidInputError(`unknown opcode ${JSON.stringify(op)} at index ${i}`);
    }
    need += arity;
  }
  if (need !== args.length) {
    throw new InvalidInputError(`batch carries ${args.length} arguments, its ops need ${need}`);
  }
}

/** Applies one owner op to a table. Shared by the memory backend and tests. */
export function applyOwnerOp(table: OwnerTable, op: number, args: unknown[], at: number): unknown {
  switch (op) {
    case Op.Bind:
      return table.bind(args[at], args[at + 1], args[at + 2] === true, args[at + 3]);
    case Op.Touch:
      return table.touch(args[at], args[at + 1]);
    case Op.Attach:
      return table.authorizeAttach(args[at], args[at + 1], args[at + 2] === true);
    case Op.Forget:
      return table.forget(args[at], args[at + 1]);
    case Op.OwnerOf:
      return table.ownerOf(args[at]);
    case Op.Pin:
      return table.pin(args[at]);
    case Op.Unpin:
      return table.unpin(args[at]);
    case Op.OwnerSize:
      return table.size();
    default:
      return table.stats();
  }
}

/** Applies one cancellation op to a table. */
export function applyCancelOp(
  table: CancelTable,
  op: number,
  args: unknown[],
  at: number,
): unknown {
  switch (op) {
    case Op.Register:
      return table.register(args[at], args[at + 1], args[at + 2]);
    case Op.Deregister:
      return table.deregister(args[at]);
    case Op.Cancel:
      return table.cancel(args[at], args[at + 1]);
    case Op.CancelAll:
      return table.cancelAll(args[at]);
    case Op.CancelSize:
      return table.size();
    default:
      return table.stats();
  }
}

/** Runs a batch op by op against a synchronous table. */
function tableBackend<T>(
  table: T,
  apply: (table: T, op: number, args: unknown[], at: number) => unknown,
): Backend {
  return {
    run(ops, args) {
      const out = new Array(ops.length);
      for (let i = 0, at = 0; i < ops.length; i++) {
        out[i] = apply(table, ops[i], args, at);
        at += ARITY[ops[i]];
      }
      return out;
    },
    close() {},
  };
}

/** How often the in-memory store looks for idle-expired bindings, at most. */
const SWEEP_MS = 1_000;

/**
 * The default store: state in the worker's heap, lost when the worker dies.
 * With `idleTtlMs`, a timer sweeps idle bindings at least every second (or
 * every quarter of the TTL) and reports them as expired.
 */
export function createMemoryBackend(
  init: StoreInit,
  emit: (event: WorkerEvent) => void = () => {},
): Backend {
  if (init.registry !== "owner") return tableBackend(new CancelTable(init.options), applyCancelOp);
  const idleTtlMs = init.store.kind === "memory" ? init.store.idleTtlMs ?? 0 : 0;
  let removed: string[] | undefined;
  const gone: Record<RemovalCause, string[]> = { evicted: [], expired: [] };
  const table = new OwnerTable({ ...(init.options as ResolvedOwnerOptions), idleTtlMs }, (
    sid,
    cause,
  ) => {
    (removed ??= []).push(sid);
    if (cause !== "forgotten") gone[cause].push(sid);
  });
  const report = () => {
    for (const cause of ["evicted", "expired"] as const) {
      if (gone[cause].length === 0) continue;
      emit({ kind: "removed", cause, sessionIds: gone[cause] });
      gone[cause] = [];
    }
  };
  let timer: ReturnType<typeof setInterval> | undefined;
  const timerMs = idleTtlMs > 0
    ? Math.max(10, Math.min(SWEEP_MS, Math.floor(idleTtlMs / 4)))
    : undefined;
  if (timerMs !== undefined) {
    const t = setInterval(() => {
      table.sweep();
      report();
      removed = undefined; // the removed event tells the facade
    }, timerMs);
    Deno.unrefTimer(t);
    timer = t;
  }
  const inner = tableBackend(table, applyOwnerOp);
  return {
    run(ops, args) {
      const results = inner.run(ops, args) as unknown[];
      report();
      return results;
    },
    close() {
      clearInterval(timer);
    },
    timerMs,
    takeRemoved() {
      const out = removed;
      removed = undefined;
      return out;
    },
  };
}
