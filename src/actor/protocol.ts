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
 * One worker can host several registries (a registry and the registries
 * derived from it, say): each is a host, numbered by its facade's side, and
 * every message to or from the worker names its `host` (absent: host 0, the
 * only one of a worker that hosts one registry). Each host has its own
 * store, its own `init`, `ready` and `close`, its own ring (the worker
 * serves every ring, listening on one shared `bell`), and its batches are
 * applied in order; events name the host whose store pushed them.
 *
 * The plain `batch` message (two flat arrays: `ops`, the opcodes, and `args`,
 * each op's arguments concatenated, the count per opcode fixed by
 * {@linkcode ARITY}) answered by a plain `reply` is kept for tools and tests
 * that talk to a worker directly.
 *
 * @module
 */

import type { WireError } from "../core/errors.ts";
import type { AbortEvent, RemovedEvent, StoreInit } from "../core/operations.ts";

// The vocabulary the worker and the stores share lives in core; the protocol names it too.
export {
  type AbortEvent,
  ARITY,
  Op,
  type OpCode,
  type RegistryKind,
  type RemovalCause,
  type RemovedEvent,
  type StoreInit,
  type StoreSpec,
  type WorkerEvent,
} from "../core/operations.ts";

/** Which registry a message is for, or from, in a worker that hosts several. */
export interface Hosted {
  /** The host's number (a non-negative integer); absent: host 0. */
  host?: number;
}

/** First message for each host: what to host. */
export interface InitMessage extends StoreInit, Hosted {
  kind: "init";
  /**
   * In-memory store only: the shared-memory ring (`actor/shared_channel.ts`)
   * batches travel through. Absent: batches come as messages.
   */
  channel?: SharedArrayBuffer;
  /**
   * With `channel`: the worker's bell (`actor/shared_channel.ts`,
   * `newBell`), shared by every ring it serves; absent: the ring's own
   * control block. Every ring host of one worker names the same bell.
   */
  bell?: SharedArrayBuffer;
}

/** A batch of operations, applied in order. */
export interface BatchMessage extends Hosted {
  kind: "batch";
  id: number;
  ops: number[];
  args: unknown[];
}

/**
 * A batch in the compact format: `buffer` holds one frame (`actor/wire.ts`)
 * of `words` words, `nums` numbers and the rest string units.
 */
export interface WireBatchMessage extends Hosted {
  kind: "wbatch";
  id: number;
  buffer: ArrayBuffer;
  words: number;
  nums: number;
  /** Argument values the frame refers to but does not carry (structured-cloned). */
  extras?: unknown[];
}

/** Shared-memory ring: the argument values slot `id` refers to but does not carry. */
export interface ExtrasMessage extends Hosted {
  kind: "extras";
  id: number;
  values: unknown[];
}

/**
 * Graceful shutdown of one host: the worker applies what that host's ring
 * holds, closes its store and answers `closed`. Once a close said `exit`
 * (the default), the worker exits when no host is left.
 */
export interface CloseMessage extends Hosted {
  kind: "close";
  id: number;
  /**
   * No host joins any more: exit once every host closed (default `true`);
   * `false` from a host closing while others go on (and more may come).
   */
  exit?: boolean;
}

/** Any message a facade sends. */
export type ToWorker =
  | InitMessage
  | BatchMessage
  | WireBatchMessage
  | ExtrasMessage
  | CloseMessage;

/** Results of a batch, one per op, in order. */
export interface ReplyMessage extends Hosted {
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
export interface WireReplyMessage extends Hosted {
  kind: "wreply";
  id: number;
  buffer: ArrayBuffer;
  words: number;
  nums: number;
}

/** A message (or the whole batch) could not be applied; nothing of it was. */
export interface FailMessage extends Hosted {
  kind: "fail";
  /** The batch id, or `null` when the message was too malformed to carry one. */
  id: number | null;
  error: WireError;
}

/** Answer to `close`. */
export interface ClosedMessage extends Hosted {
  kind: "closed";
  id: number;
}

/**
 * Sent once after `init`, when the store started or failed to start: from then
 * on every batch is answered, so the facade's `callTimeoutMs` starts counting
 * (a worker's boot, a cold module load, is not a hang).
 */
export interface ReadyMessage extends Hosted {
  kind: "ready";
}

/** Any message a worker sends. */
export type FromWorker =
  | ReadyMessage
  | ReplyMessage
  | WireReplyMessage
  | FailMessage
  | ClosedMessage
  | HostedEvent;

/** An event a host's store pushed, naming the host. */
export type HostedEvent = (AbortEvent | RemovedEvent) & Hosted;
