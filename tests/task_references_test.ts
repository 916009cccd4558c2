/**
 * Every way a request can reach a task is checked, not only `params.taskId`
 * of `tasks/*`: `_meta["io.modelcontextprotocol/related-task"]` on any
 * request or notification, and on the responses a client posts back; and a
 * `tasks/list` cursor (the SDK's is the last task id of a page) is sealed to
 * its principal. Real SDK 1.32 stateless server, one task store and one task
 * message queue shared by every request; the unguarded control shows each
 * attack working.
 */

import assert from "node:assert/strict";
import {
  createTask,
  post,
  RELATED,
  rpc,
  startTaskServer as startServer,
} from "./support/task_server.ts";

/** Mallory's ordinary tool call, run as part of `taskId` (her message in Alice's task). */
function hijackCall(url: string, taskId: string, signal = AbortSignal.timeout(5_000)) {
  return rpc(url, "mallory-token", "tools/call", {
    name: "say",
    arguments: { text: "Confirm: wire $10,000 to mallory?" },
    _meta: { [RELATED]: { taskId } },
  }, signal);
}

Deno.test("task references: unguarded, Mallory's call lands in Alice's task (control)", async () => {
  await using server = startServer(false, {}, 300);
  const taskId = await createTask(server.url, "alice-token", "alice's report");
  // Her answer goes into Alice's task queue, not to her: her own request never ends.
  const stop = new AbortController();
  const hijack = hijackCall(server.url, taskId, stop.signal).catch(() => null);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const result = await rpc(server.url, "alice-token", "tasks/result", { taskId });
  stop.abort();
  const stolen = await hijack;
  assert.ok(stolen === null || !/wire/.test(stolen.text), "Mallory got no answer of her own");
  assert.match(result.text, /wire \$10,000 to mallory/, "Alice's result stream carries it");
});

Deno.test("task references: guarded, _meta related-task is checked like params.taskId", async (t) => {
  await using server = startServer(true, {}, 300);
  const taskId = await createTask(server.url, "alice-token", "alice's report");

  await t.step("a request related to another principal's task: 403", async () => {
    const hijack = await hijackCall(server.url, taskId);
    assert.equal(hijack.status, 403);
    assert.equal(hijack.body.error.code, -32600);
    assert.match(hijack.body.error.message, /task belongs to another principal/);
  });
  await t.step("a notification and a posted-back response related to it: 403", async () => {
    const note = await post(server.url, "mallory-token", {
      method: "notifications/progress",
      params: { progressToken: 1, progress: 1, _meta: { [RELATED]: { taskId } } },
    });
    assert.equal(note.status, 403);
    const reply = await post(server.url, "mallory-token", {
      id: 77,
      result: { action: "accept", content: {}, _meta: { [RELATED]: { taskId } } },
    });
    assert.equal(reply.status, 403);
    assert.equal(reply.body.id, null);
  });
  await t.step("a related task bound to nobody: 404, as an unknown task", async () => {
    const unknown = await hijackCall(server.url, "made-up-task");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, -32602);
  });
  await t.step("a malformed related taskId: 400 naming it", async () => {
    const bad = await rpc(server.url, "mallory-token", "tools/call", {
      name: "say",
      arguments: { text: "x" },
      _meta: { [RELATED]: { taskId: 7 } },
    });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /related-task"\]\.taskId/);
  });
  await t.step("Alice's result carries only her own traffic", async () => {
    const result = await rpc(server.url, "alice-token", "tasks/result", { taskId });
    assert.equal(result.status, 200);
    assert.match(result.text, /alice's report/);
    assert.doesNotMatch(result.text, /mallory/);
  });
  await t.step("Alice's own related messages still reach the server", async () => {
    const own = await post(server.url, "alice-token", {
      method: "notifications/progress",
      params: { progressToken: 1, progress: 1, _meta: { [RELATED]: { taskId } } },
    });
    assert.equal(own.status, 202);
  });
  const refused = server.decisions.filter((d) => d.outcome === "refuse").map((d) => d.reason);
  assert.deepEqual(refused, [
    "not-task-owner",
    "not-task-owner",
    "not-task-owner",
    "unknown-task",
    "invalid-params",
  ]);
});

/** Alice creates 10 tasks (one SDK page), then Mallory one; their task ids. */
async function fillPage(url: string) {
  const alice: string[] = [];
  for (let i = 0; i < 10; i++) alice.push(await createTask(url, "alice-token", `a${i}`));
  const mallory = await createTask(url, "mallory-token", "m");
  return { alice, mallory };
}

Deno.test("task list cursors: unguarded, the cursor is Alice's task id (control)", async () => {
  await using server = startServer(false);
  const { alice } = await fillPage(server.url);
  const page = await rpc(server.url, "mallory-token", "tasks/list", {});
  assert.equal(page.body.result.nextCursor, alice[9]);
  // A real id as a cursor answers a page, a made-up one an error: an existence oracle.
  const real = await rpc(server.url, "mallory-token", "tasks/list", { cursor: alice[3] });
  assert.ok(Array.isArray(real.body.result?.tasks));
  const madeUp = await rpc(server.url, "mallory-token", "tasks/list", { cursor: "nope" });
  assert.ok(madeUp.body.error !== undefined);
});

Deno.test("task list cursors: guarded, opaque, bound to their principal, never an oracle", async () => {
  const secret = "cluster-secret";
  await using server = startServer(true, { secret, notOwnerStatus: 404 });
  const { alice, mallory } = await fillPage(server.url);

  // Without a JSON-RPC id the guard could not find the answer to filter: refused, not passed.
  for (const id of [null, { x: 1 }]) {
    const bare = await post(server.url, "mallory-token", { id, method: "tasks/list" });
    assert.equal(bare.status, 400);
    assert.equal(bare.body.error.code, -32600);
    assert.match(bare.body.error.message, /id must be a string or a finite number/);
  }
  const page = await rpc(server.url, "mallory-token", "tasks/list", {});
  assert.deepEqual(page.body.result.tasks, [], "the first page is all Alice's: filtered out");
  const cursor: string = page.body.result.nextCursor;
  assert.equal(typeof cursor, "string");
  for (const id of alice) assert.ok(!cursor.includes(id), "the cursor names no task");
  // Mallory's own cursor works for her.
  const next = await rpc(server.url, "mallory-token", "tasks/list", { cursor });
  assert.deepEqual(next.body.result.tasks.map((t: { taskId: string }) => t.taskId), [mallory]);

  // Alice's cursor, a raw task id, a forged and a made-up cursor: all answered alike.
  const alicePage = await rpc(server.url, "alice-token", "tasks/list", {});
  assert.equal(alicePage.body.result.tasks.length, 10);
  const aliceCursor: string = alicePage.body.result.nextCursor;
  assert.notEqual(aliceCursor, cursor);
  const answers = [];
  for (const attempt of [aliceCursor, alice[3], cursor.slice(0, -2) + "AA", "nope"]) {
    const res = await rpc(server.url, "mallory-token", "tasks/list", { cursor: attempt });
    assert.equal(res.body.result, undefined, `${attempt} gives no page`);
    answers.push({ status: res.status, code: res.body.error.code });
  }
  assert.equal(new Set(answers.map((a) => JSON.stringify(a))).size, 1, JSON.stringify(answers));
  // Alice's cursor still works for Alice.
  const aliceNext = await rpc(server.url, "alice-token", "tasks/list", { cursor: aliceCursor });
  assert.deepEqual(aliceNext.body.result.tasks, []);
});
