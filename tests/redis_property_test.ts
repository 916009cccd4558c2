/**
 * The core property test, run against the Redis store: random operation
 * sequences on a Redis-backed facade agree, result by result (and counter by
 * counter), with the pure in-memory tables.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { OwnerTable } from "../src/owner_table.ts";
import { startRedis } from "./support/redis_server.ts";
import {
  applyOwnerCall,
  cancelCallArb,
  facadeCancelRun,
  issueOwnerCall,
  modelCancelRun,
  ownerCallArb,
  ownerOptionsArb,
} from "./support/ops.ts";

const RUNS = 20;

Deno.test("property: Redis store agrees with the pure tables", async (t) => {
  await using redis = await startRedis();
  let run = 0;
  // Every run gets its own key prefix: a fresh, empty registry on the shared server.
  const store = (idleTtlMs = 0) =>
    redisStore({ url: redis.url, prefix: `prop${run++}:`, idleTtlMs });

  for (const pipelined of [false, true]) {
    const mode = pipelined ? "pipelined" : "awaited one by one";

    await t.step(`SessionOwnerRegistry (${mode})`, async () => {
      await fc.assert(
        fc.asyncProperty(
          ownerOptionsArb,
          fc.array(ownerCallArb, { minLength: 1, maxLength: 80 }),
          fc.boolean(),
          async (options, calls, withTtl) => {
            // A long idle TTL never fires within a run: the same answers, another code path.
            await using reg = new SessionOwnerRegistry({
              ...options,
              store: store(withTtl ? 3_600_000 : 0),
            });
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
});
