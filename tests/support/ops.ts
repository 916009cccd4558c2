/**
 * Random operation sequences for the registries, and runners that apply them
 * to the pure state machines (the model) and to a facade (the system under
 * test). Shared by the property and concurrency tests and by the store tests.
 *
 * @module
 */

import fc from "fast-check";
import { CancelTable } from "../../src/core/cancel_table.ts";
import { type OwnerBounds, OwnerTable } from "../../src/core/owner_table.ts";
import type { CancellationRegistry, SessionOwnerRegistry } from "../../mod.ts";

/** One owner-registry call. */
export type OwnerCall =
  | { op: "bind"; sid: string; fp: string; shared?: boolean; keepMs?: number }
  | { op: "attach"; sid: string; fp: string; pin: boolean }
  | { op: "forget"; sid: string; fp?: string }
  | { op: "ownerOf"; sid: string }
  | { op: "pin"; sid: string }
  | { op: "unpin"; sid: string }
  | { op: "size" };

/** Session ids: a small valid pool (so calls collide) plus invalid ones. */
export const sessionIdArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8") },
  { weight: 1, arbitrary: fc.constantFrom("", " ", "has space", "tab\t", "é", "x".repeat(257)) },
);

/** Fingerprints: a small pool plus blank ones. */
export const fingerprintArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom("fp-a", "fp-b", "fp-c", "fp-shared") },
  { weight: 1, arbitrary: fc.constantFrom("", "   ") },
);

/** Any owner call. */
export const ownerCallArb: fc.Arbitrary<OwnerCall> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("bind" as const),
      sid: sessionIdArb,
      fp: fingerprintArb,
      // As the guard binds its sharedPrincipals: a shared principal's own bound, never
      // evicting anyone else.
      shared: fc.oneof(
        { weight: 4, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
      // As the guard binds a task for its ttl. The model has no idle expiry, so a floor never
      // shows; stores run with a TTL of an hour keep such bindings apart (Redis and KV file
      // those whose floor outlasts the TTL separately), which must not change the answers.
      keepMs: fc.constantFrom(0, 60_000, 2 * 3_600_000),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("attach" as const),
      sid: sessionIdArb,
      fp: fingerprintArb,
      pin: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      { op: fc.constant("forget" as const), sid: sessionIdArb, fp: fingerprintArb },
      { requiredKeys: ["op", "sid"] },
    ),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("ownerOf" as const), sid: sessionIdArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("pin" as const), sid: sessionIdArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("unpin" as const), sid: sessionIdArb }) },
  { weight: 1, arbitrary: fc.constant({ op: "size" as const }) },
);

/**
 * Calls that fill a table and evict, rarely pinning: bindings with a floor
 * past the idle TTL (`keepMs` two hours, for a store whose TTL is an hour)
 * and plain ones compete for the LRU, which must keep one order for both.
 */
export const floorCallArb: fc.Arbitrary<OwnerCall> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("bind" as const),
      sid: sessionIdArb,
      fp: fingerprintArb,
      shared: fc.oneof(
        { weight: 5, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
      keepMs: fc.constantFrom(0, 2 * 3_600_000),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("attach" as const),
      sid: sessionIdArb,
      fp: fingerprintArb,
      pin: fc.oneof(
        { weight: 6, arbitrary: fc.constant(false) },
        { weight: 1, arbitrary: fc.constant(true) },
      ),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("ownerOf" as const), sid: sessionIdArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("unpin" as const), sid: sessionIdArb }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("forget" as const),
      sid: sessionIdArb,
      fp: fingerprintArb,
    }),
  },
);

/** Small bounds so eviction, caps (shared principals' too) and pinning are exercised. */
export const ownerOptionsArb: fc.Arbitrary<Required<OwnerBounds>> = fc.record({
  maxEntries: fc.integer({ min: 1, max: 6 }),
  maxPerPrincipal: fc.integer({ min: 1, max: 4 }),
  sharedPrincipals: fc.constantFrom([], ["fp-shared"]),
  maxPerSharedPrincipal: fc.integer({ min: 1, max: 5 }),
});

/** Applies one call to the pure table. */
export function applyOwnerCall(table: OwnerTable, call: OwnerCall): unknown {
  switch (call.op) {
    case "bind":
      return table.bind(call.sid, call.fp, call.shared === true, call.keepMs);
    case "attach":
      return table.authorizeAttach(call.sid, call.fp, call.pin);
    case "forget":
      return "fp" in call ? table.forget(call.sid, call.fp) : table.forget(call.sid);
    case "ownerOf":
      return table.ownerOf(call.sid);
    case "pin":
      return table.pin(call.sid);
    case "unpin":
      return table.unpin(call.sid);
    case "size":
      return table.size();
  }
}

/** Issues one call on the facade (not awaited). */
export function issueOwnerCall(reg: SessionOwnerRegistry, call: OwnerCall): Promise<unknown> {
  switch (call.op) {
    case "bind":
      return reg.bind(call.sid, call.fp, { shared: call.shared === true, keepMs: call.keepMs });
    case "attach":
      return reg.authorizeAttach(call.sid, call.fp, { pin: call.pin });
    case "forget":
      return "fp" in call ? reg.forget(call.sid, call.fp) : reg.forget(call.sid);
    case "ownerOf":
      return reg.ownerOf(call.sid);
    case "pin":
      return reg.pin(call.sid);
    case "unpin":
      return reg.unpin(call.sid);
    case "size":
      return reg.size();
  }
}

/** Results of `calls` on a fresh pure table. */
export function modelOwnerResults(options: OwnerBounds, calls: OwnerCall[]): unknown[] {
  const table = new OwnerTable(options);
  return calls.map((call) => applyOwnerCall(table, call));
}

/** One cancellation-registry call; `k` names the k-th registration of the sequence. */
export type CancelCall =
  | { op: "register"; sid: string; rid: string | number }
  | { op: "deregister"; k: number }
  | { op: "cancel"; sid: string; rid: string | number }
  | { op: "cancelAll"; sid: string }
  | { op: "size" };

const requestIdArb: fc.Arbitrary<string | number> = fc.constantFrom(1, 2, 3, "1", "2", "a");

/** Any cancellation call. */
export const cancelCallArb: fc.Arbitrary<CancelCall> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("register" as const),
      sid: sessionIdArb,
      rid: requestIdArb,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("deregister" as const), k: fc.nat(40) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("cancel" as const),
      sid: sessionIdArb,
      rid: requestIdArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("cancelAll" as const), sid: sessionIdArb }) },
  { weight: 1, arbitrary: fc.constant({ op: "size" as const }) },
);

/** What a cancellation run observed: per-call results and which registrations got aborted. */
export interface CancelRun {
  results: unknown[];
  aborted: boolean[];
}

/** Results of `calls` on a fresh pure table. */
export function modelCancelRun(maxEntries: number, calls: CancelCall[]): CancelRun {
  const table = new CancelTable({ maxEntries });
  const entryIds: (string | null)[] = [];
  const aborted: boolean[] = [];
  const index = new Map<string, number>();
  const results = calls.map((call) => {
    switch (call.op) {
      case "register": {
        const id = `e${entryIds.length}`;
        const ok = table.register(call.sid, call.rid, id);
        index.set(id, entryIds.length);
        entryIds.push(ok ? id : null);
        aborted.push(false);
        return ok;
      }
      case "deregister":
        return table.deregister(entryIds[call.k] ?? "missing");
      case "cancel": {
        const id = table.cancel(call.sid, call.rid);
        if (id !== null) aborted[index.get(id)!] = true;
        return id !== null;
      }
      case "cancelAll": {
        const ids = table.cancelAll(call.sid);
        for (const id of ids) aborted[index.get(id)!] = true;
        return ids.length;
      }
      case "size":
        return table.size();
    }
  });
  return { results, aborted };
}

/**
 * Applies `calls` to the facade. With `pipelined`, calls are issued without
 * awaiting; only a `deregister` first waits for what was issued before it (it
 * needs its registration's entry id, as a real caller does).
 */
export async function facadeCancelRun(
  reg: CancellationRegistry,
  calls: CancelCall[],
  pipelined: boolean,
): Promise<CancelRun> {
  const registrations: Promise<{ entryId: string; signal: AbortSignal } | null>[] = [];
  const pending: Promise<unknown>[] = [];
  for (const call of calls) {
    let p: Promise<unknown>;
    switch (call.op) {
      case "register": {
        const r = reg.register(call.sid, call.rid);
        registrations.push(r);
        p = r.then((x) => x !== null);
        break;
      }
      case "deregister": {
        // A real caller holds the entry id before it deregisters: wait for the
        // registration (and, to keep call order, everything issued before it).
        if (pipelined) await Promise.all(pending);
        const r = registrations[call.k];
        p = reg.deregister((r === undefined ? null : await r)?.entryId ?? "missing");
        break;
      }
      case "cancel":
        p = reg.cancel(call.sid, call.rid);
        break;
      case "cancelAll":
        p = reg.cancelAll(call.sid);
        break;
      case "size":
        p = reg.size();
        break;
    }
    if (!pipelined) await p;
    pending.push(p);
  }
  const results = await Promise.all(pending);
  const aborted = (await Promise.all(registrations)).map((r) => r?.signal.aborted ?? false);
  return { results, aborted };
}
