/**
 * The core property test on the in-memory store: random operation sequences
 * on the worker-backed facades agree with the pure tables run in-process.
 */

import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { registryProperties } from "./support/properties.ts";

Deno.test("property: the in-memory registries agree with the pure tables", async (t) => {
  await registryProperties(t, {
    runs: 60,
    owners: (options) => new SessionOwnerRegistry(options),
    cancels: (maxEntries) => new CancellationRegistry({ maxEntries }),
  });
});
