/**
 * Owner-table scenarios every store must pass the same way (memory, Redis,
 * Deno KV): a shared principal that floods stays within its own bound and
 * never pushes anyone else out.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { SessionOwnerRegistry } from "../../mod.ts";

/** The bounds {@linkcode sharedFlood} expects its registry to have. */
export const FLOOD_BOUNDS = {
  maxEntries: 6,
  maxPerPrincipal: 2,
  sharedPrincipals: ["fp-master"],
  maxPerSharedPrincipal: 3,
};

/**
 * A listed shared principal and one bound with `shared: true` each bind 30
 * sessions into a table of 6 ({@linkcode FLOOD_BOUNDS}): Alice's and Bob's
 * bindings survive, each shared one keeps at most its own bound (its own
 * newest bindings), a shared principal with nothing of its own to evict gets
 * `"full"`, and an ordinary principal still evicts the global LRU.
 */
export async function sharedFlood(owners: SessionOwnerRegistry): Promise<void> {
  assert.equal(await owners.bind("alice-1", "fp-alice"), "bound");
  assert.equal(await owners.bind("bob-1", "fp-bob"), "bound");
  for (let i = 0; i < 30; i++) assert.equal(await owners.bind(`m${i}`, "fp-master"), "bound");
  // At its own bound (3): it evicted its own oldest.
  assert.deepEqual(
    await Promise.all(["m26", "m27", "m28", "m29"].map((s) => owners.ownerOf(s))),
    [null, "fp-master", "fp-master", "fp-master"],
  );
  for (let i = 0; i < 30; i++) {
    assert.equal(await owners.bind(`k${i}`, "fp-key", { shared: true }), "bound");
  }
  // The table is full (6) after k0: each later one evicted fp-key's own oldest.
  assert.deepEqual(
    await Promise.all(["k28", "k29"].map((s) => owners.ownerOf(s))),
    [null, "fp-key"],
  );
  assert.equal(await owners.ownerOf("alice-1"), "fp-alice");
  assert.equal(await owners.ownerOf("bob-1"), "fp-bob");
  assert.equal(await owners.size(), 6);
  assert.equal((await owners.stats()).evictions, 27 + 29);
  // A shared principal with no binding of its own cannot make room.
  assert.equal(await owners.bind("z0", "fp-zed", { shared: true }), "full");
  assert.equal(await owners.authorizeAttach("z0", "fp-master"), true); // evicts its own m27
  assert.equal(await owners.ownerOf("m27"), null);
  // An ordinary principal keeps today's rule: the global LRU (Alice's) goes.
  assert.equal(await owners.bind("carol-1", "fp-carol"), "bound");
  assert.equal(await owners.ownerOf("alice-1"), null);
  assert.equal(await owners.ownerOf("bob-1"), "fp-bob");
  const stats = await owners.stats();
  assert.equal(stats.full, 1);
  assert.equal(stats.size, 6);
}

/** The store's `idleTtlMs` {@linkcode keptPastIdle} expects (and `touchIntervalMs: 0`). */
export const KEEP_TTL_MS = 300;

/** Resolves once `done()` is true; rejects after `ms`. */
async function waitFor(done: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * With `idleTtlMs` {@linkcode KEEP_TTL_MS}, a binding made with `keepMs`
 * 1,500 outlives its idle expiry (later uses by its owner never lower the
 * floor) and expires after the floor, announced like any idle expiry;
 * idle bindings bound after 600 kept ones are still swept (announced)
 * without anyone looking them up. About 1.7 s.
 */
export async function keptPastIdle(owners: SessionOwnerRegistry): Promise<void> {
  const t0 = performance.now();
  const heard = new Map<string, number>();
  const stop = owners.onRemoved(({ cause, sessionIds }) => {
    for (const sid of sessionIds) heard.set(`${cause}:${sid}`, performance.now() - t0);
  });
  const keep = { keepMs: 1_500 };
  assert.equal(await owners.bind("before", "fp-b"), "bound");
  // More kept bindings than one sweep step drops: a sweep that stopped at them would never
  // reach the idle ones behind.
  const kept = await Promise.all(
    Array.from({ length: 600 }, (_, i) => owners.bind(`k${i}`, `fp-k${i % 6}`, keep)),
  );
  assert.ok(kept.every((r) => r === "bound"));
  const boundAt = performance.now() - t0;
  assert.equal(await owners.bind("task", "fp-a", keep), "bound");
  assert.equal(await owners.bind("after", "fp-b"), "bound");
  await new Promise((r) => setTimeout(r, 100));
  // Uses by the owner never lower the floor.
  assert.equal(await owners.bind("task", "fp-a"), "bound");
  assert.equal(await owners.bind("task", "fp-a", { keepMs: 10 }), "bound");
  await owners.touch("task", "fp-a");
  await waitFor(
    () => heard.has("expired:before") && heard.has("expired:after"),
    1_000,
    "the idle bindings to be swept",
  );
  assert.ok(performance.now() - t0 < boundAt + 1_400, "checked well before the floor");
  assert.equal(await owners.ownerOf("task"), "fp-a", "kept past its idle expiry");
  assert.equal(await owners.ownerOf("k599"), "fp-k5");
  assert.equal(await owners.size(), 601);
  await waitFor(() => heard.has("expired:task"), 1_500, "the kept binding to expire");
  assert.ok(heard.get("expired:task")! >= boundAt + 1_490, "not before its floor");
  assert.equal(await owners.ownerOf("task"), null);
  assert.equal(await owners.ownerOf("k0"), null);
  stop();
}

/** The bounds {@linkcode keptInLruOrder} expects (with a long idle TTL, e.g. an hour). */
export const KEPT_LRU_BOUNDS = { maxEntries: 3, maxPerPrincipal: 2 };

/**
 * Bindings with a `keepMs` floor past the idle TTL and plain ones share one
 * global LRU order: a full table evicts whichever is least recently used
 * (a store that files kept bindings apart must still compare them), and a
 * kept binding is evicted by its principal's cap like any other.
 */
export async function keptInLruOrder(owners: SessionOwnerRegistry): Promise<void> {
  const keep = { keepMs: 2 * 3_600_000 };
  assert.equal(await owners.bind("k1", "fp-a", keep), "bound");
  assert.equal(await owners.bind("p1", "fp-b"), "bound");
  assert.equal(await owners.bind("k2", "fp-c", keep), "bound");
  assert.equal(await owners.bind("p2", "fp-d"), "bound"); // full: k1 is the oldest
  assert.deepEqual(
    await Promise.all(["k1", "p1", "k2", "p2"].map((s) => owners.ownerOf(s))),
    [null, "fp-b", "fp-c", "fp-d"],
  );
  assert.equal(await owners.bind("p1", "fp-b"), "bound"); // p1 is now the newest
  assert.equal(await owners.bind("p3", "fp-e"), "bound"); // k2 is the oldest
  assert.deepEqual(
    await Promise.all(["k2", "p2", "p1", "p3"].map((s) => owners.ownerOf(s))),
    [null, "fp-d", "fp-b", "fp-e"],
  );
  assert.equal(await owners.bind("k3", "fp-d", keep), "bound"); // p2 is the oldest
  assert.equal(await owners.ownerOf("p2"), null);
  // Pinned and released, a kept binding is back in the LRU order with its floor.
  assert.equal(await owners.pin("k3"), true);
  assert.equal(await owners.bind("p4", "fp-f"), "bound"); // p1 (k3 is pinned)
  assert.equal(await owners.ownerOf("p1"), null);
  assert.equal(await owners.unpin("k3"), true); // k3 is now the newest
  assert.equal(await owners.bind("p5", "fp-g"), "bound"); // p3
  assert.deepEqual(
    await Promise.all(["p3", "p4", "k3", "p5"].map((s) => owners.ownerOf(s))),
    [null, "fp-f", "fp-d", "fp-g"],
  );
  assert.equal(await owners.bind("k4", "fp-d", keep), "bound"); // p4
  assert.equal(await owners.ownerOf("p4"), null);
  // Its principal's cap evicts a kept binding like any other of its bindings.
  assert.equal(await owners.bind("k5", "fp-d"), "bound");
  assert.deepEqual(
    await Promise.all(["k3", "p5", "k4", "k5"].map((s) => owners.ownerOf(s))),
    [null, "fp-g", "fp-d", "fp-d"],
  );
  assert.equal((await owners.stats()).evictions, 7);
}
