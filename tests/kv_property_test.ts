/**
 * The core property test, run against the Deno KV store (a private
 * `:memory:` database per registry, and a shared file): random operation
 * sequences on a KV-backed facade agree, result by result (and counter by
 * counter), with the pure in-memory tables.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { CancellationRegistry, kvStore, SessionOwnerRegistry } from "../mod.ts";
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

Deno.test("property: Deno KV store agrees with the pure tables", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-prop-" });
  let run = 0;
  // Odd runs use a private in-memory database, even ones a fresh prefix in one shared file.
  const store = () =>
    run++ % 2 === 0
      ? kvStore({ path: `${dir}/prop.kv`, prefix: `prop${run}` })
      : kvStore({ path: ":memory:" });
  try {
    for (const pipelined of [false, true]) {
      const mode = pipelined ? "pipelined" : "awaited one by one";

      await t.step(`SessionOwnerRegistry (${mode})`, async () => {
        await fc.assert(
          fc.asyncProperty(
            ownerOptionsArb,
            fc.array(ownerCallArb, { minLength: 1, maxLength: 80 }),
            async (options, calls) => {
              await using reg = new SessionOwnerRegistry({ ...options, store: store() });
              let results: unknown[];
              if (pipelined) {
                results = await Promise.all(calls.map((call) => issueOwnerCall(reg, call)));
              } else {
                results = [];
                for (const call of calls) results.push(await issueOwnerCall(reg, call));
              }
              const model = new OwnerTable(options);
              assert.deepEqual(results, calls.map((call) => applyOwnerCall(model, call)));
              assert.deepEqual(await reg.stats(), model.stats());
            },
          ),
          { numRuns: RUNS },
        );
      });

      await t.step(`CancellationRegistry (${mode})`, async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 1, max: 8 }),
            fc.array(cancelCallArb, { minLength: 1, maxLength: 80 }),
            async (maxEntries, calls) => {
              await using reg = new CancellationRegistry({ maxEntries, store: store() });
              const run = await facadeCancelRun(reg, calls, pipelined);
              assert.deepEqual(run, modelCancelRun(maxEntries, calls));
            },
          ),
          { numRuns: RUNS },
        );
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
