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
