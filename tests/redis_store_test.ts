/**
 * The Redis store against a real `redis-server`: option validation, bounds
 * that hold across registries, idle expiry, multi-chunk batches, a flushed
 * script cache, and bindings that outlive the registry and the process.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidInputError, RegistryUnavailableError, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { OwnerTable } from "../src/core/owner_table.ts";
import { startRedis } from "./support/redis_server.ts";
import { applyOwnerCall, issueOwnerCall, ownerCallArb } from "./support/ops.ts";
import { runChild } from "./support/store_child.ts";
import { sharedStoreIsOneTable } from "./support/properties.ts";
import {
  FLOOD_BOUNDS,
  KEEP_TTL_MS,
  KEPT_LRU_BOUNDS,
  keptInLruOrder,
  keptPastIdle,
  sharedFlood,
} from "./support/bounds.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("redisStore: rejects bad options with an InvalidInputError naming them", () => {
  const bad: [unknown, RegExp][] = [
    [{ url: "http://127.0.0.1:6379" }, /url/],
    [{ url: "not a url" }, /url/],
    [{ url: 6379 }, /url/],
    [{ prefix: "" }, /prefix/],
    [{ prefix: "has space" }, /prefix/],
    [{ prefix: "x".repeat(129) }, /prefix/],
    [{ idleTtlMs: -1 }, /idleTtlMs/],
    [{ idleTtlMs: 1.5 }, /idleTtlMs/],
    [{ requestTtlMs: "60000" }, /requestTtlMs/],
    [{ connectTimeoutMs: 0 }, /connectTimeoutMs/],
    [null, /options/],
    [{ cluster: { rootNodes: [] } }, /cluster\.rootNodes/],
    [{ cluster: { rootNodes: "redis://a:1" } }, /cluster\.rootNodes/],
    [{ cluster: { rootNodes: ["http://a:1"] } }, /cluster\.rootNodes\[0\]/],
    [{ cluster: { rootNodes: ["redis://a:1/2"] } }, /database "2"/],
    [{ cluster: { rootNodes: ["redis://a:1", "rediss://b:1"] } }, /rootNodes\[1\] differs/],
    [{ cluster: { rootNodes: ["redis://u:p@a:1", "redis://b:1"] } }, /credentials/],
    [{ cluster: { rootNode: ["redis://a:1"] } }, /"rootNode".*"rootNodes"/],
    [{ cluster: { rootNodes: ["redis://a:1"] }, url: "redis://a:1" }, /not both/],
    [{ cluster: { rootNodes: ["redis://a:1"] }, prefix: "{x}" }, /"\{x\}".*hash tag/],
  ];
  for (const [options, name] of bad) {
    assert.throws(
      () => redisStore(options as never),
      (err: unknown) => err instanceof InvalidInputError && name.test(err.message),
      `expected InvalidInputError for ${JSON.stringify(options)}`,
    );
  }
  // A password never appears in the error message.
  assert.throws(
    () => redisStore({ url: "http://user:s3cret@host:1" }),
    (err: unknown) => err instanceof Error && !err.message.includes("s3cret"),
  );
  const store = redisStore({ url: "redis://127.0.0.1:1", prefix: "a:" });
  assert.equal(store.kind, "module");
  // Credentials shared by every root node; database 0 named or not.
  const cluster = { rootNodes: ["rediss://u:p@a:1/0", "rediss://u:p@b:2"] };
  assert.equal(redisStore({ cluster }).kind, "module");
});

Deno.test("Redis store: one server, several registries", async (t) => {
  await using redis = await startRedis();
  let n = 0;
  const prefix = () => `t${n++}:`;

  await t.step("several registries sharing a prefix behave like ONE table", async () => {
    await sharedStoreIsOneTable(() => redisStore({ url: redis.url, prefix: prefix() }), 12);
  });

  await t.step("pinned sessions are never evicted, whichever process pinned them", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    await using a = new SessionOwnerRegistry({ store, maxEntries: 2 });
    await using b = new SessionOwnerRegistry({ store, maxEntries: 2 });
    assert.equal(await a.authorizeAttach("s1", "fp-a", { pin: true }), true);
    assert.equal(await b.authorizeAttach("s2", "fp-b", { pin: true }), true);
    assert.equal(await b.bind("s3", "fp-c"), "full");
    assert.equal(await a.authorizeAttach("s3", "fp-c"), false);
    assert.equal(await a.unpin("s1"), true);
    assert.equal(await b.bind("s3", "fp-c"), "bound"); // s1 is the only evictable one
    assert.equal(await b.ownerOf("s1"), null);
    assert.equal(await a.ownerOf("s2"), "fp-b");
    const stats = await a.stats();
    assert.equal(stats.full, 2);
    assert.equal(stats.evictions, 1);
    assert.equal(stats.pinned, 1);
  });

  await t.step("a principal at its cap evicts only its own bindings, cluster-wide", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    const options = { store, maxEntries: 100, maxPerPrincipal: 2, sharedPrincipals: ["fp-m"] };
    await using a = new SessionOwnerRegistry(options);
    await using b = new SessionOwnerRegistry(options);
    assert.equal(await a.bind("victim", "fp-v"), "bound");
    assert.equal(await a.bind("f1", "fp-f"), "bound");
    assert.equal(await b.bind("f2", "fp-f"), "bound");
    assert.equal(await a.bind("f3", "fp-f"), "bound"); // evicts f1, fp-f's oldest
    assert.deepEqual(
      await Promise.all(["victim", "f1", "f2", "f3"].map((s) => b.ownerOf(s))),
      ["fp-v", null, "fp-f", "fp-f"],
    );
    for (let i = 0; i < 5; i++) assert.equal(await b.bind(`m${i}`, "fp-m"), "bound"); // shared
    assert.equal(await a.size(), 8);
  });

  await t.step("a shared principal floods: bounded, evicting no one else's binding", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    await using a = new SessionOwnerRegistry({ ...FLOOD_BOUNDS, store });
    await using b = new SessionOwnerRegistry({ ...FLOOD_BOUNDS, store });
    await sharedFlood(a);
    assert.equal(await b.ownerOf("bob-1"), "fp-bob"); // one table for every process
    assert.equal(await b.ownerOf("k29"), "fp-key");
  });

  await t.step("idle TTL drops unused bindings, never pinned ones", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix(), idleTtlMs: 300 });
    // touchIntervalMs must be at most half the idle TTL.
    await using a = new SessionOwnerRegistry({ store, touchIntervalMs: 0 });
    await using b = new SessionOwnerRegistry({ store, touchIntervalMs: 0 });
    assert.equal(await a.bind("idle", "fp-a"), "bound");
    assert.equal(await a.bind("swept", "fp-a"), "bound");
    assert.equal(await a.authorizeAttach("live", "fp-a", { pin: true }), true);
    assert.equal(await a.bind("used", "fp-a"), "bound");
    await sleep(200);
    assert.equal(await b.bind("used", "fp-a"), "bound"); // refreshes it
    await sleep(200);
    // "idle" expired: the lookup drops it, another principal may now bind it.
    assert.equal(await b.ownerOf("idle"), null);
    assert.equal(await b.bind("idle", "fp-b"), "bound");
    assert.equal(await b.ownerOf("live"), "fp-a");
    assert.equal(await b.ownerOf("used"), "fp-a");
    // "swept" was dropped by a sweep although nobody looked it up.
    assert.equal(await a.size(), 3);
    assert.equal(await a.unpin("live"), true);
    assert.equal(await a.ownerOf("live"), "fp-a"); // unpin refreshed it
  });

  await t.step(
    "bind's keepMs outlives idle expiry, exactly; the sweep is not stalled",
    async () => {
      const store = redisStore({ url: redis.url, prefix: prefix(), idleTtlMs: KEEP_TTL_MS });
      await using owners = new SessionOwnerRegistry({ store, touchIntervalMs: 0 });
      await keptPastIdle(owners);
    },
  );

  await t.step("kept and plain bindings share one LRU order, cluster-wide", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix(), idleTtlMs: 3_600_000 });
    await using owners = new SessionOwnerRegistry({ ...KEPT_LRU_BOUNDS, store });
    await keptInLruOrder(owners);
  });

  await t.step("batches longer than one script call (3 chunks) keep call order", async () => {
    const options = { maxEntries: 50, maxPerPrincipal: 20, sharedPrincipals: ["fp-0"] };
    await using reg = new SessionOwnerRegistry({
      ...options,
      store: redisStore({ url: redis.url, prefix: prefix() }),
    });
    const calls = fc.sample(ownerCallArb, { numRuns: 2_500, seed: 42 }).map((call, i) =>
      "sid" in call && call.sid.startsWith("s") ? { ...call, sid: `${call.sid}-${i % 97}` } : call
    );
    const results = await Promise.all(calls.map((call) => issueOwnerCall(reg, call)));
    const model = new OwnerTable(options);
    assert.deepEqual(results, calls.map((call) => applyOwnerCall(model, call)));
    assert.deepEqual(await reg.stats(), model.stats());
  });

  await t.step("a flushed script cache is reloaded transparently", async () => {
    await using reg = new SessionOwnerRegistry({
      store: redisStore({ url: redis.url, prefix: prefix() }),
    });
    assert.equal(await reg.bind("s1", "fp-a"), "bound");
    assert.match(await redis.command("SCRIPT", "FLUSH"), /^\+OK/);
    assert.deepEqual(
      await Promise.all([reg.bind("s1", "fp-b"), reg.bind("s2", "fp-b"), reg.size()]),
      ["refused", "bound", 2],
    );
    assert.equal((await reg.stats()).refusals, 1); // applied exactly once
  });

  await t.step("bindings outlive the registry and the process that made them", async () => {
    const p = prefix();
    const store = redisStore({ url: redis.url, prefix: p });
    {
      await using first = new SessionOwnerRegistry({ store });
      assert.equal(await first.bind("kept-1", "fp-a"), "bound");
    }
    // Another process binds, then exits.
    const made = await runChild({
      store: { kind: "redis", url: redis.url, prefix: p },
      action: "bind",
      ids: ["kept-2", "kept-1"],
      fp: "fp-b",
    });
    assert.deepEqual(made.results, ["bound", "refused"]);
    await using second = new SessionOwnerRegistry({ store });
    assert.equal(await second.ownerOf("kept-1"), "fp-a");
    assert.equal(await second.ownerOf("kept-2"), "fp-b");
    assert.equal(await second.authorizeAttach("kept-2", "fp-a"), false);
    // And a fresh process sees the same.
    const seen = await runChild({
      store: { kind: "redis", url: redis.url, prefix: p },
      action: "owners",
      ids: ["kept-1", "kept-2", "never"],
    });
    assert.deepEqual(seen.owners, ["fp-a", "fp-b", null]);
  });

  await t.step("prefixes isolate deployments on one server", async () => {
    await using a = new SessionOwnerRegistry({
      store: redisStore({ url: redis.url, prefix: prefix() }),
    });
    await using b = new SessionOwnerRegistry({
      store: redisStore({ url: redis.url, prefix: prefix() }),
    });
    assert.equal(await a.bind("same-id", "fp-a"), "bound");
    assert.equal(await b.bind("same-id", "fp-b"), "bound");
    assert.equal(await a.ownerOf("same-id"), "fp-a");
  });
});

Deno.test("Redis store: bindings survive a Redis restart when Redis persists", async () => {
  await using redis = await startRedis({ persistent: true });
  const store = redisStore({ url: redis.url, prefix: "aof:", connectTimeoutMs: 500 });
  await using reg = new SessionOwnerRegistry({ store });
  assert.equal(await reg.bind("s1", "fp-a"), "bound");
  await redis.stop();
  await redis.start();
  // The client reconnects in the background; the binding is still there.
  const deadline = Date.now() + 10_000;
  let answer: boolean | null = null;
  while (answer === null) {
    try {
      answer = await reg.authorizeAttach("s1", "fp-b");
    } catch (err) {
      assert.ok(err instanceof RegistryUnavailableError, String(err));
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
  assert.equal(answer, false);
  assert.equal(await reg.ownerOf("s1"), "fp-a");
});
