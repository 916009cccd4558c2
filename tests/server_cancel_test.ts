/**
 * Cancellations from the server side (an operator's `cancel`/`cancelAll`)
 * reach the tool's OWN `extra.signal` (no `signalFor`), and the client's POST
 * still gets an answer: a JSON-RPC error -32000, as a JSON body or as the last
 * event of the SSE stream. The client's own cancellation gets no answer, a
 * registry failure still gets one notification and one 503, and an answer
 * that already went by wins over a cancellation that lands after it.
 *
 * Real `Deno.serve` on port 0, the SDK 1.32 example app (whose tools honour
 * only `extra.signal`) or a hand-written handler, raw `fetch` and the SDK
 * 1.32 client.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  type GuardCancellations,
  type GuardContext,
  guardSessions,
  RegistryUnavailableError,
  RequestCancelledError,
  type RequestHandler,
  SessionOwnerRegistry,
} from "../mod.ts";
import { createMcpApp, type McpApp, type ToolEvent } from "../examples/mcp_app.ts";
import {
  cancelledEvent,
  cancelMessage,
  isClientCancel,
  watchAnswer,
} from "../src/http/server_cancel.ts";
import {
  connect,
  openSession,
  postRpc,
  rpcRequest,
  startServer,
  type TestServer,
  waitFor,
} from "./support/mcp_server.ts";

const SERVER_CANCEL = /^Request cancelled by the server: /;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What reached the app: every request, and the `notifications/cancelled` among them. */
interface Calls {
  methods: string[];
  cancels: { requestId: unknown; reason: string }[];
}

/** The example app (tools honour `extra.signal` only) behind the guard, recording its calls. */
async function start(
  jsonResponse: boolean,
  cancellations?: GuardCancellations,
): Promise<
  { server: TestServer; app: McpApp; tools: ToolEvent[]; calls: Calls } & AsyncDisposable
> {
  const tools: ToolEvent[] = [];
  const calls: Calls = { methods: [], cancels: [] };
  const app = createMcpApp({ jsonResponse, onToolEvent: (e) => tools.push(e) });
  const handler: RequestHandler = (request, context) => {
    const body = context?.parsedBody as
      | { method?: string; params?: { requestId?: unknown; reason?: unknown } }
      | undefined;
    calls.methods.push(`${request.method} ${body?.method ?? ""}`.trim());
    if (body?.method === "notifications/cancelled") {
      calls.cancels.push({
        requestId: body.params?.requestId,
        reason: String(body.params?.reason),
      });
    }
    // An SDK server in JSON mode never answers a request the client cancelled, and
    // Deno.serve's shutdown waits for every answer: the teardown answers what is left.
    return Promise.race([app.handler(request, context), closing]);
  };
  let close = () => {};
  const closing = new Promise<Response>((resolve) =>
    close = () => resolve(new Response(null, { status: 503 }))
  );
  const server = await startServer({
    handler,
    guard: { forwardBody: "parsed", ...(cancellations ? { cancellations } : {}) },
  });
  return {
    server,
    app,
    tools,
    calls,
    async [Symbol.asyncDispose]() {
      close();
      await app.close();
      await server[Symbol.asyncDispose]();
    },
  };
}

const count = (id: number, steps = 50, stepMs = 50) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "count", arguments: { steps, stepMs } },
});

/** Reads an SSE body until it ends or `ms` pass; returns its messages and whether it ended. */
async function readSse(
  response: Response,
  ms: number,
): Promise<{ messages: Record<string, unknown>[]; events: string[]; done: boolean }> {
  const reader = response.body!.getReader();
  let text = "";
  let done = false;
  const deadline = performance.now() + ms;
  while (!done) {
    const left = deadline - performance.now();
    if (left <= 0) break;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const chunk = await Promise.race([
      reader.read(),
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), left)),
    ]);
    clearTimeout(timer);
    if (chunk === null) break;
    if (chunk.done) done = true;
    else text += decoder.decode(chunk.value, { stream: true });
  }
  if (!done) await reader.cancel().catch(() => {});
  const events = text.split(/\r\n\r\n|\n\n|\r\r/).filter((e) => e.trim() !== "");
  const messages: Record<string, unknown>[] = [];
  for (const event of events) {
    const lines = event.split(/\r\n|\n|\r/);
    const type = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() ?? "message";
    const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
    if (type === "message" && data.length > 0) messages.push(JSON.parse(data.join("\n")));
  }
  return { messages, events, done };
}

async function started(tools: ToolEvent[], requestId: number): Promise<void> {
  await waitFor(
    () => tools.some((e) => e.requestId === requestId && e.kind === "started"),
    5_000,
    `tool ${requestId} to start`,
  );
}

async function stoppedBy(tools: ToolEvent[], requestId: number): Promise<ToolEvent> {
  await waitFor(
    () => tools.some((e) => e.requestId === requestId && e.kind === "stopped"),
    5_000,
    `tool ${requestId} to stop`,
  );
  return tools.find((e) => e.requestId === requestId && e.kind === "stopped")!;
}

async function echoWorks(url: URL, token: string, sid: string, id: number): Promise<void> {
  const response = await postRpc(url, token, sid, {
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name: "echo", arguments: { text: `again-${id}` } },
  });
  assert.equal(response.status, 200);
  const type = response.headers.get("content-type") ?? "";
  const messages = type.startsWith("text/event-stream")
    ? (await readSse(response, 5_000)).messages
    : [await response.json()];
  const answer = messages.find((m) => m.id === id) as
    | { result?: { content: { text: string }[] } }
    | undefined;
  assert.equal(answer?.result?.content[0].text, `again-${id}`, JSON.stringify(messages));
}

// ---------------------------------------------------------------------------------------------
// An operator's cancellation: the tool's own signal aborts, the client gets -32000.
// ---------------------------------------------------------------------------------------------

Deno.test("server cancel (SSE): the stream ends with a -32000 error event; the tool's own signal aborts", async () => {
  await using t = await start(false);
  const { url } = t.server;
  const sid = await openSession(url, "alice-token");
  const response = await postRpc(url, "alice-token", sid, count(7));
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
  await started(t.tools, 7);
  const before = performance.now();
  assert.equal(await t.server.cancellations.cancel("another-session", 7), false);
  assert.equal(await t.server.cancellations.cancel(sid, 7), true);
  const { messages, events, done } = await readSse(response, 3_000);
  assert.ok(done, "the stream ended");
  assert.ok(performance.now() - before < 1_000, "promptly");
  const last = messages.at(-1) as { id: unknown; error?: { code: number; message: string } };
  assert.equal(last.id, 7);
  assert.equal(last.error?.code, -32000);
  assert.match(last.error!.message, SERVER_CANCEL);
  assert.match(last.error!.message, new RegExp(`request 7 of session ${sid} cancelled$`));
  assert.equal(messages.filter((m) => m.id === 7).length, 1, "exactly one answer");
  assert.match(events.at(-1)!, /^event: message\n/);
  // The SDK's own signal aborted, with the reason the guard told the handler.
  const stopped = await stoppedBy(t.tools, 7);
  assert.match(stopped.reason!, SERVER_CANCEL);
  assert.deepEqual(t.calls.cancels, [{ requestId: 7, reason: last.error!.message }]);
  await waitFor(async () => (await t.server.cancellations.size!()) === 0, 5_000, "dropped");
  await echoWorks(url, "alice-token", sid, 8);
  assert.deepEqual(t.server.errors, []);
});

Deno.test("server cancel (JSON): HTTP 200 with a -32000 error; the tool's own signal aborts", async () => {
  await using t = await start(true);
  const { url } = t.server;
  const sid = await openSession(url, "alice-token");
  const pending = postRpc(url, "alice-token", sid, count(7));
  await started(t.tools, 7);
  const before = performance.now();
  assert.equal(await t.server.cancellations.cancel(sid, 7, "maintenance window  "), true);
  const response = await pending;
  assert.ok(performance.now() - before < 1_000, "promptly");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await response.json(), {
    jsonrpc: "2.0",
    error: { code: -32000, message: "Request cancelled by the server: maintenance window" },
    id: 7,
  });
  const stopped = await stoppedBy(t.tools, 7);
  assert.equal(stopped.reason, "Request cancelled by the server: maintenance window");
  assert.equal(t.calls.cancels.length, 1);
  await echoWorks(url, "alice-token", sid, 8);
  assert.ok(!t.tools.some((e) => e.requestId === 7 && e.kind === "completed"));
});

for (const jsonResponse of [false, true]) {
  const mode = jsonResponse ? "JSON" : "SSE";
  Deno.test(`server cancel (${mode}, SDK client): cancelAll rejects every call with McpError -32000; the session goes on`, async () => {
    await using t = await start(jsonResponse);
    await using alice = await connect(t.server.url, "alice-token", { listen: false });
    const calls = [1, 2].map(() =>
      alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 50 } })
    );
    for (const c of calls) c.catch(() => {});
    await waitFor(() => t.tools.filter((e) => e.kind === "started").length === 2, 5_000);
    const before = performance.now();
    assert.equal(await t.server.cancellations.cancelAll(alice.sessionId), 2);
    for (const c of calls) {
      await assert.rejects(c, (err: unknown) => {
        assert.equal((err as { code?: number }).code, -32000);
        assert.match(String(err), /Request cancelled by the server: session .* terminated/);
        return true;
      });
    }
    assert.ok(performance.now() - before < 1_000, "promptly");
    await waitFor(() => t.tools.filter((e) => e.kind === "stopped").length === 2, 5_000);
    for (const e of t.tools.filter((e) => e.kind === "stopped")) {
      assert.match(e.reason!, SERVER_CANCEL);
    }
    const next = await alice.client.callTool({ name: "echo", arguments: { text: "on" } });
    assert.equal((next as { content: { text: string }[] }).content[0].text, "on");
    assert.deepEqual(alice.errors, []);
  });
}

// ---------------------------------------------------------------------------------------------
// The client's own cancellation: forwarded as it is, no answer.
// ---------------------------------------------------------------------------------------------

Deno.test("client cancel (SSE): the tool stops, the stream carries no answer", async () => {
  await using t = await start(false);
  const { url } = t.server;
  const sid = await openSession(url, "alice-token");
  const response = await postRpc(url, "alice-token", sid, count(7));
  await started(t.tools, 7);
  const cancel = await postRpc(url, "alice-token", sid, {
    jsonrpc: "2.0",
    method: "notifications/cancelled",
    params: { requestId: 7, reason: "user hit stop" },
  });
  assert.equal(cancel.status, 202);
  await cancel.body?.cancel();
  const stopped = await stoppedBy(t.tools, 7);
  assert.equal(stopped.reason, "user hit stop"); // the client's own notification
  const { messages, done } = await readSse(response, 400);
  assert.equal(done, false, "the guard did not end the stream");
  assert.deepEqual(messages.filter((m) => m.id === 7), [], "no answer for a client's cancel");
  assert.deepEqual(t.calls.cancels, [{ requestId: 7, reason: "user hit stop" }]);
  await echoWorks(url, "alice-token", sid, 8);
});

Deno.test("client cancel (JSON): the tool stops, the POST gets no answer", async () => {
  await using t = await start(true);
  const { url } = t.server;
  const sid = await openSession(url, "alice-token");
  const abort = new AbortController();
  const pending = postRpc(url, "alice-token", sid, count(7), abort.signal);
  pending.catch(() => {});
  await started(t.tools, 7);
  const cancel = await postRpc(url, "alice-token", sid, {
    jsonrpc: "2.0",
    method: "notifications/cancelled",
    params: { requestId: 7 },
  });
  assert.equal(cancel.status, 202);
  await cancel.body?.cancel();
  await stoppedBy(t.tools, 7);
  const outcome = await Promise.race([
    pending.then(() => "answered"),
    new Promise((resolve) => setTimeout(() => resolve("pending"), 400)),
  ]);
  assert.equal(outcome, "pending");
  assert.equal(t.calls.cancels.length, 1);
  abort.abort();
  await waitFor(async () => (await t.server.cancellations.size!()) === 0, 5_000, "dropped");
});

Deno.test("client cancel (SDK client): callTool rejects locally, no stray answer reaches the client", async () => {
  await using t = await start(false);
  await using alice = await connect(t.server.url, "alice-token", { listen: false });
  const stop = new AbortController();
  const call = alice.client.callTool(
    { name: "count", arguments: { steps: 50, stepMs: 50 } },
    undefined,
    { signal: stop.signal },
  );
  call.catch(() => {});
  await waitFor(() => t.tools.some((e) => e.kind === "started"), 5_000);
  stop.abort("changed my mind");
  await assert.rejects(call);
  await waitFor(() => t.tools.some((e) => e.kind === "stopped"), 5_000);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(t.calls.cancels.length, 1);
  assert.doesNotMatch(t.calls.cancels[0].reason, SERVER_CANCEL);
  assert.deepEqual(alice.errors, [], "no answer for an unknown (cancelled) id");
});

// ---------------------------------------------------------------------------------------------
// Registry failure: unchanged (one notification, one 503).
// ---------------------------------------------------------------------------------------------

/** A registry whose registrations fail at once (a store outage); cancels reach the real one. */
function failingRegistrations(real: CancellationRegistry): GuardCancellations {
  return {
    track: (sessionId, requestId, controller) => {
      const tracked = real.track(sessionId, requestId, controller);
      const registered = Promise.reject(new RegistryUnavailableError("test: store went away"));
      registered.catch(() => {});
      return { ...tracked, registered };
    },
    deregister: (entryId) => real.deregister(entryId),
    cancel: (s, r, reason) => real.cancel(s, r, reason),
    cancelAll: (s, reason) => real.cancelAll(s, reason),
  };
}

for (const jsonResponse of [false, true]) {
  const mode = jsonResponse ? "JSON" : "SSE";
  Deno.test(`registry failure (${mode}): exactly one notification and one 503, even with a cancel in between`, async () => {
    await using real = new CancellationRegistry();
    await using t = await start(jsonResponse, failingRegistrations(real));
    const { url } = t.server;
    const sid = await openSession(url, "alice-token");
    const pending = postRpc(url, "alice-token", sid, count(7, 4, 50));
    if (jsonResponse) {
      // The JSON answer waits for the tool: an operator's cancel lands meanwhile, and is
      // neither told to the handler nor answered (the request is already condemned).
      await started(t.tools, 7);
      assert.equal(await real.cancel(sid, 7), true);
    }
    const response = await pending;
    assert.equal(response.status, 503);
    const body = await response.json();
    assert.equal(body.error.code, -32000);
    assert.match(body.error.message, /unavailable/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(t.calls.cancels, [{
      requestId: 7,
      reason: "the session registry is unavailable",
    }]);
    assert.ok(t.server.errors.some((e) => e.context === "registry"));
  });
}

// ---------------------------------------------------------------------------------------------
// Races: the first of the handler's answer and the cancellation wins, and only one answer goes.
// ---------------------------------------------------------------------------------------------

/** A hand-written MCP handler whose SSE answers the test writes (and closes) itself. */
function scriptedHandler() {
  const streams = new Map<number, ReadableStreamDefaultController<Uint8Array>>();
  const upstreamCancelled = new Set<number>();
  const notified: unknown[] = [];
  let json: ((id: number) => Response | Promise<Response>) | null = null;
  const handler: RequestHandler = (request: Request, context: GuardContext) => {
    const body = context.parsedBody as { id?: number; method?: string; params?: unknown };
    if (request.headers.get("mcp-session-id") === null) {
      return new Response(JSON.stringify({ jsonrpc: "2.0", id: body.id, result: {} }), {
        headers: { "content-type": "application/json", "mcp-session-id": "s-race" },
      });
    }
    if (body.id === undefined) {
      if (body.method === "notifications/cancelled") notified.push(body.params);
      return new Response(null, { status: 202 });
    }
    const id = body.id;
    if (json !== null) return json(id);
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => void streams.set(id, c),
      cancel: () => void upstreamCancelled.add(id),
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  };
  const send = (id: number, message: unknown) =>
    streams.get(id)!.enqueue(
      encoder.encode(`event: message\ndata: ${JSON.stringify(message)}\n\n`),
    );
  return {
    handler,
    streams,
    upstreamCancelled,
    notified,
    send,
    answerWithJson(f: (id: number) => Response | Promise<Response>) {
      json = f;
    },
  };
}

const ping = (id: number) => ({ jsonrpc: "2.0", id, method: "ping" });

Deno.test("race (SSE): an answer that already went by wins over a later cancel", async () => {
  const h = scriptedHandler();
  await using server = await startServer({ handler: h.handler });
  const sid = await openSession(server.url, "alice-token");
  assert.equal(sid, "s-race");
  const response = await postRpc(server.url, "alice-token", sid, ping(3));
  await waitFor(() => h.streams.has(3));
  h.send(3, { jsonrpc: "2.0", method: "notifications/progress", params: {} });
  h.send(3, { jsonrpc: "2.0", id: 3, result: { real: true } });
  const reader = response.body!.getReader();
  let seen = "";
  while (!seen.includes('"real"')) seen += decoder.decode((await reader.read()).value);
  // The stream is still open (its entry too): the cancel lands after the answer went by.
  assert.equal(await server.cancellations.cancel(sid, 3), true);
  await new Promise((resolve) => setTimeout(resolve, 50));
  h.send(3, { jsonrpc: "2.0", method: "notifications/message", params: { data: "late" } });
  h.streams.get(3)!.close();
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    seen += decoder.decode(chunk.value);
  }
  assert.doesNotMatch(seen, /-32000|cancelled by the server/);
  assert.match(seen, /"late"/, "the rest of the stream passed through");
  assert.deepEqual(h.notified, [], "the handler was not told");
  assert.equal(h.upstreamCancelled.size, 0);
});

Deno.test("race (SSE): a cancel before the answer ends the stream and cancels the handler's body", async () => {
  const h = scriptedHandler();
  await using server = await startServer({ handler: h.handler });
  const sid = await openSession(server.url, "alice-token");
  const response = await postRpc(server.url, "alice-token", sid, ping(4));
  await waitFor(() => h.streams.has(4));
  h.send(4, { jsonrpc: "2.0", method: "notifications/progress", params: { progress: 1 } });
  // Half an event: never reaches the client once the stream is cut.
  h.streams.get(4)!.enqueue(encoder.encode('event: message\ndata: {"jsonrpc":"2.0","id":4,'));
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(await server.cancellations.cancel(sid, 4, "too slow"), true);
  const { messages, done } = await readSse(response, 2_000);
  assert.ok(done);
  assert.deepEqual(messages, [
    { jsonrpc: "2.0", method: "notifications/progress", params: { progress: 1 } },
    {
      jsonrpc: "2.0",
      error: { code: -32000, message: "Request cancelled by the server: too slow" },
      id: 4,
    },
  ]);
  await waitFor(() => h.upstreamCancelled.has(4), 2_000, "the handler's body to be cancelled");
  assert.deepEqual(h.notified, [{
    requestId: 4,
    reason: "Request cancelled by the server: too slow",
  }]);
});

Deno.test("race (JSON): an answer produced before the cancel lands wins; a late one is discarded", async () => {
  const h = scriptedHandler();
  await using server = await startServer({ handler: h.handler });
  const sid = await openSession(server.url, "alice-token");
  // The handler answers, and the cancel is on its way at the same moment.
  h.answerWithJson((id) => {
    server.cancellations.cancel(sid, id).catch(() => {});
    return Response.json({ jsonrpc: "2.0", id, result: { real: id } });
  });
  for (let id = 10; id < 20; id++) {
    const response = await postRpc(server.url, "alice-token", sid, ping(id));
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { jsonrpc: "2.0", id, result: { real: id } });
  }
  assert.deepEqual(h.notified, []);
  // The cancel lands first; the handler's answer comes later and goes nowhere.
  let late: (r: Response) => void = () => {};
  h.answerWithJson((id) =>
    new Promise<Response>((resolve) => {
      late = resolve;
      setTimeout(() => server.cancellations.cancel(sid, id), 20);
    })
  );
  const response = await postRpc(server.url, "alice-token", sid, ping(30));
  assert.deepEqual(await response.json(), {
    jsonrpc: "2.0",
    error: {
      code: -32000,
      message: "Request cancelled by the server: request 30 of session s-race cancelled",
    },
    id: 30,
  });
  let lateBodyCancelled = false;
  late(
    new Response(
      new ReadableStream({
        cancel: () => void (lateBodyCancelled = true),
      }),
      { headers: { "content-type": "application/json" } },
    ),
  );
  await waitFor(() => lateBodyCancelled, 2_000, "the late answer to be discarded");
  assert.equal(h.notified.length, 1);
  assert.deepEqual(server.errors, []);
});

for (const jsonResponse of [false, true]) {
  const mode = jsonResponse ? "JSON" : "SSE";
  Deno.test(`race (${mode}, SDK): a tool finishing as it is cancelled gets exactly one answer`, async () => {
    await using t = await start(jsonResponse);
    await using alice = await connect(t.server.url, "alice-token", { listen: false });
    const outcomes = { result: 0, cancelled: 0 };
    for (let i = 0; i < 16; i++) {
      const before = t.tools.length;
      const call = alice.client.callTool({ name: "count", arguments: { steps: 1, stepMs: 25 } });
      call.catch(() => {});
      await waitFor(() => t.tools.slice(before).some((e) => e.kind === "started"), 5_000);
      const { requestId } = t.tools.slice(before).find((e) => e.kind === "started")!;
      // Around the moment the tool finishes.
      await new Promise((resolve) => setTimeout(resolve, (i % 8) * 4));
      await t.server.cancellations.cancel(alice.sessionId, requestId);
      try {
        const reply = await call;
        assert.equal((reply as { content: { text: string }[] }).content[0].text, "counted to 1");
        outcomes.result++;
      } catch (err) {
        assert.equal((err as { code?: number }).code, -32000, String(err));
        outcomes.cancelled++;
      }
      const next = await alice.client.callTool({ name: "echo", arguments: { text: `${i}` } });
      assert.equal((next as { content: { text: string }[] }).content[0].text, `${i}`);
    }
    assert.equal(outcomes.result + outcomes.cancelled, 16);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(alice.errors, [], "never a second answer for one request");
    assert.deepEqual(t.server.errors, []);
    await waitFor(async () => (await t.server.cancellations.size!()) === 0, 5_000, "dropped");
  });
}

// ---------------------------------------------------------------------------------------------
// Units: the reason, and the SSE watcher on its own.
// ---------------------------------------------------------------------------------------------

Deno.test("cancelMessage / isClientCancel: the reason, trimmed and bounded; never throws", () => {
  assert.equal(
    cancelMessage(new RequestCancelledError("s", 1)),
    "Request cancelled by the server: request 1 of session s cancelled",
  );
  assert.equal(cancelMessage("  why \n"), "Request cancelled by the server: why");
  for (const odd of [undefined, null, 42, {}, new Error("x"), "   "]) {
    assert.equal(cancelMessage(odd), "Request cancelled by the server: request cancelled");
  }
  const long = cancelMessage("é".repeat(500));
  assert.ok(long.length < 250 && long.endsWith("…"));
  assert.equal(isClientCancel(new RequestCancelledError("s", 1, "x", { origin: "client" })), true);
  assert.equal(isClientCancel(new RequestCancelledError("s", 1)), false);
  assert.equal(isClientCancel("client"), false);
  assert.equal(new RequestCancelledError("s", null).origin, "server");
});

/** An SSE response whose chunks the test pushes. */
function pushed(): {
  response: Response;
  push(text: string | Uint8Array): void;
  close(): void;
  fail(err: unknown): void;
  cancelled: () => boolean;
} {
  let c!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start: (controller) => void (c = controller),
    cancel: () => void (cancelled = true),
  });
  return {
    response: new Response(body, { headers: { "content-type": "text/event-stream" } }),
    push: (text) => c.enqueue(typeof text === "string" ? encoder.encode(text) : text),
    close: () => c.close(),
    fail: (err) => c.error(err),
    cancelled: () => cancelled,
  };
}

Deno.test("watchAnswer: passes events byte for byte, however they are cut; sees the answer once", async () => {
  const source = pushed();
  let answers = 0;
  let ends = 0;
  const watch = watchAnswer(source.response, 5, {
    onAnswer: () => answers++,
    onEnd: () => ends++,
  });
  const bytes = encoder.encode(
    '\uFEFFevent: message\r\ndata: {"jsonrpc":"2.0","method":"x"}\r\n\r\n' +
      ": keepalive\r\r" +
      'data: {"jsonrpc":"2.0","id":"5","result":{}}\n\n' + // "5" is not 5
      'data: {"jsonrpc":"2.0","id":5,\ndata: "result":{}}\n\n' +
      "data: after\n\n",
  );
  // One byte at a time: every cut, including inside the BOM and a CRLF.
  for (let i = 0; i < bytes.length; i++) source.push(bytes.subarray(i, i + 1));
  source.close();
  const out = new Uint8Array(await new Response(watch.response.body).arrayBuffer());
  assert.deepEqual(out, bytes);
  assert.equal(answers, 1);
  assert.equal(ends, 1);
  assert.equal(watch.interrupt(cancelledEvent(5, "x")), false, "over: nothing to interrupt");
});

Deno.test("watchAnswer: an interrupt drops the unfinished event and ends with the given one", async () => {
  const source = pushed();
  let ends = 0;
  const watch = watchAnswer(source.response, 1, { onAnswer: () => {}, onEnd: () => ends++ });
  const reader = watch.response.body!.getReader();
  source.push("data: one\n\ndata: par");
  assert.equal(decoder.decode((await reader.read()).value), "data: one\n\n");
  const pending = reader.read(); // waiting on the handler's body
  assert.equal(watch.interrupt(encoder.encode("data: bye\n\n")), true);
  assert.equal(decoder.decode((await pending).value), "data: bye\n\n");
  assert.equal((await reader.read()).done, true);
  assert.equal(ends, 1);
  assert.equal(source.cancelled(), true, "the handler's body is cancelled");
  assert.equal(watch.interrupt(encoder.encode("data: again\n\n")), false);
  assert.equal(ends, 1);
});

Deno.test("watchAnswer: after the answer, or past the size bound, it can no longer interrupt", async () => {
  const answered = pushed();
  const w1 = watchAnswer(answered.response, 1, { onAnswer: () => {}, onEnd: () => {} });
  const r1 = w1.response.body!.getReader();
  answered.push('data: {"id":1,"error":{"code":1,"message":"m"}}\n\ndata: tail-with-no-end');
  let text = "";
  while (!text.includes("tail-with-no-end")) text += decoder.decode((await r1.read()).value);
  assert.equal(w1.interrupt(encoder.encode("data: x\n\n")), false);
  await r1.cancel();
  assert.equal(answered.cancelled(), true);

  const big = pushed();
  const w2 = watchAnswer(big.response, 1, { onAnswer: () => {}, onEnd: () => {} }, 16);
  const r2 = w2.response.body!.getReader();
  big.push("data: 0123456789abcdefghij");
  assert.equal(decoder.decode((await r2.read()).value), "data: 0123456789abcdefghij");
  assert.equal(w2.interrupt(encoder.encode("data: x\n\n")), false, "mid-event: not cut");
  big.push("\n\n");
  big.close();
  assert.equal(decoder.decode((await r2.read()).value), "\n\n");
  assert.equal((await r2.read()).done, true);
});

Deno.test("watchAnswer: a failing or bodyless source ends it once; bad data never throws", async () => {
  let ends = 0;
  const bodyless = watchAnswer(new Response(null), 1, { onAnswer: () => {}, onEnd: () => ends++ });
  assert.equal(ends, 1);
  assert.equal(bodyless.interrupt(encoder.encode("x")), false);

  const failing = pushed();
  const w = watchAnswer(failing.response, 1, { onAnswer: () => {}, onEnd: () => ends++ });
  const reader = w.response.body!.getReader();
  failing.push(new Uint8Array([0xff, 0xfe, 0x0a, 0x0a])); // not UTF-8, one event
  failing.push('data: {not json\n\ndata: [1,2,{"id":1}]\n\n');
  await reader.read();
  failing.fail(new Error("boom"));
  await assert.rejects(async () => {
    for (;;) if ((await reader.read()).done) break;
  }, /boom/);
  assert.equal(ends, 2);
});

Deno.test("signalFor: asked before or after a server cancel, the tracked request's signal carries its reason", async () => {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const seen: { early: AbortSignal; late?: AbortSignal; heard: unknown[] }[] = [];
  let session = 0;
  const told: AbortSignal[] = [];
  const guarded = guardSessions(async (request, ctx) => {
    const body = ctx!.parsedBody as { id?: number; method: string };
    if (body.method === "initialize") {
      return Response.json({ jsonrpc: "2.0", id: body.id, result: {} }, {
        headers: { "mcp-session-id": `s-${++session}` },
      });
    }
    if (body.id === undefined) {
      // The guard tells the handler of a server cancel at once: the request is still in flight.
      const { requestId } = (body as { params?: { requestId?: number } }).params ?? {};
      if (body.method === "notifications/cancelled" && typeof requestId === "number") {
        const sessionId = request.headers.get("mcp-session-id")!;
        told[requestId] = guarded.signalFor({ sessionId, requestId, signal: undefined });
      }
      return new Response(null, { status: 202 });
    }
    const sessionId = request.headers.get("mcp-session-id")!;
    const ref = { sessionId, requestId: body.id, signal: new AbortController().signal };
    // Asked for only by the second request: the first's signal is made after its cancel.
    const entry: (typeof seen)[number] = {
      early: body.id === 2 ? guarded.signalFor(ref) : AbortSignal.abort(),
      heard: [] as unknown[],
    };
    entry.early.addEventListener("abort", () => entry.heard.push(entry.early.reason));
    seen[body.id] = entry;
    await held;
    entry.late = guarded.signalFor(ref);
    return Response.json({ jsonrpc: "2.0", id: body.id, result: {} });
  }, { owners, cancellations, principal: () => "alice", forwardBody: "parsed" });
  try {
    const post = (body: unknown, sid?: string) => guarded(rpcRequest(body, sid));
    const opened = await post({ jsonrpc: "2.0", id: 0, method: "initialize", params: {} });
    const sid = opened.headers.get("mcp-session-id")!;
    const answers = [1, 2].map((id) =>
      post({ jsonrpc: "2.0", id, method: "tools/call", params: {} }, sid)
    );
    await waitFor(() => seen[1] !== undefined && seen[2] !== undefined);
    const why = new RequestCancelledError(sid, 1, "stop one");
    assert.equal(await cancellations.cancel(sid, 1, why), true);
    const whyTwo = new RequestCancelledError(sid, 2, "stop two");
    assert.equal(await cancellations.cancel(sid, 2, whyTwo), true);
    // The second request's signal, made before its cancel, heard it.
    assert.deepEqual(seen[2].heard, [whyTwo]);
    release();
    for (const answer of answers) {
      const json = await (await answer).json();
      assert.equal(json.error?.code, -32000);
    }
    // Asked for after the cancel, while the request is still in flight: aborted, with the
    // reason (the first request's made then, the second's the one made before).
    assert.equal(told[1].aborted, true);
    assert.equal(told[1].reason, why);
    assert.equal(told[2].aborted, true);
    assert.equal(told[2].reason, whyTwo);
  } finally {
    await owners.close();
    await cancellations.close();
  }
});
