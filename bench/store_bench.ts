/**
 * Store benchmarks: the same registry calls on the in-memory store (the
 * baseline), Redis (a local `redis-server` this bench starts on a free
 * loopback port) and Deno KV (in memory and on a file), all in one run.
 *
 *   deno bench --allow-all --unstable-kv bench/store_bench.ts
 *
 * - `latency`: one awaited `authorizeAttach` of a bound session (a round
 *   trip through the worker and, for Redis, the server).
 * - `claims`: 1,000 concurrent callers x 10 awaited `authorizeAttach` calls
 *   of NEW session ids = 10,000 claims per iteration (ops/s = 10,000 / time
 *   per iteration). The registry is at its `maxEntries` bound, so every
 *   claim also evicts the least recently used binding: the costliest owner
 *   operation.
 * - `checks`: the same shape on sessions the caller already owns (refresh),
 *   the common case on a busy server.
 *
 * Calls made in one tick travel to the worker as one batch and, for Redis,
 * as one script call per 1,000 operations: one round trip for the batch.
 */

import { kvStore, type RegistryStore, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { startRedis } from "../tests/support/redis_server.ts";

const CALLERS = 1_000;
const ROUNDS = 10;
const BOUND = 20_000;

const redis = await startRedis();
const dir = await Deno.makeTempDir({ prefix: "mcp-guard-bench-" });
globalThis.addEventListener("unload", () => {
  // Deno.bench has no teardown hook: stop the server and drop the files on exit.
  redis.stop();
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* gone */ }
});

interface Subject {
  name: string;
  store: RegistryStore;
  /** Iterations for the throughput benches (the KV stores are far slower). */
  n?: number;
}

const subjects: Subject[] = [
  { name: "memory", store: { kind: "memory" } },
  { name: "redis", store: redisStore({ url: redis.url, prefix: "bench:" }) },
  { name: "kv :memory:", store: kvStore({ path: ":memory:" }), n: 3 },
  { name: "kv file", store: kvStore({ path: `${dir}/bench.kv` }), n: 3 },
];

const fps = Array.from({ length: CALLERS }, (_, i) => `fp-${i}`.padEnd(64, "0"));
const owned = Array.from({ length: CALLERS }, (_, i) => `owned-${i}-${crypto.randomUUID()}`);

for (const subject of subjects) {
  const reg = new SessionOwnerRegistry({
    store: subject.store,
    maxEntries: BOUND,
    maxPerPrincipal: BOUND,
  });
  await Promise.all(owned.map((sid, i) => reg.bind(sid, fps[i])));
  let fresh = 0;

  Deno.bench({
    name: `single awaited authorizeAttach: ${subject.name}`,
    group: "latency",
    baseline: subject.name === "memory",
    n: subject.n === undefined ? undefined : 200,
    async fn() {
      if (!await reg.authorizeAttach(owned[0], fps[0])) throw new Error("refused");
    },
  });

  Deno.bench({
    name: `10,000 pipelined claims (1,000 callers): ${subject.name}`,
    group: "claims",
    baseline: subject.name === "memory",
    n: subject.n,
    warmup: subject.n === undefined ? undefined : 1,
    async fn() {
      const base = fresh;
      fresh += CALLERS * ROUNDS;
      await Promise.all(fps.map(async (fp, c) => {
        for (let r = 0; r < ROUNDS; r++) {
          if (!await reg.authorizeAttach(`new-${base + r * CALLERS + c}`, fp)) {
            throw new Error("claim refused");
          }
        }
      }));
    },
  });

  Deno.bench({
    name: `10,000 pipelined checks (1,000 callers): ${subject.name}`,
    group: "checks",
    baseline: subject.name === "memory",
    n: subject.n,
    warmup: subject.n === undefined ? undefined : 1,
    async fn() {
      await Promise.all(fps.map(async (fp, c) => {
        for (let r = 0; r < ROUNDS; r++) {
          if (!await reg.authorizeAttach(owned[c], fp)) throw new Error("check refused");
        }
      }));
    },
  });

  globalThis.addEventListener("unload", () => void reg.close());
}
