import assert from "node:assert/strict";
import fc from "fast-check";
import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { OwnerTable } from "../src/owner_table.ts";
import {
  applyOwnerCall,
  cancelCallArb,
  facadeCancelRun,
  issueOwnerCall,
  modelCancelRun,
  ownerCallArb,
  ownerOptionsArb,
} from "./support/ops.ts";

const RUNS = 60;
const SESSION_POOL = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];

for (const pipelined of [false, true]) {
  const mode = pipelined ? "pipelined" : "awaited one by one";

  Deno.test(`property: SessionOwnerRegistry (${mode}) agrees with the pure OwnerTable`, async () => {
    await fc.assert(
      fc.asyncProperty(
        ownerOptionsArb,
        fc.array(ownerCallArb, { minLength: 1, maxLength: 80 }),
        async (options, calls) => {
          await using reg = new SessionOwnerRegistry(options);
          const model = new OwnerTable(options);
          // knownOwner may not know an owner, but never names a wrong one once
          // nothing is in flight.
          const knownIsSound = () => {
            for (const sid of SESSION_POOL) {
              const known = reg.knownOwner(sid);
              if (known !== undefined) assert.equal(known, model.ownerOf(sid), `known ${sid}`);
            }
          };
          let results: unknown[];
          let expected: unknown[];
          if (pipelined) {
            results = await Promise.all(calls.map((call) => issueOwnerCall(reg, call)));
            expected = calls.map((call) => applyOwnerCall(model, call));
            knownIsSound();
          } else {
            results = [];
            expected = [];
            for (const call of calls) {
              results.push(await issueOwnerCall(reg, call));
              expected.push(applyOwnerCall(model, call));
              knownIsSound();
            }
          }
          assert.deepEqual(results, expected);
          // The counters agree too (restarts is the facade's own and must be 0).
          assert.deepEqual(await reg.stats(), model.stats());
        },
      ),
      { numRuns: RUNS },
    );
  });

  Deno.test(`property: CancellationRegistry (${mode}) agrees with the pure CancelTable`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.array(cancelCallArb, { minLength: 1, maxLength: 80 }),
        async (maxEntries, calls) => {
          await using reg = new CancellationRegistry({ maxEntries });
          const run = await facadeCancelRun(reg, calls, pipelined);
          assert.deepEqual(run, modelCancelRun(maxEntries, calls));
        },
      ),
      { numRuns: RUNS },
    );
  });
}
