/**
 * Redis failures: while the server is stopped or hung, calls reject with
 * `RegistryUnavailableError` (never a wrong "allow"); once it is back, the
 * registries resume on their own, and no binding is lost or duplicated.
 */

import assert from "node:assert/strict";
import { CancellationRegistry, RegistryUnavailableError, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { startRedis } from "./support/redis_server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retries `fn` while it rejects with RegistryUnavailableError (any other error fails). */
async function whenBack<T>(fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      assert.ok(err instanceof RegistryUnavailableError, `unexpected ${err}`);
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

Deno.test("Redis store: stopped mid-traffic -> RegistryUnavailableError, restarted -> resumes", async () => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "fault:", connectTimeoutMs: 500 });
  await using owners = new SessionOwnerRegistry({ store });
  assert.equal(await owners.bind("owned", "fp-alice"), "bound");

  // Traffic: the owner and an intruder keep attaching while the server goes away.
  let stop = false;
  const outcomes = { alice: 0, intruderAllowed: 0, refused: 0, unavailable: 0, other: 0 };
  const traffic = Array.from({ length: 20 }, async (_, k) => {
    while (!stop) {
      const intruder = k % 2 === 1;
      try {
        const ok = await owners.authorizeAttach("owned", intruder ? "fp-mallory" : "fp-alice");
        if (intruder && ok) outcomes.intruderAllowed++;
        else if (ok) outcomes.alice++;
        else outcomes.refused++;
      } catch (err) {
        if (err instanceof RegistryUnavailableError) outcomes.unavailable++;
        else outcomes.other++;
        await sleep(5);
      }
    }
  });
  await sleep(150);
  const stoppedAt = performance.now();
  await redis.stop();
  // While it is down, calls fail fast (no offline queue), they do not hang.
  const failFast = performance.now();
  await assert.rejects(owners.ownerOf("owned"), RegistryUnavailableError);
  assert.ok(performance.now() - failFast < 1_000, "calls must fail fast while Redis is down");
  await sleep(200);
  const downCount = outcomes.unavailable;
  assert.ok(downCount > 0, "calls during the outage must reject");
  stop = true;
  await Promise.all(traffic);
  assert.equal(outcomes.intruderAllowed, 0, "an intruder was allowed");
  assert.equal(outcomes.other, 0);
  assert.ok(outcomes.alice > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
  assert.ok(performance.now() - stoppedAt < 5_000);

  // Back on the same port (empty: this server keeps no data): service resumes by itself.
  await redis.start();
  assert.equal(await whenBack(() => owners.bind("after", "fp-alice")), "bound");
  assert.equal(await owners.authorizeAttach("after", "fp-mallory"), false);
  assert.equal(await owners.ownerOf("after"), "fp-alice");
});

Deno.test("Redis store: a hung server -> calls time out; resumed -> bindings intact", async () => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "hang:", connectTimeoutMs: 500 });
  await using owners = new SessionOwnerRegistry({ store, callTimeoutMs: 400 });
  assert.equal(await owners.bind("s1", "fp-alice"), "bound");
  redis.pause();
  try {
    const calls = [
      owners.authorizeAttach("s1", "fp-mallory"),
      owners.bind("s2", "fp-alice"),
    ];
    for (const call of calls) await assert.rejects(call, RegistryUnavailableError);
  } finally {
    redis.resume();
  }
  // The facade restarted its worker; the new one reconnects and sees the same data.
  assert.equal(await whenBack(() => owners.authorizeAttach("s1", "fp-mallory")), false);
  assert.equal(await owners.ownerOf("s1"), "fp-alice");
  // s2's bind may or may not have reached Redis before the hang: either way once.
  const s2 = await owners.ownerOf("s2");
  assert.ok(s2 === null || s2 === "fp-alice");
  assert.equal(await owners.bind("s2", "fp-alice"), "bound");
  assert.equal(await owners.size(), 2);
  assert.equal((await owners.stats()).restarts, 1);
});

Deno.test("Redis store: a registry created while Redis is down starts working once it is up", async () => {
  await using redis = await startRedis();
  await redis.stop();
  const store = redisStore({ url: redis.url, prefix: "late:", connectTimeoutMs: 300 });
  await using owners = new SessionOwnerRegistry({ store });
  await using cancels = new CancellationRegistry({ store });
  await assert.rejects(owners.bind("s1", "fp-a"), RegistryUnavailableError);
  await assert.rejects(cancels.register("s1", 1), RegistryUnavailableError);
  await redis.start();
  assert.equal(await whenBack(() => owners.bind("s1", "fp-a")), "bound");
  const reg = await whenBack(() => cancels.register("s1", 1));
  assert.notEqual(reg, null);
});

Deno.test("Redis store: cross-process cancel works again after a Redis restart", async () => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "resub:", connectTimeoutMs: 300 });
  await using runner = new CancellationRegistry({ store });
  await using other = new CancellationRegistry({ store });
  assert.notEqual(await runner.register("s", 0), null); // both connected and subscribed
  await redis.stop();
  await redis.start();
  // The runner's subscription is restored before it registers anything again.
  const reg = (await whenBack(() => runner.register("s", 1)))!;
  assert.equal(await whenBack(() => other.cancel("s", 1, "again")), true);
  const deadline = Date.now() + 3_000;
  while (!reg.signal.aborted && Date.now() < deadline) await sleep(10);
  assert.equal(reg.signal.reason, "again");
});
