import assert from "node:assert/strict";
import {
  CancellationRegistry,
  InvalidInputError,
  kvStore,
  memoryStore,
  RegistryClosedError,
  RequestCancelledError,
  SessionOwnerRegistry,
} from "../mod.ts";
import { clients } from "../src/registry/registry_options.ts";
import {
  FLOOD_BOUNDS,
  KEEP_TTL_MS,
  KEPT_LRU_BOUNDS,
  keptInLruOrder,
  keptPastIdle,
  sharedFlood,
} from "./support/bounds.ts";

Deno.test("SessionOwnerRegistry through its worker", async (t) => {
  await using owners = new SessionOwnerRegistry({ maxEntries: 3, maxPerPrincipal: 2 });

  await t.step("bind / refuse / refresh", async () => {
    assert.equal(await owners.bind("s1", "alice"), "bound");
    assert.equal(await owners.bind("s1", "mallory"), "refused");
    assert.equal(await owners.bind("s1", "alice"), "bound");
    assert.equal(await owners.ownerOf("s1"), "alice");
  });

  await t.step("attach: owner yes, other no, unseen id claimed", async () => {
    assert.equal(await owners.authorizeAttach("s1", "alice"), true);
    assert.equal(await owners.authorizeAttach("s1", "mallory"), false);
    assert.equal(await owners.authorizeAttach("bus", "bob", { pin: true }), true);
    assert.equal(await owners.ownerOf("bus"), "bob");
    assert.equal((await owners.stats()).pinned, 1);
    assert.equal(await owners.unpin("bus"), true);
  });

  await t.step("forget: owner only, operator drop", async () => {
    assert.equal(await owners.forget("s1", "mallory"), false);
    assert.equal(await owners.forget("s1", "alice"), true);
    assert.equal(await owners.ownerOf("s1"), null);
    assert.equal(await owners.forget("bus"), true);
    assert.equal(await owners.size(), 0);
  });

  await t.step("blank and non-string input fails closed, never a crash", async () => {
    const bad: unknown[] = ["", "  ", null, undefined, 42, {}, () => 1, Symbol("x"), "a\nb"];
    for (const v of [...bad, "é", "x".repeat(257)]) {
      assert.equal(await owners.bind(v as string, "alice"), "refused");
      assert.equal(await owners.authorizeAttach(v as string, "alice"), false);
      assert.equal(await owners.ownerOf(v as string), null);
    }
    for (const v of [...bad, "x".repeat(1025)]) {
      assert.equal(await owners.bind("s9", v as string), "refused");
      assert.equal(await owners.authorizeAttach("s9", v as string), false);
    }
    assert.equal(await owners.forget("s9", null as unknown as string), false);
    assert.equal(await owners.size(), 0);
  });

  await t.step("per-principal cap and global LRU, observed through stats", async () => {
    await owners.bind("a1", "alice");
    for (let i = 0; i < 5; i++) await owners.bind(`m${i}`, "mallory");
    assert.equal(await owners.ownerOf("a1"), "alice");
    assert.equal(await owners.size(), 3);
    const stats = await owners.stats();
    assert.equal(stats.evictions, 3);
    assert.equal(stats.restarts, 0);
  });
});

Deno.test("knownOwner: learned from answers, forgotten at once, never revived by an older answer", async () => {
  await using owners = new SessionOwnerRegistry({ maxEntries: 2, maxPerPrincipal: 2 });
  assert.equal(owners.knownOwner("s1"), undefined);
  assert.equal(await owners.bind("s1", "alice"), "bound");
  assert.equal(owners.knownOwner("s1"), "alice");
  assert.equal(await owners.authorizeAttach("s2", "bob"), true);
  assert.equal(owners.knownOwner("s2"), "bob");
  // An eviction the worker reports: s1 is the least recently used binding.
  assert.equal(await owners.bind("s3", "carol"), "bound");
  assert.equal(owners.knownOwner("s1"), undefined);
  assert.equal(await owners.ownerOf("s1"), null);

  // An ownerOf in flight (its own message), then a forget in the next one.
  const before = owners.ownerOf("s3");
  await Promise.resolve(); // the ownerOf leaves in its own batch
  const forgotten = owners.forget("s3", "carol");
  assert.equal(owners.knownOwner("s3"), undefined, "forgotten at call time");
  assert.equal(await before, "carol");
  assert.equal(owners.knownOwner("s3"), undefined, "the older answer does not bring it back");
  assert.equal(await forgotten, true);
  assert.equal(owners.knownOwner("s3"), undefined);
  // Learned again once the forget is answered.
  assert.equal(await owners.bind("s3", "dave"), "bound");
  assert.equal(owners.knownOwner("s3"), "dave");

  // Blank input never learns anything; a failed worker forgets everything.
  assert.equal(await owners.bind("", "alice"), "refused");
  assert.equal(owners.knownOwner(""), undefined);
  clients.get(owners)!.worker!.dispatchEvent(new ErrorEvent("error", { message: "test" }));
  assert.equal(owners.knownOwner("s2"), undefined);
});

Deno.test("knownOwner stays off for shared stores and with knownOwners: false", async () => {
  await using off = new SessionOwnerRegistry({ knownOwners: false });
  await using shared = new SessionOwnerRegistry({ store: kvStore({ path: ":memory:" }) });
  for (const reg of [off, shared]) {
    assert.equal(await reg.bind("s1", "alice"), "bound");
    assert.equal(reg.knownOwner("s1"), undefined);
    assert.equal(await reg.ownerOf("s1"), "alice");
  }
});

Deno.test("SessionOwnerRegistry: a shared principal floods, bounded, evicting no one else", async () => {
  await using owners = new SessionOwnerRegistry(FLOOD_BOUNDS);
  await sharedFlood(owners);
});

Deno.test("SessionOwnerRegistry: bind's keepMs outlives idle expiry, exactly", async () => {
  await using owners = new SessionOwnerRegistry({
    store: memoryStore({ idleTtlMs: KEEP_TTL_MS }),
    touchIntervalMs: 0,
  });
  await keptPastIdle(owners);
});

Deno.test("SessionOwnerRegistry: kept and plain bindings share one LRU order", async () => {
  await using owners = new SessionOwnerRegistry({
    ...KEPT_LRU_BOUNDS,
    store: memoryStore({ idleTtlMs: 3_600_000 }),
  });
  await keptInLruOrder(owners);
});

Deno.test("SessionOwnerRegistry.bind rejects a bad keepMs with an InvalidInputError naming it", async () => {
  await using owners = new SessionOwnerRegistry();
  for (const bad of [-1, 1.5, Number.NaN, Infinity, "60000", 30 * 24 * 3_600_000 + 1, null]) {
    await assert.rejects(
      owners.bind("s1", "alice", { keepMs: bad as number }),
      (err: unknown) => err instanceof InvalidInputError && /keepMs .*got/.test(err.message),
      String(bad),
    );
  }
  assert.equal(await owners.size(), 0);
  assert.equal(await owners.bind("s1", "alice", { keepMs: 30 * 24 * 3_600_000 }), "bound");
  assert.equal(await owners.bind("s2", "alice", { keepMs: 0 }), "bound");
});

Deno.test("SessionOwnerRegistry validates options up front", () => {
  assert.throws(() => new SessionOwnerRegistry({ maxEntries: 0 }), InvalidInputError);
  assert.throws(() => new SessionOwnerRegistry({ maxPerPrincipal: NaN }), /maxPerPrincipal.*NaN/);
  assert.throws(() => new SessionOwnerRegistry({ callTimeoutMs: -5 }), /callTimeoutMs.*-5/);
  assert.throws(
    () => new SessionOwnerRegistry({ maxPerSharedPrincipal: 0 }),
    (err: unknown) =>
      err instanceof InvalidInputError && /maxPerSharedPrincipal.*0/.test(err.message),
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => new SessionOwnerRegistry({ store: { kind: "disk" } as any }),
    /store must be a RegistryStore/,
  );
  assert.throws(() => new CancellationRegistry({ maxEntries: "10" as unknown as number }), /"10"/);
});

Deno.test("CancellationRegistry through its worker", async (t) => {
  await using cancels = new CancellationRegistry({ store: memoryStore(), maxEntries: 4 });

  await t.step("register returns an entry id and a live signal", async () => {
    const reg = await cancels.register("s1", 1);
    assert.ok(reg);
    assert.equal(typeof reg.entryId, "string");
    assert.equal(reg.signal.aborted, false);
    assert.equal(await cancels.deregister(reg.entryId), true);
  });

  await t.step("a registration without a session id is ignored", async () => {
    assert.equal(await cancels.register("", 1), null);
    assert.equal(await cancels.register(undefined as unknown as string, 1), null);
    assert.equal(await cancels.register("s1", null as unknown as number), null);
    assert.equal(await cancels.register("s1", (() => 1) as unknown as number), null);
    assert.equal(await cancels.size(), 0);
  });

  await t.step("cancel trips only the same session's request, once, with the reason", async () => {
    const alice = await cancels.register("alice", 7);
    const bob = await cancels.register("bob", 7);
    assert.ok(alice && bob);
    assert.equal(await cancels.cancel("mallory", 7), false);
    assert.equal(alice.signal.aborted || bob.signal.aborted, false);
    const reason = new Error("stop");
    assert.equal(await cancels.cancel("alice", 7, reason), true);
    assert.equal(alice.signal.reason, reason);
    assert.equal(bob.signal.aborted, false);
    assert.equal(await cancels.cancel("alice", 7, "again"), false);
    assert.equal(alice.signal.reason, reason, "aborted at most once");
    await cancels.cancel("bob", 7);
    assert.ok(bob.signal.reason instanceof RequestCancelledError);
    assert.equal(bob.signal.reason.sessionId, "bob");
    assert.equal(bob.signal.reason.requestId, 7);
    await cancels.deregister(alice.entryId);
    await cancels.deregister(bob.entryId);
  });

  await t.step("uses a caller-supplied controller", async () => {
    const controller = new AbortController();
    const reg = await cancels.register("s1", "req", controller);
    assert.equal(reg?.signal, controller.signal);
    await cancels.cancel("s1", "req");
    assert.equal(controller.signal.aborted, true);
    await cancels.deregister(reg!.entryId);
  });

  await t.step("a stale deregister never evicts the newer registration", async () => {
    const first = await cancels.register("s1", 1);
    const second = await cancels.register("s1", 1);
    assert.equal(await cancels.deregister(first!.entryId), false);
    assert.equal(await cancels.cancel("s1", 1), true);
    assert.equal(second!.signal.aborted, true);
    assert.equal(first!.signal.aborted, false);
    assert.equal(await cancels.deregister(second!.entryId), true);
  });

  await t.step("cancelAll aborts every request of the session and counts them", async () => {
    const regs = await Promise.all([
      cancels.register("s1", 1),
      cancels.register("s1", 2),
      cancels.register("s2", 1),
    ]);
    assert.equal(await cancels.cancelAll("s1"), 2);
    assert.deepEqual(regs.map((r) => r!.signal.aborted), [true, true, false]);
    assert.ok(regs[0]!.signal.reason instanceof RequestCancelledError);
    assert.equal(await cancels.cancelAll("s1"), 0);
    for (const r of regs) await cancels.deregister(r!.entryId);
  });

  await t.step("at maxEntries the request runs uncancellable (null)", async () => {
    const regs = [];
    for (let i = 0; i < 4; i++) regs.push(await cancels.register("s1", i));
    assert.equal(await cancels.register("s1", 99), null);
    for (const r of regs) await cancels.deregister(r!.entryId);
    assert.equal(await cancels.size(), 0);
  });
});

Deno.test("CancellationRegistry: a withdrawal never changes who a full table refuses", async () => {
  await using cancels = new CancellationRegistry({ maxEntries: 1 });
  const client = clients.get(cancels)!;
  await cancels.size(); // the worker is up
  const a = cancels.track("s", 1);
  const b = cancels.track("s", 2); // the table is full in call order: refused
  assert.equal(await cancels.deregister(a.entryId), true);
  assert.equal(await b.registered, false);
  assert.equal(await cancels.cancel("s", 2), false);
  const stats = await cancels.stats();
  assert.deepEqual([stats.size, stats.registered, stats.ignored], [0, 1, 1]);
  // With room to spare the pair is withdrawn again.
  const sent = client.batches;
  const c = cancels.track("s", 3);
  assert.equal(await cancels.deregister(c.entryId), true);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(client.batches, sent, "nothing sent");
});

Deno.test("CancellationRegistry.track: no wait, same order, same rules", async (t) => {
  await using cancels = new CancellationRegistry({ maxEntries: 2 });
  const client = clients.get(cancels)!;

  await t.step("returns at once; a cancel made after it always sees it", async () => {
    const tracked = cancels.track("s1", 1);
    assert.equal(typeof tracked.entryId, "string");
    assert.equal(tracked.signal.aborted, false);
    // Not awaited: the cancel is queued after the registration and applied after it.
    assert.equal(await cancels.cancel("s1", 1, "stop"), true);
    assert.equal(await tracked.registered, true);
    assert.equal(tracked.signal.reason, "stop");
    assert.equal(await cancels.deregister(tracked.entryId), true);
  });

  await t.step("refusals resolve registered to false and leave nothing behind", async () => {
    assert.equal(await cancels.track("", 1).registered, false);
    assert.equal(await cancels.track("s1", { id: 1 } as never).registered, false);
    const a = cancels.track("s1", "a");
    const b = cancels.track("s1", "b");
    const full = cancels.track("s1", "c");
    assert.deepEqual(await Promise.all([a.registered, b.registered, full.registered]), [
      true,
      true,
      false,
    ]);
    assert.equal(await cancels.cancel("s1", "c"), false);
    assert.equal(full.signal.aborted, false);
    await Promise.all([cancels.deregister(a.entryId), cancels.deregister(b.entryId)]);
    assert.equal(await cancels.size(), 0);
  });

  await t.step(
    "a quick request's registration and deregistration never reach the worker",
    async () => {
      await cancels.size();
      const before = client.batches;
      const statsBefore = await cancels.stats();
      const sent = client.batches;
      const tracked = cancels.track("s1", 7);
      await new Promise((resolve) => setTimeout(resolve, 0)); // the request "runs" a macrotask
      const removed = cancels.deregister(tracked.entryId);
      assert.deepEqual(await Promise.all([tracked.registered, removed]), [true, true]);
      await new Promise((resolve) => setTimeout(resolve, 30)); // past the lazy window
      assert.equal(client.batches, sent, "both withdrawn: nothing was sent");
      assert.equal(await cancels.size(), 0);
      const stats = await cancels.stats();
      assert.equal(stats.registered, statsBefore.registered + 1, "still counted as registered");
      assert.equal(stats.size, 0);
      assert.ok(client.batches > before);
    },
  );

  await t.step("a call somebody waits on, queued in between, keeps both on the wire", async () => {
    const tracked = cancels.track("s1", 8);
    const size = cancels.size(); // queued after the registration: it must count it
    const removed = cancels.deregister(tracked.entryId);
    assert.equal(await size, 1);
    assert.deepEqual(await Promise.all([tracked.registered, removed]), [true, true]);
    assert.equal(await cancels.size(), 0);
  });

  await t.step(
    "a later registration of the same key keeps the earlier one on the wire",
    async () => {
      const statsBefore = await cancels.stats();
      const first = cancels.track("s1", 9);
      const second = cancels.track("s1", 9); // takes the slot in call order
      // The first one's cleanup must not remove the slot the second one owns now.
      assert.equal(await cancels.deregister(first.entryId), false);
      assert.equal(await second.registered, true);
      assert.equal((await cancels.stats()).displaced, statsBefore.displaced + 1);
      assert.equal(await cancels.cancel("s1", 9, "stop"), true);
      assert.equal(second.signal.aborted, true);
      assert.equal(first.signal.aborted, false);
      assert.equal(await cancels.deregister(second.entryId), true);
    },
  );

  await t.step("an ordinary call carries the queued lazy ones along, in order", async () => {
    const before = client.batches;
    const tracked = cancels.track("s2", 1);
    assert.equal(await cancels.size(), 1);
    assert.equal(client.batches, before + 1);
    assert.equal(await tracked.registered, true);
    await cancels.deregister(tracked.entryId);
  });

  await t.step("an earlier live entry of the same key keeps the pair on the wire", async () => {
    const statsBefore = await cancels.stats();
    const a = await cancels.register("s1", 10);
    assert.ok(a !== null);
    const b = cancels.track("s1", 10); // displaces a in call order
    assert.equal(await cancels.deregister(b.entryId), true); // and drops the slot
    assert.equal(await cancels.cancel("s1", 10), false, "a can no longer be reached by key");
    assert.equal(a.signal.aborted, false);
    assert.equal(await cancels.deregister(a.entryId), false, "its slot was taken");
    assert.equal((await cancels.stats()).displaced, statsBefore.displaced + 1);
  });

  await t.step("stats() counts only the withdrawals made before it", async () => {
    const before = (await cancels.stats()).registered;
    const stats = cancels.stats();
    const tracked = cancels.track("s1", 11);
    assert.equal(await cancels.deregister(tracked.entryId), true);
    assert.equal((await stats).registered, before);
    assert.equal((await cancels.stats()).registered, before + 1);
  });

  await t.step("a closed registry rejects registered; the signal never aborts", async () => {
    const other = new CancellationRegistry();
    await other.close();
    const tracked = other.track("s1", 1);
    await assert.rejects(tracked.registered, RegistryClosedError);
    assert.equal(tracked.signal.aborted, false);
    // Never queued, so never withdrawn: the deregistration is refused the same way.
    await assert.rejects(other.deregister(tracked.entryId), RegistryClosedError);
  });
});

Deno.test("close: calls made before close are answered, later calls reject", async () => {
  const owners = new SessionOwnerRegistry();
  const before = [owners.bind("s1", "a"), owners.bind("s1", "b"), owners.ownerOf("s1")];
  const closing = owners.close();
  await assert.rejects(owners.size(), RegistryClosedError);
  assert.deepEqual(await Promise.all(before), ["bound", "refused", "a"]);
  await closing;
  await owners.close(); // idempotent
  await assert.rejects(owners.bind("s2", "a"), (err: Error) => {
    assert.ok(err instanceof RegistryClosedError);
    assert.match(err.message, /SessionOwnerRegistry is closed/);
    return true;
  });
});

Deno.test("close before any call starts no worker", async () => {
  const cancels = new CancellationRegistry();
  await cancels.close();
  await assert.rejects(cancels.register("s1", 1), RegistryClosedError);
});
