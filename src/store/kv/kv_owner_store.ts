/**
 * The owner store of the Deno KV backend: session bindings, their bounds
 * (global LRU, per-principal cap, pins), idle expiry, and the event log
 * that tells every process sharing the database which bindings were
 * evicted or expired.
 *
 * Keys (P = the prefix):
 * - `[P, "o", "meta"]`               last score, event sequence, size, pinned, kept, counters
 * - `[P, "o", "s", sid]`             `{ owner, pins, score, keep? }` (`keep`: the `keepMs`
 *   floor, ms, while it outlasts the binding's idle expiry)
 * - `[P, "o", "lru", score, sid]`    owner; UNPINNED bindings by last use (global LRU)
 * - `[P, "o", "kl", score, sid]`     owner; the same for UNPINNED bindings with a floor:
 *   evicted in LRU order with `lru` (the older first key of the two goes), never
 *   idle-expired while the floor lasts, so the sweep of `lru` never steps over them
 * - `[P, "o", "ku", keep, sid]`      every floor, by its end (`meta.kept` counts them): the
 *   sweep moves a binding whose floor ended back to `lru`, or drops it if idle
 * - `[P, "o", "pu", fp, score, sid]` a principal's unpinned bindings by last use
 * - `[P, "o", "pc", fp]`             how many bindings the principal holds
 *   (with `capByFirstWord`, `fp` in these two is the first word of the fingerprint)
 * - `[P, "o", "ev", n]`              removal event n: `{ o: origin, c: cause, s: sids }`,
 *   written in the commit that removed them, dropped by KV after a minute
 *
 * Scores are `max(last score + 1, now_ms * 1000)`: strictly increasing
 * (exact LRU order, like the in-memory table) and comparable to time (idle
 * expiry: an unpinned binding whose score is older than `idleTtlMs` is gone
 * for every operation). Data written before scores followed the clock has
 * small scores: it sorts as older than anything new, and with `idleTtlMs`
 * it expires at once.
 *
 * KV `watch` does not see other processes' writes to a local file, so each
 * process polls the event log every `pollIntervalMs`, from the last event
 * it has seen (a starting process begins at the current end). A process
 * hears its own removals at once, when their commit wins, and skips them in
 * the log.
 *
 * @module
 */

import type { BackendContext } from "../backend.ts";
import type { OwnerStats, ResolvedOwnerOptions } from "../../core/owner_table.ts";
import { Op, type RemovalCause } from "../../core/operations.ts";
import { type Key, type Store, transact, type Tx, TxCache, type TxHooks } from "./kv_tx.ts";
import { isValidFingerprint, sanitizeSessionId } from "../../core/validate.ts";
import { capKey, keepMsOf } from "../../core/owner_types.ts";

/**
 * The owner counters (as `stats()` reports them, but `restarts`), the last
 * score, the last event, and how many bindings have a `keepMs` floor.
 */
export type OwnerMeta = Omit<OwnerStats, "restarts"> & { seq: number; ev: number; kept: number };

interface Rec {
  owner: string;
  pins: number;
  score: number;
  /** The `keepMs` floor (ms); set only while it outlasts idle expiry (then in `kl`, not `lru`). */
  keep?: number;
}

/** One entry of the event log. */
interface EventRec {
  /** The backend that wrote it (it told its own facade already). */
  o: string;
  c: RemovalCause;
  s: string[];
}

const EMPTY_OWNER: OwnerMeta = {
  seq: 0,
  ev: 0,
  kept: 0,
  size: 0,
  pinned: 0,
  evictions: 0,
  refusals: 0,
  claims: 0,
  invalid: 0,
  full: 0,
};

/** Events a process has not read within this long are dropped (it is gone, or far behind). */
const EVENT_TTL_MS = 60_000;
/** One event record carries session ids of at most this many bytes (a KV value is at most 64 KiB). */
const EVENT_BYTES = 32 * 1024;
/** Most events one poll delivers (the rest come with the next). */
const POLL_LIMIT = 1_000;
/** Most bindings one sweep transaction drops. */
const SWEEP_CHUNK = 100;
/** Most sweep transactions in one tick of the sweep timer. */
const SWEEP_ROUNDS = 20;

/** What {@linkcode ownerStore} needs. */
export interface OwnerStoreConfig {
  /** The open database. */
  kv: Deno.Kv;
  /** First part of every key (`kvStore`'s `prefix`). */
  prefix: string;
  /** The registry's bounds. */
  options: ResolvedOwnerOptions;
  /** Unpinned bindings unused for this long (ms) expire; `0`: never. */
  idleTtlMs: number;
  /** Unique to this backend: marks the events it wrote (and already emitted). */
  origin: string;
  /** Tells this process's facade which bindings were evicted or expired. */
  emit: BackendContext["emit"];
}

/** The owner store, plus the timers' work. */
export interface OwnerStore extends Store<OwnerMeta> {
  /** Starts reading the event log at its current end. */
  start(): Promise<void>;
  /** Delivers the removal events other processes wrote since the last poll. */
  poll(): Promise<void>;
  /** Drops idle-expired unpinned bindings, in bounded transactions, and announces them. */
  sweep(): Promise<void>;
}

/** The owner store on `kv` under `prefix`. */
export function ownerStore(config: OwnerStoreConfig): OwnerStore {
  const { kv, prefix: P, options, idleTtlMs: ttl, origin, emit } = config;
  const shared = new Set(options.sharedPrincipals);
  const META: Key = [P, "o", "meta"];
  const S = (sid: string): Key => [P, "o", "s", sid];
  const LRU: Key = [P, "o", "lru"];
  const KL: Key = [P, "o", "kl"];
  const KU: Key = [P, "o", "ku"];
  const byFirstWord = options.capByFirstWord;
  const PU = (fp: string): Key => [P, "o", "pu", capKey(fp, byFirstWord)];
  const PC = (fp: string): Key => [P, "o", "pc", capKey(fp, byFirstWord)];
  const EV: Key = [P, "o", "ev"];
  type T = Tx<OwnerMeta>;
  /** The last event of the log this process has seen. */
  let seen = 0;
  const cache = new TxCache();

  /** Scores below this are idle-expired (`-1`: nothing expires). */
  function cutoff(t: T): number {
    return ttl > 0 ? (t.now - ttl) * 1000 : -1;
  }

  function nextScore(t: T): number {
    const score = Math.max(t.meta.seq + 1, t.now * 1000);
    t.meta.seq = score;
    return score;
  }

  /** True when `rec` is idle-expired: unpinned, unused for longer than the TTL, past its floor. */
  function expired(t: T, rec: Rec): boolean {
    return rec.pins === 0 && rec.score < cutoff(t) &&
      !(rec.keep !== undefined && rec.keep >= t.now);
  }

  /** The key of an unpinned binding in its recency index (`kl` with a floor, else `lru`). */
  function recency(sid: string, rec: Rec): Key {
    return [...(rec.keep === undefined ? LRU : KL), rec.score, sid];
  }

  function unindex(t: T, sid: string, rec: Rec): void {
    t.delete(recency(sid, rec));
    t.delete([...PU(rec.owner), rec.score, sid]);
  }

  function index(t: T, sid: string, rec: Rec): void {
    t.set(recency(sid, rec), rec.owner);
    t.set([...PU(rec.owner), rec.score, sid], true);
  }

  /** Sets (or, `undefined`, drops) a binding's floor and its `ku` key; not its recency index. */
  function setFloor(t: T, sid: string, rec: Rec, keep: number | undefined): void {
    if (rec.keep === keep) return;
    if (rec.keep !== undefined) {
      t.delete([...KU, rec.keep, sid]);
      t.meta.kept--;
    }
    if (keep === undefined) delete rec.keep;
    else {
      rec.keep = keep;
      t.set([...KU, keep, sid], true);
      t.meta.kept++;
    }
  }

  /**
   * The floor a binding used now should have: its own, raised to
   * `keepMs` from now, and none once it no longer outlasts idle expiry
   * (then the binding's last use decides alone, and it is in `lru`).
   */
  function floorAfterUse(t: T, rec: Rec, keepMs: number): number | undefined {
    let keep = rec.keep;
    if (keepMs > 0 && ttl > 0 && (keep === undefined || t.now + keepMs > keep)) {
      keep = t.now + keepMs;
    }
    return keep !== undefined && keep > t.now + ttl ? keep : undefined;
  }

  function touch(t: T, sid: string, rec: Rec, keepMs = 0): void {
    const score = nextScore(t);
    if (rec.pins === 0) unindex(t, sid, rec);
    setFloor(t, sid, rec, floorAfterUse(t, rec, keepMs));
    rec.score = score;
    if (rec.pins === 0) index(t, sid, rec);
    t.set(S(sid), rec);
  }

  async function remove(
    t: T,
    sid: string,
    rec: Rec,
    cause: RemovalCause | "forgotten",
  ): Promise<void> {
    t.delete(S(sid));
    if (rec.pins === 0) unindex(t, sid, rec);
    else t.meta.pinned--;
    setFloor(t, sid, rec, undefined);
    const count = (await t.get<number>(PC(rec.owner)) ?? 1) - 1;
    if (count > 0) t.set(PC(rec.owner), count);
    else t.delete(PC(rec.owner));
    t.meta.size--;
    if (cause !== "forgotten") t.removed[cause].push(sid);
  }

  /** The binding of `sid`, or `null`; an idle-expired one is removed (and announced) first. */
  async function load(t: T, sid: string): Promise<Rec | null> {
    const rec = await t.get<Rec>(S(sid));
    if (rec === null || !expired(t, rec)) return rec;
    await remove(t, sid, rec, "expired");
    return null;
  }

  function setPins(t: T, sid: string, rec: Rec, pins: number): void {
    if (rec.pins === 0 && pins > 0) {
      unindex(t, sid, rec);
      t.meta.pinned++;
    } else if (rec.pins > 0 && pins === 0) {
      t.meta.pinned--;
    }
    rec.pins = pins;
    t.set(S(sid), rec);
  }

  /**
   * Removes the first binding of an unpinned index (`sidAt`: where the key
   * holds the sid; its score is just before): evicted, or expired if it was
   * idle too long anyway (then it is no eviction).
   */
  async function evictFirst(t: T, prefix: Key, sidAt: number): Promise<boolean> {
    const head = await headOf(t, prefix, sidAt);
    if (head === null) return false;
    await evict(t, head);
    return true;
  }

  /** Removes a binding to make room: evicted, or expired if it was idle too long anyway. */
  async function evict(t: T, [sid, rec]: [string, Rec]): Promise<void> {
    if (expired(t, rec)) {
      await remove(t, sid, rec, "expired");
    } else {
      await remove(t, sid, rec, "evicted");
      t.meta.evictions++;
    }
  }

  /**
   * The keys evicting the binding an index entry names reads: the binding
   * and, in `lru` / `kl` (whose entries hold the owner), its owner's count
   * (a per-principal index is the evicting principal's own: counted already).
   */
  const evictionReads = (sidAt: number) => (key: Key, owner: unknown): Key[] =>
    typeof owner === "string" && isValidFingerprint(owner)
      ? [S(key[sidAt] as string), PC(owner)]
      : [S(key[sidAt] as string)];

  /** The first binding of an unpinned index (see `evictFirst`), dropping stale index keys. */
  async function headOf(t: T, prefix: Key, sidAt: number): Promise<[string, Rec] | null> {
    const kept = prefix === KL ? true : prefix === LRU ? false : null;
    const ahead = evictionReads(sidAt);
    for (;;) {
      const key = await t.first(prefix, ahead);
      if (key === null) return null;
      const sid = key[sidAt] as string;
      const rec = await t.get<Rec>(S(sid));
      if (
        rec === null || rec.pins > 0 || rec.score !== key[sidAt - 1] ||
        (kept !== null && kept !== (rec.keep !== undefined))
      ) {
        t.delete(key); // a stale index key: drop it and look again
        continue;
      }
      return [sid, rec];
    }
  }

  /** The globally least recently used unpinned binding: the older first key of `lru` and `kl`. */
  async function globalHeads(t: T): Promise<[string, Rec][]> {
    const heads: [string, Rec][] = [];
    const head = await headOf(t, LRU, 4);
    if (head !== null) heads.push(head);
    if (t.meta.kept > 0) {
      const kept = await headOf(t, KL, 4);
      if (kept !== null) heads.push(kept);
    }
    return heads.sort((a, b) => a[1].score - b[1].score);
  }

  /**
   * Drops the first binding of `lru` or `kl` if it is idle-expired (as the
   * in-memory table's sweep would before it makes room); returns whether it did.
   */
  async function dropExpiredHead(t: T): Promise<boolean> {
    if (ttl === 0) return false;
    for (const head of await globalHeads(t)) {
      if (!expired(t, head[1])) continue;
      await remove(t, head[0], head[1], "expired");
      return true;
    }
    return false;
  }

  /** Makes room in a full table: an idle-expired head first, else the global LRU's. */
  async function evictGlobal(t: T): Promise<boolean> {
    if (await dropExpiredHead(t)) return true;
    const heads = await globalHeads(t);
    if (heads.length === 0) return false;
    await evict(t, heads[0]);
    return true;
  }

  async function insert(
    t: T,
    sid: string,
    fp: string,
    sharedCall: boolean,
    keepMs: number,
  ): Promise<Rec | null> {
    const count = await t.get<number>(PC(fp)) ?? 0;
    if (sharedCall || shared.has(fp)) {
      // A shared principal pays with its own oldest binding, at its own cap and when the
      // table is full: it stands for many callers, so it never pushes anyone else out.
      const atCap = count >= options.maxPerSharedPrincipal;
      if (atCap || t.meta.size >= options.maxEntries) {
        // When the table is full, an idle-expired binding (anyone's) makes room first.
        if (!(!atCap && await dropExpiredHead(t)) && !await evictFirst(t, PU(fp), 5)) {
          t.meta.full++;
          t.touchMeta();
          return null;
        }
      }
    } else if (count >= options.maxPerPrincipal) {
      // At its own cap: the principal pays with its own oldest unpinned binding.
      if (!await evictFirst(t, PU(fp), 5)) {
        t.meta.full++;
        t.touchMeta();
        return null;
      }
    } else if (t.meta.size >= options.maxEntries) {
      if (!await evictGlobal(t)) {
        t.meta.full++;
        t.touchMeta();
        return null;
      }
    }
    const score = nextScore(t);
    const rec: Rec = { owner: fp, pins: 0, score };
    setFloor(t, sid, rec, floorAfterUse(t, rec, keepMs));
    t.set(S(sid), rec);
    index(t, sid, rec);
    t.set(PC(fp), (await t.get<number>(PC(fp)) ?? 0) + 1);
    t.meta.size++;
    return rec;
  }

  function invalid(t: T): void {
    t.meta.invalid++;
    t.touchMeta();
  }

  /** Bind (attach = false) or authorizeAttach; answers "bound" / "refused" / "full". */
  async function claim(
    t: T,
    sid: string,
    fp: string,
    attach: boolean,
    pin: boolean,
    sharedCall: boolean,
    keepMs = 0,
  ) {
    let rec = await load(t, sid);
    if (rec !== null && rec.owner !== fp) {
      t.meta.refusals++;
      t.touchMeta();
      return "refused";
    }
    if (rec !== null) touch(t, sid, rec, keepMs);
    else {
      rec = await insert(t, sid, fp, sharedCall, keepMs);
      if (rec === null) return "full";
      if (attach) t.meta.claims++;
    }
    if (pin) setPins(t, sid, rec, rec.pins + 1);
    return "bound";
  }

  function keysOf(op: number, a: unknown, b: unknown): Key[] {
    if (op > Op.Touch || op === Op.OwnerSize || op === Op.OwnerStats) return [];
    if (sanitizeSessionId(a) === null) return [];
    const sid = a as string;
    if ((op === Op.Bind || op === Op.Attach) && isValidFingerprint(b)) return [S(sid), PC(b)];
    return [S(sid)];
  }

  async function apply(
    t: T,
    op: number,
    a: unknown,
    b: unknown,
    c: unknown,
    d: unknown,
  ): Promise<unknown> {
    switch (op) {
      case Op.Bind: {
        const keepMs = keepMsOf(d);
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b) || keepMs === null) {
          invalid(t);
          return "refused";
        }
        return await claim(t, a as string, b, false, false, c === true, keepMs);
      }
      case Op.Attach:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          invalid(t);
          return false;
        }
        return await claim(t, a as string, b, true, c === true, false) === "bound";
      case Op.Touch: {
        if (sanitizeSessionId(a) === null) return false;
        const rec = await load(t, a as string);
        if (rec === null || rec.owner !== b) return false;
        touch(t, a as string, rec);
        return true;
      }
      case Op.Forget: {
        if (sanitizeSessionId(a) === null || (b !== undefined && !isValidFingerprint(b))) {
          invalid(t);
          return false;
        }
        const sid = a as string;
        const rec = await load(t, sid);
        if (rec === null) return true;
        if (b !== undefined && rec.owner !== b) {
          t.meta.refusals++;
          t.touchMeta();
          return false;
        }
        await remove(t, sid, rec, "forgotten");
        return true;
      }
      case Op.OwnerOf:
        if (sanitizeSessionId(a) === null) return null;
        return (await load(t, a as string))?.owner ?? null;
      case Op.Pin:
      case Op.Unpin: {
        if (sanitizeSessionId(a) === null) return false;
        const sid = a as string;
        const rec = await load(t, sid);
        if (rec === null) return false;
        if (op === Op.Pin) setPins(t, sid, rec, rec.pins + 1);
        else {
          if (rec.pins === 0) return false;
          setPins(t, sid, rec, rec.pins - 1);
          touch(t, sid, rec);
        }
        return true;
      }
      case Op.OwnerSize:
        return t.meta.size;
      default: {
        const { size, pinned, evictions, refusals, claims, invalid, full } = t.meta;
        return { size, pinned, evictions, refusals, claims, invalid, full, restarts: 0 };
      }
    }
  }

  const hooks: TxHooks<OwnerMeta> = {
    cache,
    /** Logs the transaction's removals, in its own commit, for every other process. */
    seal(t) {
      for (const cause of ["evicted", "expired"] as const) {
        let chunk: string[] = [];
        let bytes = 0;
        const flush = () => {
          const event: EventRec = { o: origin, c: cause, s: chunk };
          t.set([...EV, ++t.meta.ev], event, EVENT_TTL_MS);
          chunk = [];
          bytes = 0;
        };
        for (const sid of t.removed[cause]) {
          if (bytes + sid.length + 3 > EVENT_BYTES) flush();
          chunk.push(sid);
          bytes += sid.length + 3;
        }
        if (chunk.length > 0) flush();
      }
    },
    /** Tells this process's facade at once. */
    committed(t) {
      for (const cause of ["evicted", "expired"] as const) {
        const sessionIds = t.removed[cause];
        if (sessionIds.length > 0) emit({ kind: "removed", cause, sessionIds: [...sessionIds] });
      }
    },
  };

  async function start(): Promise<void> {
    seen = (await kv.get<OwnerMeta>(META)).value?.ev ?? 0;
  }

  async function poll(): Promise<void> {
    const page = kv.list<EventRec>({ prefix: EV, start: [...EV, seen + 1] }, {
      limit: POLL_LIMIT,
    });
    for await (const { key, value } of page) {
      const n = key[EV.length];
      if (typeof n === "number" && n > seen) seen = n;
      if (value === null || typeof value !== "object" || value.o === origin) continue;
      if ((value.c !== "evicted" && value.c !== "expired") || !Array.isArray(value.s)) continue;
      if (value.s.length > 0) emit({ kind: "removed", cause: value.c, sessionIds: value.s });
    }
  }

  async function sweep(): Promise<void> {
    if (ttl === 0) return;
    for (let round = 0; round < SWEEP_ROUNDS; round++) {
      const more = await transact(kv, META, EMPTY_OWNER, [], async (t) => {
        const before = cutoff(t);
        let dropped = 0;
        // Floors that ended: an idle binding goes, one used since moves back to `lru`. (`first`
        // sees keys added by this transaction only after the stored ones: none is added to
        // `ku` here, and a binding moved to `lru` keeps its older score but is not idle, so
        // the `lru` loop below rightly stops before it.)
        while (t.meta.kept > 0 && dropped < SWEEP_CHUNK && !t.full) {
          const key = await t.first(KU);
          if (key === null || (key[3] as number) >= t.now) break;
          const sid = key[4] as string;
          const rec = await t.get<Rec>(S(sid));
          if (rec === null || rec.keep !== key[3]) {
            t.delete(key); // a stale index key
            continue;
          }
          dropped++;
          if (expired(t, rec)) {
            await remove(t, sid, rec, "expired");
            continue;
          }
          if (rec.pins === 0) unindex(t, sid, rec);
          setFloor(t, sid, rec, undefined);
          if (rec.pins === 0) index(t, sid, rec);
          t.set(S(sid), rec);
        }
        while (dropped < SWEEP_CHUNK && !t.full) {
          const key = await t.first(LRU);
          if (key === null || (key[3] as number) >= before) return false;
          const sid = key[4] as string;
          const rec = await t.get<Rec>(S(sid));
          if (rec === null || rec.pins > 0 || rec.score !== key[3]) {
            t.delete(key); // a stale index key
            continue;
          }
          await remove(t, sid, rec, "expired");
          dropped++;
        }
        return true;
      }, hooks);
      if (!more) return;
    }
  }

  return {
    meta: META,
    empty: EMPTY_OWNER,
    apply,
    keysOf,
    hooks,
    start,
    poll,
    sweep,
  };
}
