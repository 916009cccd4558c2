/**
 * `@mcp-guard/session/otel` against the official SDK's in-memory readers and
 * exporters: the instruments and their attributes, the request span's
 * decision and its registry child spans, the refusal records (log records
 * and JSON lines) with hashed ids only, registry failures, restarts and
 * fail-closed answers, cancellations by origin, handles, and a telemetry
 * with nothing to record changing nothing. The same through Deno's own
 * exporter and a real OTLP receiver: `tests/otel_collector_test.ts`.
 */

import assert from "node:assert/strict";
import { context, type ContextManager, type Span } from "@opentelemetry/api";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import {
  InMemoryLogRecordExporter,
  LoggerProvider,
  SimpleLogRecordProcessor,
} from "@opentelemetry/sdk-logs";
import {
  CancellationRegistry,
  fingerprint,
  type GuardContext,
  type GuardDecision,
  guardSessions,
  HandleRegistry,
  kvStore,
  SessionOwnerRegistry,
} from "../mod.ts";
import { auditId, guardTelemetry } from "../otel.ts";
import { mcpGuard, type McpGuardEnv } from "../hono.ts";
import { Hono } from "hono";
import { clients } from "../src/registry/registry_options.ts";

// Deno's context manager works without OTEL_DENO: spans become active across awaits.
context.setGlobalContextManager(Deno.telemetry.contextManager as unknown as ContextManager);

class ManualReader extends MetricReader {
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

interface Point {
  attributes: Record<string, unknown>;
  value: number | { count: number; sum?: number; min?: number; max?: number };
}

/** An SDK with in-memory readers, and the telemetry's view of it. */
function sdk() {
  const reader = new ManualReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const spans = new InMemorySpanExporter();
  const tracerProvider = new TracerProvider({
    spanProcessors: [new SimpleSpanProcessor({ exporter: spans })],
  });
  const logRecords = new InMemoryLogRecordExporter();
  const loggerProvider = new LoggerProvider({
    processors: [new SimpleLogRecordProcessor({ exporter: logRecords })],
  });
  const tracer = tracerProvider.getTracer("test-server");
  return {
    meterProvider,
    tracerProvider,
    loggerProvider,
    spans,
    logRecords,
    /** Every data point of instrument `name`. */
    async points(name: string): Promise<Point[]> {
      return (await this.collect())(name);
    },
    /** One collection: the data points by instrument name. */
    async collect(): Promise<(name: string) => Point[]> {
      const { resourceMetrics } = await reader.collect();
      return (name) =>
        resourceMetrics.scopeMetrics.flatMap((scope) =>
          scope.metrics.filter((m) => m.descriptor.name === name).flatMap((m) =>
            m.dataPoints as Point[]
          )
        );
    },
    /** `request` in a server span, as `Deno.serve` opens one. */
    serve(guard: (r: Request) => Promise<Response>, request: Request): Promise<Response> {
      return tracer.startActiveSpan(`${request.method}`, async (span: Span) => {
        try {
          return await guard(request);
        } finally {
          span.end();
        }
      });
    },
    async finished() {
      await tracerProvider.forceFlush();
      await loggerProvider.forceFlush();
      return { spans: spans.getFinishedSpans(), logs: logRecords.getFinishedLogRecords() };
    },
  };
}

const sum = (points: Point[]) => points.reduce((n, p) => n + (p.value as number), 0);
const matching = (points: Point[], attrs: Record<string, unknown>) =>
  points.filter((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v));

/** A stand-in MCP handler: `initialize` issues a session id; `slow` takes 30 ms. */
function mcpHandler() {
  let next = 0;
  return async (request: Request, ctx: GuardContext): Promise<Response> => {
    if (request.method !== "POST") return new Response(null, { status: 200 });
    const body = ctx.parsedBody as { id?: number; method: string; params?: { name?: string } };
    if (body.method === "initialize") {
      return Response.json({ jsonrpc: "2.0", id: body.id, result: {} }, {
        headers: { "mcp-session-id": `session-${next++}-${crypto.randomUUID()}` },
      });
    }
    if (body.id === undefined) return new Response(null, { status: 202 });
    if (body.params?.name === "slow") await new Promise((r) => setTimeout(r, 30));
    return Response.json({ jsonrpc: "2.0", id: body.id, result: {} });
  };
}

const TOKENS: Record<string, string> = { "alice-token": "alice", "mallory-token": "mallory" };
const principal = (request: Request) =>
  TOKENS[request.headers.get("authorization")?.replace(/^Bearer /, "") ?? ""] ?? null;

function post(token: string | null, body: unknown, sid?: string): Request {
  return new Request("http://localhost/mcp", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(sid === undefined ? {} : { "mcp-session-id": sid }),
    },
    body: JSON.stringify(body),
  });
}

function other(method: "GET" | "DELETE", token: string, sid: string): Request {
  return new Request("http://localhost/mcp", {
    method,
    headers: { authorization: `Bearer ${token}`, "mcp-session-id": sid },
  });
}

const SECRET = "a-guard-secret";

Deno.test("otel: decisions, the guard's time, spans and refusal records, ids hashed", async () => {
  const otel = sdk();
  const lines: string[] = [];
  const telemetry = guardTelemetry({
    meterProvider: otel.meterProvider,
    tracerProvider: otel.tracerProvider,
    loggerProvider: otel.loggerProvider,
    auditLines: (line) => lines.push(line),
  });
  assert.equal(telemetry.enabled, true);
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  const guard = guardSessions(
    mcpHandler(),
    telemetry.instrument({
      owners,
      cancellations,
      principal,
      secret: SECRET,
      forwardBody: "parsed" as const,
      onDecision: (d: GuardDecision) => decisions.push(d), // the user's hook still runs
    }),
  );
  const serve = (request: Request) => otel.serve(guard, request);

  const init = await serve(post("alice-token", { jsonrpc: "2.0", id: 0, method: "initialize" }));
  const sid = init.headers.get("mcp-session-id")!;
  const call = (name: string, id = 1) => ({
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name, arguments: {} },
  });
  // Warm (the cancellation registry's worker starts on the first tracked request), then slow.
  assert.equal((await serve(post("alice-token", call("echo"), sid))).status, 200);
  const slowCall = { jsonrpc: "2.0", id: 6, method: "prompts/get", params: { name: "slow" } };
  assert.equal((await serve(post("alice-token", slowCall, sid))).status, 200);
  assert.equal(
    (await serve(post("alice-token", { jsonrpc: "2.0", id: 2, method: "x-vendor/anything" }, sid)))
      .status,
    200,
  );
  assert.equal((await serve(post("mallory-token", call("recall", 3), sid))).status, 403);
  assert.equal((await serve(other("GET", "mallory-token", sid))).status, 403);
  assert.equal((await serve(other("DELETE", "mallory-token", sid))).status, 403);
  assert.equal((await serve(post(null, call("echo", 4), sid))).status, 401);
  assert.equal(
    (await serve(post("mallory-token", call("echo", 5), "no-such-session"))).status,
    404,
  );
  assert.equal(decisions.length, 10);

  // Decisions: by outcome, reason, HTTP and MCP method; a refusal with its status and error.type.
  const counted = await otel.points("mcp_guard.decisions");
  assert.equal(sum(counted), 10);
  assert.deepEqual(
    matching(counted, { "mcp_guard.reason": "not-owner", "http.request.method": "POST" })[0]
      .attributes,
    {
      "mcp_guard.outcome": "refuse",
      "mcp_guard.reason": "not-owner",
      "http.request.method": "POST",
      "mcp.method.name": "tools/call",
      "http.response.status_code": 403,
      "error.type": "not-owner",
    },
  );
  assert.equal(sum(matching(counted, { "mcp_guard.reason": "not-owner" })), 3);
  assert.equal(sum(matching(counted, { "mcp_guard.reason": "bound" })), 1);
  assert.equal(sum(matching(counted, { "http.response.status_code": 401 })), 1);
  // A method nobody lists is one label, whatever a client sends.
  assert.equal(sum(matching(counted, { "mcp.method.name": "_OTHER" })), 1);
  for (const point of counted) {
    for (const value of Object.values(point.attributes)) {
      assert.ok(!String(value).includes(sid), "no session id as a label");
    }
  }

  // The guard's own time leaves out the handler's (30 ms for "slow").
  const times = await otel.points("mcp_guard.request.duration");
  const slow = matching(times, { "mcp.method.name": "prompts/get" });
  assert.equal(slow.length, 1);
  const slowValue = slow[0].value as { count: number; sum: number };
  assert.equal(slowValue.count, 1);
  assert.ok(slowValue.sum < 0.02, `guard time ${slowValue.sum} s includes the handler's`);
  assert.equal(
    times.reduce((n, p) => n + (p.value as { count: number }).count, 0),
    9,
    "one per request (initialize's allowed + bound is one request)",
  );

  // Registry calls, by registry, store and operation; live bindings; worker health.
  const registryCalls = await otel.points("mcp_guard.registry.operation.duration");
  assert.ok(
    matching(registryCalls, {
      "mcp_guard.registry": "session",
      "mcp_guard.store": "memory",
      "mcp_guard.operation": "bind",
    }).length === 1,
    JSON.stringify(registryCalls.map((p) => p.attributes)),
  );
  const bindings = await otel.points("mcp_guard.bindings");
  assert.equal(matching(bindings, { "mcp_guard.registry": "session" })[0].value, 1);
  const depth = await otel.points("mcp_guard.registry.queue.depth");
  assert.ok(matching(depth, { "mcp_guard.registry": "session" }).length === 1);
  assert.equal(sum(await otel.points("mcp_guard.registry.restarts")), 0);

  // Spans: the request span carries the decision; registry calls are its children.
  const { spans, logs } = await otel.finished();
  const refused = spans.filter((s) => s.attributes["mcp_guard.reason"] === "not-owner");
  assert.equal(refused.length, 3);
  const postRefused = refused.find((s) => s.name === "POST")!;
  assert.equal(postRefused.attributes["error.type"], "not-owner");
  assert.equal(postRefused.attributes["mcp.method.name"], "tools/call");
  assert.equal(postRefused.attributes["mcp_guard.session"], auditId(sid, { secret: SECRET }));
  const initSpan = spans.find((s) => s.attributes["mcp_guard.reason"] === "bound")!;
  const bind = spans.find((s) => s.name === "mcp_guard.registry bind")!;
  assert.equal(bind.parentSpanContext?.spanId, initSpan.spanContext().spanId);
  assert.equal(bind.attributes["mcp_guard.store"], "memory");

  // Refusal records: one per refusal, as log records and JSON lines.
  const mallory = await fingerprint("mallory", { secret: SECRET });
  const records = logs.filter((r) => r.eventName === "mcp_guard.refusal");
  assert.equal(records.length, 5);
  const notOwner = records.filter((r) => r.attributes["mcp_guard.reason"] === "not-owner");
  assert.equal(notOwner.length, 3);
  for (const record of notOwner) {
    assert.equal(record.attributes["mcp_guard.principal"], mallory);
    assert.equal(record.attributes["mcp_guard.session"], auditId(sid, { secret: SECRET }));
    assert.equal(record.severityText, "WARN");
  }
  assert.equal(lines.length, 5);
  const jsonNotOwner = lines.map((l) => JSON.parse(l)).filter((r) => r.reason === "not-owner");
  assert.deepEqual(jsonNotOwner.map((r) => r.method).sort(), ["DELETE", "GET", "POST"]);
  const postLine = jsonNotOwner.find((r) => r.method === "POST");
  assert.equal(postLine.principal, mallory);
  assert.equal(postLine.rpcMethod, "tools/call");
  assert.equal(postLine.status, 403);
  assert.equal(postLine.traceId, postRefused.spanContext().traceId);
  const anonymous = lines.map((l) => JSON.parse(l)).find((r) => r.reason === "anonymous");
  assert.equal(anonymous.principal, null);

  // Nothing exported names the raw session id, a token or a principal.
  const exported = JSON.stringify([
    spans.map((s) => s.attributes),
    logs.map((r) => [r.body, r.attributes]),
    lines,
  ]);
  for (const secret of [sid, "alice-token", "mallory-token", '"mallory"', '"alice"']) {
    assert.ok(!exported.includes(secret), `exported ${secret}`);
  }
  await telemetry.close();
});

Deno.test("otel: a refused task is hashed into its record", async () => {
  const otel = sdk();
  const lines: string[] = [];
  const telemetry = guardTelemetry({
    meterProvider: otel.meterProvider,
    auditLines: (l) => lines.push(l),
  });
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  await using tasks = new SessionOwnerRegistry();
  const guard = guardSessions(
    mcpHandler(),
    telemetry.instrument({
      owners,
      cancellations,
      tasks,
      principal,
      forwardBody: "parsed" as const,
    }),
  );
  await tasks.bind("task-of-alice", await fingerprint("alice"));
  const init = await guard(post("mallory-token", { jsonrpc: "2.0", id: 0, method: "initialize" }));
  const sid = init.headers.get("mcp-session-id")!;
  const get = { jsonrpc: "2.0", id: 1, method: "tasks/get", params: { taskId: "task-of-alice" } };
  const refused = await guard(post("mallory-token", get, sid));
  assert.equal(refused.status, 403);
  const record = JSON.parse(lines[0]);
  assert.equal(record.reason, "not-task-owner");
  assert.equal(record.task, auditId("task-of-alice"));
  assert.equal(record.session, auditId(sid));
  assert.equal(record.principal, await fingerprint("mallory"));
  assert.ok(!lines[0].includes("task-of-alice"));

  // A 2026-07-28 `tasks/result` (the server refuses it whatever the task) naming a task bound to
  // nobody goes on with a task id nobody was issued: allowed, and audited with the id it named.
  const modern = {
    jsonrpc: "2.0",
    id: 2,
    method: "tasks/result",
    params: {
      taskId: "task-nobody-owns",
      _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" },
    },
  };
  await (await guard(post("mallory-token", modern, sid))).body?.cancel();
  assert.equal(lines.length, 2, "the substitution is in the audit trail");
  const replaced = JSON.parse(lines[1]);
  assert.equal(replaced.reason, "unknown-task");
  assert.equal(replaced.status, null, "let through, not refused");
  assert.equal(replaced.task, auditId("task-nobody-owns"), "the task it named, not the substitute");
  assert.equal(replaced.principal, await fingerprint("mallory"));
  const bindings = await otel.points("mcp_guard.bindings");
  assert.equal(matching(bindings, { "mcp_guard.registry": "task" })[0].value, 1);
  await telemetry.close();
});

Deno.test("otel: registry failures, a worker restart and the fail-closed 503", async () => {
  const otel = sdk();
  const telemetry = guardTelemetry({ meterProvider: otel.meterProvider });
  await using owners = new SessionOwnerRegistry({ callTimeoutMs: 200, knownOwners: false });
  await using cancellations = new CancellationRegistry();
  const errors: string[] = [];
  const guard = guardSessions(
    mcpHandler(),
    telemetry.instrument({
      owners,
      cancellations,
      principal,
      forwardBody: "parsed" as const,
      onError: (_e: unknown, where: string) => errors.push(where),
    }),
  );
  const init = await guard(post("alice-token", { jsonrpc: "2.0", id: 0, method: "initialize" }));
  const sid = init.headers.get("mcp-session-id")!;
  clients.get(owners)!.worker!.terminate(); // hangs: calls time out after 200 ms
  const ping = { jsonrpc: "2.0", id: 1, method: "ping" };
  const failed = await guard(post("alice-token", ping, sid));
  assert.equal(failed.status, 503);
  assert.deepEqual(errors, ["registry"]);
  // The next call starts a fresh worker (the binding was lost with the old one).
  assert.equal((await guard(post("alice-token", ping, sid))).status, 404);

  const decisions = await otel.points("mcp_guard.decisions");
  assert.equal(
    sum(matching(decisions, {
      "mcp_guard.reason": "registry-unavailable",
      "http.response.status_code": 503,
    })),
    1,
  );
  const failures = await otel.points("mcp_guard.registry.failures");
  assert.equal(
    sum(matching(failures, {
      "mcp_guard.registry": "session",
      "mcp_guard.operation": "ownerOf",
      "error.type": "RegistryUnavailableError",
    })),
    1,
  );
  const restarts = await otel.points("mcp_guard.registry.restarts");
  assert.equal(matching(restarts, { "mcp_guard.registry": "session" })[0].value, 1);
  const reported = await otel.points("mcp_guard.errors");
  assert.equal(
    sum(matching(reported, {
      "mcp_guard.error.context": "registry",
      "error.type": "RegistryUnavailableError",
    })),
    1,
  );
  await telemetry.close();
});

Deno.test("otel: a worker that stops answering shows in its queue depth and oldest call", async () => {
  const otel = sdk();
  const telemetry = guardTelemetry({ meterProvider: otel.meterProvider });
  await using owners = new SessionOwnerRegistry({ callTimeoutMs: 500 });
  await using cancellations = new CancellationRegistry();
  guardSessions(mcpHandler(), telemetry.instrument({ owners, cancellations, principal }));
  await owners.bind("s-1", "fp-alice");
  clients.get(owners)!.worker!.terminate();
  const stuck = [owners.ownerOf("s-1"), owners.ownerOf("s-2")];
  for (const call of stuck) call.catch(() => {});
  await new Promise((r) => setTimeout(r, 50));
  const collected = await otel.collect();
  const depth = matching(collected("mcp_guard.registry.queue.depth"), {
    "mcp_guard.registry": "session",
  });
  assert.ok((depth[0].value as number) >= 2, JSON.stringify(depth)); // (and the collection's `stats`)
  const oldest = matching(collected("mcp_guard.registry.queue.oldest_age"), {
    "mcp_guard.registry": "session",
  });
  assert.ok((oldest[0].value as number) >= 0.04, JSON.stringify(oldest));
  await Promise.allSettled(stuck);
  await telemetry.close();
});

Deno.test("otel: cancellations by origin: client, server, other process", async () => {
  const otel = sdk();
  const telemetry = guardTelemetry({ meterProvider: otel.meterProvider });
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-otel-kv-" });
  try {
    const store = kvStore({ path: `${dir}/kv`, prefix: "otel", pollIntervalMs: 20 });
    await using owners = new SessionOwnerRegistry();
    await using cancellations = new CancellationRegistry({ store });
    await using elsewhere = new CancellationRegistry({ store }); // another process, in effect
    let started!: () => void;
    const running = new Promise<void>((resolve) => started = resolve);
    const inner = mcpHandler();
    const guard = guardSessions(
      (request: Request, ctx: GuardContext) => {
        const body = ctx.parsedBody as { method?: string; params?: { name?: string } };
        if (body?.params?.name !== "wait") return inner(request, ctx);
        started();
        return new Promise<Response>(() => {}); // answered by the guard when cancelled
      },
      telemetry.instrument({ owners, cancellations, principal, forwardBody: "parsed" as const }),
    );
    const init = await guard(post("alice-token", { jsonrpc: "2.0", id: 0, method: "initialize" }));
    const sid = init.headers.get("mcp-session-id")!;
    const wait = (id: number) => ({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "wait", arguments: {} },
    });

    // The client's own notifications/cancelled.
    const first = guard(post("alice-token", wait(1), sid));
    first.catch(() => {});
    await running;
    const cancel = {
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: 1, reason: "changed my mind" },
    };
    assert.equal((await guard(post("alice-token", cancel, sid))).status, 202);
    // The server's (an operator), then another process's.
    const second = guard(post("alice-token", wait(2), sid));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await cancellations.cancel(sid, 2), true);
    await second;
    const third = guard(post("alice-token", wait(3), sid));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await elsewhere.cancel(sid, 3, "stop"), true);
    await third;

    const counted = await otel.points("mcp_guard.cancellations");
    assert.deepEqual(
      Object.fromEntries(counted.map((p) => [p.attributes["mcp_guard.cancel.origin"], p.value])),
      { client: 1, server: 1, "other-process": 1 },
    );
    const registryCalls = await otel.points("mcp_guard.registry.operation.duration");
    assert.ok(
      matching(registryCalls, { "mcp_guard.registry": "cancellation", "mcp_guard.store": "kv" })
        .length > 0,
    );
  } finally {
    await telemetry.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("otel: a handle refused to another principal is in the audit trail", async () => {
  const otel = sdk();
  const lines: string[] = [];
  const telemetry = guardTelemetry({
    meterProvider: otel.meterProvider,
    auditLines: (l) => lines.push(l),
    secret: SECRET,
  });
  await using handles = new HandleRegistry();
  telemetry.observeHandles(handles);
  const alice = await fingerprint("alice", { secret: SECRET });
  const mallory = await fingerprint("mallory", { secret: SECRET });
  const cart = await handles.mint(alice, { prefix: "cart_" });
  assert.equal(await handles.authorize(cart, alice), true);
  assert.equal(await handles.authorize(cart, mallory), false);
  assert.equal(await handles.authorize("cart_nobody-minted-this", mallory), false);
  assert.equal(lines.length, 2);
  const [foreign, unknown] = lines.map((l) => JSON.parse(l));
  assert.equal(foreign.reason, "not-handle-owner");
  assert.equal(foreign.handle, auditId(cart, { secret: SECRET }));
  assert.equal(foreign.principal, mallory);
  assert.equal(foreign.status, null);
  assert.equal(unknown.reason, "unknown-handle");
  assert.ok(!lines.join("\n").includes(cart));
  const refused = await otel.points("mcp_guard.handles.refused");
  assert.equal(sum(refused), 2);
  const bindings = await otel.points("mcp_guard.bindings");
  assert.equal(matching(bindings, { "mcp_guard.registry": "handle" })[0].value, 1);
  await telemetry.close();
});

Deno.test("otel: audit lines to a byte stream", async () => {
  const chunks: Uint8Array[] = [];
  const stream = new WritableStream<Uint8Array>({ write: (chunk) => void chunks.push(chunk) });
  const telemetry = guardTelemetry({ auditLines: stream });
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const guard = guardSessions(
    mcpHandler(),
    telemetry.instrument({ owners, cancellations, principal }),
  );
  assert.equal((await guard(other("GET", "mallory-token", "nobody-s-session"))).status, 404);
  await telemetry.close(); // waits for the line, releases the stream
  const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
  assert.ok(text.endsWith("\n"));
  assert.equal(JSON.parse(text).reason, "unknown-session");
  await stream.getWriter().close(); // released, not closed
});

Deno.test("otel: Hono's mcpGuard takes instrumented options too", async () => {
  const lines: string[] = [];
  const telemetry = guardTelemetry({ auditLines: (l) => lines.push(l) });
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const app = new Hono<McpGuardEnv>();
  app.use(
    "/mcp",
    mcpGuard(telemetry.instrument({
      owners,
      cancellations,
      principal: (c: { req: { header(name: string): string | undefined } }) =>
        principal(
          new Request("http://x/", {
            headers: { authorization: c.req.header("authorization") ?? "" },
          }),
        ),
    })),
  );
  app.all("/mcp", (c) => c.text("ok"));
  await owners.bind("alice-session", await fingerprint("alice"));
  const refused = await app.request("/mcp", {
    method: "DELETE",
    headers: { authorization: "Bearer mallory-token", "mcp-session-id": "alice-session" },
  });
  assert.equal(refused.status, 403);
  assert.equal(JSON.parse(lines[0]).session, auditId("alice-session"));
  await telemetry.close();
});

Deno.test("otel: with nothing to record, instrument changes nothing", async () => {
  // No provider is registered in this test process (no OTEL_DENO), and no audit lines.
  const telemetry = guardTelemetry();
  assert.equal(telemetry.enabled, false);
  const options = { owners: {}, cancellations: {}, principal };
  assert.equal(telemetry.instrument(options), options);
  assert.equal(Object.getOwnPropertySymbols(options).length, 0);
  await telemetry.close();
});

Deno.test("otel: only the otel entry point depends on @opentelemetry", async () => {
  for (const entry of ["mod.ts", "redis.ts", "hono.ts"]) {
    const info = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: new URL("../", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.ok(info.success);
    // The modules the entry reaches (`npmPackages` lists the whole lock, not the graph).
    const { modules } = JSON.parse(new TextDecoder().decode(info.stdout)) as {
      modules: { specifier: string }[];
    };
    const reached = modules.map((m) => m.specifier);
    assert.ok(reached.length > 10);
    assert.deepEqual(reached.filter((s) => /@opentelemetry|\/src\/otel\//.test(s)), [], entry);
  }
});
