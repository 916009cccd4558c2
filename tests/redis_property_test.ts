/**
 * The core property test, run against the Redis store: random operation
 * sequences on a Redis-backed facade agree, result by result (and counter by
 * counter), with the pure in-memory tables.
 */

import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { startRedis } from "./support/redis_server.ts";
import { registryProperties } from "./support/properties.ts";

Deno.test("property: Redis store agrees with the pure tables", async (t) => {
  await using redis = await startRedis();
  let run = 0;
  // Every run gets its own key prefix: a fresh, empty registry on the shared server.
  const store = (idleTtlMs = 0) =>
    redisStore({ url: redis.url, prefix: `prop${run++}:`, idleTtlMs });
  await registryProperties(t, {
    runs: 20,
    // A long idle TTL never fires within a run: the same answers, another code path.
    owners: (options, withTtl) =>
      new SessionOwnerRegistry({ ...options, store: store(withTtl ? 3_600_000 : 0) }),
    cancels: (maxEntries) => new CancellationRegistry({ maxEntries, store: store() }),
  });
});
