/**
 * The cancellation store of the Deno KV backend.
 *
 * Keys (P = the prefix): `[P, "c", "meta"]`, `[P, "c", "slot", key]` -> entry
 * id, `[P, "c", "e", entryId]` -> `{ key, sid, seq, cancelled }`,
 * `[P, "c", "s", sid, seq]` -> entry id (registration order), and
 * `[P, "c", "ib", instanceId, seq]`: abort events for another process, which
 * polls its inbox every `pollIntervalMs` (KV `watch` does not see other
 * processes' writes to a local file).
 *
 * A slot key is `cancelKey(sid, requestId)`, except for a string request id
 * holding NUL: Deno KV stores a NUL in a key as two bytes, so such an id is
 * keyed by the base64 of its UTF-8 bytes (`<sid>\nb<base64>`), which keeps
 * every accepted request id (1,024 bytes at most) within KV's key limit.
 *
 * @module
 */

import type { BackendContext } from "../backend.ts";
import { cancelKey } from "../../core/cancel_table.ts";
import { Op } from "../../core/operations.ts";
import { type Key, type Store, transact, type Tx, TxCache } from "./kv_tx.ts";
import { isValidRequestId, sanitizeSessionId, utf8Length } from "../../core/validate.ts";

/** Inbox messages for a process that never reads them (it died) expire. */
const INBOX_TTL_MS = 60_000;
/** A reason travels to another process cut to this length (a KV value is at most 64 KiB). */
const MAX_REASON = 4_096;
/** cancelAll commits at most this many entries per transaction (KV mutation limits). */
const CANCEL_ALL_CHUNK = 200;
/**
 * Longest entry id stored, in UTF-8 bytes (a facade's are about 45): an
 * inbox message of a cancelAll carries up to {@linkcode CANCEL_ALL_CHUNK}
 * of them and must stay under KV's 64 KiB value limit.
 */
const MAX_ENTRY_ID_BYTES = 128;

interface CancelMeta {
  seq: number;
  size: number;
  registered: number;
  ignored: number;
  displaced: number;
  cancelled: number;
}

interface Entry {
  key: string;
  sid: string;
  seq: number;
  cancelled: boolean;
}

interface InboxMessage {
  entryIds: string[];
  sessionId: string;
  requestId: string | number | null;
  reason: string | null;
}

const EMPTY_CANCEL: CancelMeta = {
  seq: 0,
  size: 0,
  registered: 0,
  ignored: 0,
  displaced: 0,
  cancelled: 0,
};

/** True when `value` can be an entry id this store keeps. */
function isEntryId(value: unknown): value is string {
  return typeof value === "string" && value.length > 0 && value.length <= MAX_ENTRY_ID_BYTES &&
    value.isWellFormed() && utf8Length(value) <= MAX_ENTRY_ID_BYTES;
}

/** The slot key of a valid `(sessionId, requestId)` (see the module doc for NUL). */
function slotKey(sid: string, requestId: string | number): string {
  if (typeof requestId !== "string" || !requestId.includes("\0")) {
    return cancelKey(sid, requestId);
  }
  let binary = "";
  for (const byte of new TextEncoder().encode(requestId)) binary += String.fromCharCode(byte);
  return `${sid}\nb${btoa(binary)}`;
}

/** The cancellation store, plus its inbox poll. */
export interface CancelStore extends Store<CancelMeta> {
  /** Delivers (then deletes) the abort messages other processes left for this instance. */
  poll(emit: BackendContext["emit"]): Promise<void>;
}

/** The cancellation store on `kv` under `P`; `self` is this registry's instance id. */
export function cancelStore(
  kv: Deno.Kv,
  P: string,
  maxEntries: number,
  self: string,
): CancelStore {
  const META: Key = [P, "c", "meta"];
  const SLOT = (key: string): Key => [P, "c", "slot", key];
  const E = (eid: string): Key => [P, "c", "e", eid];
  const BYS = (sid: string): Key => [P, "c", "s", sid];
  const INBOX = (inst: string): Key => [P, "c", "ib", inst];
  type T = Tx<CancelMeta>;
  const cache = new TxCache();
  const tx = <R>(keys: Key[], body: (tx: T) => Promise<R>) =>
    transact(kv, META, EMPTY_CANCEL, keys, body, { cache });

  /** Leaves an abort message for every other process running one of `ids`. */
  function notify(t: T, ids: string[], sessionId: string, requestId: unknown, reason: unknown) {
    const groups = new Map<string, string[]>();
    for (const eid of ids) {
      const dot = eid.lastIndexOf(".");
      if (dot <= 0) continue;
      const inst = eid.slice(0, dot);
      if (inst === self) continue;
      const group = groups.get(inst);
      if (group === undefined) groups.set(inst, [eid]);
      else group.push(eid);
    }
    for (const [inst, entryIds] of groups) {
      const message: InboxMessage = {
        entryIds,
        sessionId,
        requestId: typeof requestId === "string" || typeof requestId === "number"
          ? requestId
          : null,
        reason: typeof reason === "string" ? reason.slice(0, MAX_REASON) : null,
      };
      t.set([...INBOX(inst), ++t.meta.seq], message, INBOX_TTL_MS);
    }
  }

  /** The keys `op` reads first, for one batched prefetch (only keys of valid input). */
  function keysOf(op: number, a: unknown, b: unknown, c: unknown): Key[] {
    if (op === Op.Deregister) return isEntryId(a) ? [E(a)] : [];
    if ((op !== Op.Register && op !== Op.Cancel) || sanitizeSessionId(a) === null) return [];
    if (!isValidRequestId(b)) return [];
    const slot = SLOT(slotKey(a as string, b));
    if (op === Op.Cancel) return [slot];
    return isEntryId(c) ? [E(c), slot] : [];
  }

  async function apply(t: T, op: number, a: unknown, b: unknown, c: unknown): Promise<unknown> {
    switch (op) {
      case Op.Register: {
        if (sanitizeSessionId(a) === null || !isValidRequestId(b) || !isEntryId(c)) {
          t.meta.ignored++;
          t.touchMeta();
          return false;
        }
        const sid = a as string, eid = c, key = slotKey(sid, b);
        if (t.meta.size >= maxEntries || await t.get(E(eid)) !== null) {
          t.meta.ignored++;
          t.touchMeta();
          return false;
        }
        if (await t.get(SLOT(key)) !== null) t.meta.displaced++;
        t.set(SLOT(key), eid);
        const seq = ++t.meta.seq;
        t.set(E(eid), { key, sid, seq, cancelled: false } satisfies Entry);
        t.set([...BYS(sid), seq], eid);
        t.meta.size++;
        t.meta.registered++;
        return true;
      }
      case Op.Deregister: {
        // An entry id this store would not keep was never registered.
        if (!isEntryId(a)) return false;
        const eid = a;
        const entry = await t.get<Entry>(E(eid));
        if (entry === null) return false;
        t.delete(E(eid));
        t.delete([...BYS(entry.sid), entry.seq]);
        t.meta.size--;
        if (await t.get(SLOT(entry.key)) !== eid) return false;
        t.delete(SLOT(entry.key));
        return true;
      }
      case Op.Cancel: {
        if (sanitizeSessionId(a) === null || !isValidRequestId(b)) return null;
        const sid = a as string, key = slotKey(sid, b);
        const eid = await t.get<string>(SLOT(key));
        if (eid === null) return null;
        const entry = await t.get<Entry>(E(eid));
        if (entry === null || entry.cancelled) return null;
        t.set(E(eid), { ...entry, cancelled: true });
        t.meta.cancelled++;
        notify(t, [eid], sid, b, c);
        return eid;
      }
      case Op.CancelSize:
        return t.meta.size;
      case Op.CancelStats: {
        const { size, registered, ignored, displaced, cancelled } = t.meta;
        return { size, registered, ignored, displaced, cancelled, restarts: 0 };
      }
      default:
        throw new Error(`op ${op} runs on its own (cancelAll)`);
    }
  }

  /**
   * cancelAll runs in transactions of its own, each marking at most
   * `CANCEL_ALL_CHUNK` entries (KV caps one commit); every entry is
   * cancelled once.
   */
  async function cancelAll(sessionId: unknown, reason: unknown): Promise<string[]> {
    if (sanitizeSessionId(sessionId) === null) return [];
    const sid = sessionId as string;
    const all: string[] = [];
    for (;;) {
      const { ids, more } = await tx([], async (t) => {
        const ids: string[] = [];
        let more = false;
        for (const row of await t.list<string>(BYS(sid), Infinity)) {
          if (ids.length >= CANCEL_ALL_CHUNK || t.full) {
            more = true;
            break;
          }
          const entry = await t.get<Entry>(E(row.value));
          if (entry === null || entry.cancelled) continue;
          t.set(E(row.value), { ...entry, cancelled: true });
          ids.push(row.value);
        }
        t.meta.cancelled += ids.length;
        notify(t, ids, sid, null, reason);
        return { ids, more };
      });
      all.push(...ids);
      if (!more) return all;
    }
  }

  async function poll(emit: BackendContext["emit"]): Promise<void> {
    const seen: Key[] = [];
    for await (const entry of kv.list<InboxMessage>({ prefix: INBOX(self) })) {
      const m = entry.value;
      seen.push(entry.key);
      emit({
        kind: "abort",
        entryIds: m.entryIds,
        sessionId: m.sessionId,
        requestId: m.requestId,
        ...(m.reason === null ? {} : { reason: m.reason }),
      });
    }
    for (let i = 0; i < seen.length; i += 100) {
      const op = kv.atomic();
      for (const key of seen.slice(i, i + 100)) op.delete(key);
      await op.commit();
    }
  }

  return { meta: META, empty: EMPTY_CANCEL, apply, keysOf, cancelAll, poll, hooks: { cache } };
}
