/**
 * The collector path, for real: a guarded SDK server in a child process,
 * with Deno's built-in OpenTelemetry (`OTEL_DENO=true`) exporting OTLP/HTTP
 * (`http/json`) to a receiver this test runs on loopback. Alice works in her
 * session; Mallory tries to post into it, attach to it, delete it and cancel
 * in it; an unknown session and an anonymous caller are refused too. The
 * receiver must get the guard's metrics (decisions by reason, the guard's
 * time, registry calls by store, live bindings, worker health), the
 * decisions on the request spans with registry calls as their children,
 * and one refusal record per refusal, with the caller's fingerprint and the
 * session hashed; and no payload may carry a raw session id or token.
 *
 * `OTEL_TEST_PRINT=1` prints the instruments and attributes received.
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { fingerprint } from "../mod.ts";
import { auditId } from "../otel.ts";

const ROOT = new URL("../", import.meta.url);
const SECRET = "collector-test-secret";

interface KeyValue {
  key: string;
  value: Record<string, unknown>;
}
interface OtlpPoint {
  attributes?: KeyValue[];
  asInt?: string;
  asDouble?: number;
  count?: string;
  sum?: number;
}
interface OtlpMetric {
  name: string;
  unit?: string;
  sum?: { dataPoints: OtlpPoint[] };
  gauge?: { dataPoints: OtlpPoint[] };
  histogram?: { dataPoints: OtlpPoint[] };
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes?: KeyValue[];
}
interface OtlpLog {
  body?: { stringValue?: string };
  traceId?: string;
  spanId?: string;
}

/** An OTLP/HTTP receiver (JSON encoding) on a free loopback port. */
class Receiver {
  readonly payloads: { path: string; text: string }[] = [];
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      async (request) => {
        const text = await request.text();
        this.payloads.push({ path: new URL(request.url).pathname, text });
        return Response.json({});
      },
    );
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  #bodies(path: string): Record<string, unknown>[] {
    return this.payloads.filter((p) => p.path === path).map((p) => JSON.parse(p.text));
  }

  /** The latest export of each of the guard's metrics (cumulative: the latest holds all). */
  metrics(): Map<string, OtlpMetric> {
    const latest = new Map<string, OtlpMetric>();
    for (const body of this.#bodies("/v1/metrics")) {
      for (const rm of body.resourceMetrics as { scopeMetrics: unknown[] }[]) {
        for (const sm of rm.scopeMetrics as { scope: { name: string }; metrics: OtlpMetric[] }[]) {
          if (sm.scope.name !== "@mcp-guard/session") continue;
          for (const metric of sm.metrics) latest.set(metric.name, metric);
        }
      }
    }
    return latest;
  }

  spans(): OtlpSpan[] {
    return this.#bodies("/v1/traces").flatMap((b) =>
      (b.resourceSpans as { scopeSpans: { spans: OtlpSpan[] }[] }[]).flatMap((rs) =>
        rs.scopeSpans.flatMap((ss) => ss.spans)
      )
    );
  }

  logs(): OtlpLog[] {
    return this.#bodies("/v1/logs").flatMap((b) =>
      (b.resourceLogs as { scopeLogs: { logRecords: OtlpLog[] }[] }[]).flatMap((rl) =>
        rl.scopeLogs.flatMap((sl) => sl.logRecords)
      )
    );
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}

const attrs = (kvs: KeyValue[] | undefined): Record<string, unknown> =>
  Object.fromEntries(
    (kvs ?? []).map(({ key, value }) => {
      const v = value.stringValue ?? value.intValue ?? value.doubleValue ?? value.boolValue;
      return [
        key,
        typeof v === "string" && /^\d+$/.test(v) && key.endsWith("code") ? Number(v) : v,
      ];
    }),
  );

const pointsOf = (metric: OtlpMetric | undefined): OtlpPoint[] =>
  metric?.sum?.dataPoints ?? metric?.gauge?.dataPoints ?? metric?.histogram?.dataPoints ?? [];

const valueOf = (p: OtlpPoint): number => p.asInt !== undefined ? Number(p.asInt) : p.asDouble ?? 0;

function total(metric: OtlpMetric | undefined, where: Record<string, unknown>): number {
  return pointsOf(metric)
    .filter((p) => {
      const a = attrs(p.attributes);
      return Object.entries(where).every(([k, v]) => a[k] === v);
    })
    .reduce((n, p) => n + (p.count !== undefined ? Number(p.count) : valueOf(p)), 0);
}

/** Polls `ready` until it holds or `ms` pass (then returns false). */
async function until(ready: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!ready()) {
    if (performance.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/** The guarded server, its stdout lines collected. */
class ServerChild {
  readonly lines: string[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #pump: Promise<void>;
  readonly stderr: Promise<string>;

  constructor(endpoint: string) {
    const child = this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--allow-net=127.0.0.1",
        "--allow-read", // no --allow-env: Deno reads the OTEL_* variables itself
        "tests/fixtures/otel_server.ts",
      ],
      cwd: ROOT.pathname,
      env: {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_METRIC_EXPORT_INTERVAL: "250",
        OTEL_BSP_SCHEDULE_DELAY: "100",
        OTEL_BLRP_SCHEDULE_DELAY: "100",
        OTEL_SERVICE_NAME: "mcp-guard-collector-test",
        NO_COLOR: "1",
        DENO_NO_UPDATE_CHECK: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.stderr = new Response(child.stderr).text();
    this.#pump = (async () => {
      let rest = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let newline: number;
        while ((newline = rest.indexOf("\n")) !== -1) {
          this.lines.push(rest.slice(0, newline));
          rest = rest.slice(newline + 1);
        }
      }
    })();
  }

  async listening(): Promise<URL> {
    if (!await until(() => this.lines.some((l) => l.startsWith("listening on ")), 20_000)) {
      this.kill();
      throw new Error(`the server never listened: ${await this.stderr}`);
    }
    return new URL(this.lines.find((l) => l.startsWith("listening on "))!.slice(13));
  }

  /** SIGTERM, then the exit (killed if it overstays). */
  async stop(): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => this.kill(), 10_000);
    const status = await this.#child.status;
    clearTimeout(timer);
    await this.#pump;
    await this.stderr;
    return status;
  }

  kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }
}

Deno.test("otel collector: Deno's exporter delivers the guard's metrics, spans and refusal records", async () => {
  const receiver = new Receiver();
  const server = new ServerChild(receiver.endpoint);
  const alice = new Client({ name: "alice", version: "1.0.0" });
  try {
    const url = await server.listening();
    const transport = new StreamableHTTPClientTransport(url, {
      requestInit: { headers: { authorization: "Bearer alice-token" } },
    });
    await alice.connect(transport);
    const sid = transport.sessionId!;
    const reply = await alice.callTool({ name: "echo", arguments: { text: "hi" } });
    assert.deepEqual(reply.content, [{ type: "text", text: "hi" }]);
    // Alice cancels her own long call: a cancellation by the client.
    const stop = new AbortController();
    const counting = alice.callTool({ name: "count", arguments: {} }, undefined, {
      signal: stop.signal,
      onprogress: () => stop.abort("enough"),
    });
    await assert.rejects(counting);

    const mallory = (method: string, body?: unknown, sessionId = sid, token = "mallory-token") =>
      fetch(url, {
        method,
        headers: {
          ...(token === "" ? {} : { authorization: `Bearer ${token}` }),
          "mcp-session-id": sessionId,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": "2025-11-25",
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (r) => (await r.body?.cancel(), r.status));
    const call = { jsonrpc: "2.0", id: 66, method: "tools/call", params: { name: "recall" } };
    const cancel = { jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 1 } };
    assert.equal(await mallory("POST", call), 403);
    assert.equal(await mallory("POST", cancel), 403);
    assert.equal(await mallory("GET"), 403);
    assert.equal(await mallory("DELETE"), 403);
    assert.equal(await mallory("POST", call, "a-session-nobody-has"), 404);
    assert.equal(await mallory("POST", call, sid, ""), 401);

    // Observable metrics (bindings, queue depth) come with the periodic exports.
    const periodic = await until(() => {
      const m = receiver.metrics();
      return total(m.get("mcp_guard.decisions"), { "mcp_guard.reason": "not-owner" }) === 4 &&
        total(m.get("mcp_guard.bindings"), { "mcp_guard.registry": "session" }) === 1 &&
        m.has("mcp_guard.registry.queue.depth");
    }, 20_000);
    assert.ok(periodic, `metrics: ${[...receiver.metrics().keys()]}`);
    await alice.close();
    assert.equal((await server.stop()).code, 0, await server.stderr);
    // What Deno still held goes out as the process exits.
    const flushed = await until(
      () =>
        receiver.logs().filter((r) => r.body?.stringValue?.includes("mcp_guard.refusal"))
            .length === 6 &&
        receiver.spans().some((s) => attrs(s.attributes)["mcp_guard.reason"] === "not-owner"),
      10_000,
    );
    assert.ok(flushed, "refusal records and spans arrived");

    // Metrics.
    const metrics = receiver.metrics();
    const decisions = metrics.get("mcp_guard.decisions");
    assert.equal(total(decisions, { "mcp_guard.reason": "not-owner" }), 4);
    assert.equal(
      total(decisions, {
        "mcp_guard.reason": "not-owner",
        "http.request.method": "POST",
        "mcp.method.name": "tools/call",
        "http.response.status_code": 403,
        "error.type": "not-owner",
      }),
      1,
    );
    assert.equal(total(decisions, { "mcp_guard.reason": "unknown-session" }), 1);
    assert.equal(total(decisions, { "mcp_guard.reason": "anonymous" }), 1);
    assert.equal(total(decisions, { "mcp_guard.reason": "bound" }), 1);
    assert.ok(total(decisions, { "mcp_guard.outcome": "allow" }) >= 4);
    assert.equal(total(decisions, { "mcp_guard.reason": "cancelled" }), 1);
    // The client's cancellation reached the request (the count stopped).
    const cancelledBy = metrics.get("mcp_guard.cancellations");
    assert.equal(total(cancelledBy, { "mcp_guard.cancel.origin": "client" }), 1);
    assert.equal(metrics.get("mcp_guard.request.duration")?.unit, "s");
    assert.ok(total(metrics.get("mcp_guard.request.duration"), {}) >= 10);
    assert.ok(
      total(metrics.get("mcp_guard.registry.operation.duration"), {
        "mcp_guard.registry": "session",
        "mcp_guard.store": "memory",
        "mcp_guard.operation": "bind",
      }) === 1,
    );

    // Spans: Deno.serve's request span carries the decision; registry calls are children.
    const spans = receiver.spans();
    const refused = spans.filter((s) => attrs(s.attributes)["mcp_guard.reason"] === "not-owner");
    assert.equal(refused.length, 4);
    const postRefused = refused.find((s) =>
      attrs(s.attributes)["mcp.method.name"] === "tools/call"
    )!;
    assert.deepEqual(
      {
        ...attrs(postRefused.attributes),
        "url.full": undefined,
        "url.path": undefined,
        "url.query": undefined,
        "url.scheme": undefined,
      },
      {
        "http.request.method": "POST",
        "http.response.status_code": 403,
        "mcp_guard.outcome": "refuse",
        "mcp_guard.reason": "not-owner",
        "mcp.method.name": "tools/call",
        "mcp_guard.session": auditId(sid, { secret: SECRET }),
        "error.type": "not-owner",
        "url.full": undefined,
        "url.path": undefined,
        "url.query": undefined,
        "url.scheme": undefined,
      },
    );
    const bound = spans.find((s) => attrs(s.attributes)["mcp_guard.reason"] === "bound")!;
    const bind = spans.find((s) => s.name === "mcp_guard.registry bind")!;
    assert.equal(bind.parentSpanId, bound.spanId);
    assert.equal(bind.traceId, bound.traceId);
    assert.deepEqual(attrs(bind.attributes), {
      "mcp_guard.registry": "session",
      "mcp_guard.store": "memory",
      "mcp_guard.operation": "bind",
    });

    // Refusal records: Deno exports each printed line as a log record of the request's trace.
    const records = receiver.logs()
      .filter((r) => r.body?.stringValue?.includes("mcp_guard.refusal"))
      .map((r) => ({ ...JSON.parse(r.body!.stringValue!), otelTraceId: r.traceId }));
    const mallorysFp = await fingerprint("mallory", { secret: SECRET });
    const hijacks = records.filter((r) => r.reason === "not-owner");
    assert.equal(hijacks.length, 4);
    for (const record of hijacks) {
      assert.equal(record.principal, mallorysFp);
      assert.equal(record.session, auditId(sid, { secret: SECRET }));
      assert.equal(record.status, 403);
      assert.equal(record.otelTraceId, record.traceId, "the record is in its request's trace");
    }
    assert.deepEqual(hijacks.map((r) => r.method).sort(), ["DELETE", "GET", "POST", "POST"]);
    assert.ok(
      hijacks.some((r) => r.traceId === postRefused.traceId && r.spanId === postRefused.spanId),
    );
    assert.deepEqual(
      records.filter((r) => r.reason !== "not-owner").map((r) => [r.reason, r.principal]).sort(),
      [["anonymous", null], ["unknown-session", mallorysFp]],
    );

    // No payload carries a raw session id, a token, or a principal's name.
    const everything = receiver.payloads.map((p) => p.text).join("\n");
    for (const raw of [sid, "alice-token", "mallory-token", '"mallory"', "a-session-nobody-has"]) {
      assert.ok(!everything.includes(raw), `exported ${raw}`);
    }

    if (Deno.env.get("OTEL_TEST_PRINT") === "1") {
      for (const [name, metric] of [...metrics].sort()) {
        const keys = new Set(
          pointsOf(metric).flatMap((p) => (p.attributes ?? []).map((a) => a.key)),
        );
        const kind = metric.histogram ? "histogram" : metric.gauge ? "gauge" : "sum";
        console.log(`${name} (${kind}, ${metric.unit}): ${[...keys].sort().join(", ")}`);
      }
      const spanKeys = new Set(
        spans.filter((s) => attrs(s.attributes)["mcp_guard.outcome"] !== undefined)
          .flatMap((s) => (s.attributes ?? []).map((a) => a.key)),
      );
      console.log(`request span: ${[...spanKeys].sort().join(", ")}`);
      console.log(`registry span ${bind.name}: ${Object.keys(attrs(bind.attributes)).join(", ")}`);
      console.log(`refusal record: ${JSON.stringify(records[0])}`);
    }
  } finally {
    await alice.close().catch(() => {});
    server.kill();
    await server.stop().catch(() => {});
    await receiver.close();
  }
});
