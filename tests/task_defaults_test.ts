/**
 * Tasks are bound by default (a registry derived from the owners', closed
 * with it; an explicit `tasks: false` to opt out), and a task binding lives
 * while the task is used and for at least the task's own `ttl`; a task bound
 * to nobody is refused in every mode. Real SDK 1.32 stateless server with a
 * task store shared by every caller.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  type GuardOwners,
  guardSessions,
  InvalidInputError,
  memoryStore,
  RegistryClosedError,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { derivedRegistry } from "../src/registry/session_owner_registry.ts";
import { createTask, rpc, startTaskServer } from "./support/task_server.ts";
import { startRedis } from "./support/redis_server.ts";

const TASKS = { redis: "t:", kv: ":t" };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("tasks bound by default: no tasks option, Mallory is refused Alice's task", async () => {
  await using server = startTaskServer(true);
  const taskId = await createTask(server.url, "alice-token", "alice's secret");
  for (const method of ["tasks/get", "tasks/result", "tasks/cancel"]) {
    const refused = await rpc(server.url, "mallory-token", method, { taskId });
    assert.equal(refused.status, 403, method);
  }
  const own = await rpc(server.url, "alice-token", "tasks/result", { taskId });
  assert.match(own.text, /alice's secret/);
  const list = await rpc(server.url, "mallory-token", "tasks/list", {});
  assert.deepEqual(list.body.result.tasks, []);
});

Deno.test("tasks bound by default: tasks: false is the explicit opt-out (control)", async () => {
  await using server = startTaskServer(true, { tasks: false });
  const taskId = await createTask(server.url, "alice-token", "alice's secret");
  const stolen = await rpc(server.url, "mallory-token", "tasks/result", { taskId });
  assert.match(stolen.text, /alice's secret/);
});

Deno.test("tasks bound by default: refused at start-up where it cannot be derived", async () => {
  await using real = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const owners: GuardOwners = {
    bind: (s, f) => real.bind(s, f),
    authorizeAttach: (s, f, o) => real.authorizeAttach(s, f, o),
    ownerOf: (s) => real.ownerOf(s),
    forget: (s, f) => real.forget(s, f),
    unpin: (s) => real.unpin(s),
  };
  const handler = () => new Response(null, { status: 202 });
  assert.throws(
    () => guardSessions(handler, { owners, cancellations, principal: () => "alice" }),
    (err: Error) =>
      err instanceof InvalidInputError && /options\.tasks is required/.test(err.message) &&
      /tasks: false/.test(err.message),
  );
  assert.throws(
    () =>
      guardSessions(handler, {
        owners: real,
        cancellations,
        principal: () => "alice",
        tasks: {} as never,
      }),
    /options\.tasks must be a SessionOwnerRegistry .* or false, got object/,
  );
  // With a registry of its own, or tasks: false (and credentials: false, which custom owners
  // need in the same way), custom owners are fine.
  guardSessions(handler, {
    owners,
    cancellations,
    principal: () => "alice",
    tasks: false,
    credentials: false,
  });
});

Deno.test("tasks bound by default: the derived registry is the owners' own, closed with them", async () => {
  const owners = new SessionOwnerRegistry({ maxPerPrincipal: 3 });
  const tasks = derivedRegistry(owners, TASKS);
  assert.equal(derivedRegistry(owners, TASKS), tasks, "made once");
  for (let i = 0; i < 4; i++) assert.equal(await tasks.bind(`t-${i}`, "fp-alice"), "bound");
  assert.equal(await tasks.size(), 3, "the owners' bounds apply");
  assert.equal(await owners.size(), 0, "tasks never count against sessions");
  await owners.close();
  await assert.rejects(tasks.size(), RegistryClosedError);
  assert.throws(() => derivedRegistry(owners, TASKS), RegistryClosedError);
});

Deno.test("tasks bound by default: on Redis, under the owners' prefix plus t:", async () => {
  await using redis = await startRedis();
  await using server = startTaskServer(true, {}, 0, {
    store: redisStore({ url: redis.url, prefix: "app:" }),
  });
  const taskId = await createTask(server.url, "alice-token", "alice's secret");
  assert.match(await redis.command("HEXISTS", "app:t:o:own", taskId), /1/);
  assert.match(await redis.command("HLEN", "app:o:own"), /0/, "no session key holds it");
  const refused = await rpc(server.url, "mallory-token", "tasks/get", { taskId });
  assert.equal(refused.status, 403);
});

Deno.test("task bindings: every use refreshes one (idleTtlMs 2 s, polled for 3 s)", async () => {
  await using server = startTaskServer(true, { mode: "attach-only" }, 0, {
    store: memoryStore({ idleTtlMs: 2_000 }),
    touchIntervalMs: 200,
  });
  // No ttl: nothing but use keeps the binding.
  const taskId = await createTask(server.url, "alice-token", "alice's", null);
  for (let i = 0; i < 6; i++) {
    await sleep(500);
    const polled = await rpc(server.url, "alice-token", "tasks/get", { taskId });
    assert.equal(polled.status, 200, `poll ${i}`);
  }
  // Before, the binding had expired here: attach-only let Mallory in.
  const refused = await rpc(server.url, "mallory-token", "tasks/cancel", { taskId });
  assert.equal(refused.status, 403);
});

Deno.test("task bindings: a task's ttl keeps its binding beyond idleTtlMs", async () => {
  await using server = startTaskServer(true, { mode: "attach-only" }, 0, {
    store: memoryStore({ idleTtlMs: 1_000 }),
    touchIntervalMs: 200,
  });
  const taskId = await createTask(server.url, "alice-token", "alice's", 60_000);
  await sleep(1_600); // unused for longer than idleTtlMs, well within the task's ttl
  const refused = await rpc(server.url, "mallory-token", "tasks/get", { taskId });
  assert.equal(refused.status, 403, "still Alice's");
  const own = await rpc(server.url, "alice-token", "tasks/get", { taskId });
  assert.equal(own.status, 200);
});

Deno.test("task bindings: a task bound to nobody is unknown in attach-only mode too", async () => {
  await using server = startTaskServer(true, { mode: "attach-only" });
  const unknown = await rpc(server.url, "mallory-token", "tasks/get", { taskId: "no-such" });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, -32602);
  assert.deepEqual(server.decisions.map((d) => d.reason), ["unknown-task"]);
});
