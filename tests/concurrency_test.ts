import assert from "node:assert/strict";
import fc from "fast-check";
import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { clients } from "../src/registry/registry_options.ts";
import { issueOwnerCall, modelOwnerResults, type OwnerCall, ownerCallArb } from "./support/ops.ts";

const CALLERS = 64;
const CALLS_PER_CALLER = 80; // 5,120 calls in all

/** A deterministic pseudo-random schedule so failures reproduce. */
function schedule(seed: number): OwnerCall[][] {
  return fc.sample(
    fc.array(ownerCallArb, { minLength: CALLS_PER_CALLER, maxLength: CALLS_PER_CALLER }),
    { numRuns: CALLERS, seed },
  );
}

Deno.test("concurrency: thousands of unawaited calls from many callers = one by one in call order", async () => {
  const options = { maxEntries: 12, maxPerPrincipal: 5, sharedPrincipals: ["fp-shared"] };
  const perCaller = schedule(20261125);
  await using concurrent = new SessionOwnerRegistry(options);
  await using sequential = new SessionOwnerRegistry(options);

  // Many async callers interleave: each issues calls without awaiting most
  // of them, sometimes yields, sometimes awaits its own last call. The global
  // order in which calls were made is recorded as they are made.
  const issued: { call: OwnerCall; result: Promise<unknown> }[] = [];
  await Promise.all(perCaller.map(async (calls, caller) => {
    for (let i = 0; i < calls.length; i++) {
      const result = issueOwnerCall(concurrent, calls[i]);
      issued.push({ call: calls[i], result });
      if ((i + caller) % 11 === 0) await result;
      else if ((i + caller) % 3 === 0) await null;
    }
  }));
  const got = await Promise.all(issued.map((x) => x.result));
  assert.equal(got.length, CALLERS * CALLS_PER_CALLER);

  const oneByOne: unknown[] = [];
  for (const { call } of issued) oneByOne.push(await issueOwnerCall(sequential, call));
  assert.deepEqual(got, oneByOne);
  assert.deepEqual(got, modelOwnerResults(options, issued.map((x) => x.call)));

  // Batching really happened: far fewer messages than calls (and with
  // maxBatch: Infinity a tick's calls would travel as exactly one message).
  const batches = clients.get(concurrent)!.batches;
  assert.ok(batches < got.length / 10, `${batches} batches for ${got.length} calls`);
  assert.equal(clients.get(sequential)!.batches, got.length, "awaited calls travel alone");
});

Deno.test("concurrency: a cancel racing its own registration from another caller is ordered", async () => {
  await using cancels = new CancellationRegistry();
  // Register and cancel in the same tick: cancel is applied after register.
  const [reg, cancelled] = await Promise.all([
    cancels.register("s1", 1),
    cancels.cancel("s1", 1),
  ]);
  assert.equal(cancelled, true);
  assert.equal(reg!.signal.aborted, true);
  // Cancel issued first in the tick finds nothing.
  const [early, reg2] = await Promise.all([cancels.cancel("s1", 2), cancels.register("s1", 2)]);
  assert.equal(early, false);
  assert.equal(reg2!.signal.aborted, false);
  // 2,000 concurrent registrations across 100 sessions, then cancelAll per session.
  const regs = await Promise.all(
    Array.from({ length: 2_000 }, (_, i) => cancels.register(`s-${i % 100}`, i)),
  );
  const counts = await Promise.all(
    Array.from({ length: 100 }, (_, i) => cancels.cancelAll(`s-${i}`)),
  );
  assert.deepEqual(counts, Array(100).fill(20));
  assert.ok(regs.every((r) => r!.signal.aborted));
});

Deno.test("batching: one tick's calls travel as one message, or in maxBatch chunks", async () => {
  await using whole = new SessionOwnerRegistry({ maxBatch: Infinity });
  await using chunked = new SessionOwnerRegistry({ maxBatch: 100 });
  const calls: OwnerCall[] = Array.from(
    { length: 1_000 },
    (_, i) => ({ op: "bind", sid: `s${i % 10}`, fp: `fp-${i % 3}` }),
  );
  const expected = modelOwnerResults({}, calls);
  assert.deepEqual(expected.slice(0, 11), [...Array(10).fill("bound"), "refused"]);
  for (const reg of [whole, chunked]) {
    const results = await Promise.all(calls.map((call) => issueOwnerCall(reg, call)));
    assert.deepEqual(results, expected, "applied in call order");
  }
  assert.equal(clients.get(whole)!.batches, 1);
  assert.equal(clients.get(chunked)!.batches, 10);
});
