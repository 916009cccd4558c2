/**
 * One worker hosting several registries (`actor/actor_thread.ts`): each
 * host's calls apply in order, events reach the right facade, a death is
 * every host's (all pending calls reject, all recover), and the worker stops
 * with its last member.
 */
import { rawWorker } from "./support/raw_worker.ts";
import assert from "node:assert/strict";
import { ActorClient } from "../src/actor/actor_client.ts";
import { ActorThread } from "../src/actor/actor_thread.ts";
import { Op } from "../src/actor/protocol.ts";
import { resolveOwnerOptions } from "../src/core/owner_table.ts";
import { clients } from "../src/registry/registry_options.ts";
import { derivedRegistry } from "../src/registry/session_owner_registry.ts";
import { waitFor } from "./support/mcp_server.ts";
import {
  CancellationRegistry,
  guardSessions,
  memoryStore,
  RegistryClosedError,
  RegistryUnavailableError,
  SessionOwnerRegistry,
} from "../mod.ts";

const CRASHY = new URL("./fixtures/crashy_worker.ts", import.meta.url);

function client(
  thread: ActorThread,
  name: string,
  registry: "owner" | "cancel",
  callTimeoutMs = 5_000,
): ActorClient {
  return new ActorClient({
    name,
    thread,
    init: {
      kind: "init",
      registry,
      options: registry === "owner" ? resolveOwnerOptions() : { maxEntries: 100 },
      store: { kind: "memory" },
      instanceId: name,
    },
    callTimeoutMs,
    batching: true,
    maxBatch: 512,
  });
}

function unavailable(name: string, pattern: RegExp) {
  return (err: Error) => {
    assert.ok(err instanceof RegistryUnavailableError, `got ${err}`);
    assert.match(err.message, new RegExp(`^${name} unavailable: `));
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("shared worker: one worker, a store per host, each host's calls in order", async () => {
  const thread = new ActorThread();
  const a = client(thread, "A", "owner");
  const b = client(thread, "B", "owner");
  const c = client(thread, "C", "cancel");
  try {
    // Interleaved in one tick: each host sees its own calls in order, and only its own.
    const got = await Promise.all([
      a.call(Op.Bind, "s1", "alice"),
      b.call(Op.Bind, "s1", "bob"),
      a.call(Op.Bind, "s1", "mallory"),
      c.call(Op.Register, "s1", 1, "e1"),
      b.call(Op.OwnerOf, "s1"),
      a.call(Op.OwnerOf, "s1"),
      c.call(Op.Cancel, "s1", 1, undefined),
      a.call(Op.OwnerSize),
    ]);
    assert.deepEqual(got, ["bound", "bound", "refused", true, "bob", "alice", "e1", 1]);
    assert.equal(a.worker, b.worker, "one worker");
    assert.equal(a.worker, c.worker, "one worker");
    assert.notEqual(a.worker, null);
  } finally {
    await Promise.all([a.close(), b.close(), c.close()]);
  }
  assert.equal(thread.running, false, "the last member's close stopped the worker");
});

Deno.test("shared worker: a crash rejects every host's pending calls, and every host recovers", async () => {
  const thread = new ActorThread(CRASHY);
  const owners = client(thread, "Owners", "owner");
  const records = client(thread, "Records", "owner");
  const cancels = client(thread, "Cancels", "cancel");
  try {
    assert.equal(await owners.call(Op.Bind, "s1", "alice"), "bound");
    assert.equal(await records.call(Op.Bind, "s1", "alice s:read"), "bound");
    assert.equal(await cancels.call(Op.Register, "s1", 1, "e1"), true);
    // One host's batch crashes the worker: every host's state is gone with it.
    await assert.rejects(
      records.call(Op.Bind, "crash!", "x"),
      unavailable("Records", /worker crashed.*boom/),
    );
    assert.equal(await owners.call(Op.OwnerOf, "s1"), null);
    assert.equal(await records.call(Op.OwnerOf, "s1"), null);
    assert.equal(await cancels.call(Op.CancelSize), 0);
    assert.deepEqual([owners.restarts, records.restarts, cancels.restarts], [1, 1, 1]);
    // Calls of every host pending when the worker dies reject, each naming its registry.
    const stuck = records.call(Op.Bind, "hang!", "x"); // the worker stops serving its rings
    await new Promise((resolve) => setTimeout(resolve, 50));
    const pending = [
      assert.rejects(stuck, unavailable("Records", /worker crashed: test crash/)),
      assert.rejects(owners.call(Op.OwnerOf, "s1"), unavailable("Owners", /test crash/)),
      assert.rejects(cancels.call(Op.CancelSize), unavailable("Cancels", /test crash/)),
    ];
    await new Promise((resolve) => setTimeout(resolve, 50));
    owners.worker!.dispatchEvent(new ErrorEvent("error", { message: "test crash" }));
    await Promise.all(pending);
    // Each recovers in a fresh worker, shared again.
    assert.equal(await records.call(Op.Bind, "s1", "bob"), "bound");
    assert.equal(await owners.call(Op.OwnerOf, "s1"), null);
    assert.equal(await cancels.call(Op.CancelSize), 0);
    assert.equal(owners.worker, records.worker);
    assert.equal(owners.worker, cancels.worker);
    assert.deepEqual([owners.restarts, records.restarts, cancels.restarts], [2, 2, 2]);
  } finally {
    await Promise.all([owners.close(), records.close(), cancels.close()]);
  }
});

Deno.test("shared worker: one host's hung call times out every host, which then recover", async () => {
  const thread = new ActorThread(CRASHY);
  const a = client(thread, "A", "owner", 150);
  const b = client(thread, "B", "owner", 60_000);
  try {
    assert.equal(await b.call(Op.Bind, "s1", "bob"), "bound");
    const hang = assert.rejects(a.call(Op.Bind, "hang!", "x"), unavailable("A", /within 150 ms/));
    await new Promise((resolve) => setTimeout(resolve, 30));
    // The worker is stuck: B's call cannot be answered, and fails when A's watchdog gives up.
    const behind = assert.rejects(b.call(Op.OwnerOf, "s1"), unavailable("B", /within 150 ms/));
    await Promise.all([hang, behind]);
    assert.equal(await b.call(Op.OwnerOf, "s1"), null);
    assert.equal(await a.call(Op.Bind, "s1", "alice"), "bound");
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
});

Deno.test("shared worker: a member that closes leaves the others served", async () => {
  const thread = new ActorThread();
  const a = client(thread, "A", "owner");
  const b = client(thread, "B", "owner");
  try {
    assert.equal(await a.call(Op.Bind, "s1", "alice"), "bound");
    assert.equal(await b.call(Op.Bind, "s1", "bob"), "bound");
    const worker = b.worker;
    await a.close();
    await assert.rejects(a.call(Op.OwnerSize), RegistryClosedError);
    assert.equal(thread.running, true);
    assert.equal(await b.call(Op.OwnerOf, "s1"), "bob", "B's store was not touched");
    assert.equal(b.worker, worker, "still the same worker");
  } finally {
    await b.close();
  }
  assert.equal(thread.running, false);
  // A member joining after the worker stopped gets a fresh one.
  const c = client(thread, "C", "owner");
  assert.equal(await c.call(Op.OwnerSize), 0);
  await c.close();
});

Deno.test("derived registries live in their registry's worker; events reach their own listeners", async () => {
  const owners = new SessionOwnerRegistry({ store: memoryStore(), maxEntries: 1 });
  const records = derivedRegistry(owners, { redis: "s:", kv: ":s" });
  const tasks = derivedRegistry(owners, { redis: "t:", kv: ":t" });
  const heard: Record<string, string[]> = { owners: [], records: [], tasks: [] };
  owners.onRemoved(({ sessionIds }) => heard.owners.push(...sessionIds));
  records.onRemoved(({ sessionIds }) => heard.records.push(...sessionIds));
  tasks.onRemoved(({ sessionIds }) => heard.tasks.push(...sessionIds));
  try {
    assert.equal(await records.bind("r1", "fp-a"), "bound");
    assert.equal(await records.bind("r2", "fp-b"), "bound"); // evicts r1 (maxEntries 1)
    assert.equal(await owners.bind("s1", "fp-a"), "bound");
    assert.equal(await tasks.bind("t1", "fp-a"), "bound");
    assert.equal(await tasks.bind("t2", "fp-a"), "bound"); // evicts t1
    await Promise.all([owners.size(), records.size(), tasks.size()]);
    // Removal events travel on their own (no order against replies is promised): wait for them.
    await waitFor(() => heard.records.length + heard.tasks.length >= 2, 5_000, "removals");
    await Promise.all([owners.size(), records.size(), tasks.size()]);
    assert.deepEqual(heard, { owners: [], records: ["r1"], tasks: ["t1"] });
    assert.equal(await owners.ownerOf("r2"), null, "each host keeps its own table");
    const worker = clients.get(owners)!.worker;
    assert.notEqual(worker, null);
    assert.equal(clients.get(records)!.worker, worker);
    assert.equal(clients.get(tasks)!.worker, worker);
    // A crash of the shared worker is every registry's; all recover.
    const pending = [owners.size(), records.ownerOf("r2"), tasks.size()];
    worker!.dispatchEvent(new ErrorEvent("error", { message: "test crash" }));
    for (const call of pending) {
      await assert.rejects(call, /unavailable: worker crashed: test crash/);
    }
    assert.equal(await records.bind("r3", "fp-c"), "bound");
    assert.equal(await owners.size(), 0);
    assert.equal((await records.stats()).restarts, 1);
    assert.equal((await owners.stats()).restarts, 1);
  } finally {
    await owners.close();
  }
  await assert.rejects(records.size(), RegistryClosedError);
  await assert.rejects(tasks.size(), RegistryClosedError);
});

Deno.test("a guard hosts every registry in one worker, started by the first call; closing the registries stops it", async () => {
  const { owners, cancellations, guard } = acceptingGuard();
  assert.equal(clients.get(owners)!.worker, null, "not started by creating the guard");
  const thread = clients.get(owners)!.thread;
  assert.equal(clients.get(cancellations)!.thread, thread);
  await Promise.all([owners.size(), cancellations.size()]);
  const worker = clients.get(owners)!.worker;
  assert.notEqual(worker, null, "started by the first call");
  assert.equal(
    clients.get(cancellations)!.worker,
    worker,
    "the cancellations' store is hosted there",
  );
  const response = await guard(
    new Request("http://localhost/mcp", {
      method: "POST",
      headers: { authorization: "Bearer alice", "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    }),
  );
  assert.equal(response.status, 202);
  await owners.close();
  assert.equal(thread.running, true, "the cancellations still use it");
  await cancellations.close();
  assert.equal(thread.running, false);
});

/** A guard over fresh registries around a handler that accepts everything (202). */
function acceptingGuard() {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const guard = guardSessions(() => new Response(null, { status: 202 }), {
    owners,
    cancellations,
    principal: (request) => request.headers.get("authorization"),
  });
  return { owners, cancellations, guard };
}

/** A POST that asks no registry anything (a notification outside any session). */
function notification(): Request {
  return new Request("http://localhost/mcp", {
    method: "POST",
    headers: { authorization: "Bearer alice", "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
}

Deno.test("a guard starts its worker when its first request arrives, before any registry call", async () => {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  // The guard's own would be these, made from `owners` (named here to be looked at).
  const credentials = derivedRegistry(owners, { redis: "c:", kv: ":c" }, "mirror");
  const tasks = derivedRegistry(owners, { redis: "k:", kv: ":k" });
  const client = clients.get(owners)!;
  /** The owners' worker when the handler was called. */
  let atHandler: unknown = undefined;
  const guard = guardSessions(() => {
    atHandler = client.worker;
    return new Response(null, { status: 202 });
  }, {
    owners,
    cancellations,
    credentials,
    tasks,
    principal: (request) => request.headers.get("authorization"),
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(client.worker, null, "not started by creating the guard");
  // The caller is identified (its fingerprint hashed: a promise the first time), then the
  // worker starts, before the handler is called.
  assert.equal((await guard(notification())).status, 202);
  const worker = client.worker;
  assert.notEqual(worker, null, "started by the first request");
  assert.equal(atHandler, worker, "running by the time the handler was called");
  assert.equal(client.batches, 0, "no registry call: started for its own sake");
  assert.equal(clients.get(cancellations)!.worker, worker, "with the cancellations' store");
  assert.equal(clients.get(cancellations)!.batches, 0);
  assert.equal(clients.get(credentials)!.worker, worker, "with the credential records' store");
  assert.equal(clients.get(tasks)!.worker, null, "the tasks' store waits for a task request");
  assert.equal((await guard(notification())).status, 202);
  assert.equal(client.worker, worker, "the next requests start nothing");
  assert.equal(client.restarts, 0);
  assert.equal(await owners.size(), 0, "the worker serves the registry's calls");
  assert.equal(await tasks.size(), 0);
  assert.equal(clients.get(tasks)!.worker, worker);
  await Promise.all([owners.close(), cancellations.close()]);
  assert.equal(client.thread.running, false);
});

Deno.test("a refused request starts no worker; the first one let in does", async () => {
  const { owners, cancellations, guard } = acceptingGuard();
  const anonymous = notification();
  anonymous.headers.delete("authorization");
  assert.equal((await guard(anonymous)).status, 401);
  const wrongMethod = new Request("http://localhost/mcp", {
    method: "PUT",
    headers: { authorization: "Bearer alice" },
  });
  assert.equal((await guard(wrongMethod)).status, 405);
  const client = clients.get(owners)!;
  assert.equal(client.worker, null, "refused requests start nothing");
  assert.equal((await guard(notification())).status, 202);
  assert.notEqual(client.worker, null, "the first request let in starts it");
  await Promise.all([owners.close(), cancellations.close()]);
});

Deno.test("a guard's first request starts no worker for closed registries", async () => {
  const { owners, cancellations, guard } = acceptingGuard();
  await Promise.all([owners.close(), cancellations.close()]);
  assert.equal((await guard(notification())).status, 202);
  assert.equal(clients.get(owners)!.worker, null);
  assert.equal(clients.get(owners)!.thread.running, false);
  assert.equal(clients.get(cancellations)!.worker, null);
  await assert.rejects(owners.size(), RegistryClosedError);
});

Deno.test("a guard over owners this library did not make starts no worker on its first request", async () => {
  // Owners this library did not make: nothing to start; the cancellations keep their own
  // worker, started by their first call as before.
  const cancellations = new CancellationRegistry();
  const owners = {
    bind: () => Promise.resolve("bound" as const),
    authorizeAttach: () => Promise.resolve(true),
    ownerOf: () => Promise.resolve(null),
    forget: () => Promise.resolve(true),
    unpin: () => Promise.resolve(true),
  };
  const guard = guardSessions(() => new Response(null, { status: 202 }), {
    owners,
    cancellations,
    tasks: false,
    credentials: false,
    principal: (request) => request.headers.get("authorization"),
  });
  assert.equal((await guard(notification())).status, 202);
  assert.equal(clients.get(cancellations)!.worker, null);
  await cancellations.close();
});

Deno.test("a guard whose registries ran already keeps their workers", async () => {
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  await cancellations.size();
  const own = clients.get(cancellations)!.worker;
  guardSessions(() => new Response(null), { owners, cancellations, principal: () => "a" });
  assert.equal(clients.get(cancellations)!.worker, own);
  assert.notEqual(clients.get(owners)!.worker, own);
});

Deno.test("a guard nobody calls starts no worker (nothing keeps the process alive)", async () => {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  guardSessions(() => new Response(null), { owners, cancellations, principal: () => "a" });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(clients.get(owners)!.worker, null);
  assert.equal(clients.get(owners)!.thread.running, false);
  await Promise.all([owners.close(), cancellations.close()]);
  assert.equal(clients.get(owners)!.worker, null, "closing starts none either");
});

Deno.test("closing a used guard's registries terminates their worker", async () => {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  guardSessions(() => new Response(null), { owners, cancellations, principal: () => "a" });
  await owners.size();
  const worker = clients.get(owners)!.worker!;
  assert.notEqual(worker, null);
  // Deno's sanitizers do not see a live worker: watch for its termination.
  let terminated = false;
  const terminate = worker.terminate.bind(worker);
  worker.terminate = () => {
    terminated = true;
    terminate();
  };
  await Promise.all([owners.close(), cancellations.close()]);
  assert.equal(clients.get(owners)!.thread.running, false);
  assert.equal(terminated, true);
});

Deno.test("worker protocol: hosts are named per message, answered per host, closed one by one", async () => {
  const { worker, next } = rawWorker();
  const init = (host: number | undefined, registry: "owner" | "cancel") => ({
    kind: "init",
    ...(host === undefined ? {} : { host }),
    registry,
    options: registry === "owner" ? resolveOwnerOptions() : { maxEntries: 10 },
    store: { kind: "memory" },
    instanceId: `raw-${host}`,
  });
  try {
    worker.postMessage(init(undefined, "owner"));
    assert.deepEqual(await next(), { kind: "ready" }, "host 0 speaks untagged");
    worker.postMessage(init(3, "cancel"));
    assert.deepEqual(await next(), { kind: "ready", host: 3 });
    worker.postMessage(init(3, "owner"));
    assert.deepEqual(await next(), {
      kind: "fail",
      id: null,
      host: 3,
      error: { name: "InvalidInputError", message: "worker already initialized" },
    });
    worker.postMessage({ ...init(-1, "owner") });
    const bad = await next();
    assert.equal(bad.kind, "fail");
    // A message naming no valid host never reaches host 0: answered with no id (no pending
    // batch of any host matches it), host 0 keeps its table and stays open.
    for (const host of ["7", -1, 1.5]) {
      worker.postMessage({
        kind: "batch",
        id: 7,
        host,
        ops: [Op.Bind],
        args: ["s", "f", false, 0],
      });
      worker.postMessage({ kind: "close", id: 8, host, exit: false });
      worker.postMessage({ kind: "extras", id: 9, host, values: [] });
      for (let i = 0; i < 3; i++) {
        const answer = await next();
        assert.equal(answer.kind, "fail", JSON.stringify(answer));
        assert.equal((answer as { id: unknown }).id, null);
        assert.equal(answer.host, undefined);
        assert.match((answer as { error: { message: string } }).error.message, /no valid host/);
      }
    }
    worker.postMessage({ kind: "batch", id: 10, ops: [Op.OwnerOf], args: ["s"] });
    assert.deepEqual(await next(), { kind: "reply", id: 10, results: [null] }, "host 0 untouched");
    // Each host's ops are checked against its own registry kind.
    worker.postMessage({
      kind: "batch",
      id: 1,
      host: 3,
      ops: [Op.Bind],
      args: ["s", "f", false, 0],
    });
    const refused = await next();
    assert.equal(refused.kind, "fail");
    assert.equal(refused.host, 3);
    worker.postMessage({ kind: "batch", id: 2, host: 3, ops: [Op.Register], args: ["s", 1, "e"] });
    assert.deepEqual(await next(), { kind: "reply", id: 2, host: 3, results: [true] });
    worker.postMessage({
      kind: "batch",
      id: 3,
      ops: [Op.Bind],
      args: ["s", "f", false, undefined],
    });
    assert.deepEqual(await next(), { kind: "reply", id: 3, results: ["bound"] });
    worker.postMessage({ kind: "batch", id: 4, host: 9, ops: [Op.OwnerSize], args: [] });
    const unknown = await next();
    assert.equal(unknown.kind === "fail" && unknown.error.message, "batch before init");
    // Host 3 closes; host 0 goes on.
    worker.postMessage({ kind: "close", id: 5, host: 3, exit: false });
    assert.deepEqual(await next(), { kind: "closed", id: 5, host: 3 });
    worker.postMessage({ kind: "batch", id: 6, ops: [Op.OwnerOf], args: ["s"] });
    assert.deepEqual(await next(), { kind: "reply", id: 6, results: ["f"] });
    worker.postMessage({ kind: "batch", id: 7, host: 3, ops: [Op.CancelSize], args: [] });
    const closed = await next();
    assert.equal(closed.kind === "fail" && closed.error.message, "batch before init");
  } finally {
    worker.terminate();
  }
});

Deno.test("shared worker: a ring host joining after the last ring closed is served", async () => {
  const thread = new ActorThread();
  const a = client(thread, "A", "owner");
  // A host without a ring (its batches come as messages) keeps the worker running meanwhile.
  const m = new ActorClient({
    name: "M",
    thread,
    init: {
      kind: "init",
      registry: "owner",
      options: resolveOwnerOptions(),
      store: {
        kind: "module",
        url: new URL("./fixtures/sync_store.ts", import.meta.url).href,
        options: {},
      },
      instanceId: "M",
    },
    callTimeoutMs: 5_000,
    batching: true,
    maxBatch: 512,
  });
  const b = client(thread, "B", "owner");
  try {
    assert.equal(await a.call(Op.Bind, "s1", "alice"), "bound");
    assert.equal(await m.call(Op.Bind, "s1", "mia"), "bound");
    const worker = a.worker;
    await a.close(); // the only ring goes: the worker's ring loop ends
    assert.equal(await m.call(Op.OwnerOf, "s1"), "mia");
    const started = performance.now();
    assert.equal(await b.call(Op.Bind, "s1", "bob"), "bound");
    assert.equal(await b.call(Op.OwnerOf, "s1"), "bob");
    assert.equal(b.worker, worker, "the same worker, serving a new ring");
    assert.ok(performance.now() - started < 5_000);
  } finally {
    await Promise.all([a.close(), m.close(), b.close()]);
  }
});
