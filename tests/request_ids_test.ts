/**
 * A request id already in flight in its session is refused (400 `-32600`,
 * reason `duplicate-request-id`) before the handler sees it. MCP forbids
 * reusing a request id in a session, and the SDK's Streamable HTTP transport
 * sends each answer on the stream of the *latest* request with its id: a
 * `tasks/list` answer would go out on another POST's response, which the
 * task rules never wrapped (the list unfiltered, its cursor raw, its event
 * ids resumable).
 *
 * First against a real sessionful SDK 1.32 server whose task store is shared
 * by every session and ignores the session (as any store the guard is meant
 * to protect), with an unguarded control; then against a handler the test
 * drives, for both orders and the whole window of the earlier request.
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
import { openSession, postRpc, rpcRequest, waitFor } from "./support/mcp_server.ts";
import { registerJobTool, serveGuarded } from "./support/task_server.ts";

/** One task store for every session, whose `tasks/list` ignores the session and takes 300 ms. */
class SharedSlowStore extends InMemoryTaskStore {
  // deno-lint-ignore no-explicit-any
  override async listTasks(cursor?: string, _sessionId?: string): Promise<any> {
    await new Promise((resolve) => setTimeout(resolve, 300));
    return await super.listTasks(cursor);
  }
  // deno-lint-ignore no-explicit-any
  override getTask(taskId: string, _sessionId?: string): any {
    return super.getTask(taskId);
  }
}

/** A sessionful SDK server with a task tool (`job`) and a tool that answers after 800 ms (`slow`). */
function startServer(guarded: boolean) {
  const taskStore = new SharedSlowStore();
  const taskMessageQueue = new InMemoryTaskMessageQueue();
  const transports = new Map<string, WebStandardStreamableHTTPServerTransport>();
  const handler = async (request: Request) => {
    const sid = request.headers.get("mcp-session-id");
    if (sid !== null) {
      const transport = transports.get(sid);
      if (transport === undefined) return new Response("no session", { status: 404 });
      return await transport.handleRequest(request);
    }
    const server = new McpServer({ name: "tasks", version: "1.0.0" }, {
      capabilities: { tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } },
      taskStore,
      taskMessageQueue,
    });
    registerJobTool(server);
    server.registerTool("slow", { inputSchema: { text: z.string() } }, async ({ text }) => {
      await new Promise((resolve) => setTimeout(resolve, 800));
      return { content: [{ type: "text" as const, text: `slow:${text}` }] };
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => crypto.randomUUID(),
      onsessioninitialized: (id) => void transports.set(id, transport),
    });
    await server.connect(transport);
    return await transport.handleRequest(request);
  };
  const served = serveGuarded(handler, guarded, {}, undefined, async () => {
    taskStore.cleanup();
    for (const transport of transports.values()) await transport.close();
  });
  return { ...served, url: new URL(served.url) };
}

type Server = ReturnType<typeof startServer>;

/** Alice creates a task; Mallory opens her own session. */
async function setUp(server: Server): Promise<{ aliceTask: string; mallory: string }> {
  const alice = await openSession(server.url, "alice-token");
  const created = await (await postRpc(server.url, "alice-token", alice, {
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: { name: "job", arguments: { text: "secret" }, task: { ttl: 60_000 } },
  })).text();
  const aliceTask = /"taskId":"([^"]+)"/.exec(created)?.[1];
  assert.ok(aliceTask, created);
  const mallory = await openSession(server.url, "mallory-token");
  return { aliceTask, mallory };
}

const LIST = (id: number) => ({ jsonrpc: "2.0", id, method: "tasks/list", params: {} });
const SLOW = (id: number) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "slow", arguments: { text: "x" } },
});

/**
 * Mallory's two POSTs of one id in her own session, the second 80 ms after
 * the first (while the first is in flight); each answer's status and text
 * (an answer that never ends is cut off after 2 s).
 */
async function twice(server: Server, mallory: string, first: unknown, second: unknown) {
  const stop = AbortSignal.timeout(2_000);
  const read = async (answer: Promise<Response>) => {
    const response = await answer;
    let text = "";
    try {
      text = await response.text();
    } catch { /* never ended: cut off */ }
    return { status: response.status, text };
  };
  const a = read(postRpc(server.url, "mallory-token", mallory, first, stop));
  await new Promise((resolve) => setTimeout(resolve, 80));
  const b = read(postRpc(server.url, "mallory-token", mallory, second, stop));
  return { first: await a, second: await b };
}

Deno.test("duplicate request id: unguarded, a reused id carries tasks/list out unfiltered (control)", async () => {
  await using server = startServer(false);
  const { aliceTask, mallory } = await setUp(server);
  const { first, second } = await twice(server, mallory, LIST(7), SLOW(7));
  assert.match(first.text + second.text, new RegExp(aliceTask), "Alice's task reached Mallory");
});

Deno.test("duplicate request id: guarded, a tasks/list in flight keeps its id to itself", async () => {
  await using server = startServer(true);
  const { aliceTask, mallory } = await setUp(server);
  const { first, second } = await twice(server, mallory, LIST(7), SLOW(7));
  assert.equal(second.status, 400, second.text);
  const refusal = JSON.parse(second.text);
  assert.equal(refusal.id, 7);
  assert.equal(refusal.error.code, -32600);
  assert.match(refusal.error.message, /request id 7 is already in use in this session/);
  // The list went out on its own stream, filtered: Mallory has no task, Alice's is not there.
  assert.equal(first.status, 200);
  assert.match(first.text, /"tasks":\[\]/);
  assert.doesNotMatch(first.text + second.text, new RegExp(aliceTask));
  const refused = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(
    refused.map((d) => [d.reason, d.status, d.rpcMethod, d.sessionId]),
    [["duplicate-request-id", 400, "tools/call", mallory]],
  );
  // Once the list is over, the id is the client's again.
  const again = await postRpc(server.url, "mallory-token", mallory, SLOW(7));
  assert.equal(again.status, 200);
  assert.match(await again.text(), /slow:x/);
});

Deno.test("duplicate request id: guarded, an ordinary request in flight keeps its id from a tasks/list", async () => {
  await using server = startServer(true);
  const { aliceTask, mallory } = await setUp(server);
  const { first, second } = await twice(server, mallory, SLOW(9), LIST(9));
  assert.equal(second.status, 400, second.text);
  assert.equal(JSON.parse(second.text).error.code, -32600);
  // The tool's answer went out on its own stream, not on the list's.
  assert.equal(first.status, 200);
  assert.match(first.text, /slow:x/);
  assert.doesNotMatch(first.text + second.text, new RegExp(aliceTask));
  const after = await postRpc(server.url, "mallory-token", mallory, LIST(9));
  const listed = await after.text();
  assert.equal(after.status, 200);
  assert.match(listed, /"tasks":\[\]/);
  assert.doesNotMatch(listed, new RegExp(aliceTask));
});

/**
 * A guard around a handler the test drives: `initialize` opens a session;
 * any other request waits until the test answers it (`answer(id, ...)`) with
 * JSON, or with an event stream the test ends (`answer(id, "sse")`).
 */
function driven() {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  /** What the handler got: `method id` of each request. */
  const seen: string[] = [];
  /** The requests the handler holds, by session and id. */
  const waiting = new Map<string, (kind: "json" | "sse") => void>();
  const streams = new Map<string | number, ReadableStreamDefaultController<Uint8Array>>();
  let sessions = 0;
  const guarded = guardSessions(async (request, ctx) => {
    const body = ctx!.parsedBody as { id?: string | number; method: string };
    if (body.method === "initialize") {
      return Response.json({ jsonrpc: "2.0", id: body.id, result: {} }, {
        headers: { "mcp-session-id": `s-${++sessions}` },
      });
    }
    const id = body.id!;
    seen.push(`${body.method} ${JSON.stringify(id)}`);
    const key = JSON.stringify([request.headers.get("mcp-session-id"), id]);
    const kind = await new Promise<"json" | "sse">((resolve) => waiting.set(key, resolve));
    waiting.delete(key);
    const result = body.method === "tasks/list" ? { tasks: [] } : { content: [] };
    const message = { jsonrpc: "2.0", id, result };
    if (kind === "json") return Response.json(message);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        streams.set(id, controller);
        controller.enqueue(
          new TextEncoder().encode(`event: message\ndata: ${JSON.stringify(message)}\n\n`),
        );
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  }, {
    owners,
    cancellations,
    principal: () => "alice",
    forwardBody: "parsed",
    onDecision: (d) => void decisions.push(d),
  });
  const post = (body: unknown, sid?: string) => guarded(rpcRequest(body, sid));
  return {
    decisions,
    seen,
    post,
    async open(): Promise<string> {
      const opened = await post({ jsonrpc: "2.0", id: 0, method: "initialize", params: {} });
      await opened.body?.cancel();
      return opened.headers.get("mcp-session-id")!;
    },
    /** Waits for the handler to hold request `id` of session `sid`, then answers it. */
    async answer(sid: string, id: string | number, kind: "json" | "sse" = "json") {
      const key = JSON.stringify([sid, id]);
      await waitFor(() => waiting.has(key), 2_000, `request ${key}`);
      waiting.get(key)!(kind);
    },
    /** Ends the event stream answering request `id`. */
    end(id: string | number) {
      streams.get(id)!.close();
      streams.delete(id);
    },
    async [Symbol.asyncDispose]() {
      await owners.close();
      await cancellations.close();
    },
  };
}

const rpc = (id: string | number, method: string) => ({ jsonrpc: "2.0", id, method, params: {} });

/** `answer` is the guard's refusal of a duplicate id (not held by the handler: answered at once). */
async function assertDuplicate(answer: Promise<Response>, id: string | number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const held = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`request ${id} reached the handler`)), 1_000);
  });
  const response = await Promise.race([answer, held]).finally(() => clearTimeout(timer));
  assert.equal(response.status, 400);
  const body = await response.json();
  assert.equal(body.id, id);
  assert.equal(body.error.code, -32600);
  assert.match(body.error.message, /already in use in this session/);
}

Deno.test("duplicate request id: refused in both orders while the first is in flight, free again once it ended", async (t) => {
  await using guard = driven();
  const sid = await guard.open();

  await t.step("an ordinary request first, then a task list with its id", async () => {
    const first = guard.post(rpc(1, "tools/call"), sid);
    await waitFor(() => guard.seen.includes("tools/call 1"));
    await assertDuplicate(guard.post(rpc(1, "tasks/list"), sid), 1);
    await assertDuplicate(guard.post(rpc(1, "ping"), sid), 1);
    await guard.answer(sid, 1);
    const answered = await first;
    assert.equal(answered.status, 200);
    assert.equal((await answered.json()).id, 1);
    // Ended: the same id goes on (the client's business, as unguarded).
    const again = guard.post(rpc(1, "tasks/list"), sid);
    await guard.answer(sid, 1);
    assert.equal((await again).status, 200);
    await (await again).body?.cancel();
  });

  await t.step("a task list first, then an ordinary request with its id", async () => {
    const first = guard.post(rpc("a", "tasks/list"), sid);
    await waitFor(() => guard.seen.includes('tasks/list "a"'));
    await assertDuplicate(guard.post(rpc("a", "tools/call"), sid), "a");
    await guard.answer(sid, "a");
    assert.deepEqual((await (await first).json()).result, { tasks: [] });
    const again = guard.post(rpc("a", "tools/call"), sid);
    await guard.answer(sid, "a");
    assert.equal((await again).status, 200);
    await (await again).body?.cancel();
  });

  await t.step("the window lasts until the first answer's stream ends", async () => {
    const first = guard.post(rpc(3, "tasks/list"), sid);
    await guard.answer(sid, 3, "sse");
    const stream = await first;
    assert.equal(stream.headers.get("content-type"), "text/event-stream");
    const reader = stream.body!.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /"tasks":\[\]/);
    // Its answer was sent, but its stream is still open: still in flight.
    await assertDuplicate(guard.post(rpc(3, "tools/call"), sid), 3);
    guard.end(3);
    while (!(await reader.read()).done) { /* to its end */ }
    const again = guard.post(rpc(3, "tools/call"), sid);
    await guard.answer(sid, 3);
    assert.equal((await again).status, 200);
    await (await again).body?.cancel();
  });

  await t.step('other ids, 1 and "1", and other sessions are not conflated', async () => {
    const held = guard.post(rpc(5, "tools/call"), sid);
    await waitFor(() => guard.seen.includes("tools/call 5"));
    const other = await guard.open();
    const elsewhere = guard.post(rpc(5, "tools/call"), other);
    const asString = guard.post(rpc("5", "tools/call"), sid);
    await guard.answer(sid, 5);
    await guard.answer(other, 5);
    await guard.answer(sid, "5");
    for (const answer of [held, elsewhere, asString]) {
      const response = await answer;
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
  });

  // The handler never saw a refused request; each refusal was reported.
  assert.deepEqual(guard.seen.filter((s) => s.endsWith(" 1")), [
    "tools/call 1",
    "tasks/list 1",
  ]);
  const refused = guard.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(refused.map((d) => [d.reason, d.status, d.rpcMethod]), [
    ["duplicate-request-id", 400, "tasks/list"],
    ["duplicate-request-id", 400, "ping"],
    ["duplicate-request-id", 400, "tools/call"],
    ["duplicate-request-id", 400, "tools/call"],
  ]);
});
