/**
 * A stateless SDK 1.32 server with tasks, for the task-ownership tests: one
 * task store and one task message queue shared by every request (the setting
 * in which the SDK cannot tell callers apart), guarded or not, and raw
 * JSON-RPC helpers.
 *
 * @module
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
// @ts-types="@modelcontextprotocol/sdk/types"
import { ElicitResultSchema } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod4";
import {
  CancellationRegistry,
  type GuardDecision,
  type GuardOptions,
  guardSessions,
  SessionOwnerRegistry,
} from "../../mod.ts";
import { bearerPrincipal } from "../../examples/server.ts";
import { bearer } from "./mcp_server.ts";

/** The `_meta` key of a message that belongs to a task. */
export const RELATED = "io.modelcontextprotocol/related-task";

/**
 * Registers the task tool `job` on `server`: a task (no ttl asked: one that lives until the store
 * drops it) whose result is the `text` it was given, stored `finishMs` after its creation (0: at
 * once, before the creating answer).
 */
export function registerJobTool(server: McpServer, finishMs = 0): void {
  server.experimental.tasks.registerToolTask("job", {
    inputSchema: { text: z.string() },
    execution: { taskSupport: "required" },
  }, {
    async createTask({ text }, { taskStore, taskRequestedTtl }) {
      const task = await taskStore.createTask({ ttl: taskRequestedTtl ?? null });
      const finish = () =>
        taskStore.storeTaskResult(task.taskId, "completed", {
          content: [{ type: "text", text }],
        });
      if (finishMs === 0) await finish();
      else setTimeout(() => finish().catch(() => {}), finishMs);
      return { task };
    },
    getTask: (_args, { taskId, taskStore }) => taskStore.getTask(taskId!) as never,
    getTaskResult: (_args, { taskId, taskStore }) => taskStore.getTaskResult(taskId!) as never,
  });
}

/** A stateless SDK server; `job` tasks finish `finishMs` after creation. */
export function startTaskServer(
  guarded: boolean,
  guardOptions: Partial<GuardOptions> = {},
  finishMs = 0,
  ownerOptions?: ConstructorParameters<typeof SessionOwnerRegistry>[0],
) {
  const taskStore = new InMemoryTaskStore();
  const taskMessageQueue = new InMemoryTaskMessageQueue();
  const handler = async (request: Request) => {
    const server = new McpServer({ name: "tasks", version: "1.0.0" }, {
      capabilities: {
        tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } },
        logging: {},
      },
      taskStore,
      taskMessageQueue,
    });
    registerJobTool(server, finishMs);
    // Asks the client to confirm `text` (an elicitation), then answers with it.
    server.registerTool("say", { inputSchema: { text: z.string() } }, async ({ text }, extra) => {
      await extra.sendRequest(
        {
          method: "elicitation/create",
          params: {
            mode: "form",
            message: text,
            requestedSchema: { type: "object", properties: {} },
          },
        },
        ElicitResultSchema,
        { timeout: 2_000 },
      ).catch(() => null);
      return { content: [{ type: "text", text }] };
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
    });
    await server.connect(transport);
    return await transport.handleRequest(request);
  };
  const served = serveGuarded(
    handler,
    guarded,
    guardOptions,
    ownerOptions,
    () => taskStore.cleanup(),
  );
  return { ...served, taskStore };
}

/**
 * `handler` on `Deno.serve` (loopback, a free port), behind a guard over fresh registries when
 * `guarded` (callers named by `bearerPrincipal()`, decisions recorded, `guardOptions` on top);
 * `onClose` runs once the server is shut down, before the registries close.
 */
export function serveGuarded(
  handler: (request: Request) => Promise<Response>,
  guarded: boolean,
  guardOptions: Partial<GuardOptions> = {},
  ownerOptions?: ConstructorParameters<typeof SessionOwnerRegistry>[0],
  onClose?: () => void | Promise<void>,
) {
  const owners = new SessionOwnerRegistry(ownerOptions);
  const cancellations = new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  const serve = guarded
    ? guardSessions(handler, {
      owners,
      cancellations,
      principal: bearerPrincipal(),
      onDecision: (d) => decisions.push(d),
      ...guardOptions,
    })
    : handler;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, serve);
  return {
    url: `http://127.0.0.1:${server.addr.port}/mcp`,
    decisions,
    owners,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await onClose?.();
      await owners.close();
      await cancellations.close();
    },
  };
}

let nextId = 1;
/** A raw JSON-RPC message from `token`; the answer (JSON, or the last SSE message) parsed. */
export async function post(
  url: string,
  token: string,
  message: Record<string, unknown>,
  signal?: AbortSignal,
) {
  const response = await fetch(url, {
    signal,
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      ...bearer(token),
    },
    body: JSON.stringify({ jsonrpc: "2.0", ...message }),
  });
  const text = await response.text();
  // A JSON answer, or the last message of an SSE answer.
  const data = text.startsWith("{")
    ? text
    : text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).at(-1);
  return { status: response.status, text, body: data === undefined ? null : JSON.parse(data) };
}

/** A raw JSON-RPC request from `token`. */
export function rpc(
  url: string,
  token: string,
  method: string,
  params: Record<string, unknown>,
  signal?: AbortSignal,
) {
  return post(url, token, { id: nextId++, method, params }, signal);
}

/** Creates a `job` task (2025-11-25) as `token`, with `ttl` (none: unlimited); its id. */
export async function createTask(
  url: string,
  token: string,
  text: string,
  ttl: number | null = 60_000,
): Promise<string> {
  const created = await rpc(url, token, "tools/call", {
    name: "job",
    arguments: { text },
    task: ttl === null ? {} : { ttl },
  });
  assert.equal(created.status, 200, created.text);
  return created.body.result.task.taskId;
}
