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
  // A long idle TTL never fires within a run: the same answers, another code path (floors).
  const store = (idleTtlMs = 0) =>
    run++ % 2 === 0
      ? kvStore({ path: `${dir}/prop.kv`, prefix: `prop${run}`, idleTtlMs })
      : kvStore({ path: ":memory:", idleTtlMs });
  try {
    await registryProperties(t, {
      runs: 60,
      owners: (options, withTtl) =>
        new SessionOwnerRegistry({ ...options, store: store(withTtl ? 3_600_000 : 0) }),
      cancels: (maxEntries) => new CancellationRegistry({ maxEntries, store: store() }),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
