/**
 * Several registries and several processes on one Redis: racing claims of
 * one id have exactly one winner, and a cancel sent through one registry
 * aborts the request where it was registered, only for the same session.
 */

import assert from "node:assert/strict";
import { CancellationRegistry, RequestCancelledError, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { startRedis } from "./support/redis_server.ts";
import { Child, claimInTurns, waitUntil } from "./support/store_child.ts";

const IDS = Array.from({ length: 300 }, (_, i) => `race-${i}`);
/** Bounds that never evict during the race (an eviction would let a second principal in). */
const ROOMY = { maxEntries: 100_000, maxPerPrincipal: 10_000 };

/** Resolves once `signal` is aborted, or after `ms` (then `false`). */
function aborted(signal: AbortSignal, ms = 3_000): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(true);
    }, { once: true });
  });
}

Deno.test("Redis store: racing claims across processes and registries", async (t) => {
  await using redis = await startRedis();

  /** Checks one winner per id, that ownerOf names it, and that the race was a real one. */
  function assertOneWinnerEach(results: unknown[][], fps: string[], owners: unknown[]): void {
    const wins = new Map<string, number>();
    for (let i = 0; i < IDS.length; i++) {
      const won = fps.filter((_, k) => results[k][i] === true || results[k][i] === "bound");
      assert.equal(won.length, 1, `${IDS[i]} won by ${won}`);
      assert.equal(owners[i], won[0]);
      wins.set(won[0], (wins.get(won[0]) ?? 0) + 1);
    }
    // Interleaved batches: more than one claimant won some ids (else nothing raced).
    assert.ok(wins.size > 1, `only ${[...wins.keys()]} won: the claims did not interleave`);
  }

  await t.step("8 registries claim the same ids at once: one winner each", async () => {
    const store = redisStore({ url: redis.url, prefix: "race-a:" });
    const regs = Array.from({ length: 8 }, () => new SessionOwnerRegistry({ ...ROOMY, store }));
    try {
      await Promise.all(regs.map((r) => r.size())); // all connected: a real race
      const fps = regs.map((_, k) => `fp-${k}`);
      const results = await Promise.all(
        regs.map((r, k) => claimInTurns(r, IDS, fps[k], k % 2 === 1, k)),
      );
      assertOneWinnerEach(results, fps, await Promise.all(IDS.map((id) => regs[3].ownerOf(id))));
      assert.equal(await regs[0].size(), IDS.length);
    } finally {
      await Promise.all(regs.map((r) => r.close()));
    }
  });

  await t.step("4 separate processes + this one claim the same ids: one winner each", async () => {
    const prefix = "race-b:";
    const fps = ["fp-parent", "fp-child-0", "fp-child-1", "fp-child-2", "fp-child-3"];
    const children = fps.slice(1).map((fp, k) =>
      Child.spawn({
        store: { kind: "redis", url: redis.url, prefix },
        action: "claim",
        ids: IDS,
        fp,
        useBind: k % 2 === 1,
        seed: k + 1,
      })
    );
    await using local = new SessionOwnerRegistry({
      ...ROOMY,
      store: redisStore({ url: redis.url, prefix }),
    });
    try {
      for (const child of children) assert.deepEqual(await child.next(), { ready: true });
      await local.size();
      // Start barrier: every process starts claiming at the same instant.
      const at = Date.now() + 300;
      await Promise.all(children.map((c) => c.send(`go ${at}`)));
      await waitUntil(at);
      const mine = await claimInTurns(local, IDS, "fp-parent", false, 0);
      const theirs = await Promise.all(children.map(async (c) => (await c.next()).results));
      const owners = await Promise.all(IDS.map((id) => local.ownerOf(id)));
      assertOneWinnerEach([mine, ...theirs as unknown[][]], fps, owners);
    } finally {
      for (const child of children) assert.equal(await child.close(), 0);
    }
  });
});

Deno.test("Redis store: a cancel through one registry aborts the request on another", async (t) => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "xc:" });

  await t.step("same session only; the reason travels; each request aborted once", async () => {
    await using runner = new CancellationRegistry({ store }); // where requests run
    await using other = new CancellationRegistry({ store }); // where the cancel lands
    const a1 = (await runner.register("sess-a", 1))!;
    const a1s = (await runner.register("sess-a", "1"))!;
    const b1 = (await runner.register("sess-b", 1))!;

    // Another session presenting the same request id reaches nothing.
    assert.equal(await other.cancel("sess-x", 1), false);
    assert.equal(await other.cancel("sess-b", 2), false);
    assert.equal(await other.cancel("sess-a", 1, "user pressed stop"), true);
    assert.equal(await aborted(a1.signal), true);
    assert.equal(a1.signal.reason, "user pressed stop");
    assert.equal(a1s.signal.aborted, false); // "1" is not 1
    assert.equal(await other.cancel("sess-a", 1), false); // at most once

    // cancelAll through the other registry: every live request of sess-a, nothing else.
    assert.equal(await other.cancelAll("sess-a"), 1);
    assert.equal(await aborted(a1s.signal), true);
    assert.ok(a1s.signal.reason instanceof RequestCancelledError);
    assert.equal(a1s.signal.reason.sessionId, "sess-a");
    assert.equal(a1s.signal.reason.requestId, null);
    assert.equal(await aborted(b1.signal, 300), false);
    assert.equal(await runner.deregister(b1.entryId), true);
    assert.equal(await other.size(), 2);
  });

  await t.step("a request running in another process is stopped", async () => {
    const child = Child.spawn({
      store: { kind: "redis", url: redis.url, prefix: "xc:" },
      action: "register",
      sid: "sess-child",
      rid: 5,
    });
    try {
      assert.deepEqual(await child.next(), { ready: true });
      await using here = new CancellationRegistry({ store });
      assert.equal(await here.cancel("sess-intruder", 5), false);
      assert.equal(await here.cancel("sess-child", 5, "stop it"), true);
      assert.deepEqual(await child.next(), { aborted: true, reason: "stop it" });
    } finally {
      assert.equal(await child.close(), 0);
    }
  });

  await t.step("requestTtlMs drops entries a crashed process left behind", async () => {
    const ttlStore = redisStore({ url: redis.url, prefix: "ttl:", requestTtlMs: 200 });
    await using reg = new CancellationRegistry({ store: ttlStore, maxEntries: 2 });
    assert.notEqual(await reg.register("s", 1), null);
    assert.notEqual(await reg.register("s", 2), null);
    assert.equal(await reg.register("s", 3), null); // full
    await new Promise((r) => setTimeout(r, 300));
    assert.notEqual(await reg.register("s", 3), null); // the stale ones were dropped
    assert.equal(await reg.size(), 1);
    assert.equal(await reg.cancel("s", 1), false);
  });
});
