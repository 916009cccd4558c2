import assert from "node:assert/strict";
import { OwnerTable } from "../src/core/owner_table.ts";
import { InvalidInputError } from "../src/core/errors.ts";

Deno.test("OwnerTable.bind", async (t) => {
  await t.step("binds an unbound id and refreshes the owner's own binding", () => {
    const table = new OwnerTable();
    assert.equal(table.bind("s1", "alice"), "bound");
    assert.equal(table.bind("s1", "alice"), "bound");
    assert.equal(table.ownerOf("s1"), "alice");
    assert.equal(table.size(), 1);
  });

  await t.step("refuses a takeover by another principal", () => {
    const table = new OwnerTable();
    table.bind("s1", "alice");
    assert.equal(table.bind("s1", "mallory"), "refused");
    assert.equal(table.ownerOf("s1"), "alice");
    assert.equal(table.stats().refusals, 1);
  });

  await t.step("refuses a takeover of a TOFU-claimed id too", () => {
    const table = new OwnerTable();
    assert.equal(table.authorizeAttach("bus", "alice"), true);
    assert.equal(table.bind("bus", "mallory"), "refused");
  });

  await t.step("fails closed on blank or invalid input without changing state", () => {
    const table = new OwnerTable();
    for (
      const [sid, fp] of [
        ["", "alice"],
        ["s1", ""],
        ["s1", "   "],
        [undefined, "alice"],
        ["s1", null],
        [42, "alice"],
        ["has space", "alice"],
        ["x".repeat(257), "alice"],
        ["s1", "bad\nfp"],
      ] as [unknown, unknown][]
    ) {
      assert.equal(table.bind(sid, fp), "refused", `bind(${String(sid)}, ${String(fp)})`);
    }
    assert.equal(table.size(), 0);
    assert.equal(table.stats().invalid, 9);
  });

  await t.step("accepts a 256-character id and keeps distinct long ids distinct", () => {
    const table = new OwnerTable();
    const a = "a".repeat(255) + "1";
    const b = "a".repeat(255) + "2";
    assert.equal(table.bind(a, "alice"), "bound");
    assert.equal(table.bind(b, "bob"), "bound");
    assert.equal(table.ownerOf(a), "alice");
    assert.equal(table.ownerOf(b), "bob");
  });
});

Deno.test("OwnerTable.authorizeAttach", async (t) => {
  await t.step("claims an unseen id trust-on-first-use, then refuses others", () => {
    const table = new OwnerTable();
    assert.equal(table.authorizeAttach("s1", "alice"), true);
    assert.equal(table.stats().claims, 1);
    assert.equal(table.authorizeAttach("s1", "alice"), true);
    assert.equal(table.authorizeAttach("s1", "mallory"), false);
    assert.equal(table.ownerOf("s1"), "alice");
    assert.equal(table.stats().claims, 1);
  });

  await t.step("blank input never claims", () => {
    const table = new OwnerTable();
    assert.equal(table.authorizeAttach("s1", ""), false);
    assert.equal(table.authorizeAttach("", "alice"), false);
    assert.equal(table.size(), 0);
  });

  await t.step("refreshes LRU position for the owner", () => {
    const table = new OwnerTable({ maxEntries: 2 });
    table.bind("s1", "alice");
    table.bind("s2", "bob");
    assert.equal(table.authorizeAttach("s1", "alice"), true); // s1 now most recent
    table.bind("s3", "carol"); // evicts s2, the least recently used
    assert.equal(table.ownerOf("s1"), "alice");
    assert.equal(table.ownerOf("s2"), null);
    assert.equal(table.stats().evictions, 1);
  });
});

Deno.test("OwnerTable.forget", async (t) => {
  await t.step("only the owner may drop its binding", () => {
    const table = new OwnerTable();
    table.bind("s1", "alice");
    assert.equal(table.forget("s1", "mallory"), false);
    assert.equal(table.ownerOf("s1"), "alice");
    assert.equal(table.forget("s1", "alice"), true);
    assert.equal(table.ownerOf("s1"), null);
  });

  await t.step("an unbound id is a no-op true; an operator drop needs no fingerprint", () => {
    const table = new OwnerTable();
    assert.equal(table.forget("nobody", "alice"), true);
    table.bind("s1", "alice");
    assert.equal(table.forget("s1"), true);
    assert.equal(table.size(), 0);
  });

  await t.step("a blank fingerprint is not an operator drop", () => {
    const table = new OwnerTable();
    table.bind("s1", "alice");
    assert.equal(table.forget("s1", ""), false);
    assert.equal(table.forget("s1", null), false);
    assert.equal(table.forget("", "alice"), false);
    assert.equal(table.ownerOf("s1"), "alice");
  });

  await t.step("forgetting a pinned session releases its pins", () => {
    const table = new OwnerTable({ maxEntries: 1 });
    table.authorizeAttach("s1", "alice", true);
    assert.equal(table.stats().pinned, 1);
    assert.equal(table.forget("s1", "alice"), true);
    assert.equal(table.stats().pinned, 0);
    assert.equal(table.bind("s2", "bob"), "bound");
  });
});

Deno.test("OwnerTable bounds", async (t) => {
  await t.step("global LRU evicts the least recently used binding", () => {
    const table = new OwnerTable({ maxEntries: 3 });
    table.bind("s1", "a");
    table.bind("s2", "b");
    table.bind("s3", "c");
    table.bind("s1", "a"); // refresh
    assert.equal(table.bind("s4", "d"), "bound");
    assert.deepEqual(["s1", "s2", "s3", "s4"].map((s) => table.ownerOf(s)), ["a", null, "c", "d"]);
    assert.equal(table.size(), 3);
  });

  await t.step("a principal at its cap evicts its own oldest binding, never another's", () => {
    const table = new OwnerTable({ maxEntries: 100, maxPerPrincipal: 3 });
    table.bind("victim", "alice");
    for (let i = 0; i < 50; i++) assert.equal(table.bind(`flood-${i}`, "mallory"), "bound");
    assert.equal(table.ownerOf("victim"), "alice");
    assert.equal(table.size(), 4);
    assert.equal(table.ownerOf("flood-49"), "mallory");
    assert.equal(table.ownerOf("flood-46"), null);
    assert.equal(table.stats().evictions, 47);
  });

  await t.step(
    "the flood cannot push others out even when the table is at its global bound",
    () => {
      const table = new OwnerTable({ maxEntries: 4, maxPerPrincipal: 2 });
      table.bind("a1", "alice");
      table.bind("b1", "bob");
      for (let i = 0; i < 10; i++) table.bind(`m${i}`, "mallory");
      assert.equal(table.ownerOf("a1"), "alice");
      assert.equal(table.ownerOf("b1"), "bob");
    },
  );

  await t.step("shared principals get maxPerSharedPrincipal instead of maxPerPrincipal", () => {
    const table = new OwnerTable({
      maxEntries: 10,
      maxPerPrincipal: 2,
      sharedPrincipals: ["mk"],
      maxPerSharedPrincipal: 5,
    });
    for (let i = 0; i < 5; i++) table.bind(`s${i}`, "mk");
    assert.equal(table.size(), 5);
    assert.equal(table.stats().evictions, 0);
  });

  await t.step("pinned sessions are never evicted; all pinned answers full", () => {
    const table = new OwnerTable({ maxEntries: 2 });
    assert.equal(table.authorizeAttach("s1", "a", true), true);
    assert.equal(table.bind("s2", "b"), "bound");
    assert.equal(table.pin("s2"), true);
    assert.equal(table.bind("s3", "c"), "full");
    assert.equal(table.authorizeAttach("s3", "c"), false);
    assert.equal(table.ownerOf("s3"), null);
    assert.equal(table.stats().full, 2);
    // Unpinning makes room again, but the binding itself stays.
    assert.equal(table.unpin("s1"), true);
    assert.equal(table.ownerOf("s1"), "a");
    assert.equal(table.bind("s3", "c"), "bound");
    assert.equal(table.ownerOf("s1"), null, "s1 was the only unpinned binding");
    assert.equal(table.ownerOf("s2"), "b");
  });

  await t.step("a principal whose own bindings are all pinned gets full", () => {
    const table = new OwnerTable({ maxEntries: 10, maxPerPrincipal: 1 });
    table.authorizeAttach("s1", "a", true);
    assert.equal(table.bind("s2", "a"), "full");
    assert.equal(table.bind("s2", "b"), "bound");
  });

  await t.step("pins are counted per stream", () => {
    const table = new OwnerTable();
    table.bind("s1", "a");
    assert.equal(table.pin("s1"), true);
    assert.equal(table.pin("s1"), true);
    assert.equal(table.unpin("s1"), true);
    assert.equal(table.stats().pinned, 1);
    assert.equal(table.unpin("s1"), true);
    assert.equal(table.stats().pinned, 0);
    assert.equal(table.unpin("s1"), false);
    assert.equal(table.pin("unbound"), false);
  });
});

Deno.test("OwnerTable options are validated with errors naming the bad value", () => {
  assert.throws(() => new OwnerTable({ maxEntries: 0 }), InvalidInputError);
  assert.throws(() => new OwnerTable({ maxEntries: 1.5 }), /maxEntries.*1\.5/);
  assert.throws(() => new OwnerTable({ maxPerPrincipal: -1 }), /maxPerPrincipal.*-1/);
  for (const bad of [0, -3, 2.5, "5", Number.NaN]) {
    assert.throws(
      () => new OwnerTable({ maxPerSharedPrincipal: bad as number }),
      (err: unknown) =>
        err instanceof InvalidInputError && /^maxPerSharedPrincipal must be/.test(err.message),
      `maxPerSharedPrincipal: ${String(bad)}`,
    );
  }
  assert.throws(
    () => new OwnerTable({ sharedPrincipals: [""] as string[] }),
    /sharedPrincipals/,
  );
});

Deno.test("OwnerTable: a shared principal is bounded and never evicts anyone else", async (t) => {
  await t.step("at its own bound it evicts its own least recently used binding", () => {
    const table = new OwnerTable({
      maxEntries: 100,
      maxPerPrincipal: 2,
      sharedPrincipals: ["mk"],
      maxPerSharedPrincipal: 5,
    });
    assert.equal(table.bind("alice-1", "alice"), "bound");
    for (let i = 0; i < 50; i++) assert.equal(table.bind(`m${i}`, "mk"), "bound");
    assert.equal(table.ownerOf("alice-1"), "alice");
    assert.equal(table.size(), 6);
    assert.deepEqual(
      ["m44", "m45", "m49"].map((s) => table.ownerOf(s)),
      [null, "mk", "mk"],
    );
    assert.equal(table.stats().evictions, 45);
  });

  await t.step("at the global bound it evicts only its own oldest binding", () => {
    const table = new OwnerTable({
      maxEntries: 4,
      maxPerPrincipal: 2,
      sharedPrincipals: ["mk"],
      maxPerSharedPrincipal: 1_000,
    });
    table.bind("alice-1", "alice");
    table.bind("bob-1", "bob");
    for (let i = 0; i < 10_001; i++) assert.equal(table.bind(`m${i}`, "mk"), "bound");
    assert.equal(table.ownerOf("alice-1"), "alice");
    assert.equal(table.ownerOf("bob-1"), "bob");
    assert.deepEqual(
      ["m9998", "m9999", "m10000"].map((s) => table.ownerOf(s)),
      [null, "mk", "mk"],
    );
    assert.equal(table.size(), 4);
  });

  await t.step("a bind with shared: true follows the same rule", () => {
    const table = new OwnerTable({ maxEntries: 3, maxPerPrincipal: 1, maxPerSharedPrincipal: 5 });
    table.bind("alice-1", "alice");
    for (let i = 0; i < 6; i++) assert.equal(table.bind(`m${i}`, "mk", true), "bound");
    assert.equal(table.ownerOf("alice-1"), "alice");
    assert.deepEqual(["m3", "m4", "m5"].map((s) => table.ownerOf(s)), [null, "mk", "mk"]);
  });

  await t.step("with nothing of its own to evict, a full table answers full", () => {
    const table = new OwnerTable({ maxEntries: 2, sharedPrincipals: ["mk"] });
    table.bind("alice-1", "alice");
    table.bind("bob-1", "bob");
    assert.equal(table.bind("m0", "mk"), "full");
    assert.equal(table.authorizeAttach("m0", "mk"), false);
    assert.equal(table.stats().full, 2);
    // Its own bindings, all pinned: full too.
    table.forget("bob-1");
    assert.equal(table.authorizeAttach("m1", "mk", true), true);
    assert.equal(table.bind("m2", "mk"), "full");
    assert.deepEqual(["alice-1", "m1"].map((s) => table.ownerOf(s)), ["alice", "mk"]);
    // A principal that is not shared still evicts the global LRU, as before.
    assert.equal(table.bind("carol-1", "carol"), "bound");
    assert.equal(table.ownerOf("alice-1"), null);
  });

  await t.step("the default bound is a tenth of maxEntries, never below maxPerPrincipal", () => {
    const tenth = new OwnerTable({ maxEntries: 100, maxPerPrincipal: 2, sharedPrincipals: ["mk"] });
    for (let i = 0; i < 20; i++) tenth.bind(`m${i}`, "mk");
    assert.equal(tenth.size(), 10);
    const floor = new OwnerTable({ maxEntries: 20, maxPerPrincipal: 3, sharedPrincipals: ["mk"] });
    for (let i = 0; i < 20; i++) floor.bind(`m${i}`, "mk");
    assert.equal(floor.size(), 3);
  });
});

Deno.test("OwnerTable: keepMs holds a binding past idle expiry (fake clock)", async (t) => {
  const setup = (options: { maxEntries?: number; maxPerPrincipal?: number } = {}) => {
    const clock = { now: 0 };
    const removed: [string, string][] = [];
    const table = new OwnerTable(
      { idleTtlMs: 100, now: () => clock.now, ...options },
      (sid, cause) => removed.push([sid, cause]),
    );
    return { clock, removed, table };
  };

  await t.step("a kept binding outlives idleTtlMs until keepMs has passed, then expires", () => {
    const { clock, removed, table } = setup();
    assert.equal(table.bind("task", "alice", false, 1_000), "bound");
    assert.equal(table.bind("plain", "alice"), "bound");
    clock.now = 150;
    assert.equal(table.ownerOf("plain"), null, "idle expiry as before");
    assert.equal(table.ownerOf("task"), "alice");
    clock.now = 1_000;
    assert.equal(table.ownerOf("task"), "alice", "kept for exactly keepMs");
    assert.equal(table.sweep(), 0);
    clock.now = 1_001;
    assert.equal(table.ownerOf("task"), null, "then expired, before any sweep");
    assert.deepEqual(removed, [["plain", "expired"], ["task", "expired"]]);
  });

  await t.step("the sweep drops expired bindings behind a kept one, and the kept one later", () => {
    const { clock, removed, table } = setup();
    table.bind("before", "bob");
    table.bind("task", "alice", false, 500);
    clock.now = 10;
    table.bind("after-1", "bob");
    table.bind("after-2", "carol");
    clock.now = 100;
    table.touch("after-2", "carol");
    clock.now = 200;
    assert.equal(table.sweep(), 2);
    assert.deepEqual(removed, [["before", "expired"], ["after-1", "expired"]]);
    assert.deepEqual(["task", "after-2"].map((s) => table.ownerOf(s)), ["alice", "carol"]);
    clock.now = 501;
    assert.equal(table.sweep(), 2);
    assert.deepEqual(removed.slice(2), [["task", "expired"], ["after-2", "expired"]]);
    assert.equal(table.size(), 0);
  });

  await t.step("a later touch or bind by the owner never shortens the floor", () => {
    const { clock, table } = setup();
    table.bind("task", "alice", false, 1_000);
    clock.now = 50;
    assert.equal(table.bind("task", "alice"), "bound");
    assert.equal(table.bind("task", "alice", false, 10), "bound");
    assert.equal(table.touch("task", "alice"), true);
    clock.now = 900;
    assert.equal(table.ownerOf("task"), "alice");
    // A longer keep extends it; another principal's bind changes nothing.
    assert.equal(table.bind("task", "alice", false, 2_000), "bound"); // until 2,900
    assert.equal(table.bind("task", "mallory", false, 30_000), "refused");
    clock.now = 2_900;
    assert.equal(table.ownerOf("task"), "alice");
    clock.now = 2_901;
    assert.equal(table.ownerOf("task"), null);
  });

  await t.step("a use after the floor counts as usual: idle expiry from the last use", () => {
    const { clock, table } = setup();
    table.bind("task", "alice", false, 300);
    clock.now = 280;
    table.touch("task", "alice");
    clock.now = 380;
    assert.equal(table.ownerOf("task"), "alice");
    clock.now = 381;
    assert.equal(table.ownerOf("task"), null);
  });

  await t.step("bounds still apply: a kept binding is evicted like any other", () => {
    const { table } = setup({ maxEntries: 2, maxPerPrincipal: 1 });
    table.bind("task", "alice", false, 10_000);
    table.bind("t2", "bob");
    assert.equal(table.bind("t3", "carol"), "bound"); // global LRU: the kept one
    assert.equal(table.ownerOf("task"), null);
    table.bind("t4", "carol", false, 10_000); // carol's cap: evicts her own t3
    assert.equal(table.ownerOf("t3"), null);
    assert.equal(table.stats().evictions, 2);
  });

  await t.step("without idle expiry keepMs changes nothing", () => {
    const table = new OwnerTable({ maxEntries: 1 });
    assert.equal(table.bind("task", "alice", false, 1_000), "bound");
    assert.equal(table.bind("other", "bob"), "bound");
    assert.equal(table.ownerOf("task"), null);
  });

  await t.step("an invalid keepMs fails closed", () => {
    const { table } = setup();
    for (const bad of [-1, 1.5, Number.NaN, Infinity, "10", 30 * 24 * 3_600_000 + 1, null]) {
      assert.equal(table.bind("task", "alice", false, bad), "refused", String(bad));
    }
    assert.equal(table.size(), 0);
    assert.equal(table.stats().invalid, 7);
    assert.equal(table.bind("task", "alice", false, 30 * 24 * 3_600_000), "bound");
    assert.equal(table.bind("task2", "alice", false, undefined), "bound");
  });
});
