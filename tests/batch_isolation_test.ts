/**
 * The batch-isolation invariant, on every store (in-memory, a real Redis,
 * Deno KV on a file): calls made in one tick travel to the store in one
 * batch, and one caller's bad input must not fail another caller's call.
 *
 * Random batches mix valid calls with invalid ones (over-long and
 * multibyte ids, unpaired surrogates, wrong types, blank strings, unknown
 * entry ids), all issued in one tick through the public facades. Every
 * valid call must answer exactly what the pure tables answer; every invalid
 * one must fail closed (`"refused"`, `false`, `null`, `0`, or a typed
 * `InvalidInputError`) without failing the others; and the counters agree.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CancellationRegistry,
  InvalidInputError,
  kvStore,
  memoryStore,
  type RegistryStore,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { CancelTable } from "../src/core/cancel_table.ts";
import { OwnerTable } from "../src/core/owner_table.ts";
import { startRedis } from "./support/redis_server.ts";

/** One argument, and whether every store must accept it as valid input. */
interface Arg {
  v: unknown;
  ok: boolean;
}

const valid = (...values: unknown[]) =>
  fc.constantFrom(...values).map((v): Arg => ({ v, ok: true }));
const invalid = (...values: unknown[]) =>
  fc.constantFrom(...values).map((v): Arg => ({ v, ok: false }));
const mix = (good: fc.Arbitrary<Arg>, bad: fc.Arbitrary<Arg>) =>
  fc.oneof({ weight: 5, arbitrary: good }, { weight: 2, arbitrary: bad });

const SESSIONS = ["s1", "s2", "s3", "s4", "s5"];
const sessionArb = mix(
  valid(...SESSIONS),
  invalid("", " ", "é", "x".repeat(257), "€".repeat(100), "\uD800", "a b", 42, null, {}),
);
const fingerprintArb = mix(
  fc.oneof(
    // Mostly one principal, so its per-principal cap (and `shared`) comes into play.
    { weight: 3, arbitrary: valid("fp-a") },
    // 1,024 bytes each for the last two: the longest accepted.
    valid("fp-b", "fp-shared", "€".repeat(341) + "x", "😀".repeat(256)),
  ),
  invalid("", "   ", "€".repeat(342), "x".repeat(1025), "\uDC00x", "a\nb", 7, null),
);
const requestIdArb = mix(
  valid(1, 2, "1", "a", "", "€".repeat(341) + "x", "\0".repeat(1024), "😀".repeat(256)),
  // 1,024 "€" are 3,072 bytes: the request id that used to fail whole batches on Deno KV.
  invalid("€".repeat(1024), "€".repeat(342), "\uD800", NaN, Infinity, {}, null),
);
const unknownEntryArb = invalid("nope", "", "x".repeat(3_000), "€".repeat(700), 42, null);

/** What a facade sends for a string argument: anything else becomes `null`. */
const norm = (a: Arg) => typeof a.v === "string" ? a.v : null;
/** What a facade sends for a request id. */
const normRid = (a: Arg) => typeof a.v === "string" || typeof a.v === "number" ? a.v : null;

type OwnerCall =
  | { op: "bind"; sid: Arg; fp: Arg; flag: boolean }
  | { op: "attach"; sid: Arg; fp: Arg; flag: boolean }
  | { op: "forget"; sid: Arg; fp?: Arg }
  | { op: "touch"; sid: Arg; fp: Arg }
  | { op: "ownerOf" | "pin" | "unpin"; sid: Arg }
  | { op: "size" };

const ownerCallArb: fc.Arbitrary<OwnerCall> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("bind" as const),
      sid: sessionArb,
      fp: fingerprintArb,
      flag: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("attach" as const),
      sid: sessionArb,
      fp: fingerprintArb,
      flag: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("forget" as const),
      sid: sessionArb,
      fp: fingerprintArb,
    }, {
      requiredKeys: ["op", "sid"],
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("touch" as const),
      sid: sessionArb,
      fp: fingerprintArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constantFrom("ownerOf" as const, "pin" as const, "unpin" as const),
      sid: sessionArb,
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: "size" as const }) },
);

function ownerCallIsValid(call: OwnerCall): boolean {
  return Object.values(call).every((v) => typeof v !== "object" || (v as Arg).ok);
}

function issueOwner(reg: SessionOwnerRegistry, call: OwnerCall): Promise<unknown> {
  const s = (a: Arg) => a.v as string;
  switch (call.op) {
    case "bind":
      return reg.bind(s(call.sid), s(call.fp), { shared: call.flag });
    case "attach":
      return reg.authorizeAttach(s(call.sid), s(call.fp), { pin: call.flag });
    case "forget":
      return call.fp === undefined ? reg.forget(s(call.sid)) : reg.forget(s(call.sid), s(call.fp));
    case "touch":
      return reg.touch(s(call.sid), s(call.fp));
    case "ownerOf":
      return reg.ownerOf(s(call.sid));
    case "pin":
      return reg.pin(s(call.sid));
    case "unpin":
      return reg.unpin(s(call.sid));
    case "size":
      return reg.size();
  }
}

function applyOwner(model: OwnerTable, call: OwnerCall): unknown {
  switch (call.op) {
    case "bind":
      return model.bind(norm(call.sid), norm(call.fp), call.flag);
    case "attach":
      return model.authorizeAttach(norm(call.sid), norm(call.fp), call.flag);
    case "forget":
      return call.fp === undefined
        ? model.forget(norm(call.sid))
        : model.forget(norm(call.sid), norm(call.fp));
    case "touch":
      // The facade sends nothing for a non-string argument.
      if (typeof call.sid.v === "string" && typeof call.fp.v === "string") {
        model.touch(call.sid.v, call.fp.v);
      }
      return undefined;
    case "ownerOf":
      return model.ownerOf(norm(call.sid));
    case "pin":
      return model.pin(norm(call.sid));
    case "unpin":
      return model.unpin(norm(call.sid));
    case "size":
      return model.size();
  }
}

type CancelCall =
  | { op: "register"; sid: Arg; rid: Arg }
  | { op: "deregister"; k: number }
  | { op: "deregisterUnknown"; id: Arg }
  | { op: "cancel"; sid: Arg; rid: Arg }
  | { op: "cancelAll"; sid: Arg }
  | { op: "size" };

const cancelCallArb: fc.Arbitrary<CancelCall> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant("register" as const),
      sid: sessionArb,
      rid: requestIdArb,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant("deregister" as const), k: fc.nat(30) }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("deregisterUnknown" as const), id: unknownEntryArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("cancel" as const),
      sid: sessionArb,
      rid: requestIdArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("cancelAll" as const), sid: sessionArb }) },
  { weight: 1, arbitrary: fc.constant({ op: "size" as const }) },
);

function cancelCallIsValid(call: CancelCall): boolean {
  if (call.op === "deregisterUnknown") return false;
  return Object.values(call).every((v) => typeof v !== "object" || (v as Arg).ok);
}

/** Answers a call may give for invalid input: fail closed. */
const FAIL_CLOSED = new Set<unknown>(["refused", false, null, 0, undefined]);

/**
 * Checks one settled call against the model's answer: a valid call must
 * resolve to exactly that; an invalid one may instead reject with
 * `InvalidInputError`. Returns whether it rejected.
 */
function check(
  settled: PromiseSettledResult<unknown>,
  want: unknown,
  isValid: boolean,
  what: string,
): boolean {
  if (!isValid) assert.ok(FAIL_CLOSED.has(want), `model answer fails closed: ${what}`);
  if (settled.status === "fulfilled") {
    assert.deepEqual(settled.value, want, what);
    return false;
  }
  assert.ok(
    !isValid && settled.reason instanceof InvalidInputError,
    `${what} rejected: ${settled.reason}`,
  );
  return true;
}

/** A short description of a call for assertion messages. */
function describe(call: object): string {
  return JSON.stringify(
    call,
    (_, v) =>
      typeof v === "string" && v.length > 24
        ? `${v.slice(0, 6)}…(${v.length})`
        : typeof v === "number" && !Number.isFinite(v)
        ? String(v)
        : v,
  );
}

const OWNER_BOUNDS = { maxEntries: 4, maxPerPrincipal: 2, sharedPrincipals: ["fp-shared"] };
const CANCEL_MAX = 6;
const COUNTERS = ["evictions", "refusals", "claims", "invalid", "full"] as const;
const CANCEL_COUNTERS = ["registered", "ignored", "displaced", "cancelled"] as const;

async function ownerProperty(reg: SessionOwnerRegistry, runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(ownerCallArb, { minLength: 1, maxLength: 40 }), async (calls) => {
      const before = await reg.stats();
      const model = new OwnerTable(OWNER_BOUNDS);
      // Every call in one tick: one batch.
      const pending = calls.map((call) => issueOwner(reg, call));
      const want = calls.map((call) => applyOwner(model, call));
      const settled = await Promise.allSettled(pending);
      let rejected = 0;
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i];
        if (check(settled[i], want[i], ownerCallIsValid(call), `#${i} ${describe(call)}`)) {
          rejected++;
        }
      }
      const after = await reg.stats();
      const expected = model.stats();
      assert.equal(after.size, expected.size, "size");
      assert.equal(after.pinned, expected.pinned, "pinned");
      for (const name of COUNTERS) {
        // A call refused with InvalidInputError is not counted as invalid by the store.
        if (name === "invalid" && rejected > 0) continue;
        assert.equal(after[name] - before[name], expected[name], name);
      }
      for (const sid of SESSIONS) assert.equal(await reg.ownerOf(sid), model.ownerOf(sid), sid);
      // Back to an empty table for the next run (an operator forget drops pinned ones too).
      await Promise.all(SESSIONS.map((sid) => reg.forget(sid)));
      assert.equal(await reg.size(), 0);
    }),
    { numRuns: runs },
  );
}

async function cancelProperty(reg: CancellationRegistry, runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(cancelCallArb, { minLength: 1, maxLength: 40 }), async (calls) => {
      const before = await reg.stats();
      const model = new CancelTable({ maxEntries: CANCEL_MAX });
      const entryIds: string[] = [];
      const modelIds: string[] = [];
      const pending: Promise<unknown>[] = [];
      const want: unknown[] = [];
      const validity: boolean[] = [];
      // Every call in one tick: `track` hands its entry id back at once, so a
      // deregistration can ride in the same batch as its registration.
      for (const call of calls) {
        switch (call.op) {
          case "register": {
            const tracked = reg.track(call.sid.v as string, call.rid.v as string);
            entryIds.push(tracked.entryId);
            const mid = `m${modelIds.length}`;
            modelIds.push(mid);
            pending.push(tracked.registered);
            want.push(model.register(norm(call.sid), normRid(call.rid), mid));
            validity.push(cancelCallIsValid(call));
            break;
          }
          case "deregister": {
            const k = call.k < entryIds.length ? call.k : -1;
            pending.push(reg.deregister(k < 0 ? "never-registered" : entryIds[k]));
            want.push(model.deregister(k < 0 ? "never-registered" : modelIds[k]));
            validity.push(true);
            break;
          }
          case "deregisterUnknown":
            pending.push(reg.deregister(call.id.v as string));
            want.push(model.deregister(norm(call.id)));
            validity.push(false);
            break;
          case "cancel":
            pending.push(reg.cancel(call.sid.v as string, call.rid.v as string));
            want.push(model.cancel(norm(call.sid), normRid(call.rid)) !== null);
            validity.push(cancelCallIsValid(call));
            break;
          case "cancelAll":
            pending.push(reg.cancelAll(call.sid.v as string));
            want.push(model.cancelAll(norm(call.sid)).length);
            validity.push(cancelCallIsValid(call));
            break;
          case "size":
            pending.push(reg.size());
            want.push(model.size());
            validity.push(true);
            break;
        }
      }
      const settled = await Promise.allSettled(pending);
      let rejected = 0;
      for (let i = 0; i < calls.length; i++) {
        if (check(settled[i], want[i], validity[i], `#${i} ${describe(calls[i])}`)) rejected++;
      }
      const after = await reg.stats();
      const expected = model.stats();
      assert.equal(after.size, expected.size, "size");
      for (const name of CANCEL_COUNTERS) {
        if (name === "ignored" && rejected > 0) continue;
        assert.equal(after[name] - before[name], expected[name], name);
      }
      // Back to an empty table for the next run.
      await Promise.all(entryIds.map((id) => reg.deregister(id)));
      assert.equal(await reg.size(), 0);
    }),
    { numRuns: runs },
  );
}

/** The reported bug, spelled out: a 1,024-"€" request id among other callers' calls. */
async function euroRequestId(reg: CancellationRegistry): Promise<void> {
  const first = reg.track("iso-1", 1);
  const second = reg.track("iso-1", 2);
  const euro = reg.register("iso-1", "€".repeat(1024));
  const longest = reg.register("iso-2", "€".repeat(341) + "x");
  const gone = reg.deregister(first.entryId); // held back until the next message
  const third = reg.track("iso-3", 1);
  assert.equal(await first.registered, true);
  assert.equal(await second.registered, true);
  assert.equal(await euro, null);
  const kept = await longest;
  assert.ok(kept !== null);
  assert.equal(await gone, true);
  assert.equal(await third.registered, true);
  assert.equal(await reg.size(), 3);
  assert.equal(await reg.cancel("iso-2", "€".repeat(341) + "x"), true);
  assert.equal(kept.signal.aborted, true);
  await Promise.all([second.entryId, third.entryId, kept.entryId].map((id) => reg.deregister(id)));
  assert.equal(await reg.size(), 0);
}

Deno.test("batch isolation: one caller's bad input never fails another's call, on every store", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-iso-" });
  await using redis = await startRedis();
  const stores: [string, () => RegistryStore][] = [
    ["memory", () => memoryStore()],
    ["Redis", () => redisStore({ url: redis.url, prefix: `iso${crypto.randomUUID()}:` })],
    ["Deno KV", () => kvStore({ path: `${dir}/iso.kv`, prefix: crypto.randomUUID() })],
  ];
  try {
    for (const [name, store] of stores) {
      await t.step(`${name}: a 1,024-"€" request id in a batch with other callers`, async () => {
        await using cancels = new CancellationRegistry({ maxEntries: 100, store: store() });
        await euroRequestId(cancels);
      });
      await t.step(`${name}: random owner batches agree with the pure table`, async () => {
        await using owners = new SessionOwnerRegistry({
          ...OWNER_BOUNDS,
          touchIntervalMs: 0,
          store: store(),
        });
        await ownerProperty(owners, 60);
      });
      await t.step(`${name}: random cancellation batches agree with the pure table`, async () => {
        await using cancels = new CancellationRegistry({ maxEntries: CANCEL_MAX, store: store() });
        await cancelProperty(cancels, 60);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
