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
