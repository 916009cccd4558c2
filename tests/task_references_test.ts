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
import { Hono } from "hono";
import {
  CancellationRegistry,
  fingerprint,
  type GuardContext,
  type GuardDecision,
  guardSessions,
  type GuardTaskOwners,
  SessionOwnerRegistry,
} from "../mod.ts";
import { mcpGuard, type McpGuardEnv } from "../hono.ts";
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

/** `_meta` of a 2026-07-28 ("modern") request that does not declare the tasks extension. */
const MODERN = { "io.modelcontextprotocol/protocolVersion": "2026-07-28" };

/** A task in the server's store that the guard never bound (its creator's answer was lost). */
async function unboundTask(
  store: ReturnType<typeof startServer>["taskStore"],
  text: string,
): Promise<string> {
  const task = await store.createTask({ ttl: 60_000 }, 1, {
    method: "tools/call",
    params: { name: "job", arguments: { text } },
  });
  await store.storeTaskResult(task.taskId, "completed", { content: [{ type: "text", text }] });
  return task.taskId;
}

Deno.test("task requests a modern server refuses: an unowned task goes on as an unissued id", async (t) => {
  // SDK 1.32 (2025-11-25) ignores the 2026-07-28 marker: it answers whatever the marker says.
  await using server = startServer(true, {}, 0);
  const { url } = server;
  const modern = (token: string, method: string, taskId: string) =>
    rpc(url, token, method, { taskId, _meta: MODERN });

  await t.step(
    "a task bound to nobody: the server's 'not found', nothing read or cancelled",
    async () => {
      const taskId = await unboundTask(server.taskStore, "alice secret report");
      server.decisions.length = 0;
      for (const method of ["tasks/result", "tasks/get", "tasks/cancel"]) {
        const answer = await modern("mallory-token", method, taskId);
        assert.doesNotMatch(answer.text, /alice secret report/, method);
        assert.equal(answer.body.error?.code, -32602, `${method}: ${answer.text}`);
        // `tasks/result` and `tasks/cancel` name the id they got: the guard's unissued one.
        assert.match(answer.body.error.message, /Task not found/, method);
        assert.doesNotMatch(answer.text, new RegExp(taskId), method);
      }
      assert.equal((await server.taskStore.getTask(taskId))?.status, "completed", "not cancelled");
      assert.deepEqual(
        server.decisions.map((d) => [d.outcome, d.reason, d.status, d.rpcMethod]),
        [
          ["allow", "unknown-task", null, "tasks/result"],
          ["allow", "unknown-task", null, "tasks/get"],
          ["allow", "unknown-task", null, "tasks/cancel"],
        ],
      );
    },
  );

  await t.step("a task whose binding its owner's cap evicted: not readable", async () => {
    const first = await createTask(url, "alice-token", "alice evicted report");
    for (let i = 0; i < 100; i++) await createTask(url, "alice-token", `filler ${i}`);
    assert.equal((await rpc(url, "alice-token", "tasks/get", { taskId: first })).status, 404);
    const stolen = await modern("mallory-token", "tasks/result", first);
    assert.doesNotMatch(stolen.text, /alice evicted report/);
    assert.equal(stolen.body.error?.code, -32602, stolen.text);
  });

  await t.step("the caller's own task: passes unchanged", async () => {
    const taskId = await createTask(url, "alice-token", "alice own report");
    const own = await modern("alice-token", "tasks/result", taskId);
    assert.match(own.text, /alice own report/);
    assert.equal(server.decisions.at(-1)?.reason, "allowed");
  });

  await t.step("another principal's task, notOwnerStatus 403: refused as before", async () => {
    const taskId = await createTask(url, "alice-token", "alice report");
    const foreign = await modern("mallory-token", "tasks/result", taskId);
    assert.equal(foreign.status, 403);
    assert.equal(foreign.body.error.code, -32600);
    assert.doesNotMatch(foreign.text, /alice report/);
  });
});

Deno.test("task requests a modern server refuses: notOwnerStatus 404 answers another's task as an unknown one", async () => {
  await using server = startServer(true, { notOwnerStatus: 404 }, 0);
  const alice = await createTask(server.url, "alice-token", "alice report");
  const unbound = await unboundTask(server.taskStore, "nobody's report");
  const probe = (taskId: string) =>
    post(server.url, "mallory-token", {
      id: 9,
      method: "tasks/result",
      params: { taskId, _meta: MODERN },
    });
  const hers = await probe(alice);
  const none = await probe("0123456789abcdef0123456789abcdef");
  const nobodys = await probe(unbound);
  assert.deepEqual({ status: hers.status, body: hers.body }, {
    status: none.status,
    body: none.body,
  });
  assert.deepEqual({ status: nobodys.status, body: nobodys.body }, {
    status: none.status,
    body: none.body,
  });
  assert.equal(none.body.error.code, -32602);
  assert.deepEqual(
    server.decisions.slice(-3).map((d) => [d.outcome, d.reason, d.status]),
    [["allow", "not-task-owner", null], ["allow", "unknown-task", null], [
      "allow",
      "unknown-task",
      null,
    ]],
  );
});

/** What a handler behind the guard got for one request. */
interface Seen {
  taskId: unknown;
  mcpName: string | null;
  /** The `Content-Length` it got, and the length of the body it read (copy modes). */
  contentLength: [string | null, number] | null;
}

/**
 * A guarded stand-in for a 2025-11-25 server (it answers "not found" naming the id it got) in one
 * of the four ways a handler can get a request: `guardSessions` with `forwardBody` `"copy"` or
 * `"parsed"`, Hono's `mcpGuard` with either. Tasks: `bob-task` is Bob's, `alice-task` Alice's.
 */
async function spyServer(mode: string, notOwnerStatus: 403 | 404) {
  const seen: Seen[] = [];
  const decisions: GuardDecision[] = [];
  const alice = await fingerprint("alice");
  const tasks: GuardTaskOwners = {
    bind: () => Promise.resolve("bound" as const),
    ownerOf: (taskId: string) =>
      Promise.resolve(taskId === "bob-task" ? "fp-bob" : taskId === "alice-task" ? alice : null),
  };
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const answer = (
    request: Request,
    body: { id: number; params: { taskId: unknown } },
    read: number | null,
  ) => {
    seen.push({
      taskId: body.params.taskId,
      mcpName: request.headers.get("mcp-name"),
      contentLength: read === null ? null : [request.headers.get("content-length"), read],
    });
    return Response.json({
      jsonrpc: "2.0",
      id: body.id,
      error: { code: -32602, message: `Task not found: ${body.params.taskId}` },
    });
  };
  const readBody = async (request: Request) => {
    const text = await request.text();
    return { body: JSON.parse(text), read: new TextEncoder().encode(text).byteLength };
  };
  const options = {
    owners,
    cancellations,
    tasks,
    notOwnerStatus,
    onDecision: (d: GuardDecision) => decisions.push(d),
  };
  let serve: (request: Request) => Response | Promise<Response>;
  const [adapter, forwardBody] = mode.split(" ") as ["guard" | "hono", "copy" | "parsed"];
  if (adapter === "guard") {
    serve = guardSessions(async (request: Request, ctx: GuardContext) => {
      if (forwardBody === "parsed") return answer(request, ctx.parsedBody as never, null);
      const { body, read } = await readBody(request);
      return answer(request, body, read);
    }, { ...options, forwardBody, principal: (r) => r.headers.get("x-user") });
  } else {
    const app = new Hono<McpGuardEnv>();
    app.use(
      "/mcp",
      mcpGuard({ ...options, forwardBody, principal: (c) => c.req.header("x-user") }),
    );
    app.post("/mcp", async (c) => {
      if (forwardBody === "parsed") {
        return answer(c.req.raw, c.get("mcpGuard").parsedBody as never, null);
      }
      const { body, read } = await readBody(c.req.raw);
      return answer(c.req.raw, body, read);
    });
    serve = app.fetch;
  }
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, serve);
  const url = `http://127.0.0.1:${server.addr.port}/mcp`;
  let nextId = 1;
  return {
    seen,
    decisions,
    /** A 2026-07-28 `method` without the tasks extension, as `user`, with `Mcp-Name` if given. */
    async modern(user: string, method: string, taskId: string, mcpName?: string) {
      const response = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "x-user": user,
          ...(mcpName === undefined ? {} : { "mcp-name": mcpName }),
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: nextId++,
          method,
          params: { taskId, _meta: MODERN },
        }),
      });
      return { status: response.status, body: await response.json() };
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await owners.close();
      await cancellations.close();
    },
  };
}

const base64Name = (value: string) =>
  `=?base64?${btoa(String.fromCharCode(...new TextEncoder().encode(value)))}?=`;

for (const mode of ["guard copy", "guard parsed", "hono copy", "hono parsed"]) {
  Deno.test(`task requests a modern server refuses: params.taskId and Mcp-Name replaced together (${mode})`, async () => {
    await using server = await spyServer(mode, 404);
    const { seen } = server;
    const unissued = /^mcp-guard\.unissued\.[0-9a-f]{32}$/;

    // A task bound to nobody, Mcp-Name literal: both name the same unissued id.
    const literal = await server.modern("mallory", "tasks/result", "nobodys-task", "nobodys-task");
    assert.equal(literal.status, 200);
    const substitute = seen.at(-1)!.taskId as string;
    assert.match(substitute, unissued);
    assert.equal(seen.at(-1)!.mcpName, substitute);
    assert.equal(literal.body.error.message, `Task not found: ${substitute}`);

    // Base64 form, a non-ASCII id: the substitute in base64 form too.
    await server.modern("mallory", "tasks/get", "tâche-😀", base64Name("tâche-😀"));
    assert.equal(seen.at(-1)!.taskId, substitute);
    assert.equal(seen.at(-1)!.mcpName, base64Name(substitute));

    // No header: none added. A header naming another task (Alice's) than the body: refused,
    // whether the body names a task nobody owns or one of the caller's own.
    await server.modern("mallory", "tasks/cancel", "nobodys-task");
    assert.deepEqual([seen.at(-1)!.taskId, seen.at(-1)!.mcpName], [substitute, null]);
    const handled = seen.length;
    for (const [user, body] of [["mallory", "nobodys-task"], ["alice", "alice-task"]]) {
      const mismatch = await server.modern(user, "tasks/result", body, "bob-task");
      assert.equal(mismatch.status, 400);
      assert.match(mismatch.body.error.message, /Mcp-Name header does not match/);
      assert.equal(server.decisions.at(-1)!.reason, "header-mismatch");
    }
    assert.equal(seen.length, handled, "neither reached the handler");

    // Another principal's task (notOwnerStatus 404): the same answer as a task bound to nobody.
    const bobs = await server.modern("mallory", "tasks/result", "bob-task", "bob-task");
    assert.deepEqual([bobs.status, bobs.body.error], [literal.status, literal.body.error]);
    assert.deepEqual([seen.at(-1)!.taskId, seen.at(-1)!.mcpName], [substitute, substitute]);

    // The caller's own task: as sent.
    await server.modern("alice", "tasks/result", "alice-task", "alice-task");
    assert.deepEqual([seen.at(-1)!.taskId, seen.at(-1)!.mcpName], ["alice-task", "alice-task"]);

    // A body serialized again carries no stale Content-Length.
    for (const { contentLength } of seen) {
      if (contentLength === null || contentLength[0] === null) continue;
      assert.equal(Number(contentLength[0]), contentLength[1]);
    }
    assert.deepEqual(
      server.decisions.map((d) => [d.outcome, d.reason, d.status]),
      [
        ["allow", "unknown-task", null],
        ["allow", "unknown-task", null],
        ["allow", "unknown-task", null],
        ["refuse", "header-mismatch", 400],
        ["refuse", "header-mismatch", 400],
        ["allow", "not-task-owner", null],
        ["allow", "allowed", null],
      ],
    );
  });

  Deno.test(`task requests a modern server refuses: another's task still 403 without hideOthers (${mode})`, async () => {
    await using server = await spyServer(mode, 403);
    const bobs = await server.modern("mallory", "tasks/result", "bob-task", "bob-task");
    assert.equal(bobs.status, 403);
    assert.equal(server.seen.length, 0);
    await server.modern("mallory", "tasks/result", "nobodys-task");
    assert.match(server.seen.at(-1)!.taskId as string, /^mcp-guard\.unissued\./);
  });
}
