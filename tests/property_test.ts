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

for (const pipelined of [false, true]) {
  const mode = pipelined ? "pipelined" : "awaited one by one";

  Deno.test(`property: SessionOwnerRegistry (${mode}) agrees with the pure OwnerTable`, async () => {
    await fc.assert(
      fc.asyncProperty(
        ownerOptionsArb,
        fc.array(ownerCallArb, { minLength: 1, maxLength: 80 }),
        async (options, calls) => {
          await using reg = new SessionOwnerRegistry(options);
          let results: unknown[];
          if (pipelined) {
            results = await Promise.all(calls.map((call) => issueOwnerCall(reg, call)));
          } else {
            results = [];
            for (const call of calls) results.push(await issueOwnerCall(reg, call));
          }
          const model = new OwnerTable(options);
          assert.deepEqual(results, calls.map((call) => applyOwnerCall(model, call)));
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
