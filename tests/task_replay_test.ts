/**
 * Resumption and the task rules, against a stateless SDK 1.32 server whose
 * task store and event store are shared by every caller, on a real
 * `Deno.serve({ port: 0 })`:
 *
 * - the task rules (a `tasks/list` filtered and its cursor sealed, a created
 *   task bound) act on a POST's own answer; the event store keeps the
 *   handler's answer before them, so a GET resuming such a stream is refused
 *   (`task-event-id`), while an ordinary stream resumes as unguarded;
 * - attach-only mode: anonymous callers' stateless streams are tagged and
 *   checked too (a raw id, or a named caller's, never resumes anonymously).
 *
 * Each attack runs unguarded first (the control: it works).
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
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
import type { GuardOptions } from "../mod.ts";
import { SUFFIX_LENGTH } from "../src/http/event_ids.ts";
import { bearer } from "./support/mcp_server.ts";
import { ListEventStore } from "./support/resumable_server.ts";
import { type ClientEvent, readEvents } from "./support/sse_client.ts";
import { registerJobTool, serveGuarded } from "./support/task_server.ts";

const ALICE = "alice-token";
const MALLORY = "mallory-token";

/**
 * A stateless SDK server (a transport per request) over one task store, one
 * task message queue and one event store (`ListEventStore`, as in
 * `./support/resumable_server.ts`): `job` creates a task that is done
 * at once; `echo` answers its text (an ordinary call).
 */
function startServer(guarded: boolean, guardOptions: Partial<GuardOptions> = {}) {
  const taskStore = new InMemoryTaskStore();
  const taskMessageQueue = new InMemoryTaskMessageQueue();
  // Events replayed in the order they were stored (the SDK's example store sorts ids that may
  // share their millisecond by a random part).
  const eventStore = new ListEventStore();
  const handler = async (request: Request) => {
    const server = new McpServer({ name: "tasks", version: "1.0.0" }, {
      capabilities: { tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } } },
      taskStore,
      taskMessageQueue,
    });
    registerJobTool(server);
    server.registerTool(
      "echo",
      { inputSchema: { text: z.string() } },
      ({ text }) => ({ content: [{ type: "text" as const, text }] }),
    );
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      eventStore,
    });
    await server.connect(transport);
    return await transport.handleRequest(request);
  };
  const served = serveGuarded(handler, guarded, guardOptions, undefined, () => taskStore.cleanup());
  return { ...served, url: new URL(served.url) };
}

type Server = ReturnType<typeof startServer>;

let nextId = 1;

/** A stateless POST as `token`'s holder (or anonymous), read to its end. */
async function post(
  server: Server,
  token: string | null,
  method: string,
  params: unknown,
): Promise<{ status: number; events: ClientEvent[] }> {
  const response = await fetch(server.url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      ...bearer(token),
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params }),
  });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  return { status: response.status, events: await readEvents(response) };
}

/** The priming event's id (the first event: an id, no data). */
function primingId(events: ClientEvent[]): string {
  assert.ok(events.length >= 2, JSON.stringify(events));
  assert.equal(events[0].data, "");
  assert.notEqual(events[0].id, "");
  return events[0].id;
}

/** A GET without a session resuming `lastEventId`: its status and everything it replayed. */
async function resume(
  server: Server,
  token: string | null,
  lastEventId: string,
): Promise<{ status: number; text: string }> {
  const response = await fetch(server.url, {
    headers: {
      accept: "text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      "last-event-id": lastEventId,
      ...bearer(token),
    },
  });
  if (!response.ok || response.body === null) {
    return { status: response.status, text: await response.text() };
  }
  const events = await readEvents(response, (e) => e.some((x) => x.data.includes("result")), 1_000);
  return { status: response.status, text: events.map((e) => e.data).join("\n") };
}

/** The JSON-RPC answer of a stream (its last event). */
function answer(events: ClientEvent[]) {
  return JSON.parse(events.at(-1)!.data);
}

/** Alice creates a task; Mallory lists tasks and resumes her own list's stream. */
async function replayTaskList(server: Server) {
  const created = await post(server, ALICE, "tools/call", {
    name: "job",
    arguments: { text: "alice secret report" },
    task: { ttl: 60_000 },
  });
  const aliceTask: string = answer(created.events).result.task.taskId;
  const listed = await post(server, MALLORY, "tasks/list", {});
  const listedTasks = answer(listed.events).result.tasks.map((t: { taskId: string }) => t.taskId);
  const replay = await resume(server, MALLORY, primingId(listed.events));
  return { aliceTask, listedTasks, listId: primingId(listed.events), replay };
}

Deno.test("tasks/list replay control: unguarded, resuming Mallory's list stream replays Alice's task", async () => {
  await using server = startServer(false);
  const { aliceTask, listedTasks, replay } = await replayTaskList(server);
  assert.deepEqual(listedTasks, [aliceTask]); // unguarded, the list holds everyone's tasks
  assert.equal(replay.status, 200);
  assert.ok(replay.text.includes(aliceTask), replay.text);
});

Deno.test("tasks/list replay guarded: a list stream's id is never resumed (400 task-event-id)", async () => {
  await using server = startServer(true);
  const { aliceTask, listedTasks, listId, replay } = await replayTaskList(server);
  assert.deepEqual(listedTasks, []); // the POST's own answer: Mallory's tasks only
  assert.match(listId, /\.t[A-Za-z0-9_-]{22}$/); // tagged as a stream the task rules acted on
  assert.equal(replay.status, 400);
  assert.ok(!replay.text.includes(aliceTask), replay.text);
  const error = JSON.parse(replay.text);
  assert.equal(error.jsonrpc, "2.0");
  assert.equal(error.error.code, -32000);
  assert.match(error.error.message, /Last-Event-ID names a task list/);
  const refusals = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(
    refusals.map((d) => [d.method, d.reason, d.status]),
    [["GET", "task-event-id", 400]],
  );
  // The raw id (the tag cut off) is refused as any untagged id.
  const raw = await resume(server, MALLORY, listId.slice(0, -SUFFIX_LENGTH));
  assert.equal(raw.status, 400);
  assert.ok(!raw.text.includes(aliceTask), raw.text);
});

Deno.test("task creation replay guarded: a task-creating stream is not resumed; an ordinary one is", async () => {
  await using server = startServer(true);
  const created = await post(server, ALICE, "tools/call", {
    name: "job",
    arguments: { text: "alice secret report" },
    task: { ttl: 60_000 },
  });
  const createdId = primingId(created.events);
  assert.match(createdId, /\.t[A-Za-z0-9_-]{22}$/);
  const replayed = await resume(server, ALICE, createdId);
  assert.equal(replayed.status, 400);
  assert.ok(!replayed.text.includes("taskId"), replayed.text);
  assert.equal(server.decisions.at(-1)?.reason, "task-event-id");

  // An ordinary call's stream resumes exactly as unguarded: its answer is replayed.
  const echoed = await post(server, ALICE, "tools/call", {
    name: "echo",
    arguments: { text: "plain" },
  });
  const echoId = primingId(echoed.events);
  assert.match(echoId, /\.r[A-Za-z0-9_-]{22}$/);
  const own = await resume(server, ALICE, echoId);
  assert.equal(own.status, 200);
  assert.ok(own.text.includes("plain"), own.text);
  // ...for its caller only.
  const foreign = await resume(server, MALLORY, echoId);
  assert.equal(foreign.status, 400);
});

/** Alice (named) creates a task; an anonymous caller tries her tagged id and her raw id. */
async function anonymousReplay(server: Server) {
  const created = await post(server, ALICE, "tools/call", {
    name: "echo",
    arguments: { text: "alice secret report" },
  });
  const tagged = primingId(created.events);
  // The raw id (as the handler wrote it, as a log shows it): the tagged id minus its tag.
  const raw = server.decisions.length > 0 ? tagged.slice(0, -SUFFIX_LENGTH) : tagged;
  return {
    raw: await resume(server, null, raw),
    tagged: await resume(server, null, tagged),
  };
}

Deno.test("attach-only anonymous replay control: unguarded, an anonymous GET replays Alice's stream", async () => {
  await using server = startServer(false);
  const { raw } = await anonymousReplay(server);
  assert.equal(raw.status, 200);
  assert.ok(raw.text.includes("alice secret report"), JSON.stringify(raw));
});

Deno.test("attach-only anonymous replay guarded: a named caller's id, raw or tagged, is refused", async () => {
  await using server = startServer(true, { mode: "attach-only" });
  const { raw, tagged } = await anonymousReplay(server);
  assert.equal(raw.status, 400);
  assert.ok(!raw.text.includes("alice secret report"), raw.text);
  assert.equal(tagged.status, 400);
  assert.ok(!tagged.text.includes("alice secret report"), tagged.text);
  const refusals = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(refusals.map((d) => [d.method, d.reason]), [
    ["GET", "unknown-event-id"],
    ["GET", "unknown-event-id"],
  ]);

  // Anonymous callers' own streams are tagged for them and resume as unguarded; their ids
  // resume for no named caller.
  const mine = await post(server, null, "tools/call", {
    name: "echo",
    arguments: { text: "anonymous note" },
  });
  const id = primingId(mine.events);
  assert.match(id, /\.r[A-Za-z0-9_-]{22}$/);
  const own = await resume(server, null, id);
  assert.equal(own.status, 200);
  assert.ok(own.text.includes("anonymous note"), own.text);
  const named = await resume(server, MALLORY, id);
  assert.equal(named.status, 400);
  assert.ok(!named.text.includes("anonymous note"), named.text);
});

Deno.test("fidelity: the SDK client creates, lists and reads its tasks through the guard with an event store", async () => {
  await using server = startServer(true);
  const client = new Client({ name: "alice", version: "1.0.0" });
  await client.connect(
    new StreamableHTTPClientTransport(server.url, {
      requestInit: { headers: bearer(ALICE) },
    }),
  );
  try {
    const echoed = await client.callTool({ name: "echo", arguments: { text: "hi" } });
    assert.deepEqual(echoed.content, [{ type: "text", text: "hi" }]);
    const stream = client.experimental.tasks.callToolStream(
      { name: "job", arguments: { text: "report" } },
      undefined,
      { task: { ttl: 60_000 } },
    );
    let taskId: string | undefined;
    let result: unknown;
    for await (const message of stream) {
      if (message.type === "taskCreated") taskId = message.task.taskId;
      if (message.type === "result") result = message.result;
      if (message.type === "error") throw message.error;
    }
    assert.ok(taskId !== undefined);
    assert.deepEqual((result as { content: unknown }).content, [{ type: "text", text: "report" }]);
    const listed = await client.experimental.tasks.listTasks();
    assert.deepEqual(listed.tasks.map((t) => t.taskId), [taskId]);
  } finally {
    await client.close();
  }
});
