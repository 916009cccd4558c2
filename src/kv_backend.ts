/**
 * The Deno KV store backend, loaded by a registry's worker (see
 * {@linkcode kvStore}).
 *
 * Every operation is one optimistic transaction: it reads what it needs,
 * then commits its writes in one atomic operation checked against the
 * versionstamp of the registry's `meta` record. Every write also rewrites
 * `meta` (it carries the LRU sequence and the counters), so a commit succeeds
 * only if no other process changed anything in between; otherwise the
 * operation is re-read and re-applied. Operations are thus serializable
 * across every process sharing the database, like the in-memory table's.
 *
 * Owner keys (P = the prefix):
 * - `[P, "o", "meta"]`               sequence, size, pinned, counters
 * - `[P, "o", "s", sid]`             `{ owner, pins, score }`
 * - `[P, "o", "lru", score, sid]`    owner; UNPINNED bindings by last use (global LRU)
 * - `[P, "o", "pu", fp, score, sid]` a principal's unpinned bindings by last use
 * - `[P, "o", "pc", fp]`             how many bindings the principal holds
 *
 * Cancellation keys: `[P, "c", "meta"]`, `[P, "c", "slot", key]` -> entry id,
 * `[P, "c", "e", entryId]` -> `{ key, sid, seq, cancelled }`,
 * `[P, "c", "s", sid, seq]` -> entry id (registration order), and
 * `[P, "c", "ib", instanceId, seq]`: abort events for another process, which
 * polls its inbox every `pollIntervalMs` (KV `watch` does not see other
 * processes' writes to a local file).
 *
 * @module
 */

/// <reference lib="deno.unstable" />

import type { Backend, BackendContext } from "./backend.ts";
import { cancelKey } from "./cancel_table.ts";
import type { OwnerStats, ResolvedOwnerOptions } from "./owner_table.ts";
import { ARITY, Op } from "./protocol.ts";
import { resolveKvOptions } from "./kv_store.ts";
import { isValidFingerprint, isValidRequestId, sanitizeSessionId } from "./validate.ts";

type Key = Deno.KvKey;

const DELETE = Symbol("delete");
const MAX_ATTEMPTS = 100;
/** How long an operation keeps retrying while other processes hold the file's lock. */
const BUSY_BUDGET_MS = 2_000;
/** Inbox messages for a process that never reads them (it died) expire. */
const INBOX_TTL_MS = 60_000;
/** A reason travels to another process cut to this length (a KV value is at most 64 KiB). */
const MAX_REASON = 4_096;
/** How many upcoming operations' keys one transaction loads up front. */
const PREFETCH = 200;
/** cancelAll commits at most this many entries per transaction (KV mutation limits). */
const CANCEL_ALL_CHUNK = 200;

function kid(key: Key): string {
  return JSON.stringify(key);
}

/** One optimistic transaction: cached reads, buffered writes, one checked commit. */
class Tx<M extends object> {
  readonly meta: M;
  dirty = false;
  readonly #kv: Deno.Kv;
  readonly #metaKey: Key;
  readonly #stamp: string | null;
  readonly #cache = new Map<string, unknown>();
  readonly #writes = new Map<
    string,
    { key: Key; value: unknown; expireIn?: number }
  >();
  /** Pages of stored index keys read so far, per prefix (see `first`). */
  readonly #scans = new Map<
    string,
    { keys: Key[]; pos: number; cursor: string | undefined; done: boolean }
  >();
  /** Rough size of the commit so far (KV caps mutations and total key bytes per commit). */
  #keyBytes = 0;

  private constructor(kv: Deno.Kv, metaKey: Key, meta: M, stamp: string | null) {
    this.#kv = kv;
    this.#metaKey = metaKey;
    this.meta = meta;
    this.#stamp = stamp;
  }

  /** Reads `meta` (and prefetches `keys`) in one round trip. */
  static async begin<M extends object>(
    kv: Deno.Kv,
    metaKey: Key,
    empty: M,
    keys: Key[] = [],
  ): Promise<Tx<M>> {
    const entries = await kv.getMany([metaKey, ...keys]);
    const meta = { ...empty, ...(entries[0].value as M | null ?? {}) };
    const tx = new Tx(kv, metaKey, meta, entries[0].versionstamp);
    for (let i = 1; i < entries.length; i++) tx.#cache.set(kid(keys[i - 1]), entries[i].value);
    return tx;
  }

  async get<T>(key: Key): Promise<T | null> {
    const id = kid(key);
    const w = this.#writes.get(id);
    if (w !== undefined) return w.value === DELETE ? null : w.value as T;
    if (this.#cache.has(id)) return this.#cache.get(id) as T | null;
    const entry = await this.#kv.get<T>(key);
    this.#cache.set(id, entry.value);
    return entry.value;
  }

  /** Loads `keys` not read yet, ten per round trip. */
  async prefetch(keys: Key[]): Promise<void> {
    const missing = new Map<string, Key>();
    for (const key of keys) {
      const id = kid(key);
      if (!this.#cache.has(id) && !this.#writes.has(id)) missing.set(id, key);
    }
    const all = [...missing.values()];
    const groups: Promise<void>[] = [];
    for (let i = 0; i < all.length; i += 10) {
      const group = all.slice(i, i + 10);
      groups.push(
        this.#kv.getMany(group).then((entries) => {
          for (let k = 0; k < group.length; k++) this.#cache.set(kid(group[k]), entries[k].value);
        }),
      );
    }
    await Promise.all(groups);
  }

  set(key: Key, value: unknown, expireIn?: number): void {
    const id = kid(key);
    if (!this.#writes.has(id)) this.#keyBytes += id.length;
    this.#writes.set(id, { key, value, expireIn });
    this.dirty = true;
  }

  delete(key: Key): void {
    const id = kid(key);
    if (!this.#writes.has(id)) this.#keyBytes += id.length;
    this.#writes.set(id, { key, value: DELETE });
    this.dirty = true;
  }

  /** True when this commit should take no further operation (KV's per-commit limits). */
  get full(): boolean {
    return this.#writes.size >= 600 || this.#keyBytes >= 48 * 1024;
  }

  /** Marks the transaction as changing `meta` only (e.g. a counter). */
  touchMeta(): void {
    this.dirty = true;
  }

  /**
   * The key of the first entry under `prefix`, as this transaction sees it:
   * stored keys not deleted here, then keys added here. Index keys differ
   * only in `(score: number, sid: string)` after the prefix, and a key added
   * here carries a score above every stored one (scores only grow), so an
   * added key comes first only once the stored ones are used up. Stored keys
   * are read in pages and remembered, so evicting many in one transaction
   * stays linear.
   */
  async first(prefix: Key): Promise<Key | null> {
    const id = kid(prefix);
    let scan = this.#scans.get(id);
    if (scan === undefined) {
      scan = { keys: [], pos: 0, cursor: undefined, done: false };
      this.#scans.set(id, scan);
    }
    for (;;) {
      while (scan.pos < scan.keys.length) {
        const key = scan.keys[scan.pos];
        if (this.#writes.get(kid(key))?.value !== DELETE) return key;
        scan.pos++;
      }
      if (scan.done) break;
      const page = this.#kv.list({ prefix }, { limit: 64, cursor: scan.cursor });
      let n = 0;
      for await (const entry of page) {
        scan.keys.push(entry.key);
        n++;
      }
      scan.cursor = page.cursor;
      if (n < 64 || scan.cursor === "") scan.done = true;
    }
    let best: Key | null = null;
    for (const { key, value } of this.#writes.values()) {
      if (value === DELETE || key.length <= prefix.length) continue;
      if (!prefix.every((part, i) => key[i] === part)) continue;
      if (best === null || compareTail(key, best, prefix.length) < 0) best = key;
    }
    return best;
  }

  /** Keys under `prefix` (at most `limit`), skipping ones deleted here. */
  async list<T>(prefix: Key, limit: number): Promise<Deno.KvEntry<T>[]> {
    const out: Deno.KvEntry<T>[] = [];
    for await (const entry of this.#kv.list<T>({ prefix }, { batchSize: 100 })) {
      if (this.#writes.get(kid(entry.key))?.value === DELETE) continue;
      out.push(entry);
      if (out.length >= limit) break;
    }
    return out;
  }

  async commit(): Promise<boolean> {
    const op = this.#kv.atomic().check({ key: this.#metaKey, versionstamp: this.#stamp });
    for (const { key, value, expireIn } of this.#writes.values()) {
      if (value === DELETE) op.delete(key);
      else op.set(key, value, expireIn === undefined ? undefined : { expireIn });
    }
    op.set(this.#metaKey, this.meta);
    return (await op.commit()).ok;
  }
}

/** Orders two keys by their parts from `from` on (numbers by value, strings by code unit). */
function compareTail(a: Key, b: Key, from: number): number {
  for (let i = from; i < Math.min(a.length, b.length); i++) {
    const x = a[i] as string | number, y = b[i] as string | number;
    if (x === y) continue;
    if (typeof x === typeof y) return x < y ? -1 : 1;
    return typeof x === "number" ? -1 : 1;
  }
  return a.length - b.length;
}

/** SQLite's answer while another process holds the database's write lock. */
function isBusy(err: unknown): boolean {
  return err instanceof Error && /database is (locked|busy)/i.test(err.message);
}

/**
 * Runs `body` in a fresh transaction until its commit wins (or it wrote
 * nothing). A lost race (a failed check) or a lock held by another process
 * sharing the file means: back off briefly, re-read, re-apply.
 */
async function transact<M extends object, R>(
  kv: Deno.Kv,
  metaKey: Key,
  empty: M,
  keys: Key[],
  body: (tx: Tx<M>) => Promise<R>,
): Promise<R> {
  const deadline = Date.now() + BUSY_BUDGET_MS;
  for (let attempt = 0;; attempt++) {
    try {
      const tx = await Tx.begin(kv, metaKey, empty, keys);
      const result = await body(tx);
      if (!tx.dirty || await tx.commit()) return result;
    } catch (err) {
      if (!isBusy(err) || Date.now() > deadline) throw err;
    }
    if (attempt >= MAX_ATTEMPTS && Date.now() > deadline) {
      throw new Error(`Deno KV store: gave up after ${attempt + 1} conflicting commits`);
    }
    if (attempt > 0) {
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(2 ** attempt, 20)));
    }
  }
}

/** What the batch runner needs from the owner or the cancellation store. */
interface Store<M extends object> {
  meta: Key;
  empty: M;
  apply(t: Tx<M>, op: number, a: unknown, b: unknown, c: unknown): Promise<unknown>;
  keysOf(op: number, a: unknown, b: unknown, c: unknown): Key[];
  cancelAll?(sessionId: unknown, reason: unknown): Promise<string[]>;
}

/** The owner counters (as `stats()` reports them, but `restarts`), plus the LRU sequence. */
type OwnerMeta = Omit<OwnerStats, "restarts"> & { seq: number };

interface Rec {
  owner: string;
  pins: number;
  score: number;
}

const EMPTY_OWNER: OwnerMeta = {
  seq: 0,
  size: 0,
  pinned: 0,
  evictions: 0,
  refusals: 0,
  claims: 0,
  invalid: 0,
  full: 0,
};

function ownerStore(P: string, options: ResolvedOwnerOptions): Store<OwnerMeta> {
  const shared = new Set(options.sharedPrincipals);
  const META: Key = [P, "o", "meta"];
  const S = (sid: string): Key => [P, "o", "s", sid];
  const LRU: Key = [P, "o", "lru"];
  const PU = (fp: string): Key => [P, "o", "pu", fp];
  const PC = (fp: string): Key => [P, "o", "pc", fp];
  type T = Tx<OwnerMeta>;

  function unindex(t: T, sid: string, rec: Rec): void {
    t.delete([...LRU, rec.score, sid]);
    t.delete([...PU(rec.owner), rec.score, sid]);
  }

  function touch(t: T, sid: string, rec: Rec): void {
    const score = ++t.meta.seq;
    if (rec.pins === 0) {
      unindex(t, sid, rec);
      t.set([...LRU, score, sid], rec.owner);
      t.set([...PU(rec.owner), score, sid], true);
    }
    rec.score = score;
    t.set(S(sid), rec);
  }

  async function remove(t: T, sid: string, rec: Rec): Promise<void> {
    t.delete(S(sid));
    if (rec.pins === 0) unindex(t, sid, rec);
    else t.meta.pinned--;
    const count = (await t.get<number>(PC(rec.owner)) ?? 1) - 1;
    if (count > 0) t.set(PC(rec.owner), count);
    else t.delete(PC(rec.owner));
    t.meta.size--;
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

  /** Evicts the first binding of an unpinned index (`sidAt`: where the key holds the sid). */
  async function evictFirst(t: T, prefix: Key, sidAt: number): Promise<boolean> {
    for (;;) {
      const key = await t.first(prefix);
      if (key === null) return false;
      const sid = key[sidAt] as string;
      const rec = await t.get<Rec>(S(sid));
      if (rec !== null) {
        await remove(t, sid, rec);
        t.meta.evictions++;
        return true;
      }
      t.delete(key); // a stale index key: drop it and look again
    }
  }

  async function insert(t: T, sid: string, fp: string): Promise<Rec | null> {
    const count = await t.get<number>(PC(fp)) ?? 0;
    if (count >= options.maxPerPrincipal && !shared.has(fp)) {
      if (!await evictFirst(t, PU(fp), 5)) {
        t.meta.full++;
        t.touchMeta();
        return null;
      }
    } else if (t.meta.size >= options.maxEntries) {
      if (!await evictFirst(t, LRU, 4)) {
        t.meta.full++;
        t.touchMeta();
        return null;
      }
    }
    const score = ++t.meta.seq;
    const rec: Rec = { owner: fp, pins: 0, score };
    t.set(S(sid), rec);
    t.set([...LRU, score, sid], fp);
    t.set([...PU(fp), score, sid], true);
    t.set(PC(fp), (await t.get<number>(PC(fp)) ?? 0) + 1);
    t.meta.size++;
    return rec;
  }

  function invalid(t: T): void {
    t.meta.invalid++;
    t.touchMeta();
  }

  /** Bind (attach = false) or authorizeAttach; answers "bound" / "refused" / "full". */
  async function claim(t: T, sid: string, fp: string, attach: boolean, pin: boolean) {
    let rec = await t.get<Rec>(S(sid));
    if (rec !== null && rec.owner !== fp) {
      t.meta.refusals++;
      t.touchMeta();
      return "refused";
    }
    if (rec !== null) touch(t, sid, rec);
    else {
      rec = await insert(t, sid, fp);
      if (rec === null) return "full";
      if (attach) t.meta.claims++;
    }
    if (pin) setPins(t, sid, rec, rec.pins + 1);
    return "bound";
  }

  /** The keys `op` reads first, for one batched prefetch. */
  function keysOf(op: number, a: unknown, b: unknown): Key[] {
    if (typeof a !== "string" || (op !== Op.Bind && op !== Op.Attach) || typeof b !== "string") {
      return typeof a === "string" && op <= Op.Unpin ? [S(a)] : [];
    }
    return [S(a), PC(b)];
  }

  async function apply(t: T, op: number, a: unknown, b: unknown, c: unknown): Promise<unknown> {
    switch (op) {
      case Op.Bind:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          invalid(t);
          return "refused";
        }
        return await claim(t, a as string, b, false, false);
      case Op.Attach:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          invalid(t);
          return false;
        }
        return await claim(t, a as string, b, true, c === true) === "bound";
      case Op.Forget: {
        if (sanitizeSessionId(a) === null || (b !== undefined && !isValidFingerprint(b))) {
          invalid(t);
          return false;
        }
        const sid = a as string;
        const rec = await t.get<Rec>(S(sid));
        if (rec === null) return true;
        if (b !== undefined && rec.owner !== b) {
          t.meta.refusals++;
          t.touchMeta();
          return false;
        }
        await remove(t, sid, rec);
        return true;
      }
      case Op.OwnerOf:
        if (sanitizeSessionId(a) === null) return null;
        return (await t.get<Rec>(S(a as string)))?.owner ?? null;
      case Op.Pin:
      case Op.Unpin: {
        if (sanitizeSessionId(a) === null) return false;
        const sid = a as string;
        const rec = await t.get<Rec>(S(sid));
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

  return { meta: META, empty: EMPTY_OWNER as OwnerMeta, apply, keysOf };
}

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

function cancelStore(
  kv: Deno.Kv,
  P: string,
  maxEntries: number,
  self: string,
) {
  const META: Key = [P, "c", "meta"];
  const SLOT = (key: string): Key => [P, "c", "slot", key];
  const E = (eid: string): Key => [P, "c", "e", eid];
  const BYS = (sid: string): Key => [P, "c", "s", sid];
  const INBOX = (inst: string): Key => [P, "c", "ib", inst];
  type T = Tx<CancelMeta>;
  const tx = <R>(keys: Key[], body: (tx: T) => Promise<R>) =>
    transact(kv, META, EMPTY_CANCEL, keys, body);

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

  /** The keys `op` reads first, for one batched prefetch. */
  function keysOf(op: number, a: unknown, b: unknown, c: unknown): Key[] {
    if (
      op === Op.Register && typeof c === "string" && typeof a === "string" && isValidRequestId(b)
    ) {
      return [E(c), SLOT(cancelKey(a, b))];
    }
    if (op === Op.Deregister && typeof a === "string") return [E(a)];
    if (op === Op.Cancel && typeof a === "string" && isValidRequestId(b)) {
      return [SLOT(cancelKey(a, b))];
    }
    return [];
  }

  async function apply(t: T, op: number, a: unknown, b: unknown, c: unknown): Promise<unknown> {
    switch (op) {
      case Op.Register: {
        if (
          sanitizeSessionId(a) === null || !isValidRequestId(b) || typeof c !== "string" ||
          c.length === 0
        ) {
          t.meta.ignored++;
          t.touchMeta();
          return false;
        }
        const sid = a as string, eid = c, key = cancelKey(sid, b);
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
        if (typeof a !== "string") return false;
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
        const sid = a as string, key = cancelKey(sid, b);
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
      const hit = await tx([], async (t) => {
        const ids: string[] = [];
        for (const row of await t.list<string>(BYS(sid), Infinity)) {
          const entry = await t.get<Entry>(E(row.value));
          if (entry === null || entry.cancelled) continue;
          t.set(E(row.value), { ...entry, cancelled: true });
          ids.push(row.value);
          if (ids.length >= CANCEL_ALL_CHUNK) break;
        }
        t.meta.cancelled += ids.length;
        notify(t, ids, sid, null, reason);
        return ids;
      });
      all.push(...hit);
      if (hit.length < CANCEL_ALL_CHUNK) return all;
    }
  }

  /** Delivers (then deletes) the abort messages other processes left for this instance. */
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

  return { meta: META, empty: EMPTY_CANCEL as CancelMeta, apply, keysOf, cancelAll, poll };
}

/** Entry point the worker calls (see `CreateBackend` in `src/backend.ts`). */
export async function createBackend(ctx: BackendContext): Promise<Backend> {
  const { init } = ctx;
  const opts = resolveKvOptions(init.store.kind === "module" ? init.store.options : {});
  if (typeof Deno.openKv !== "function") {
    throw new Error("Deno KV is unavailable: run Deno with --unstable-kv");
  }
  const kv = opts.path === null ? await Deno.openKv() : await Deno.openKv(opts.path);
  let timer: ReturnType<typeof setInterval> | undefined;
  let store: Store<object>;
  if (init.registry === "owner") {
    store = ownerStore(opts.prefix, init.options as ResolvedOwnerOptions);
  } else {
    const cancels = cancelStore(
      kv,
      opts.prefix,
      (init.options as { maxEntries: number }).maxEntries,
      init.instanceId,
    );
    store = cancels;
    let polling = false;
    timer = setInterval(() => {
      if (polling) return;
      polling = true;
      cancels.poll(ctx.emit).catch(() => {}).finally(() => polling = false);
    }, opts.pollIntervalMs);
  }
  return {
    async run(ops, args) {
      const out = new Array(ops.length);
      const at = new Array<number>(ops.length + 1);
      at[0] = 0;
      for (let i = 0; i < ops.length; i++) at[i + 1] = at[i] + ARITY[ops[i]];
      let i = 0;
      while (i < ops.length) {
        if (ops[i] === Op.CancelAll && store.cancelAll !== undefined) {
          out[i] = await store.cancelAll(args[at[i]], args[at[i] + 1]);
          i++;
          continue;
        }
        // One transaction for as many of the following ops as one commit can carry.
        const start = i;
        const done = await transact(kv, store.meta, store.empty, [], async (t) => {
          const keys: Key[] = [];
          for (let k = start; k < Math.min(ops.length, start + PREFETCH); k++) {
            keys.push(...store.keysOf(ops[k], args[at[k]], args[at[k] + 1], args[at[k] + 2]));
          }
          await t.prefetch(keys);
          const results: unknown[] = [];
          for (let k = start; k < ops.length; k++) {
            if (ops[k] === Op.CancelAll || (k > start && t.full)) break;
            results.push(
              await store.apply(t, ops[k], args[at[k]], args[at[k] + 1], args[at[k] + 2]),
            );
          }
          return results;
        });
        for (const r of done) out[i++] = r;
      }
      return out;
    },
    close() {
      clearInterval(timer);
      kv.close();
    },
  };
}
