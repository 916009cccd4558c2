/**
 * Task ownership through the guard (`options.tasks`), against a real SDK 1.32
 * server whose task store is shared by every caller (a stateless server: the
 * SDK's `InMemoryTaskStore` scopes tasks by session, and there is none). The
 * unguarded control shows the hole: Mallory reads and lists Alice's task.
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/experimental/tasks/index"
import {
  InMemoryTaskMessageQueue,
  InMemoryTaskStore,
} from "@modelcontextprotocol/sdk/experimental/tasks/index.js";
import { z } from "zod4";
import {
  CancellationRegistry,
  type GuardDecision,
  guardSessions,
  SessionOwnerRegistry,
} from "../mod.ts";
import { bearerPrincipal } from "../examples/server.ts";
import { bearer } from "./support/mcp_server.ts";

/** What the SDK hands a task tool's callbacks (the parts used here). */

function startTaskServer(guarded: boolean, json: boolean) {
  const taskStore = new InMemoryTaskStore();
  const handler = async (request: Request) => {
    const server = new McpServer({ name: "tasks", version: "1.0.0" }, {
      capabilities: { tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } },
      taskStore,
      taskMessageQueue: new InMemoryTaskMessageQueue(),
    });
    server.experimental.tasks.registerToolTask("job", {
      inputSchema: { text: z.string() },
      execution: { taskSupport: "required" },
    }, {
      async createTask({ text }, { taskStore, taskRequestedTtl }) {
        const task = await taskStore.createTask({ ttl: taskRequestedTtl ?? 60_000 });
        await taskStore.storeTaskResult(task.taskId, "completed", {
          content: [{ type: "text", text }],
        });
        return { task };
      },
      getTask: (_args, { taskId, taskStore }) => taskStore.getTask(taskId!) as never,
      getTaskResult: (_args, { taskId, taskStore }) => taskStore.getTaskResult(taskId!) as never,
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: json,
    });
    await server.connect(transport);
    return await transport.handleRequest(request);
  };
  const owners = new SessionOwnerRegistry();
  const tasks = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  const serve = guarded
    ? guardSessions(handler, {
      owners,
      cancellations,
      tasks,
      principal: bearerPrincipal(),
      onDecision: (d) => decisions.push(d),
    })
    : handler;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, serve);
  return {
    url: `http://127.0.0.1:${server.addr.port}/mcp`,
    decisions,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await owners.close();
      await tasks.close();
      await cancellations.close();
    },
  };
}

let nextId = 1;
async function rpc(
  url: string,
  token: string,
  method: string,
  params: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const id = nextId++;
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      ...bearer(token),
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: "2.0", id, method, params }),
  });
  const text = await response.text();
  const data = text.startsWith("{")
    ? text
    : text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).at(-1) ?? "{}";
  return { status: response.status, body: JSON.parse(data) };
}

/** Calls the `job` tool as a task (2025-11-25) with `token`; its task id. */
async function createTask(url: string, token: string, text: string): Promise<string> {
  const created = await rpc(url, token, "tools/call", {
    name: "job",
    arguments: { text },
    task: { ttl: 60_000 },
  });
  return created.body.result.task.taskId;
}

for (const json of [true, false]) {
  const form = json ? "JSON" : "SSE";
  Deno.test(`tasks: unguarded, Mallory reads and lists Alice's task (control, ${form})`, async () => {
    await using server = startTaskServer(false, json);
    const taskId = await createTask(server.url, "alice-token", "alice's secret");
    const stolen = await rpc(server.url, "mallory-token", "tasks/result", { taskId });
    assert.match(JSON.stringify(stolen.body), /alice's secret/);
    const listed = await rpc(server.url, "mallory-token", "tasks/list", {});
    assert.equal(listed.body.result.tasks.length, 1);
  });

  Deno.test(`tasks: guarded, a task is its creator's alone (${form})`, async () => {
    await using server = startTaskServer(true, json);
    const taskId = await createTask(server.url, "alice-token", "alice's secret");
    assert.equal(typeof taskId, "string");
    const bobTask = await createTask(server.url, "bob-token", "bob's");

    // Alice: get, result, list (her own task only).
    assert.equal((await rpc(server.url, "alice-token", "tasks/get", { taskId })).status, 200);
    const result = await rpc(server.url, "alice-token", "tasks/result", { taskId });
    assert.match(JSON.stringify(result.body), /alice's secret/);
    const list = await rpc(server.url, "alice-token", "tasks/list", {});
    assert.deepEqual(list.body.result.tasks.map((t: { taskId: string }) => t.taskId), [taskId]);

    // Mallory: every task method on Alice's task is refused; her list is empty.
    for (const method of ["tasks/get", "tasks/result", "tasks/cancel"]) {
      const refused = await rpc(server.url, "mallory-token", method, { taskId });
      assert.equal(refused.status, 403, method);
      assert.equal(refused.body.error.code, -32600);
      assert.doesNotMatch(JSON.stringify(refused.body), /secret/);
    }
    const empty = await rpc(server.url, "mallory-token", "tasks/list", {});
    assert.deepEqual(empty.body.result.tasks, []);
    // An unknown task id: 404, the same for everyone.
    const unknown = await rpc(server.url, "mallory-token", "tasks/get", { taskId: "nope" });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, -32602);
    // Malformed ids and a mismatched Mcp-Name: clear JSON-RPC errors.
    const malformed = await rpc(server.url, "alice-token", "tasks/get", { taskId: 42 });
    assert.equal(malformed.status, 400);
    assert.match(malformed.body.error.message, /taskId/);
    const mismatch = await rpc(server.url, "alice-token", "tasks/get", { taskId }, {
      "mcp-name": bobTask,
    });
    assert.equal(mismatch.status, 400);
    assert.equal(mismatch.body.error.code, -32020);
    const reasons = server.decisions.filter((d) => d.outcome === "refuse").map((d) => d.reason);
    assert.deepEqual(reasons, [
      "not-task-owner",
      "not-task-owner",
      "not-task-owner",
      "unknown-task",
      "invalid-params",
      "header-mismatch",
    ]);
    // Nothing else disturbed: Alice still reads her task; Bob his.
    assert.equal((await rpc(server.url, "alice-token", "tasks/get", { taskId })).status, 200);
    assert.equal(
      (await rpc(server.url, "bob-token", "tasks/get", { taskId: bobTask })).status,
      200,
    );
  });
}
