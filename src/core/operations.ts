/**
 * The vocabulary the registry worker and the stores share: the operations a
 * batch carries (opcodes and their arity), where a registry keeps its state,
 * and the events a store pushes. The worker's message protocol
 * (`actor/protocol.ts`) and every store (`store/`) stand on it; neither
 * imports the other for it.
 *
 * @module
 */

import type { ResolvedOwnerOptions } from "./owner_types.ts";

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

/** What a worker hosts: the registry, its options, its store (a store backend starts from it). */
export interface StoreInit {
  registry: RegistryKind;
  /** Owner options (owner registry) or `{ maxEntries }` (cancellation registry). */
  options: ResolvedOwnerOptions | { maxEntries: number };
  store: StoreSpec;
  /** Unique per facade instance; prefixes its entry ids and names its event channel. */
  instanceId: string;
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
