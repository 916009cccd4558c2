import assert from "node:assert/strict";
import { CancelTable } from "../src/core/cancel_table.ts";

Deno.test("CancelTable.register", async (t) => {
  await t.step("ignores a registration without a valid session id", () => {
    const table = new CancelTable();
    for (const sid of ["", null, undefined, 7, "has space", "x".repeat(257)]) {
      assert.equal(table.register(sid, 1, `e-${String(sid)}`), false);
    }
    assert.equal(table.size(), 0);
    assert.equal(table.stats().ignored, 6);
  });

  await t.step("ignores invalid request ids and reused entry ids", () => {
    const table = new CancelTable();
    assert.equal(table.register("s1", null, "e1"), false);
    assert.equal(table.register("s1", NaN, "e1"), false);
    assert.equal(table.register("s1", { id: 1 }, "e1"), false);
    assert.equal(table.register("s1", 1, "e1"), true);
    assert.equal(table.register("s1", 2, "e1"), false, "entry id reused");
    assert.equal(table.register("s1", 2, ""), false);
  });

  await t.step('1 and "1" are different keys', () => {
    const table = new CancelTable();
    table.register("s1", 1, "num");
    table.register("s1", "1", "str");
    assert.equal(table.cancel("s1", "1"), "str");
    assert.equal(table.cancel("s1", 1), "num");
  });

  await t.step("a full table ignores new registrations", () => {
    const table = new CancelTable({ maxEntries: 2 });
    assert.equal(table.register("s1", 1, "e1"), true);
    assert.equal(table.register("s1", 2, "e2"), true);
    assert.equal(table.register("s1", 3, "e3"), false);
    table.deregister("e1");
    assert.equal(table.register("s1", 3, "e3"), true);
  });
});

Deno.test("CancelTable.deregister only removes a slot its entry still owns", () => {
  const table = new CancelTable();
  table.register("s1", 1, "old");
  table.register("s1", 1, "new"); // last writer wins
  assert.equal(table.stats().displaced, 1);
  assert.equal(table.deregister("old"), false);
  assert.equal(table.cancel("s1", 1), "new", "the newer registration is still cancellable");
  assert.equal(table.deregister("new"), true);
  assert.equal(table.deregister("new"), false);
  assert.equal(table.deregister(undefined), false);
  assert.equal(table.size(), 0);
});

Deno.test("CancelTable.cancel", async (t) => {
  await t.step("cancels only within the registering session", () => {
    const table = new CancelTable();
    table.register("alice", 5, "e1");
    assert.equal(table.cancel("mallory", 5), null);
    assert.equal(table.cancel("alice", 6), null);
    assert.equal(table.cancel("alice", 5), "e1");
  });

  await t.step("cancels each entry at most once", () => {
    const table = new CancelTable();
    table.register("s1", 1, "e1");
    assert.equal(table.cancel("s1", 1), "e1");
    assert.equal(table.cancel("s1", 1), null);
    assert.deepEqual(table.cancelAll("s1"), []);
    assert.equal(table.stats().cancelled, 1);
  });

  await t.step("invalid input finds nothing", () => {
    const table = new CancelTable();
    table.register("s1", 1, "e1");
    assert.equal(table.cancel("", 1), null);
    assert.equal(table.cancel("s1", undefined), null);
  });
});

Deno.test("CancelTable.cancelAll stops every request of the session, displaced ones too", () => {
  const table = new CancelTable();
  table.register("s1", 1, "a");
  table.register("s1", 1, "b"); // displaces a, which is still running
  table.register("s1", 2, "c");
  table.register("s2", 1, "d");
  assert.deepEqual(table.cancelAll("s1").sort(), ["a", "b", "c"]);
  assert.equal(table.cancel("s2", 1), "d");
  assert.deepEqual(table.cancelAll("nobody"), []);
  assert.deepEqual(table.cancelAll(""), []);
});
