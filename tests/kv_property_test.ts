/**
 * The core property test, run against the Deno KV store (a private
 * `:memory:` database per registry, and a shared file): random operation
 * sequences on a KV-backed facade agree, result by result (and counter by
 * counter), with the pure in-memory tables.
 */

import { CancellationRegistry, kvStore, SessionOwnerRegistry } from "../mod.ts";
import { registryProperties } from "./support/properties.ts";

Deno.test("property: Deno KV store agrees with the pure tables", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-prop-" });
  let run = 0;
  // Odd runs use a private in-memory database, even ones a fresh prefix in one shared file.
  const store = () =>
    run++ % 2 === 0
      ? kvStore({ path: `${dir}/prop.kv`, prefix: `prop${run}` })
      : kvStore({ path: ":memory:" });
  try {
    await registryProperties(t, {
      runs: 60,
      owners: (options) => new SessionOwnerRegistry({ ...options, store: store() }),
      cancels: (maxEntries) => new CancellationRegistry({ maxEntries, store: store() }),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
