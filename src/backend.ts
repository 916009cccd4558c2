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

import { CancelTable } from "./cancel_table.ts";
import { OwnerTable, type ResolvedOwnerOptions } from "./owner_table.ts";
import { InvalidInputError } from "./errors.ts";
import { type AbortEvent, ARITY, type InitMessage, Op } from "./protocol.ts";

/** What a store module's `createBackend` receives. */
export interface BackendContext {
  /** The init message (registry kind, options, instance id). */
  init: InitMessage;
  /** Pushes an abort event to this process's facade. */
  emit(event: AbortEvent): void;
}

/** A registry store hosted by the worker. */
export interface Backend {
  /** Applies `ops` in order; one result per op. Throwing fails the whole batch. */
  run(ops: number[], args: unknown[]): unknown[] | Promise<unknown[]>;
  /** Releases connections. */
  close(): void | Promise<void>;
  /**
   * Owner stores whose facade may cache owners (the in-memory one): the
   * session ids whose binding went away during the last `run`, or
   * `undefined` when there were none.
   */
  takeRemoved?(): string[] | undefined;
}

/** Signature a store module exports as `createBackend`. */
export type CreateBackend = (ctx: BackendContext) => Backend | Promise<Backend>;

/** Checks a batch's shape before anything of it is applied. */
export function validateBatch(ops: unknown, args: unknown, kind: InitMessage["registry"]): void {
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
      return table.bind(args[at], args[at + 1]);
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

/** The default store: state in the worker's heap, lost when the worker dies. */
export function createMemoryBackend(init: InitMessage): Backend {
  if (init.registry !== "owner") return tableBackend(new CancelTable(init.options), applyCancelOp);
  let removed: string[] | undefined;
  const table = new OwnerTable(init.options as ResolvedOwnerOptions, (sid) => {
    (removed ??= []).push(sid);
  });
  return {
    ...tableBackend(table, applyOwnerOp),
    takeRemoved() {
      const out = removed;
      removed = undefined;
      return out;
    },
  };
}
