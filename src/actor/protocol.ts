/**
 * The message protocol between the registry facades and their worker, typed
 * in one place.
 *
 * Facade -> worker: one `init` after the worker starts, then `batch`
 * messages (every call made in one tick travels in one batch, in call order),
 * and a final `close`. Worker -> facade: `ready` once its store started (or
 * failed to), one `reply` or `fail` per batch, `closed` for close, and unsolicited `abort` events (a store telling this
 * process to abort requests it runs, e.g. a cancel sent through another
 * process).
 *
 * The facade sends batches in the compact format of `actor/wire.ts` (typed
 * arrays, a per-batch string table, typed results): with the in-memory store
 * through the shared-memory ring of `actor/shared_channel.ts` (whose `init`
 * carries `channel`; the worker wakes a waiting facade with `Atomics.notify`,
 * `extras` carry argument values the format does not, and a
 * reply too large for its slot comes as a `reply` message), otherwise as
 * `wbatch`/`wreply` messages carrying one transferred buffer each.
 *
 * The plain `batch` message (two flat arrays: `ops`, the opcodes, and `args`,
 * each op's arguments concatenated, the count per opcode fixed by
 * {@linkcode ARITY}) answered by a plain `reply` is kept for tools and tests
 * that talk to a worker directly.
 *
 * @module
 */

import type { WireError } from "../core/errors.ts";
import type { ResolvedOwnerOptions } from "../core/owner_table.ts";

/** Opcodes. Owner ops are 1..19, cancellation ops 20..39. */
export const Op = {
  Bind: 1,
  Attach: 2,
  Forget: 3,
  OwnerOf: 4,
  Pin: 5,
  Unpin: 6,
  OwnerSize: 7,
  OwnerStats: 8,
  Touch: 9,
  Register: 20,
  Deregister: 21,
  Cancel: 22,
  CancelAll: 23,
  CancelSize: 24,
  CancelStats: 25,
} as const;

/** One opcode value. */
export type OpCode = typeof Op[keyof typeof Op];

/**
 * Number of arguments each opcode takes:
 * Bind(sessionId, fp, shared, keepMs | undefined), Attach(sessionId, fp, pin),
 * Forget(sessionId, fp | undefined),
 * Touch(sessionId, fp),
 * OwnerOf/Pin/Unpin(sessionId), Register(sessionId, requestId, entryId),
 * Deregister(entryId), Cancel(sessionId, requestId, reason), CancelAll(sessionId, reason)
 * (a reason is a string or `undefined`; stores that cancel across processes forward it).
 */
export const ARITY: Readonly<Record<number, number>> = {
  [Op.Bind]: 4,
  [Op.Attach]: 3,
  [Op.Forget]: 2,
  [Op.OwnerOf]: 1,
  [Op.Pin]: 1,
  [Op.Unpin]: 1,
  [Op.OwnerSize]: 0,
  [Op.OwnerStats]: 0,
  [Op.Touch]: 2,
  [Op.Register]: 3,
  [Op.Deregister]: 1,
  [Op.Cancel]: 3,
  [Op.CancelAll]: 2,
  [Op.CancelSize]: 0,
  [Op.CancelStats]: 0,
};

/** Which registry a worker hosts. */
export type RegistryKind = "owner" | "cancel";

/**
 * Where a registry keeps its state. `memory` lives in the worker's heap;
 * `module` names a store module the worker imports (Redis, Deno KV), which
 * exports `createBackend` (see `src/backend.ts`).
 */
export type StoreSpec =
  | { kind: "memory"; idleTtlMs?: number }
  | { kind: "module"; url: string; options: unknown };

/** First message: what to host. */
export interface InitMessage {
  kind: "init";
  registry: RegistryKind;
  /** Owner options (owner registry) or `{ maxEntries }` (cancellation registry). */
  options: ResolvedOwnerOptions | { maxEntries: number };
  store: StoreSpec;
  /** Unique per facade instance; prefixes its entry ids and names its event channel. */
  instanceId: string;
  /**
   * In-memory store only: the shared-memory ring (`actor/shared_channel.ts`)
   * batches travel through. Absent: batches come as messages.
   */
  channel?: SharedArrayBuffer;
}

/** A batch of operations, applied in order. */
export interface BatchMessage {
  kind: "batch";
  id: number;
  ops: number[];
  args: unknown[];
}

/**
 * A batch in the compact format: `buffer` holds one frame (`actor/wire.ts`)
 * of `words` words, `nums` numbers and the rest string units.
 */
export interface WireBatchMessage {
  kind: "wbatch";
  id: number;
  buffer: ArrayBuffer;
  words: number;
  nums: number;
  /** Argument values the frame refers to but does not carry (structured-cloned). */
  extras?: unknown[];
}

/** Shared-memory ring: the argument values slot `id` refers to but does not carry. */
export interface ExtrasMessage {
  kind: "extras";
  id: number;
  values: unknown[];
}

/** Graceful shutdown: the worker closes its store, answers `closed`, exits. */
export interface CloseMessage {
  kind: "close";
  id: number;
}

/** Any message a facade sends. */
export type ToWorker =
  | InitMessage
  | BatchMessage
  | WireBatchMessage
  | ExtrasMessage
  | CloseMessage;

/** Results of a batch, one per op, in order. */
export interface ReplyMessage {
  kind: "reply";
  id: number;
  results: unknown[];
  /**
   * In-memory owner store only: session ids whose binding went away while
   * this batch ran (forgotten or evicted), so the facade drops them from
   * the owners it remembers.
   */
  removed?: string[];
  /**
   * Operations of this batch that failed on their own, as `[index, error]`
   * pairs; every other operation's result stands. One operation's failure
   * never fails another operation of the same batch.
   */
  failed?: [number, WireError][];
}

/** Reply to a `wbatch`: one frame (`actor/wire.ts`) in `buffer`. */
export interface WireReplyMessage {
  kind: "wreply";
  id: number;
  buffer: ArrayBuffer;
  words: number;
  nums: number;
}

/** A message (or the whole batch) could not be applied; nothing of it was. */
export interface FailMessage {
  kind: "fail";
  /** The batch id, or `null` when the message was too malformed to carry one. */
  id: number | null;
  error: WireError;
}

/** Answer to `close`. */
export interface ClosedMessage {
  kind: "closed";
  id: number;
}

/**
 * Sent once after `init`, when the store started or failed to start: from then
 * on every batch is answered, so the facade's `callTimeoutMs` starts counting
 * (a worker's boot, a cold module load, is not a hang).
 */
export interface ReadyMessage {
  kind: "ready";
}

/** Pushed by a store: abort these locally held entries. */
export interface AbortEvent {
  kind: "abort";
  entryIds: string[];
  /** `null` for a cancelAll, else the JSON-RPC request id. */
  requestId: string | number | null;
  sessionId: string;
  /** Reason text given to `cancel`, if it was a string. */
  reason?: string;
}

/** Why a binding went away without its owner asking. */
export type RemovalCause = "evicted" | "expired";

/**
 * Pushed by an owner store: these bindings went away without their owner
 * asking, evicted to make room or expired idle (`idleTtlMs`), so the
 * sessions behind them should be closed wherever they live. A shared store
 * (Redis, Deno KV) tells every process, since the session may live in any.
 */
export interface RemovedEvent {
  kind: "removed";
  cause: RemovalCause;
  sessionIds: string[];
}

/** Events a store pushes to its facade. */
export type WorkerEvent = AbortEvent | RemovedEvent;

/** Any message a worker sends. */
export type FromWorker =
  | ReadyMessage
  | ReplyMessage
  | WireReplyMessage
  | FailMessage
  | ClosedMessage
  | AbortEvent
  | RemovedEvent;
