/**
 * The core property test, shared by every store: random operation sequences
 * on a registry facade agree, result by result and counter by counter, with
 * the pure in-memory tables; and `knownOwner` never names a wrong owner.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type CancellationRegistry, type RegistryStore, SessionOwnerRegistry } from "../../mod.ts";
import { type OwnerBounds, OwnerTable } from "../../src/core/owner_table.ts";
import {
  applyOwnerCall,
  cancelCallArb,
  facadeCancelRun,
  floorCallArb,
  issueOwnerCall,
  modelCancelRun,
  ownerCallArb,
  ownerOptionsArb,
} from "./ops.ts";

/** The valid session ids `ownerCallArb` draws from. */
const SESSION_POOL = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];

/** What to run the properties against. */
export interface PropertyTargets {
  /** Runs per property. */
  runs: number;
  /**
   * A fresh, empty owner registry; `variant` is a coin flip a store may use
   * for an option. With `variant` true, the store must have an idle TTL of
   * an hour (the floor property relies on it).
   */
  owners(options: Required<OwnerBounds>, variant: boolean): SessionOwnerRegistry;
  /** A fresh, empty cancellation registry. */
  cancels(maxEntries: number): CancellationRegistry;
}

/**
 * Both registries, calls awaited one by one and pipelined (four steps of
 * `t`), then a fifth: floors (`keepMs`) past an hour's idle TTL never change
 * who is evicted.
 */
export async function registryProperties(
  t: Deno.TestContext,
  targets: PropertyTargets,
): Promise<void> {
  for (const pipelined of [false, true]) {
    const mode = pipelined ? "pipelined" : "awaited one by one";

    await t.step(`SessionOwnerRegistry (${mode})`, async () => {
      await fc.assert(
        fc.asyncProperty(
          ownerOptionsArb,
          fc.array(ownerCallArb, { minLength: 1, maxLength: 80 }),
          fc.boolean(),
          async (options, calls, variant) => {
            await using reg = targets.owners(options, variant);
            const model = new OwnerTable(options);
            // knownOwner may not know an owner, but never names a wrong one once nothing
            // is in flight.
            const knownIsSound = () => {
              for (const sid of SESSION_POOL) {
                const known = reg.knownOwner(sid);
                if (known !== undefined) assert.equal(known, model.ownerOf(sid), `known ${sid}`);
              }
            };
            knownIsSound(); // asking first also turns the registry's learning on
            const results: unknown[] = [];
            const expected: unknown[] = [];
            if (pipelined) {
              results.push(...await Promise.all(calls.map((call) => issueOwnerCall(reg, call))));
              expected.push(...calls.map((call) => applyOwnerCall(model, call)));
              knownIsSound();
            } else {
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
        { numRuns: targets.runs },
      );
    });

    await t.step(`CancellationRegistry (${mode})`, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 1, max: 8 }),
          fc.array(cancelCallArb, { minLength: 1, maxLength: 80 }),
          async (maxEntries, calls) => {
            await using reg = targets.cancels(maxEntries);
            const run = await facadeCancelRun(reg, calls, pipelined);
            assert.deepEqual(run, modelCancelRun(maxEntries, calls));
          },
        ),
        { numRuns: targets.runs },
      );
    });
  }
  await floorProperty(t, targets);
}

/** A store's idle TTL of an hour (`variant` true) with kept and plain bindings: the model's answers. */
async function floorProperty(t: Deno.TestContext, targets: PropertyTargets): Promise<void> {
  await t.step("SessionOwnerRegistry: kept and plain bindings, one LRU order", async () => {
    await fc.assert(
      fc.asyncProperty(
        ownerOptionsArb,
        fc.array(floorCallArb, { minLength: 1, maxLength: 60 }),
        async (options, calls) => {
          await using reg = targets.owners(options, true);
          const model = new OwnerTable(options);
          for (const call of calls) {
            assert.deepEqual(
              await issueOwnerCall(reg, call),
              applyOwnerCall(model, call),
              JSON.stringify(call),
            );
          }
          assert.deepEqual(await reg.stats(), model.stats());
        },
      ),
      { numRuns: targets.runs },
    );
  });
}

/**
 * Calls spread over three registries on one shared store (three workers,
 * three connections), awaited in turn, give the pure table's answers: the
 * bounds and the LRU order belong to the store, not to a process.
 */
export async function sharedStoreIsOneTable(
  store: () => RegistryStore,
  runs: number,
): Promise<void> {
  await fc.assert(
    fc.asyncProperty(
      ownerOptionsArb,
      fc.array(fc.tuple(fc.nat(2), ownerCallArb), { minLength: 1, maxLength: 60 }),
      async (options, calls) => {
        const shared = store();
        await using a = new SessionOwnerRegistry({ ...options, store: shared });
        await using b = new SessionOwnerRegistry({ ...options, store: shared });
        await using c = new SessionOwnerRegistry({ ...options, store: shared });
        const regs = [a, b, c];
        const model = new OwnerTable(options);
        for (const [which, call] of calls) {
          assert.deepEqual(
            await issueOwnerCall(regs[which], call),
            applyOwnerCall(model, call),
            JSON.stringify(call),
          );
        }
        assert.deepEqual(await b.stats(), model.stats());
      },
    ),
    { numRuns: runs },
  );
}
