/**
 * HandleRegistry: application state handles (MCP 2026-07-28) bound to the
 * principal they were minted for. Semantics, fail-closed input, bounds, the
 * separate key space on Redis and Deno KV, a model-based property, and an
 * end-to-end run through the official MCP SDK v2.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  fingerprint,
  HandleError,
  HandleNotOwnedError,
  HandleRegistry,
  HandleTableFullError,
  InvalidInputError,
  kvStore,
  RegistryClosedError,
  RegistryError,
  type RegistryStore,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { callCart, connectCartClient, startCartServer } from "../examples/handles_v2.ts";
import { startRedis } from "./support/redis_server.ts";

const ALICE = await fingerprint("user:alice");
const MALLORY = await fingerprint("user:mallory");
const BOB = await fingerprint("user:bob");

/** The error `require` rejects with, or `null` when it resolved. */
async function requireError(
  handles: HandleRegistry,
  handle: unknown,
  fp: unknown,
): Promise<Error | null> {
  try {
    await handles.require(handle as string, fp as string);
    return null;
  } catch (err) {
    return err as Error;
  }
}

/** Another value with the same first characters as `handle` (so the same error preview). */
function sibling(handle: string): string {
  return handle.slice(0, -1) + (handle.endsWith("A") ? "B" : "A");
}

Deno.test("HandleRegistry: mint, authorize, require, release", async () => {
  await using handles = new HandleRegistry();
  const cart = await handles.mint(ALICE, { prefix: "cart_" });
  assert.match(cart, /^cart_[A-Za-z0-9_-]{32}$/);
  const plain = await handles.mint(ALICE);
  assert.match(plain, /^[A-Za-z0-9_-]{32}$/);
  const many = new Set<string>();
  for (let i = 0; i < 50; i++) many.add(await handles.mint(BOB, { prefix: "x." }));
  assert.equal(many.size, 50);
  assert.equal(await handles.size(), 52);

  assert.equal(await handles.authorize(cart, ALICE), true);
  await handles.require(cart, ALICE);
  assert.equal(await handles.authorize(plain, ALICE), true);

  assert.equal(await handles.release(cart, ALICE), true);
  assert.equal(await handles.authorize(cart, ALICE), false);
  assert.equal(await handles.release(cart, ALICE), false); // already gone: same as unknown
  await assert.rejects(handles.require(cart, ALICE), HandleNotOwnedError);
  assert.equal(await handles.authorize(plain, ALICE), true); // the other one is untouched
  assert.equal(await handles.size(), 51);

  // mint refuses bad input by rejecting (never binds anything for it).
  for (const fp of ["", "   ", "a\nb", 42, null, "x".repeat(1025)]) {
    await assert.rejects(handles.mint(fp as string), InvalidInputError);
  }
  for (const prefix of ["has space", "x".repeat(65), "é", "a/b", 7]) {
    await assert.rejects(
      handles.mint(ALICE, { prefix: prefix as string }),
      (err: unknown) => err instanceof InvalidInputError && /prefix/.test(err.message),
    );
  }
  assert.equal(await handles.size(), 51);

  await handles.close();
  await assert.rejects(handles.mint(ALICE), RegistryClosedError);
  await assert.rejects(handles.authorize(plain, ALICE), RegistryClosedError);
  await assert.rejects(handles.require(plain, ALICE), RegistryClosedError);
  await assert.rejects(handles.release(plain, ALICE), RegistryClosedError);
  await handles.close(); // idempotent
});

Deno.test("HandleRegistry: another principal's handle is indistinguishable from an unknown one", async () => {
  await using handles = new HandleRegistry();
  const cart = await handles.mint(ALICE, { prefix: "cart_" });
  const unknown = sibling(cart);
  const before = await handles.stats();

  assert.equal(await handles.authorize(cart, MALLORY), false);
  assert.equal(await handles.authorize(unknown, MALLORY), false);
  assert.equal(await handles.release(cart, MALLORY), false);
  assert.equal(await handles.release(unknown, MALLORY), false);
  assert.equal(await handles.pin(cart, MALLORY), false);
  assert.equal(await handles.pin(unknown, MALLORY), false);
  assert.equal(await handles.unpin(cart, MALLORY), false);

  const foreign = await requireError(handles, cart, MALLORY);
  const missing = await requireError(handles, unknown, MALLORY);
  for (const err of [foreign, missing]) {
    assert.ok(err instanceof HandleNotOwnedError);
    assert.ok(err instanceof HandleError && err instanceof RegistryError);
    assert.equal(err.name, "HandleNotOwnedError");
  }
  assert.equal(foreign!.message, missing!.message);
  assert.equal(foreign!.message, `Unknown or foreign handle: "${cart.slice(0, 10)}…"`);
  assert.ok(!foreign!.message.includes(cart), "the full handle never appears in the message");
  // The error carries nothing else that could tell the two cases apart.
  assert.deepEqual(Object.keys(foreign!), Object.keys(missing!));

  // Mallory's attempts changed nothing: Alice still owns her cart, nothing was pinned.
  assert.equal(await handles.authorize(cart, ALICE), true);
  assert.deepEqual(await handles.stats(), before);
});

Deno.test("HandleRegistry: blank or malformed input fails closed and never throws", async () => {
  await using handles = new HandleRegistry();
  const cart = await handles.mint(ALICE, { prefix: "cart_" });
  const badHandles: unknown[] = [
    undefined,
    null,
    42,
    {},
    [cart],
    "",
    " ",
    "has space",
    `${cart}\n`,
    `\t${cart}`,
    `${cart}\0`,
    "héllo",
    "cart_✓",
    "x".repeat(129),
  ];
  const badFps: unknown[] = [undefined, null, 7, "", "   ", "a\nb", "x".repeat(1025), {}];
  for (const h of badHandles) {
    let calls: Promise<unknown>[] = [];
    assert.doesNotThrow(() => {
      calls = [handles.authorize(h as string, ALICE), handles.release(h as string, ALICE)];
    });
    assert.deepEqual(await Promise.all(calls), [false, false], `handle ${String(h)}`);
    assert.ok(await requireError(handles, h, ALICE) instanceof HandleNotOwnedError);
    assert.equal(await handles.pin(h as string, ALICE), false);
  }
  for (const fp of badFps) {
    assert.equal(await handles.authorize(cart, fp as string), false);
    assert.equal(await handles.release(cart, fp as string), false);
    assert.ok(await requireError(handles, cart, fp) instanceof HandleNotOwnedError);
  }
  // The longest accepted handle is 128 characters; longer ones are refused outright.
  assert.equal(await handles.authorize("x".repeat(128), ALICE), false);
  // Nothing above changed any state.
  assert.equal(await handles.authorize(cart, ALICE), true);
  assert.equal(await handles.size(), 1);
  const { invalid, refusals, claims } = await handles.stats();
  assert.deepEqual({ invalid, refusals, claims }, { invalid: 0, refusals: 0, claims: 0 });
});

Deno.test("HandleRegistry: one principal minting many cannot evict another's handles", async () => {
  await using handles = new HandleRegistry({ maxEntries: 100, maxPerPrincipal: 3 });
  const alice = [await handles.mint(ALICE), await handles.mint(ALICE)];
  const mallory: string[] = [];
  for (let i = 0; i < 60; i++) mallory.push(await handles.mint(MALLORY, { prefix: "m_" }));
  for (const h of alice) assert.equal(await handles.authorize(h, ALICE), true);
  // Mallory paid with her own oldest handles: only her 3 newest are left.
  const alive = [];
  for (const h of mallory) alive.push(await handles.authorize(h, MALLORY));
  assert.deepEqual(alive, [...Array(57).fill(false), true, true, true]);
  const stats = await handles.stats();
  assert.equal(stats.size, 5);
  assert.equal(stats.evictions, 57);
});

Deno.test("HandleRegistry: global LRU, authorize counts as use, pins", async (t) => {
  await t.step("the least recently used handle goes first; authorize refreshes", async () => {
    await using handles = new HandleRegistry({ maxEntries: 3 });
    const a = await handles.mint(ALICE);
    const b = await handles.mint(BOB);
    const c = await handles.mint(ALICE);
    assert.equal(await handles.authorize(a, ALICE), true); // a is now the most recent
    const d = await handles.mint(MALLORY); // evicts b, the least recently used
    assert.equal(await handles.authorize(b, BOB), false);
    for (const [h, fp] of [[a, ALICE], [c, ALICE], [d, MALLORY]]) {
      assert.equal(await handles.authorize(h, fp), true);
    }
    // The order is now a, c, d. A refused authorize is not a use: Mallory presenting a
    // does not save it from eviction.
    assert.equal(await handles.authorize(a, MALLORY), false);
    await handles.mint(BOB);
    assert.equal(await handles.authorize(a, ALICE), false);
    assert.equal(await handles.authorize(c, ALICE), true);
  });

  await t.step("pinned handles are never evicted; mint rejects when all are pinned", async () => {
    await using handles = new HandleRegistry({ maxEntries: 2 });
    const a = await handles.mint(ALICE);
    const b = await handles.mint(BOB);
    assert.equal(await handles.pin(a, ALICE), true);
    assert.equal(await handles.pin(b, BOB), true);
    const err = await handles.mint(MALLORY).then(() => null, (e) => e);
    assert.ok(err instanceof HandleTableFullError && err instanceof HandleError);
    assert.match(err.message, /full/);
    assert.equal((await handles.stats()).full, 1);
    assert.equal(await handles.unpin(b, BOB), true);
    const c = await handles.mint(MALLORY); // b was the only evictable one
    assert.equal(await handles.authorize(b, BOB), false);
    assert.equal(await handles.authorize(a, ALICE), true);
    assert.equal(await handles.authorize(c, MALLORY), true);
    // release drops a handle even while pinned.
    assert.equal(await handles.release(a, ALICE), true);
    assert.equal((await handles.stats()).pinned, 0);
  });

  await t.step("calls on one handle apply in call order, even in one tick", async () => {
    await using handles = new HandleRegistry();
    const h = await handles.mint(ALICE);
    const [used, released, after] = await Promise.all([
      handles.authorize(h, ALICE),
      handles.release(h, ALICE),
      handles.authorize(h, ALICE),
    ]);
    assert.deepEqual([used, released, after], [true, true, false]);
    assert.equal(await handles.size(), 0); // the released handle did not come back
    const many = await Promise.all(Array.from({ length: 20 }, () => handles.mint(BOB)));
    const checks = await Promise.all(many.flatMap((x) => [
      handles.authorize(x, BOB),
      handles.authorize(x, ALICE),
    ]));
    assert.deepEqual(checks, many.flatMap(() => [true, false]));
  });
});

Deno.test("HandleRegistry: refuses a store whose handle key space it cannot derive", () => {
  const custom: RegistryStore = { kind: "module", url: "file:///my_store.ts", options: {} };
  assert.throws(() => new HandleRegistry({ store: custom }), InvalidInputError);
  assert.throws(
    () => new HandleRegistry({ store: redisStore({ prefix: "x".repeat(127) }) }),
    (err: unknown) => err instanceof InvalidInputError && /prefix/.test(err.message),
  );
  assert.throws(
    () => new HandleRegistry({ store: kvStore({ path: ":memory:", prefix: "x".repeat(63) }) }),
    (err: unknown) => err instanceof InvalidInputError && /prefix/.test(err.message),
  );
  assert.throws(() => new HandleRegistry({ maxPerPrincipal: 0 }), InvalidInputError);
});

/**
 * A HandleRegistry and a SessionOwnerRegistry on the same store do not see
 * each other's ids, and session traffic cannot touch handles.
 */
async function separateKeySpaces(store: () => RegistryStore): Promise<void> {
  await using sessions = new SessionOwnerRegistry({ store: store(), maxEntries: 5 });
  await using handles = new HandleRegistry({ store: store(), maxEntries: 5 });
  await using elsewhere = new HandleRegistry({ store: store(), maxEntries: 5 }); // "another process"

  const cart = await handles.mint(ALICE, { prefix: "cart_" });
  assert.equal(await elsewhere.authorize(cart, ALICE), true); // the store is shared...
  assert.equal(await sessions.ownerOf(cart), null); // ...but not with the session table
  // Mallory cannot claim Alice's handle through a session attach (trust on first use there).
  assert.equal(await sessions.authorizeAttach(cart, MALLORY), true); // a *session* of that name
  assert.equal(await handles.authorize(cart, MALLORY), false);
  assert.equal(await elsewhere.authorize(cart, MALLORY), false);
  assert.equal(await handles.authorize(cart, ALICE), true);
  // Nor drop it through the session table.
  assert.equal(await sessions.forget(cart), true);
  assert.equal(await handles.authorize(cart, ALICE), true);

  // A bound session id is no handle.
  assert.equal(await sessions.bind("session-1", ALICE), "bound");
  assert.equal(await handles.authorize("session-1", ALICE), false);
  assert.equal(await handles.release("session-1", ALICE), false);
  assert.equal(await sessions.ownerOf("session-1"), ALICE);

  // A flood of sessions fills only the session table: no handle is evicted.
  for (let i = 0; i < 20; i++) assert.equal(await sessions.bind(`flood-${i}`, MALLORY), "bound");
  assert.equal(await handles.authorize(cart, ALICE), true);
  assert.equal(await sessions.size(), 5);
  assert.equal(await handles.size(), 1);
  assert.equal((await handles.stats()).evictions, 0);

  assert.equal(await elsewhere.release(cart, ALICE), true);
  assert.equal(await handles.authorize(cart, ALICE), false);
}

Deno.test("HandleRegistry on Redis: own key space next to a SessionOwnerRegistry", async () => {
  await using redis = await startRedis();
  const store = () => redisStore({ url: redis.url, prefix: "shop:" });
  await separateKeySpaces(store);

  await using handles = new HandleRegistry({ store: store() });
  const h = await handles.mint(ALICE);
  assert.equal(await redis.command("HEXISTS", "shop:h:o:own", h), ":1\r\n");
  assert.equal(await redis.command("HEXISTS", "shop:o:own", h), ":0\r\n");
});

Deno.test("HandleRegistry on Deno KV: own key space next to a SessionOwnerRegistry", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-handles-" });
  const path = `${dir}/state.kv`;
  try {
    const store = () => kvStore({ path, prefix: "shop" });
    await separateKeySpaces(store);

    let h: string;
    {
      await using handles = new HandleRegistry({ store: store() });
      h = await handles.mint(ALICE);
    }
    const kv = await Deno.openKv(path);
    try {
      assert.notEqual((await kv.get(["shop:h", "o", "s", h])).value, null);
      assert.equal((await kv.get(["shop", "o", "s", h])).value, null);
    } finally {
      kv.close();
    }
    // Handles outlive the registry (and the process) with a file store.
    await using again = new HandleRegistry({ store: store() });
    assert.equal(await again.authorize(h, ALICE), true);
    assert.equal(await again.authorize(h, MALLORY), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HandleRegistry: random mint/authorize/release by 3 principals match a model", async () => {
  const CAP = 4;
  const principals = [ALICE, BOB, MALLORY];
  const who = fc.integer({ min: 0, max: 2 });
  const pick = fc.nat(50); // which handle seen so far (or, past the end, an unknown one)
  const op = fc.oneof(
    fc.record({ kind: fc.constant("mint" as const), p: who }),
    fc.record({ kind: fc.constant("authorize" as const), p: who, h: pick }),
    fc.record({ kind: fc.constant("require" as const), p: who, h: pick }),
    fc.record({ kind: fc.constant("release" as const), p: who, h: pick }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
      await using handles = new HandleRegistry({ maxEntries: 1_000, maxPerPrincipal: CAP });
      // The model: each handle's owner, and each principal's handles, least recently used first.
      const owner = new Map<string, number>();
      const lru: string[][] = [[], [], []];
      const seen: string[] = [];
      const touch = (h: string, p: number) => {
        lru[p] = [...lru[p].filter((x) => x !== h), h];
      };
      const drop = (h: string) => {
        const p = owner.get(h)!;
        owner.delete(h);
        lru[p] = lru[p].filter((x) => x !== h);
      };
      for (const o of ops) {
        const fp = principals[o.p];
        if (o.kind === "mint") {
          const h = await handles.mint(fp, { prefix: `p${o.p}_` });
          assert.ok(!owner.has(h) && !seen.includes(h));
          if (lru[o.p].length >= CAP) drop(lru[o.p][0]);
          owner.set(h, o.p);
          touch(h, o.p);
          seen.push(h);
          continue;
        }
        const h = o.h < seen.length ? seen[o.h] : `p0_never-minted-${o.h}`;
        const mine = owner.get(h) === o.p;
        if (o.kind === "authorize") {
          assert.equal(await handles.authorize(h, fp), mine);
          if (mine) touch(h, o.p);
        } else if (o.kind === "require") {
          const err = await requireError(handles, h, fp);
          if (mine) {
            assert.equal(err, null);
            touch(h, o.p);
          } else {
            assert.ok(err instanceof HandleNotOwnedError);
            assert.equal(err.message, new HandleNotOwnedError(h).message);
          }
        } else {
          assert.equal(await handles.release(h, fp), mine);
          if (mine) drop(h);
        }
      }
      assert.equal(await handles.size(), owner.size);
      for (const h of seen) {
        for (let p = 0; p < 3; p++) {
          assert.equal(await handles.authorize(h, principals[p]), owner.get(h) === p);
        }
      }
    }),
    { numRuns: 60 },
  );
});

Deno.test("MCP SDK v2 end to end: a cart handle is useless to anyone but its owner", async () => {
  await using server = await startCartServer();
  await using alice = await connectCartClient(server.url, "alice-token");
  await using mallory = await connectCartClient(server.url, "mallory-token");

  const created = await callCart(alice, "cart_create");
  assert.equal(created.isError, false);
  const cart = created.text;
  assert.match(cart, /^cart_[A-Za-z0-9_-]{32}$/);
  assert.equal((await callCart(alice, "cart_add", { cart, item: "tea" })).isError, false);
  assert.equal((await callCart(alice, "cart_add", { cart, item: "milk" })).isError, false);
  assert.deepEqual(await callCart(alice, "cart_show", { cart }), {
    text: JSON.stringify(["tea", "milk"]),
    isError: false,
  });

  // Mallory holds Alice's handle: possession is not authentication.
  const expected = `Unknown or foreign handle: "${cart.slice(0, 10)}…"`;
  const stolenAdd = await callCart(mallory, "cart_add", { cart, item: "malware" });
  const stolenShow = await callCart(mallory, "cart_show", { cart });
  assert.deepEqual(stolenAdd, { text: expected, isError: true });
  assert.deepEqual(stolenShow, { text: expected, isError: true });
  // An unknown handle (same first characters) gets the very same answer.
  const unknown = await callCart(mallory, "cart_show", { cart: sibling(cart) });
  assert.deepEqual(unknown, stolenShow);
  assert.deepEqual(await callCart(alice, "cart_show", { cart: sibling(cart) }), stolenShow);

  // Alice's cart is unchanged.
  assert.deepEqual(await callCart(alice, "cart_show", { cart }), {
    text: JSON.stringify(["tea", "milk"]),
    isError: false,
  });
  assert.deepEqual(server.carts.get(cart), ["tea", "milk"]);

  // Mallory's own cart works for her and is refused to Alice.
  const hers = (await callCart(mallory, "cart_create")).text;
  assert.equal((await callCart(mallory, "cart_add", { cart: hers, item: "x" })).isError, false);
  assert.equal((await callCart(alice, "cart_show", { cart: hers })).isError, true);
  assert.equal(await server.handles.size(), 2);

  // Without a valid bearer token the HTTP layer refuses before MCP.
  const anonymous = await fetch(server.url, { method: "POST", body: "{}" });
  await anonymous.body?.cancel();
  assert.equal(anonymous.status, 401);
});
