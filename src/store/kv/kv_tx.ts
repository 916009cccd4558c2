/**
 * The transaction machinery of the Deno KV store: {@linkcode Tx}, one
 * optimistic transaction (cached reads, buffered writes, one commit checked
 * against the versionstamp of a `meta` record), and {@linkcode transact},
 * which re-runs a transaction until its commit wins.
 *
 * Every write also rewrites `meta`, so a commit succeeds only if no other
 * process changed anything in between; operations are thus serializable
 * across every process sharing the database.
 *
 * That also makes what a transaction read and wrote reusable: once its
 * commit won, the database holds exactly its reads overlaid with its writes,
 * as of the new versionstamp of `meta`. A {@linkcode TxCache} keeps them,
 * and the next transaction that finds `meta` still at that versionstamp
 * (nobody else wrote since) starts from them instead of reading the keys
 * again: Deno KV serves one read at a time, about 16 µs per key in a batch
 * of ten, so reads are most of an operation's cost.
 *
 * @module
 */

import { utf8Length } from "../../core/validate.ts";

/** A Deno KV key. */
export type Key = Deno.KvKey;

const DELETE = Symbol("delete");
const MAX_ATTEMPTS = 100;
/** How long an operation keeps retrying while other processes hold the file's lock. */
const BUSY_BUDGET_MS = 2_000;

/*
 * Deno KV's limits per commit are 1,000 mutations, 81,920 bytes of keys and
 * 819,200 bytes of keys and values. A transaction takes no further operation
 * once it passes the thresholds below, which leaves room for the one
 * operation that crossed them (an owner operation writes at most about ten
 * keys of at most about 1.4 KiB each) and for its removal events.
 */
const FULL_WRITES = 600;
const FULL_KEY_BYTES = 48 * 1024;
const FULL_BYTES = 400 * 1024;

/** A stable string form of a key (map key and, in bytes, an upper bound of its stored size). */
export function kid(key: Key): string {
  return JSON.stringify(key);
}

/** An upper bound of a value's stored size (small records; strings exactly). */
function sizeOf(value: unknown): number {
  if (typeof value === "string") return utf8Length(value);
  if (typeof value !== "object" || value === null) return 16;
  return utf8Length(JSON.stringify(value));
}

/**
 * Values as of one versionstamp of a store's `meta` record, carried from one
 * transaction to the next (see the module doc). Only transactions whose
 * commit won add to it; a transaction that finds another versionstamp drops
 * it. Bounded: past {@linkcode TxCache.limit} entries the least recently
 * read or written go.
 */
export class TxCache {
  /** The versionstamp of `meta` the values are current at (`null`: none yet). */
  stamp: string | null = null;
  /** Values by {@linkcode kid}: `null` for a key known to be absent. */
  readonly values: Map<string, unknown> = new Map();

  /** Builds a cache holding at most `limit` values. */
  constructor(readonly limit = 16_384) {}

  /** Forgets every value (they are not current at `stamp`). */
  reset(stamp: string | null): void {
    this.values.clear();
    this.stamp = stamp;
  }

  /** Sets `id`'s value, as the most recently used one. */
  put(id: string, value: unknown): void {
    this.values.delete(id);
    this.values.set(id, value);
  }

  /** Drops the least recently stored values beyond the limit. */
  trim(): void {
    if (this.values.size <= this.limit) return;
    let extra = this.values.size - Math.floor(this.limit * 0.75);
    for (const id of this.values.keys()) {
      if (extra-- <= 0) break;
      this.values.delete(id);
    }
  }
}

/**
 * A value read from a cache, as a transaction may change it: records are
 * flat objects that the stores update in place before writing them back.
 */
function own(value: unknown): unknown {
  return typeof value === "object" && value !== null ? { ...value } : value;
}

/** Raised when a transaction lost too many races: the store is overloaded, not the input bad. */
export class ContentionError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ContentionError";
  }
}

/** One optimistic transaction: cached reads, buffered writes, one checked commit. */
export class Tx<M extends object> {
  /** The `meta` record as read at the start; rewritten on commit. */
  readonly meta: M;
  /** The wall clock (ms) when the transaction started; one value for all its operations. */
  readonly now: number = Date.now();
  /** Whether the commit has anything to write. */
  dirty = false;
  /** Owner bindings this transaction removed without their owner asking, by cause. */
  readonly removed: { evicted: string[]; expired: string[] } = { evicted: [], expired: [] };
  readonly #kv: Deno.Kv;
  readonly #metaKey: Key;
  readonly #stamp: string | null;
  /** Values this transaction read from the database (as read). */
  readonly #cache = new Map<string, unknown>();
  /** Values as of `#stamp` from earlier transactions, when `meta` had not moved since. */
  readonly #shared: Map<string, unknown> | null;
  readonly #writes = new Map<
    string,
    { key: Key; value: unknown; expireIn?: number }
  >();
  /** Pages of stored index entries read so far, per prefix (see `first`). */
  readonly #scans = new Map<
    string,
    {
      keys: Key[];
      values: unknown[];
      pos: number;
      cursor: string | undefined;
      done: boolean;
      /** Entries before this index had their `readAhead` keys loaded. */
      ahead: number;
      /** How many entries the next read-ahead covers (doubles, up to a page). */
      window: number;
    }
  >();
  /** Bytes of the keys written so far (an upper bound: KV caps them per commit). */
  #keyBytes = 0;
  /** Bytes of the keys and values written so far (an upper bound). */
  #bytes = 0;

  private constructor(
    kv: Deno.Kv,
    metaKey: Key,
    meta: M,
    stamp: string | null,
    shared: Map<string, unknown> | null,
  ) {
    this.#kv = kv;
    this.#metaKey = metaKey;
    this.meta = meta;
    this.#stamp = stamp;
    this.#shared = shared;
  }

  /**
   * Reads `meta` (and prefetches `keys`) in one round trip. With `cache`
   * current at `meta`'s versionstamp, the keys it holds are not read again;
   * at another versionstamp, it is emptied.
   */
  static async begin<M extends object>(
    kv: Deno.Kv,
    metaKey: Key,
    empty: M,
    keys: Key[] = [],
    cache?: TxCache,
  ): Promise<Tx<M>> {
    const ask = cache === undefined || cache.values.size === 0
      ? keys
      : keys.filter((key) => !cache.values.has(kid(key)));
    const entries = await kv.getMany([metaKey, ...ask]);
    const stamp = entries[0].versionstamp;
    const meta = { ...empty, ...(entries[0].value as M | null ?? {}) };
    if (cache !== undefined && cache.stamp !== stamp) cache.reset(stamp);
    const tx = new Tx(kv, metaKey, meta, stamp, cache?.values ?? null);
    for (let i = 1; i < entries.length; i++) tx.#cache.set(kid(ask[i - 1]), entries[i].value);
    // The cache was stale: read what it was to provide.
    if (ask.length < keys.length) await tx.prefetch(keys);
    return tx;
  }

  /** Whether this transaction knows `id`'s value without reading it. */
  #has(id: string): boolean {
    return this.#writes.has(id) || this.#cache.has(id) || this.#shared?.has(id) === true;
  }

  /** The value of `key` as this transaction sees it (its own writes first). */
  async get<T>(key: Key): Promise<T | null> {
    const id = kid(key);
    const w = this.#writes.get(id);
    if (w !== undefined) return w.value === DELETE ? null : w.value as T;
    if (this.#cache.has(id)) return own(this.#cache.get(id)) as T | null;
    if (this.#shared?.has(id)) return own(this.#shared.get(id)) as T | null;
    const entry = await this.#kv.get<T>(key);
    this.#cache.set(id, entry.value);
    return own(entry.value) as T | null;
  }

  /** Loads `keys` not read yet, ten per round trip. */
  async prefetch(keys: Key[]): Promise<void> {
    const missing = new Map<string, Key>();
    for (const key of keys) {
      const id = kid(key);
      if (!this.#has(id)) missing.set(id, key);
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

  /** Buffers a write (`expireIn`: ms until Deno KV may drop it). */
  set(key: Key, value: unknown, expireIn?: number): void {
    const id = kid(key);
    this.#count(id);
    this.#bytes += sizeOf(value);
    this.#writes.set(id, { key, value, expireIn });
    this.dirty = true;
  }

  /** Buffers a delete. */
  delete(key: Key): void {
    const id = kid(key);
    this.#count(id);
    this.#writes.set(id, { key, value: DELETE });
    this.dirty = true;
  }

  #count(id: string): void {
    if (this.#writes.has(id)) return;
    const bytes = utf8Length(id);
    this.#keyBytes += bytes;
    this.#bytes += bytes;
  }

  /** True when this commit should take no further operation (KV's per-commit limits). */
  get full(): boolean {
    return this.#writes.size >= FULL_WRITES || this.#keyBytes >= FULL_KEY_BYTES ||
      this.#bytes >= FULL_BYTES;
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
   *
   * `readAhead(key, value)` names the keys the caller reads next for a stored
   * entry (the binding an index key points to, say): they are loaded for the
   * entries from the one returned on, for one entry at the first call and
   * twice as many at each next one (up to 64), so that a transaction that
   * takes one entry reads little and one that takes many reads them ten keys
   * per round trip instead of one.
   */
  async first(
    prefix: Key,
    readAhead?: (key: Key, value: unknown) => Key[],
  ): Promise<Key | null> {
    const id = kid(prefix);
    let scan = this.#scans.get(id);
    if (scan === undefined) {
      scan = {
        keys: [],
        values: [],
        pos: 0,
        cursor: undefined,
        done: false,
        ahead: 0,
        window: 1,
      };
      this.#scans.set(id, scan);
    }
    for (;;) {
      while (scan.pos < scan.keys.length) {
        const key = scan.keys[scan.pos];
        if (this.#writes.get(kid(key))?.value !== DELETE) {
          if (readAhead !== undefined && scan.ahead <= scan.pos) {
            const end = Math.min(scan.keys.length, scan.pos + scan.window);
            const keys: Key[] = [];
            for (let i = scan.pos; i < end; i++) {
              keys.push(...readAhead(scan.keys[i], scan.values[i]));
            }
            scan.ahead = end;
            scan.window = Math.min(64, scan.window * 2);
            await this.prefetch(keys);
          }
          return key;
        }
        scan.pos++;
      }
      if (scan.done) break;
      const page = this.#kv.list({ prefix }, { limit: 64, cursor: scan.cursor });
      let n = 0;
      for await (const entry of page) {
        scan.keys.push(entry.key);
        scan.values.push(entry.value);
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

  /**
   * Commits every buffered write and `meta`, if `meta` is unchanged since
   * `begin`. When it wins and `cache` is given, the cache holds what the
   * database now does for every key this transaction read or wrote (values
   * with an expiry stay out: the database may drop them on its own).
   */
  async commit(cache?: TxCache): Promise<boolean> {
    const op = this.#kv.atomic().check({ key: this.#metaKey, versionstamp: this.#stamp });
    for (const { key, value, expireIn } of this.#writes.values()) {
      if (value === DELETE) op.delete(key);
      else op.set(key, value, expireIn === undefined ? undefined : { expireIn });
    }
    op.set(this.#metaKey, this.meta);
    const result = await op.commit();
    if (!result.ok) return false;
    if (cache !== undefined) {
      // Nothing changed between `begin` and this commit: the reads are current, and so is
      // whatever the cache held at `begin` (unless another transaction of this process moved
      // it on meanwhile: then only this one's values are known to be current).
      if (cache.stamp !== this.#stamp) cache.reset(null);
      for (const [id, value] of this.#cache) cache.put(id, value);
      for (const [id, { value, expireIn }] of this.#writes) {
        if (expireIn !== undefined) cache.values.delete(id);
        else cache.put(id, value === DELETE ? null : value);
      }
      cache.stamp = result.versionstamp;
      cache.trim();
    }
    return true;
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
export function isBusy(err: unknown): boolean {
  return err instanceof Error && /database is (locked|busy)/i.test(err.message);
}

/** What a store does around each commit of a transaction, and carries from one to the next. */
export interface TxHooks<M extends object> {
  /** What the store's last winning transaction left current (see {@linkcode TxCache}). */
  cache?: TxCache;
  /** Called once the body ran, before a commit with writes: last writes (e.g. events). */
  seal?(t: Tx<M>): void;
  /** Called after a commit won. */
  committed?(t: Tx<M>): void;
}

/**
 * Runs `body` in a fresh transaction until its commit wins (or it wrote
 * nothing), starting from `hooks.cache` when it is current (see {@linkcode TxCache}). A lost race (a failed check) or a lock held by another process
 * sharing the file means: back off briefly, re-read, re-apply. Any other
 * error is thrown at once, and nothing of the transaction was written.
 */
export async function transact<M extends object, R>(
  kv: Deno.Kv,
  metaKey: Key,
  empty: M,
  keys: Key[],
  body: (tx: Tx<M>) => Promise<R>,
  hooks: TxHooks<M> = {},
): Promise<R> {
  const { cache } = hooks;
  const deadline = Date.now() + BUSY_BUDGET_MS;
  for (let attempt = 0;; attempt++) {
    try {
      const tx = await Tx.begin(kv, metaKey, empty, keys, cache);
      const result = await body(tx);
      if (!tx.dirty) return result;
      hooks.seal?.(tx);
      if (await tx.commit(cache)) {
        hooks.committed?.(tx);
        return result;
      }
    } catch (err) {
      if (!isBusy(err) || Date.now() > deadline) throw err;
    }
    if (attempt >= MAX_ATTEMPTS && Date.now() > deadline) {
      throw new ContentionError(`Deno KV store: gave up after ${attempt + 1} conflicting commits`);
    }
    if (attempt > 0) {
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(2 ** attempt, 20)));
    }
  }
}

/** What the batch runner needs from the owner or the cancellation store. */
export interface Store<M extends object> {
  /** Key of the `meta` record every commit checks and rewrites. */
  meta: Key;
  /** `meta` of an empty store. */
  empty: M;
  /** Applies one operation (arguments `a` to `d`, as many as its arity) inside `t`. */
  apply(t: Tx<M>, op: number, a: unknown, b: unknown, c: unknown, d: unknown): Promise<unknown>;
  /** The keys `op` reads first, for one batched prefetch (only keys of valid input). */
  keysOf(op: number, a: unknown, b: unknown, c: unknown): Key[];
  /** Runs around each commit (and carries the store's {@linkcode TxCache}). */
  hooks?: TxHooks<M>;
  /** cancelAll, which runs in transactions of its own. */
  cancelAll?(sessionId: unknown, reason: unknown): Promise<string[]>;
}
