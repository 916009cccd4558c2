import assert from "node:assert/strict";
import { rawWorker } from "./support/raw_worker.ts";
import { ActorClient } from "../src/actor/actor_client.ts";
import { clients } from "../src/registry/registry_options.ts";
import { Op } from "../src/actor/protocol.ts";
import { resolveOwnerOptions } from "../src/core/owner_table.ts";
import { CancellationRegistry, RegistryUnavailableError, SessionOwnerRegistry } from "../mod.ts";

const CRASHY = new URL("./fixtures/crashy_worker.ts", import.meta.url);

function ownerClient(callTimeoutMs = 5_000): ActorClient {
  return new ActorClient({
    name: "TestOwners",
    workerUrl: CRASHY,
    init: {
      kind: "init",
      registry: "owner",
      options: resolveOwnerOptions(),
      store: { kind: "memory" },
      instanceId: "test",
    },
    callTimeoutMs,
    batching: true,
    maxBatch: 512,
  });
}

function isUnavailable(pattern: RegExp) {
  return (err: Error) => {
    assert.ok(err instanceof RegistryUnavailableError, `got ${err}`);
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("worker crash: pending calls reject, the next call gets a fresh worker", async () => {
  const client = ownerClient();
  try {
    assert.equal(await client.call(Op.Bind, "s1", "alice"), "bound");
    // Same batch as the crash, and a later batch already in flight: all reject.
    const sameBatch = client.call(Op.OwnerOf, "s1");
    const crash = client.call(Op.Bind, "crash!", "x");
    await Promise.resolve();
    const later = client.call(Op.OwnerSize);
    await assert.rejects(sameBatch, isUnavailable(/worker crashed.*boom/));
    await assert.rejects(crash, RegistryUnavailableError);
    await assert.rejects(later, RegistryUnavailableError);
    // Recovery: a fresh worker answers, with the in-memory state lost.
    assert.equal(await client.call(Op.OwnerOf, "s1"), null);
    assert.equal(await client.call(Op.Bind, "s1", "bob"), "bound");
    assert.equal(client.restarts, 1);
  } finally {
    await client.close();
  }
});

Deno.test("a worker that stops answering is replaced after callTimeoutMs", async () => {
  const client = ownerClient(150);
  try {
    const started = performance.now();
    await assert.rejects(client.call(Op.Bind, "hang!", "x"), isUnavailable(/within 150 ms/));
    const waited = performance.now() - started;
    assert.ok(waited >= 140 && waited < 3_000, `waited ${waited} ms`);
    assert.equal(await client.call(Op.Bind, "s1", "alice"), "bound");
    assert.equal(client.restarts, 1);
  } finally {
    await client.close();
  }
});

Deno.test("a worker that exits silently is detected and replaced", async () => {
  const client = ownerClient(150);
  try {
    await assert.rejects(client.call(Op.Bind, "exit!", "x"), RegistryUnavailableError);
    assert.equal(await client.call(Op.OwnerSize), 0);
  } finally {
    await client.close();
  }
});

Deno.test("facade: terminated worker -> RegistryUnavailableError, then recovery; restarts counted", async () => {
  await using owners = new SessionOwnerRegistry({ callTimeoutMs: 200 });
  assert.equal(await owners.bind("s1", "alice"), "bound");
  clients.get(owners)!.worker!.terminate();
  await assert.rejects(owners.bind("s2", "alice"), RegistryUnavailableError);
  assert.equal(await owners.ownerOf("s1"), null, "in-memory bindings are lost with the worker");
  assert.equal(await owners.bind("s1", "alice"), "bound");
  assert.equal((await owners.stats()).restarts, 1);
});

Deno.test("facade: after a worker restart, running requests stay cancellable", async () => {
  await using cancels = new CancellationRegistry({ callTimeoutMs: 200 });
  const running = await cancels.register("s1", 1);
  const finished = await cancels.register("s1", 2);
  await cancels.deregister(finished!.entryId);
  clients.get(cancels)!.worker!.terminate();
  await assert.rejects(cancels.size(), RegistryUnavailableError);
  // The facade kept the controllers and replays the live registrations.
  assert.equal(await cancels.size(), 1);
  assert.equal(await cancels.cancel("s1", 2), false);
  assert.equal(await cancels.cancel("s1", 1), true);
  assert.equal(running!.signal.aborted, true);
  assert.equal(await cancels.deregister(running!.entryId), true);
  assert.equal((await cancels.stats()).restarts, 1);
});

Deno.test("facade: a request tracked by the call that restarts the worker is registered once", async () => {
  await using cancels = new CancellationRegistry({ callTimeoutMs: 200 });
  await cancels.size();
  clients.get(cancels)!.worker!.terminate();
  await assert.rejects(cancels.size(), RegistryUnavailableError);
  for (const how of ["track", "register"] as const) {
    const reg = how === "track" ? cancels.track("s1", how) : (await cancels.register("s1", how))!;
    if (how === "track") {
      assert.equal(await (reg as ReturnType<typeof cancels.track>).registered, true);
    }
    assert.equal(await cancels.cancel("s1", how), true, `${how}: cancellable`);
    assert.equal(reg.signal.aborted, true, `${how}: aborted`);
    assert.equal(await cancels.deregister(reg.entryId), true);
    assert.equal(await cancels.size(), 0, `${how}: nothing left behind`);
    if (how === "track") {
      clients.get(cancels)!.worker!.terminate();
      await assert.rejects(cancels.size(), RegistryUnavailableError);
    }
  }
});

Deno.test("a slow worker boot does not count against callTimeoutMs", async () => {
  await using owners = new SessionOwnerRegistry({
    callTimeoutMs: 100,
    store: {
      kind: "module",
      url: new URL("./fixtures/slow_store.ts", import.meta.url).href,
      options: {},
    },
  });
  const started = performance.now();
  assert.equal(await owners.bind("s1", "alice"), "bound");
  assert.ok(performance.now() - started >= 380, "the store really took its time to start");
  assert.equal((await owners.stats()).restarts, 0);
});

Deno.test("a store that fails to start rejects calls with RegistryUnavailableError", async () => {
  await using owners = new SessionOwnerRegistry({
    store: {
      kind: "module",
      url: new URL("./fixtures/missing_store.ts", import.meta.url).href,
      options: {},
    },
  });
  await assert.rejects(owners.bind("s1", "a"), isUnavailable(/missing_store/));
});

Deno.test("the worker answers malformed messages with typed errors and keeps serving", async () => {
  const { worker, next } = rawWorker();
  try {
    const expectFail = async (message: unknown, id: number | null, pattern: RegExp) => {
      worker.postMessage(message);
      const reply = await next();
      assert.equal(reply.kind, "fail", `reply to ${JSON.stringify(message)}`);
      if (reply.kind !== "fail") return;
      assert.equal(reply.id, id);
      assert.equal(reply.error.name, "InvalidInputError");
      assert.match(reply.error.message, pattern);
    };
    await expectFail(null, null, /not an object/);
    await expectFail(42, null, /not an object/);
    await expectFail("batch", null, /not an object/);
    await expectFail([1, 2], null, /not an object/);
    await expectFail({ kind: "teleport", id: 3 }, 3, /unknown message kind "teleport"/);
    await expectFail({ kind: "batch", id: 4, ops: [1], args: ["s", "f"] }, 4, /before init/);
    await expectFail({ kind: "init", registry: "nope" }, null, /malformed init/);
    worker.postMessage({
      kind: "init",
      registry: "owner",
      options: resolveOwnerOptions(),
      store: { kind: "memory" },
      instanceId: "raw",
    });
    assert.deepEqual(await next(), { kind: "ready" });
    await expectFail({ kind: "init", registry: "owner" }, null, /already initialized/);
    await expectFail({ kind: "batch", ops: [1], args: ["s", "f"] }, null, /numeric id/);
    await expectFail({ kind: "batch", id: 5, ops: "1", args: [] }, 5, /array fields/);
    await expectFail({ kind: "batch", id: 6, ops: [99], args: [] }, 6, /unknown opcode 99/);
    await expectFail({ kind: "batch", id: 7, ops: [Op.Cancel], args: [1, 2, 3] }, 7, /opcode 22/);
    await expectFail({ kind: "batch", id: 8, ops: [Op.Bind], args: ["s1"] }, 8, /1 arguments/);
    // Nothing of a rejected batch was applied: a valid op after a bad one in
    // the same batch did not run.
    await expectFail(
      { kind: "batch", id: 9, ops: [Op.Bind, 99], args: ["s1", "alice", false, undefined] },
      9,
      /unknown opcode/,
    );
    worker.postMessage({
      kind: "batch",
      id: 10,
      ops: [Op.OwnerOf, Op.Bind],
      args: ["s1", "s1", "bob", false, undefined],
    });
    assert.deepEqual(await next(), { kind: "reply", id: 10, results: [null, "bound"] });
  } finally {
    worker.terminate();
  }
});
