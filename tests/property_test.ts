/**
 * The core property test on the in-memory store: random operation sequences
 * on the worker-backed facades agree with the pure tables run in-process.
 */

import { CancellationRegistry, memoryStore, SessionOwnerRegistry } from "../mod.ts";
import { registryProperties } from "./support/properties.ts";

Deno.test("property: the in-memory registries agree with the pure tables", async (t) => {
  await registryProperties(t, {
    runs: 60,
    // A long idle TTL never fires within a run: the same answers, another code path (floors).
    owners: (options, withTtl) =>
      new SessionOwnerRegistry({
        ...options,
        store: memoryStore({ idleTtlMs: withTtl ? 3_600_000 : 0 }),
      }),
    cancels: (maxEntries) => new CancellationRegistry({ maxEntries }),
  });
});
