/**
 * Hardening of the Redis store against a real `redis-server`: `touch` and the
 * `shared` bind flag, evictions and idle expiry announced to every registry
 * sharing the store (and swept even when nobody looks), one operation's
 * failure isolated from the rest of its batch, a closing cancellation
 * registry taking its entries with it, and misconfiguration (a missing net
 * permission, a misspelt option) reported as such instead of as an outage.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  InvalidInputError,
  RegistryMisconfiguredError,
  RegistryUnavailableError,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { Op } from "../src/actor/protocol.ts";
import { clients } from "../src/registry/registry_options.ts";
import { startRedis } from "./support/redis_server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What one registry heard through `onRemoved`. */
interface Heard {
  cause: "evicted" | "expired";
  sid: string;
  /** ms since the recorder was made. */
  at: number;
}

/** Records every removal a registry hears. */
function recorder(reg: SessionOwnerRegistry): Heard[] {
  const heard: Heard[] = [];
  const t0 = performance.now();
  reg.onRemoved(({ cause, sessionIds }) => {
    for (const sid of sessionIds) heard.push({ cause, sid, at: performance.now() - t0 });
  });
  return heard;
}

/** Waits until `done()` holds, at most `ms`; returns whether it did. */
async function until(done: () => boolean, ms = 3_000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!done()) {
    if (performance.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** The raw Touch answer (the facade's `touch` resolves to nothing). */
function rawTouch(reg: SessionOwnerRegistry, sid: unknown, fp: unknown): Promise<boolean> {
  return clients.get(reg)!.call<boolean>(Op.Touch, sid, fp);
}

/** An integer reply of the test server, e.g. `HLEN key`. */
async function int(redis: { command(...args: string[]): Promise<string> }, ...args: string[]) {
  const reply = await redis.command(...args);
  assert.match(reply, /^:\d+\r\n$/, `${args.join(" ")} -> ${JSON.stringify(reply)}`);
  return Number(reply.slice(1, -2));
}

Deno.test("Redis store: touch and the shared bind flag", async (t) => {
  await using redis = await startRedis();
  let n = 0;
  const prefix = () => `touch${n++}:`;

  await t.step("touch answers true only for the owner; never claims, never refuses", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    await using reg = new SessionOwnerRegistry({ store, touchIntervalMs: 0 });
    assert.equal(await reg.bind("s1", "fp-a"), "bound");
    assert.deepEqual(
      await Promise.all([
        rawTouch(reg, "s1", "fp-a"),
        rawTouch(reg, "s1", "fp-b"),
        rawTouch(reg, "unbound", "fp-a"),
        rawTouch(reg, "", "fp-a"),
        rawTouch(reg, "s1", ""),
        rawTouch(reg, null, null),
      ]),
      [true, false, false, false, false, false],
    );
    assert.equal(await reg.ownerOf("unbound"), null); // not claimed
    const stats = await reg.stats();
    assert.equal(stats.refusals, 0);
    assert.equal(stats.invalid, 0);
    assert.equal(stats.claims, 0);
    assert.equal(stats.size, 1);
  });

  await t.step("touch refreshes LRU order: the touched binding is evicted last", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    await using reg = new SessionOwnerRegistry({ store, maxEntries: 2, touchIntervalMs: 0 });
    await using other = new SessionOwnerRegistry({ store, maxEntries: 2, touchIntervalMs: 0 });
    assert.equal(await reg.bind("old", "fp-a"), "bound");
    assert.equal(await reg.bind("new", "fp-b"), "bound");
    await other.touch("old", "fp-a"); // through another registry: the store is shared
    await other.touch("new", "fp-a"); // not the owner: no refresh
    assert.equal(await reg.bind("third", "fp-c"), "bound");
    assert.equal(await reg.ownerOf("old"), "fp-a");
    assert.equal(await reg.ownerOf("new"), null);
  });

  await t.step("bind's shared flag exempts that call from maxPerPrincipal", async () => {
    const store = redisStore({ url: redis.url, prefix: prefix() });
    await using reg = new SessionOwnerRegistry({ store, maxPerPrincipal: 2 });
    const heard = recorder(reg);
    for (let i = 0; i < 4; i++) {
      assert.equal(await reg.bind(`m${i}`, "fp-m", { shared: true }), "bound");
    }
    assert.equal(await reg.size(), 4);
    assert.equal((await reg.stats()).evictions, 0);
    // Without the flag the cap applies again: fp-m pays with its own oldest binding.
    assert.equal(await reg.bind("m4", "fp-m"), "bound");
    assert.equal(await reg.ownerOf("m0"), null);
    assert.equal(await reg.size(), 4);
    assert.ok(await until(() => heard.length > 0));
    assert.deepEqual(heard.map((h) => [h.cause, h.sid]), [["evicted", "m0"]]);
  });
});

Deno.test("Redis store: removals are announced to every registry sharing the store", async (t) => {
  await using redis = await startRedis();

  await t.step(
    "an active session survives idleTtlMs, an idle one expires and is announced",
    async () => {
      const store = redisStore({ url: redis.url, prefix: "idle:", idleTtlMs: 1_500 });
      await using a = new SessionOwnerRegistry({ store, touchIntervalMs: 0 });
      await using b = new SessionOwnerRegistry({ store, touchIntervalMs: 0 }); // "another process"
      const heardA = recorder(a);
      const heardB = recorder(b);
      assert.equal(await a.bind("active", "fp-a"), "bound");
      assert.equal(await a.bind("idle", "fp-a"), "bound");
      assert.equal(await a.bind("foreign-touch", "fp-a"), "bound");
      assert.equal(await b.size(), 3); // b is connected and subscribed
      // For 3 s (twice the TTL) the owner keeps using "active"; only another principal
      // "uses" "foreign-touch", which must not keep it alive.
      const t0 = performance.now();
      while (performance.now() - t0 < 3_000) {
        await a.touch("active", "fp-a");
        await b.touch("foreign-touch", "fp-b");
        await sleep(300);
      }
      assert.equal(await b.ownerOf("active"), "fp-a");
      assert.equal(await b.ownerOf("idle"), null);
      assert.equal(await b.ownerOf("foreign-touch"), null);
      for (const [name, heard] of [["a", heardA], ["b", heardB]] as const) {
        const sids = heard.map((h) => h.sid).sort();
        assert.deepEqual(sids, ["foreign-touch", "idle"], `${name} heard ${JSON.stringify(heard)}`);
        for (const h of heard) {
          assert.equal(h.cause, "expired");
          // TTL 1.5 s + a sweep every 375 ms (+ scheduling): well within 2.5 s of the bind.
          assert.ok(h.at < 2_500, `${name} heard ${h.sid} only after ${Math.round(h.at)} ms`);
          assert.ok(h.at > 1_400, `${name} heard ${h.sid} already after ${Math.round(h.at)} ms`);
        }
      }
    },
  );

  await t.step("an eviction by maxPerPrincipal is announced to the other registry", async () => {
    const store = redisStore({ url: redis.url, prefix: "cap:" });
    const options = { store, maxPerPrincipal: 2 };
    await using a = new SessionOwnerRegistry(options);
    await using b = new SessionOwnerRegistry(options);
    const heardA = recorder(a);
    const heardB = recorder(b);
    assert.equal(await b.size(), 0); // connected and subscribed
    assert.equal(await a.bind("f1", "fp-f"), "bound");
    assert.equal(await a.bind("f2", "fp-f"), "bound");
    assert.equal(await a.bind("v1", "fp-v"), "bound");
    assert.equal(await a.bind("f3", "fp-f"), "bound"); // evicts f1, fp-f's oldest
    assert.ok(await until(() => heardB.length > 0), "b never heard of the eviction");
    await sleep(200); // nothing more is coming
    assert.deepEqual(heardB.map((h) => [h.cause, h.sid]), [["evicted", "f1"]]);
    assert.deepEqual(heardA.map((h) => [h.cause, h.sid]), [["evicted", "f1"]]); // once, not twice
    assert.equal(await b.ownerOf("f1"), null);
  });

  await t.step("a global LRU eviction by another registry is announced too", async () => {
    const store = redisStore({ url: redis.url, prefix: "lru:" });
    await using a = new SessionOwnerRegistry({ store, maxEntries: 2 });
    await using b = new SessionOwnerRegistry({ store, maxEntries: 2 });
    const heardA = recorder(a);
    assert.equal(await a.bind("s1", "fp-a"), "bound");
    assert.equal(await a.bind("s2", "fp-a"), "bound");
    assert.equal(await b.bind("s3", "fp-b"), "bound"); // b evicts a's s1
    assert.ok(await until(() => heardA.length > 0), "a never heard of the eviction");
    assert.deepEqual(heardA.map((h) => [h.cause, h.sid]), [["evicted", "s1"]]);
  });

  await t.step("4 registries sweeping at once: each expiry is announced exactly once", async () => {
    const store = redisStore({ url: redis.url, prefix: "sweep:", idleTtlMs: 200 });
    const regs = Array.from(
      { length: 4 },
      () => new SessionOwnerRegistry({ store, touchIntervalMs: 0 }),
    );
    try {
      const heard = regs.map(recorder);
      await Promise.all(regs.map((r) => r.size())); // all connected: all sweep
      const ids = Array.from({ length: 300 }, (_, i) => `x${i}`);
      await Promise.all(ids.map((id, i) => regs[i % 4].bind(id, `fp-${i % 7}`)));
      assert.equal(await regs[0].authorizeAttach("pinned", "fp-p", { pin: true }), true);
      const all = () => heard.every((h) => h.length >= ids.length);
      assert.ok(await until(all, 5_000), `heard ${heard.map((h) => h.length)}`);
      await sleep(300); // any duplicate would have arrived by now
      for (const h of heard) {
        assert.deepEqual(h.map((e) => e.sid).sort(), [...ids].sort());
        assert.ok(h.every((e) => e.cause === "expired"));
      }
      assert.equal(await regs[1].size(), 1); // the pinned binding never expires
      assert.equal(await regs[2].ownerOf("pinned"), "fp-p");
      // Every index is empty again: nothing leaks.
      assert.equal(await int(redis, "ZCARD", "sweep:o:lru"), 0);
      assert.equal(await int(redis, "EXISTS", "sweep:o:p:fp-0"), 0);
    } finally {
      await Promise.all(regs.map((r) => r.close()));
    }
  });
});

Deno.test("Redis store: one operation's failure never fails the others of its batch", async (t) => {
  await using redis = await startRedis();

  await t.step("owner: a corrupt per-principal key fails only that principal's call", async () => {
    const store = redisStore({ url: redis.url, prefix: "iso:" });
    await using reg = new SessionOwnerRegistry({ store });
    assert.equal(await reg.size(), 0);
    assert.match(await redis.command("SET", "iso:o:p:fp-bad", "not a zset"), /^\+OK/);
    // One tick: one batch, one script call.
    const settled = await Promise.allSettled([
      reg.bind("s1", "fp-good"),
      reg.bind("s2", "fp-bad"),
      reg.bind("", "fp-good"), // invalid input: its fail-closed answer, nothing more
      reg.authorizeAttach("s3", "fp-good"),
      reg.size(),
    ]);
    assert.deepEqual(settled.map((s) => s.status), [
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const values = settled.map((s) => s.status === "fulfilled" ? s.value : s.reason);
    assert.ok(values[1] instanceof RegistryUnavailableError, String(values[1]));
    assert.match(String((values[1] as Error).message), /WRONGTYPE/);
    assert.deepEqual([values[0], values[2], values[3], values[4]], ["bound", "refused", true, 2]);
    assert.equal(await reg.ownerOf("s2"), null); // the failed call changed nothing
    assert.equal(await reg.ownerOf("s3"), "fp-good");
    assert.equal((await reg.stats()).invalid, 1);
  });

  for (const idleTtlMs of [0, 3_600_000]) {
    await t.step(
      `owner lookups alone skip the owner script (idleTtlMs ${idleTtlMs}); a corrupt binding fails only its lookup`,
      async () => {
        const prefix = `look${idleTtlMs}:`;
        await using reg = new SessionOwnerRegistry({
          store: redisStore({ url: redis.url, prefix, idleTtlMs }),
        });
        assert.equal(await reg.bind("s1", "fp-a"), "bound");
        assert.equal(await reg.authorizeAttach("s2", "fp-b", { pin: true }), true);
        assert.match(await redis.command("HSET", `${prefix}o:own`, "s3", "garbage"), /^:1/);
        const calls = async (name: string) => {
          const m = new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(
            await redis.command("INFO", "commandstats"),
          );
          return m === null ? 0 : Number(m[1]);
        };
        // One tick: one batch of lookups (and an invalid id answered without Redis).
        const settled = await Promise.allSettled([
          reg.ownerOf("s1"),
          reg.ownerOf("s3"),
          reg.ownerOf(""),
          reg.ownerOf("s2"),
          reg.ownerOf("nobody"),
        ]);
        assert.deepEqual(settled.map((s) => s.status), [
          "fulfilled",
          "rejected",
          "fulfilled",
          "fulfilled",
          "fulfilled",
        ]);
        const values = settled.map((s) => s.status === "fulfilled" ? s.value : s.reason);
        assert.deepEqual([values[0], values[2], values[3], values[4]], [
          "fp-a",
          null,
          "fp-b",
          null,
        ]);
        assert.match(String((values[1] as Error).message), /malformed binding garbage/);
        // Without idle expiry a plain HMGET, with it the small read script (loaded above):
        // never the owner script, which runs HLEN on every call.
        const scripts = await calls("evalsha") + await calls("eval");
        const hlen = await calls("hlen");
        assert.deepEqual(await Promise.all([reg.ownerOf("s1"), reg.ownerOf("s2")]), [
          "fp-a",
          "fp-b",
        ]);
        assert.equal(await calls("evalsha") + await calls("eval") - scripts, idleTtlMs ? 1 : 0);
        assert.equal(await calls("hlen") - hlen, 0);
      },
    );
  }

  await t.step("an idle-expired binding reads as unbound before any sweep drops it", async () => {
    const prefix = "lookttl:";
    // A long TTL keeps the periodic sweep away; the binding is aged by hand instead.
    await using reg = new SessionOwnerRegistry({
      store: redisStore({ url: redis.url, prefix, idleTtlMs: 3_600_000 }),
    });
    assert.equal(await reg.bind("old", "fp-a"), "bound");
    assert.equal(await reg.bind("kept", "fp-a", { keepMs: 7_200_000 }), "bound");
    assert.equal(await reg.authorizeAttach("pinned", "fp-a", { pin: true }), true);
    // Last used two hours ago (scores are µs of the server clock).
    const past = String((Date.now() - 7_200_000) * 1000);
    for (const key of ["o:lru", "o:kl"]) {
      await redis.command("ZADD", `${prefix}${key}`, "XX", past, "old");
      await redis.command("ZADD", `${prefix}${key}`, "XX", past, "kept");
    }
    assert.deepEqual(
      await Promise.all([reg.ownerOf("old"), reg.ownerOf("kept"), reg.ownerOf("pinned")]),
      [null, "fp-a", "fp-a"],
    );
    // The lookup wrote nothing; the next owner script call sweeps the expired binding.
    assert.match(await redis.command("HEXISTS", `${prefix}o:own`, "old"), /^:1/);
    assert.equal(await reg.size(), 2);
    assert.match(await redis.command("HEXISTS", `${prefix}o:own`, "old"), /^:0/);
  });

  await t.step(
    "cancel: an oversized reason or a corrupt session key fails only its op",
    async () => {
      const store = redisStore({ url: redis.url, prefix: "iso:" });
      await using runner = new CancellationRegistry({ store });
      await using other = new CancellationRegistry({ store });
      const r1 = (await runner.register("sess", 1))!;
      const r2 = (await runner.register("sess", 2))!;
      assert.match(await redis.command("SET", "iso:c:s:broken", "not a zset"), /^\+OK/);
      const settled = await Promise.allSettled([
        other.cancel("sess", 1, "x".repeat(70_000)),
        other.cancel("sess", 2, "fine"),
        other.register("broken", 1),
        other.register("sess", 3),
        other.size(),
      ]);
      assert.deepEqual(settled.map((s) => s.status), [
        "rejected",
        "fulfilled",
        "rejected",
        "fulfilled",
        "fulfilled",
      ]);
      const values = settled.map((s) => s.status === "fulfilled" ? s.value : s.reason);
      assert.ok(values[0] instanceof InvalidInputError, String(values[0]));
      assert.match((values[0] as Error).message, /reason/);
      assert.equal(values[1], true);
      assert.ok(values[2] instanceof RegistryUnavailableError, String(values[2]));
      assert.notEqual(values[3], null);
      assert.equal(values[4], 3); // r1, r2 and sess/3; nothing of "broken"
      assert.ok(await until(() => r2.signal.aborted));
      assert.equal(r2.signal.reason, "fine");
      assert.equal(r1.signal.aborted, false);
      assert.equal(await other.cancel("sess", 1), true); // still cancellable: it was never cancelled
    },
  );
});

Deno.test("Redis store: a tracked request costs Redis nothing when it ends within the lazy window", async () => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "lazy:" });
  await using here = new CancellationRegistry({ store });
  await using elsewhere = new CancellationRegistry({ store }); // another process, in effect
  assert.equal(await here.size(), 0); // both workers up
  assert.equal(await elsewhere.size(), 0);
  const scripts = async () => {
    const stats = await redis.command("INFO", "commandstats");
    let n = 0;
    for (const m of stats.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) n += Number(m[1]);
    return n;
  };
  const before = await scripts();
  // 20 quick requests, started and ended within one lazy window (it opens with the first
  // lazy call, and its timer fires after the 1 ms one): nothing is sent.
  const quick = Array.from({ length: 20 }, (_, i) => here.track("sess", i));
  await new Promise((r) => setTimeout(r, 1));
  for (const tracked of quick) {
    assert.equal(await here.deregister(tracked.entryId), true);
    assert.equal(await tracked.registered, true);
  }
  await new Promise((r) => setTimeout(r, 30)); // past any lazy window
  assert.equal(await scripts() - before, 0);
  // A slower one is sent within 10 ms of track: then another process's cancel reaches it.
  const slow = here.track("sess", "slow");
  assert.equal(await slow.registered, true);
  assert.equal(await elsewhere.cancel("sess", "slow", "stop"), true);
  assert.ok(await until(() => slow.signal.aborted));
  assert.equal(slow.signal.reason, "stop");
  // A cancel made here after track sees the registration at once (call order).
  const next = here.track("sess", "next");
  assert.equal(await here.cancel("sess", "next"), true);
  assert.equal(next.signal.aborted, true);
  await here.deregister(slow.entryId);
  await here.deregister(next.entryId);
  assert.equal((await here.stats()).registered, 22); // the 20 withdrawn ones count too
});

Deno.test("Redis store: close() of a cancellation registry drops its entries", async () => {
  await using redis = await startRedis();
  const store = redisStore({ url: redis.url, prefix: "close:" });
  const a = new CancellationRegistry({ store });
  await using b = new CancellationRegistry({ store });
  assert.notEqual(await a.register("sess", 1), null);
  assert.notEqual(await a.register("sess", "two"), null);
  assert.notEqual(await a.register("other", 1), null);
  const mine = (await b.register("sess", 3))!;
  assert.equal(await b.size(), 4);
  await a.close();
  // Nobody runs a's requests any more: a cancel through b must not "find" them.
  assert.equal(await b.cancel("sess", 1), false);
  assert.equal(await b.cancel("sess", "two"), false);
  assert.equal(await b.cancelAll("other"), 0);
  assert.equal(await b.size(), 1);
  // Their keys are gone; b's entry is untouched.
  assert.equal(await int(redis, "HLEN", "close:c:ent"), 1);
  assert.equal(await int(redis, "HLEN", "close:c:slot"), 1);
  assert.equal(await int(redis, "ZCARD", "close:c:age"), 1);
  assert.equal(await int(redis, "ZCARD", "close:c:s:sess"), 1);
  assert.equal(await int(redis, "EXISTS", "close:c:s:other"), 0);
  const sets = await redis.command("KEYS", "close:c:i:*");
  assert.match(sets, /^\*1\r\n/, `instance sets left: ${JSON.stringify(sets)}`);
  assert.equal(await b.cancel("sess", 3), true);
  assert.equal(mine.signal.aborted, true);
});

/** Runs a small script in a fresh process with only `flags`; returns what it printed. */
async function runWith(flags: string[], url: string): Promise<Record<string, unknown>> {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-perm-" });
  try {
    const script = `${dir}/main.ts`;
    await Deno.writeTextFile(
      script,
      `
import { CancellationRegistry, SessionOwnerRegistry } from ${
        JSON.stringify(new URL("../mod.ts", import.meta.url).href)
      };
import { redisStore } from ${JSON.stringify(new URL("../redis.ts", import.meta.url).href)};
const store = redisStore({ url: ${JSON.stringify(url)}, prefix: "perm:" });
const owners = new SessionOwnerRegistry({ store });
const cancels = new CancellationRegistry({ store });
const t0 = performance.now();
const out = {};
for (const [name, call] of [
  ["bind", () => owners.bind("s1", "fp-a")],
  ["register", () => cancels.register("s1", 1).then((r) => r !== null)],
]) {
  try {
    out[name] = { ok: await call() };
  } catch (err) {
    out[name] = { name: err.name, message: err.message };
  }
}
out.ms = performance.now() - t0;
await owners.close();
await cancels.close();
console.log(JSON.stringify(out));
`,
    );
    const config = new URL("../deno.json", import.meta.url).pathname;
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--config", config, ...flags, script],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(stdout).trim();
    assert.equal(code, 0, `child failed: ${new TextDecoder().decode(stderr)}`);
    return JSON.parse(text.split("\n").at(-1)!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Redis store: a missing net permission is RegistryMisconfiguredError, at once", async () => {
  await using redis = await startRedis();
  const host = `127.0.0.1:${redis.port}`;
  const denied = await runWith(["--allow-read"], redis.url);
  for (const name of ["bind", "register"]) {
    const result = denied[name] as { name?: string; message?: string };
    assert.equal(result.name, "RegistryMisconfiguredError", JSON.stringify(denied));
    assert.ok(result.message!.includes(`--allow-net=${host}`), result.message);
    assert.match(result.message!, /net permission/);
  }
  // Fast: no connection attempt, no retries (the default connectTimeoutMs alone is 2 s).
  assert.ok((denied.ms as number) < 1_500, `took ${denied.ms} ms`);
  // The same script with the permission works: the failure above was the permission.
  const allowed = await runWith(["--allow-read", `--allow-net=${host}`], redis.url);
  assert.deepEqual({ bind: allowed.bind, register: allowed.register }, {
    bind: { ok: "bound" },
    register: { ok: true },
  });
});

Deno.test("redisStore: an unknown option key is an InvalidInputError naming the nearest key", () => {
  assert.throws(
    () => redisStore({ urll: "redis://127.0.0.1:6379" } as never),
    (err: unknown) =>
      err instanceof InvalidInputError && err.message.includes('"urll"') &&
      err.message.includes('did you mean "url"'),
  );
  assert.throws(
    () => redisStore({ idleTTLms: 1_000 } as never),
    (err: unknown) => err instanceof InvalidInputError && /"idleTtlMs"/.test(err.message),
  );
  assert.throws(
    () => redisStore({ url: "redis://127.0.0.1:6379", somethingElse: 1 } as never),
    (err: unknown) => err instanceof InvalidInputError && /"somethingElse"/.test(err.message),
  );
  assert.ok(!(new InvalidInputError("x") instanceof RegistryMisconfiguredError));
});
