import assert from "node:assert/strict";
import { CallQueue } from "../src/actor/call_queue.ts";
import { InFlight } from "../src/actor/in_flight.ts";
import { Op } from "../src/actor/protocol.ts";
import { Status } from "../src/actor/wire.ts";

Deno.test("CallQueue: one batch per take, in call order, arguments by arity", async (t) => {
  const queue = new CallQueue();
  const first = queue.push(Op.Attach, "s1", "fp", false);
  queue.push(Op.OwnerOf, "s2", "ignored", "ignored");
  queue.push(Op.Forget, "s3", undefined, "ignored");
  assert.equal(queue.length, 3);
  const batch = queue.take();
  assert.equal(queue.length, 0);
  assert.deepEqual(batch.ops, [Op.Attach, Op.OwnerOf, Op.Forget]);
  assert.deepEqual(batch.args, ["s1", "fp", false, "s2", "s3", undefined]);
  assert.equal(batch.resolve.length, 3);
  assert.equal(batch.reject.length, 3);
  batch.resolve[0](true);
  assert.equal(await first, true);

  await t.step("a larger tick after a small one keeps every call", () => {
    for (let i = 0; i < 50; i++) queue.push(Op.OwnerOf, `s${i}`, 0, 0);
    const big = queue.take();
    assert.equal(big.ops.length, 50);
    assert.deepEqual(big.args, Array.from({ length: 50 }, (_, i) => `s${i}`));
    assert.ok(big.ops.every((op) => op === Op.OwnerOf));
    for (const settle of big.resolve) settle(null);
  });

  await t.step("withdraw: settles the call at once and drops it from the batch", async () => {
    const a = queue.push(Op.Register, "s1", 1, "e1", true);
    const at = queue.lastQueued();
    const b = queue.push(Op.Register, "s2", 2, "e2", true);
    assert.equal(queue.withdraw(at, true), true);
    assert.equal(await a, true, "settled before any batch is taken");
    assert.equal(queue.withdraw(at, true), false, "only once");
    const batch = queue.take();
    assert.deepEqual(batch.ops, [Op.Register]);
    assert.deepEqual(batch.args, ["s2", 2, "e2"]);
    batch.resolve[0]("second");
    assert.equal(await b, "second");
    assert.equal(queue.withdraw(at, true), false, "its batch is gone: stale");
  });

  await t.step("withdraw: refused after a call somebody waits on", () => {
    queue.push(Op.Register, "s1", 1, "e1", true);
    const lazy = queue.lastQueued();
    queue.push(Op.CancelSize, undefined, undefined, undefined); // eager
    assert.equal(queue.withdraw(lazy, true), false);
    queue.take().resolve.forEach((settle) => settle(null));

    queue.push(Op.Register, "s1", 1, "e1", true);
    const first = queue.lastQueued();
    queue.push(Op.Deregister, "e0", undefined, undefined, true); // lazy: no obstacle
    assert.equal(queue.withdraw(first, true), true);
    const batch = queue.take();
    assert.deepEqual(batch.ops, [Op.Deregister]);
    assert.deepEqual(batch.args, ["e0"], "the arguments of the calls after it move up");
    batch.resolve.forEach((settle) => settle(null));
  });

  await t.step("withdraw: a call whose batch was taken right after it is stale", () => {
    queue.push(Op.Register, "s1", 1, "e1", true);
    queue.take().resolve.forEach((settle) => settle(null)); // e.g. flushed at maxBatch
    const at = queue.lastQueued();
    queue.push(Op.Register, "s2", 2, "e2", true);
    assert.equal(queue.withdraw(at, true), false);
    assert.deepEqual(queue.take().ops, [Op.Register], "the later call stays");
  });

  await t.step("withdraw: a batch of only withdrawn calls is empty", async () => {
    const calls = [1, 2, 3].map((n) => {
      const promise = queue.push(Op.Register, `s${n}`, n, `e${n}`, true);
      return { promise, at: queue.lastQueued() };
    });
    for (const { at } of calls.reverse()) {
      assert.equal(queue.withdraw(at, n(at)), true);
    }
    assert.deepEqual(await Promise.all(calls.map((c) => c.promise)), [2, 1, 0]);
    const batch = queue.take();
    assert.deepEqual([batch.ops.length, batch.args.length, batch.resolve.length], [0, 0, 0]);
  });

  await t.step("rejectAll rejects what is queued and empties the queue", async () => {
    const a = queue.push(Op.OwnerOf, "x", 0, 0);
    const b = queue.push(Op.OwnerOf, "y", 0, 0);
    queue.rejectAll(new Error("gone"));
    assert.equal(queue.length, 0);
    await assert.rejects(a, /gone/);
    await assert.rejects(b, /gone/);
  });
});

/** The index of a queued call, as a value to settle it with. */
const n = (at: { index: number }) => at.index;

Deno.test("InFlight: settles a piece once, and drops its references when settled", async (t) => {
  const heard: unknown[][] = [];
  let faults = 0;
  const inFlight = new InFlight({
    onReply: (ops, args, results) => heard.push([[...ops], [...args], [...results]]),
    onFault: () => faults++,
  });
  const piece = (n: number) => {
    const queue = new CallQueue();
    const promises = Array.from({ length: n }, (_, i) => queue.push(Op.OwnerOf, `s${i}`, 0, 0));
    return { batch: queue.take(), promises };
  };

  await t.step("answer: results in order, onReply first, then nothing retained", async () => {
    const { batch, promises } = piece(3);
    const id = inFlight.add(batch);
    assert.equal(inFlight.size, 1);
    assert.equal(inFlight.answer(id, { status: Status.Ok, results: ["a", null, "c"] }), true);
    assert.deepEqual(await Promise.all(promises), ["a", null, "c"]);
    assert.deepEqual(heard.at(-1), [[Op.OwnerOf, Op.OwnerOf, Op.OwnerOf], ["s0", "s1", "s2"], [
      "a",
      null,
      "c",
    ]]);
    assert.equal(inFlight.size, 0);
    // A settled piece holds no promise, settler or argument any more.
    assert.deepEqual(
      [batch.ops.length, batch.args.length, batch.resolve.length, batch.reject.length],
      [0, 0, 0, 0],
    );
    assert.equal(inFlight.answer(id, { status: Status.Ok, results: ["late"] }), false);
  });

  await t.step("per-op failures reject only their calls", async () => {
    const { batch, promises } = piece(2);
    const id = inFlight.add(batch);
    inFlight.answer(id, {
      status: Status.Ok,
      results: [null, "ok"],
      failed: [[0, { name: "InvalidInputError", message: "bad id" }]],
    });
    await assert.rejects(promises[0], { name: "InvalidInputError", message: "bad id" });
    assert.equal(await promises[1], "ok");
  });

  await t.step(
    "a failed piece rejects every call, reports a fault, drops its references",
    async () => {
      const { batch, promises } = piece(2);
      const id = inFlight.add(batch);
      const before = faults;
      inFlight.answer(id, {
        status: Status.Failed,
        results: [],
        error: { name: "RegistryUnavailableError", message: "store down" },
      });
      assert.equal(faults, before + 1);
      for (const p of promises) await assert.rejects(p, /store down/);
      assert.equal(batch.reject.length, 0);
    },
  );

  await t.step("rejectAll: every piece, oldest first; clocks restart", async () => {
    const one = piece(1), two = piece(2);
    inFlight.add(one.batch);
    inFlight.add(two.batch);
    const sent = inFlight.oldest()!.sentAt;
    await new Promise((r) => setTimeout(r, 5));
    inFlight.restartClocks();
    assert.ok(inFlight.oldest()!.sentAt > sent);
    inFlight.rejectAll(new Error("worker died"));
    assert.equal(inFlight.size, 0);
    for (const p of [...one.promises, ...two.promises]) await assert.rejects(p, /worker died/);
  });
});
