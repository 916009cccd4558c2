/**
 * The Redis store on a real Redis Cluster: three masters started here
 * (`redis-server --cluster-enabled yes` on loopback ports, joined with
 * `redis-cli --cluster create`), reached through the `redis` client's cluster
 * API (`redisStore({ cluster: { rootNodes } })`). Every key of one registry
 * lands in one hash slot (`{prefix}`), the derived handle and task key
 * spaces in slots of their own; bindings, refusals, evictions and idle
 * expiry (announced over sharded pub/sub to every registry) and a cancel
 * that crosses processes behave as on one server.
 *
 * A cluster that cannot form fails this test (with `redis-cli`'s output); it
 * never skips.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  HandleRegistry,
  InvalidInputError,
  RegistryUnavailableError,
  RequestCancelledError,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { derivedRegistry } from "../src/registry/session_owner_registry.ts";
import { type RedisCluster, startRedisCluster } from "./support/redis_server.ts";
import { Child, claimInTurns } from "./support/store_child.ts";
import { createTask, rpc, startTaskServer } from "./support/task_server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `done()` holds (no deadline of its own: the test's steps are short). */
async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await sleep(20);
  }
}

/** Resolves once `signal` is aborted, or after `ms` (then `false`). */
function aborted(signal: AbortSignal, ms = 5_000): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(true);
    }, { once: true });
  });
}

/** Every key of every master, with the port of the master that holds it. */
async function keysByNode(cluster: RedisCluster): Promise<Map<string, number>> {
  const where = new Map<string, number>();
  for (const port of cluster.ports) {
    const out = await new Deno.Command("redis-cli", {
      args: ["-p", String(port), "--raw", "KEYS", "*"],
      stdin: "null",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    for (const key of new TextDecoder().decode(out.stdout).split("\n")) {
      if (key !== "") where.set(key, port);
    }
  }
  return where;
}

/** The hash slot of `key`, as the cluster computes it. */
async function slotOf(cluster: RedisCluster, key: string): Promise<number> {
  const reply = await cluster.command(cluster.ports[0], "CLUSTER", "KEYSLOT", key);
  return Number(reply.slice(1));
}

/** Records every removal a registry hears. */
function recorder(reg: SessionOwnerRegistry): [string, string][] {
  const heard: [string, string][] = [];
  reg.onRemoved(({ cause, sessionIds }) => {
    for (const sid of sessionIds) heard.push([cause, sid]);
  });
  return heard;
}

Deno.test("Redis Cluster: three masters, one slot per registry and prefix", async (t) => {
  await using cluster = await startRedisCluster();
  const rootNodes = [...cluster.urls];
  const store = (prefix: string, extra: { idleTtlMs?: number } = {}) =>
    redisStore({ cluster: { rootNodes }, prefix, ...extra });

  await t.step("a prefix with braces is refused, naming it", () => {
    assert.throws(
      () => store("{app}:"),
      (err: unknown) =>
        err instanceof InvalidInputError && err.message.includes('"{app}:"') &&
        /hash tag/.test(err.message),
    );
    assert.throws(
      () => redisStore({ cluster: { rootNodes }, url: rootNodes[0] }),
      InvalidInputError,
    );
  });

  await t.step("owners: bind, refuse, racing claims, every key in the prefix's slot", async () => {
    // Bounds that never evict here (an eviction would let a second claimant in).
    const roomy = { store: store("own:"), maxEntries: 100_000, maxPerPrincipal: 10_000 };
    await using a = new SessionOwnerRegistry(roomy);
    await using b = new SessionOwnerRegistry(roomy);
    assert.equal(await a.bind("s1", "fp-alice"), "bound");
    assert.equal(await b.bind("s1", "fp-mallory"), "refused");
    assert.equal(await b.authorizeAttach("s1", "fp-mallory"), false);
    assert.equal(await b.authorizeAttach("s1", "fp-alice", { pin: true }), true);
    assert.equal(await a.ownerOf("s1"), "fp-alice");
    // Racing claims from two registries: one winner per id.
    const ids = Array.from({ length: 200 }, (_, i) => `race-${i}`);
    const [ra, rb] = await Promise.all([
      claimInTurns(a, ids, "fp-a", false, 1),
      claimInTurns(b, ids, "fp-b", true, 2),
    ]);
    for (let i = 0; i < ids.length; i++) {
      const wins = Number(ra[i] === true) + Number(rb[i] === "bound");
      assert.equal(wins, 1, `${ids[i]}: ${ra[i]} / ${rb[i]}`);
    }
    assert.ok(ra.includes(true) && rb.includes("bound"), "the claims did not interleave");
    // More than one script call's worth of operations in one batch (chunks of 1,000).
    const many = Array.from({ length: 2_500 }, (_, i) => `m-${i}`);
    const bound = await Promise.all(many.map((id) => a.bind(id, `fp-${id.length % 5}`)));
    assert.ok(bound.every((r) => r === "bound"));
    assert.equal(await b.size(), 1 + ids.length + many.length);
    const stats = await b.stats();
    assert.equal(stats.pinned, 1);
    assert.ok(stats.refusals >= 2);

    // Every key lives on the master serving the slot of the hash tag {own:}.
    const slot = await slotOf(cluster, "{own:}");
    const keys = [...(await keysByNode(cluster))].filter(([k]) => k.startsWith("{own:}"));
    assert.ok(keys.some(([k]) => k === "{own:}o:own"), JSON.stringify(keys));
    assert.ok(keys.some(([k]) => k.startsWith("{own:}o:p:")), "per-principal keys too");
    assert.equal(new Set(keys.map(([, port]) => port)).size, 1, JSON.stringify(keys));
    for (const [key] of keys) assert.equal(await slotOf(cluster, key), slot, key);
  });

  await t.step("evictions are announced to every registry (sharded pub/sub)", async () => {
    const s = store("evict:");
    await using a = new SessionOwnerRegistry({ store: s, maxEntries: 2, maxPerPrincipal: 2 });
    await using b = new SessionOwnerRegistry({ store: s, maxEntries: 2, maxPerPrincipal: 2 });
    const heardA = recorder(a);
    const heardB = recorder(b);
    assert.deepEqual(await Promise.all([a.size(), b.size()]), [0, 0]); // both subscribed
    // Sharded: the channel is in the keys' slot, subscribed on the master serving it only.
    const channels = await Promise.all(
      cluster.ports.map(async (port) => [
        await cluster.command(port, "PUBSUB", "SHARDNUMSUB", "{evict:}o:ev"),
        await cluster.command(port, "PUBSUB", "NUMSUB", "{evict:}o:ev"),
      ]),
    );
    const serving = channels.filter(([sharded]) => sharded.endsWith(":2\r\n"));
    assert.equal(serving.length, 1, JSON.stringify(channels)); // a's and b's subscriptions
    assert.ok(channels.every(([, plain]) => plain.endsWith(":0\r\n")), JSON.stringify(channels));
    assert.equal(await a.bind("s1", "fp-a"), "bound");
    assert.equal(await a.bind("s2", "fp-b"), "bound");
    assert.equal(await b.bind("s3", "fp-c"), "bound"); // b evicts a's s1 (global LRU)
    await until(() => heardA.length > 0, "a hears b's eviction");
    assert.deepEqual(heardA, [["evicted", "s1"]]);
    assert.deepEqual(heardB, [["evicted", "s1"]]); // from its own script's answer
    assert.equal(await a.ownerOf("s1"), null);
  });

  await t.step("idle expiry is swept and announced to every registry", async () => {
    const s = store("idle:", { idleTtlMs: 300 });
    await using a = new SessionOwnerRegistry({ store: s, touchIntervalMs: 0 });
    await using b = new SessionOwnerRegistry({ store: s, touchIntervalMs: 0 });
    const heardA = recorder(a);
    const heardB = recorder(b);
    assert.equal(await b.size(), 0);
    assert.equal(await a.bind("idle", "fp-a"), "bound");
    assert.equal(await a.authorizeAttach("live", "fp-a", { pin: true }), true);
    // Nobody looks "idle" up: a periodic sweep drops it and tells both registries.
    await until(() => heardA.length > 0 && heardB.length > 0, "both hear the expiry");
    assert.deepEqual(heardA, [["expired", "idle"]]);
    assert.deepEqual(heardB, [["expired", "idle"]]);
    assert.equal(await b.ownerOf("live"), "fp-a"); // pinned: never expires
    assert.equal(await b.bind("idle", "fp-b"), "bound");
  });

  await t.step("a cancel through one registry aborts the request on another", async () => {
    const s = store("xc:");
    await using runner = new CancellationRegistry({ store: s });
    await using other = new CancellationRegistry({ store: s });
    const a1 = (await runner.register("sess-a", 1))!;
    const b1 = (await runner.register("sess-b", 1))!;
    assert.equal(await other.cancel("sess-x", 1), false); // another session reaches nothing
    assert.equal(await other.cancel("sess-a", 1, "stop"), true);
    assert.equal(await aborted(a1.signal), true);
    assert.equal(a1.signal.reason, "stop");
    assert.equal(await other.cancel("sess-a", 1), false); // at most once
    assert.equal(await other.cancelAll("sess-b"), 1);
    assert.equal(await aborted(b1.signal), true);
    assert.ok(b1.signal.reason instanceof RequestCancelledError);
    // Cancellation keys share the prefix's slot with the owners' ({xc:}c:...).
    const keys = [...(await keysByNode(cluster))].filter(([k]) => k.startsWith("{xc:}"));
    assert.ok(keys.some(([k]) => k === "{xc:}c:ent"), JSON.stringify(keys));
    assert.equal(new Set(keys.map(([, port]) => port)).size, 1, JSON.stringify(keys));
  });

  await t.step("a request running in another process is stopped", async () => {
    const child = Child.spawn({
      store: { kind: "redis-cluster", rootNodes, prefix: "xp:" },
      action: "register",
      sid: "sess-child",
      rid: 5,
    });
    try {
      assert.deepEqual(await child.next(), { ready: true });
      await using here = new CancellationRegistry({ store: store("xp:") });
      assert.equal(await here.cancel("sess-intruder", 5), false);
      assert.equal(await here.cancel("sess-child", 5, "stop it"), true);
      assert.deepEqual(await child.next(), { aborted: true, reason: "stop it" });
    } finally {
      assert.equal(await child.close(), 0);
    }
  });

  await t.step("handles and tasks: key spaces of their own, in slots of their own", async () => {
    const s = store("app:");
    await using owners = new SessionOwnerRegistry({ store: s });
    await using handles = new HandleRegistry({ store: s });
    const tasks = derivedRegistry(owners, { redis: "t:", kv: ":t" }); // the guard's task space
    const cart = await handles.mint("fp-alice", { prefix: "cart_" });
    assert.equal(await handles.authorize(cart, "fp-alice"), true);
    assert.equal(await handles.authorize(cart, "fp-mallory"), false);
    assert.equal(await tasks.bind("task-1", "fp-alice"), "bound");
    assert.equal(await tasks.authorizeAttach("task-1", "fp-mallory"), false);
    assert.equal(await owners.bind("sess-1", "fp-alice"), "bound");
    assert.equal(await owners.size(), 1, "handles and tasks never count against sessions");

    const where = await keysByNode(cluster);
    const spaces = { "{app:}": "sess-1", "{app:h:}": cart, "{app:t:}": "task-1" };
    const slots = new Set<number>();
    for (const [tag, id] of Object.entries(spaces)) {
      assert.ok(where.has(`${tag}o:own`), `${tag}o:own missing: ${[...where.keys()]}`);
      const ports = new Set([...where].filter(([k]) => k.startsWith(tag)).map(([, p]) => p));
      assert.equal(ports.size, 1, `${tag} spans ${[...ports]}`);
      const port = [...ports][0];
      assert.match(await cluster.command(port, "HEXISTS", `${tag}o:own`, id), /^:1/);
      slots.add(await slotOf(cluster, tag));
    }
    assert.equal(slots.size, 3, "three key spaces, three slots");
  });

  await t.step(
    "a master goes down: its slot fails closed, the others serve, it comes back",
    async () => {
      // Two prefixes whose slots (648 and 6107) redis-cli gives to different masters.
      const down = new SessionOwnerRegistry({ store: store("down-a:") });
      const up = new SessionOwnerRegistry({ store: store("down-b:") });
      try {
        await Promise.all([down.bind("s1", "fp-a"), up.bind("s1", "fp-a")]);
        const where = await keysByNode(cluster);
        const port = where.get("{down-a:}o:own")!;
        assert.notEqual(port, where.get("{down-b:}o:own"), "both prefixes on one master");

        await cluster.stopNode(port);
        // No offline queue: calls on the lost slot fail closed at once, they do not wait.
        await assert.rejects(down.ownerOf("s1"), RegistryUnavailableError);
        await assert.rejects(down.bind("s2", "fp-a"), RegistryUnavailableError);
        assert.equal(await up.bind("s2", "fp-b"), "bound"); // other masters keep serving
        assert.equal(await up.ownerOf("s1"), "fp-a");

        await cluster.startNode(port); // same slots, empty data (no persistence)
        const deadline = Date.now() + 15_000;
        for (;;) {
          try {
            assert.equal(await down.bind("s3", "fp-a"), "bound");
            break;
          } catch (err) {
            assert.ok(err instanceof RegistryUnavailableError, String(err));
            if (Date.now() > deadline) throw err;
            await sleep(50);
          }
        }
        assert.equal(await down.authorizeAttach("s3", "fp-b"), false);
      } finally {
        await Promise.all([down.close(), up.close()]);
      }
    },
  );

  await t.step("the guard binds tasks in the cluster (prefix + t:)", async () => {
    await using server = startTaskServer(true, {}, 0, { store: store("guard:") });
    const taskId = await createTask(server.url, "alice-token", "alice's secret");
    const port = (await keysByNode(cluster)).get("{guard:t:}o:own");
    assert.ok(port !== undefined, "the task binding is in the cluster");
    assert.match(await cluster.command(port, "HEXISTS", "{guard:t:}o:own", taskId), /^:1/);
    const refused = await rpc(server.url, "mallory-token", "tasks/get", { taskId });
    assert.equal(refused.status, 403);
    const own = await rpc(server.url, "alice-token", "tasks/result", { taskId });
    assert.match(own.text, /alice's secret/);
  });
});
