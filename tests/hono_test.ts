/**
 * End to end with Hono: a Hono app on a real `Deno.serve({ port: 0 })` that
 * verifies JWTs with `hono/jwt`, guards `/mcp` with `mcpGuard` (its principal
 * is the verified `sub`, read from the context), and serves an `McpServer`
 * (SDK 1.32) per session through `@hono/mcp`'s `StreamableHTTPTransport`;
 * official SDK clients on the other side.
 *
 * Each scenario runs with the body copied for downstream (`c.req.json()`
 * works: the transport reads the body itself), with the parsed body handed
 * to the transport (`handleRequest(c, c.get("mcpGuard").parsedBody)`), and
 * behind a middleware that read the body before the guard. Last, a bare
 * route answering `tasks/list` behind such a middleware: what it reads is the
 * cursor the guard rewrote, never the client's (Hono's body cache).
 */

import assert from "node:assert/strict";
import type { Context } from "hono";
import { Hono } from "hono";
import { jwt, type JwtVariables, sign } from "hono/jwt";
import { StreamableHTTPTransport } from "@hono/mcp";
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/auth/types"
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CancellationRegistry, type GuardDecision, SessionOwnerRegistry } from "../mod.ts";
import {
  mcpGuard,
  type McpGuardEnv,
  type McpGuardMiddleware,
  type McpGuardVariables,
} from "../hono.ts";
import { initializeRequest } from "./support/mcp_server.ts";

const SECRET = "hono-e2e-secret-0123456789abcdef";

type Env = {
  Variables: McpGuardVariables & JwtVariables<{ sub: string }> & { auth: AuthInfo };
};

/** What a tool did, and for whom. */
interface ToolEvent {
  tool: string;
  kind: "started" | "completed" | "stopped";
  /** `extra.authInfo.clientId`: the principal the guard identified. */
  caller: string | undefined;
  sessionId: string | undefined;
  requestId: string | number;
}

interface Variant {
  name: string;
  forwardBody: "copy" | "parsed";
  /** An earlier middleware reads the body through Hono (`c.req.json()`) before the guard. */
  preRead?: boolean;
}

interface ServerOptions extends Partial<Variant> {
  /** `false`: the same app without `mcpGuard` (only for the can-fail check). */
  guarded?: boolean;
  ownerOptions?: ConstructorParameters<typeof SessionOwnerRegistry>[0];
}

interface HonoServer extends AsyncDisposable {
  url: URL;
  guard: McpGuardMiddleware<Context<Env>>;
  decisions: GuardDecision[];
  errors: { error: unknown; context: string }[];
  closed: { sessionId: string; cause: string }[];
  tools: ToolEvent[];
  /** Per POST reaching the MCP route: whether `c.req.raw`'s body was already read. */
  bodyUsed: boolean[];
  transports: Map<string, StreamableHTTPTransport>;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

function startHono(options: ServerOptions = {}): HonoServer {
  const owners = new SessionOwnerRegistry(options.ownerOptions);
  const cancellations = new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  const errors: { error: unknown; context: string }[] = [];
  const closed: { sessionId: string; cause: string }[] = [];
  const tools: ToolEvent[] = [];
  const bodyUsed: boolean[] = [];
  const transports = new Map<string, StreamableHTTPTransport>();
  const forwardBody = options.forwardBody ?? "copy";

  // The MCP routes: one McpServer + @hono/mcp transport per session.
  const mcp = new Hono<Env>();
  const guard = mcpGuard({
    owners,
    cancellations,
    forwardBody,
    principal: (c: Context<Env>) => c.get("jwtPayload")?.sub,
    // The guard's own requests (closing an evicted session) go straight to the MCP routes.
    internalHandler: (request) => mcp.fetch(request),
    onDecision: (d) => decisions.push(d),
    onError: (error, context) => errors.push({ error, context }),
    onSessionClosed: (sessionId, cause) => closed.push({ sessionId, cause }),
  });

  function createServer(): McpServer {
    const server = new McpServer({ name: "hono-e2e", version: "0.0.0" });
    server.registerTool("whoami", {
      description: "The caller, as the guard identified it.",
    }, (extra) => {
      const caller = extra.authInfo?.clientId;
      const base = { tool: "whoami", caller, sessionId: extra.sessionId };
      tools.push({ ...base, kind: "completed", requestId: extra.requestId });
      return { content: [{ type: "text" as const, text: caller ?? "(nobody)" }] };
    });
    server.registerTool("slow", {
      description: "Waits 30 s; stops when the guard's signal aborts.",
    }, async (extra) => {
      const event = {
        tool: "slow",
        caller: extra.authInfo?.clientId,
        sessionId: extra.sessionId,
        requestId: extra.requestId,
      };
      tools.push({ ...event, kind: "started" });
      try {
        await sleep(30_000, guard.signalFor(extra));
      } catch (reason) {
        tools.push({ ...event, kind: "stopped" });
        throw reason;
      }
      tools.push({ ...event, kind: "completed" });
      return { content: [{ type: "text" as const, text: "done" }] };
    });
    return server;
  }

  mcp.all("/mcp", async (c) => {
    // Unset for the guard's own requests (internalHandler) and in the unguarded control.
    const guarded = c.get("mcpGuard") as McpGuardVariables["mcpGuard"] | undefined;
    if (guarded?.principal) {
      c.set("auth", { token: "verified-jwt", clientId: guarded.principal, scopes: [] });
    }
    if (c.req.method === "POST" && guarded !== undefined) bodyUsed.push(c.req.raw.bodyUsed);
    const sid = c.req.header("mcp-session-id");
    let transport = sid === undefined ? undefined : transports.get(sid);
    if (sid !== undefined && transport === undefined) {
      return c.json({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" } }, 404);
    }
    let server: McpServer | undefined;
    if (transport === undefined) {
      const fresh: StreamableHTTPTransport = new StreamableHTTPTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        onsessioninitialized: (id: string) => void transports.set(id, fresh),
      });
      fresh.onclose = () => {
        const id = fresh.sessionId;
        if (id !== undefined && transports.get(id) === fresh) transports.delete(id);
      };
      server = createServer();
      await server.connect(fresh);
      transport = fresh;
    }
    // "parsed": the guard's parse; "copy": the transport reads c.req.json() itself.
    const parsedBody = forwardBody === "parsed" ? guarded?.parsedBody : undefined;
    const response = await transport.handleRequest(c, parsedBody);
    if (server !== undefined && transport.sessionId === undefined) await server.close();
    return response ?? c.body(null, 500);
  });

  const app = new Hono<Env>();
  app.use("/mcp", jwt({ secret: SECRET, alg: "HS256" }));
  if (options.preRead) {
    app.use("/mcp", async (c, next) => {
      if (c.req.method === "POST") await c.req.json().catch(() => null);
      await next();
    });
  }
  if (options.guarded !== false) app.use("/mcp", guard);
  app.route("/", mcp);

  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
  return {
    url: new URL(`http://127.0.0.1:${server.addr.port}/mcp`),
    guard,
    decisions,
    errors,
    closed,
    tools,
    bodyUsed,
    transports,
    async [Symbol.asyncDispose]() {
      await Promise.all([...transports.values()].map((t) => t.close()));
      await server.shutdown();
      await owners.close();
      await cancellations.close();
    },
  };
}

function token(sub: string, secret = SECRET, expiresIn = 3600): Promise<string> {
  return sign({ sub, exp: Math.floor(Date.now() / 1000) + expiresIn }, secret, "HS256");
}

interface TestClient extends AsyncDisposable {
  client: Client;
  sessionId: string;
}

/** An SDK client connected with `jwt`; `listen: false` opens no listening GET stream. */
async function connect(url: URL, jwt: string, listen = true): Promise<TestClient> {
  const postOnly: typeof fetch = (input, init) =>
    (init?.method ?? "GET") === "GET"
      ? Promise.resolve(new Response(null, { status: 405 }))
      : fetch(input, init);
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: { authorization: `Bearer ${jwt}` } },
    fetch: listen ? undefined : postOnly,
  });
  const client = new Client({ name: "hono-e2e", version: "0.0.0" });
  client.onerror = () => {};
  await client.connect(transport);
  assert.ok(transport.sessionId, "the server issued a session id");
  return {
    client,
    sessionId: transport.sessionId,
    async [Symbol.asyncDispose]() {
      await client.close();
    },
  };
}

/** A raw request in `sessionId` (protocol 2025-11-25); returns status, headers and JSON body. */
async function raw(
  url: URL,
  method: "POST" | "GET" | "DELETE",
  jwt: string | null,
  sessionId: string | null,
  message?: unknown,
): Promise<{ status: number; headers: Headers; json: { error?: { code: number } } | null }> {
  const headers: Record<string, string> = {
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
  };
  if (jwt !== null) headers.authorization = `Bearer ${jwt}`;
  if (sessionId !== null) headers["mcp-session-id"] = sessionId;
  if (message !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: message === undefined ? undefined : JSON.stringify(message),
  });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (hono/jwt answers 401 with plain text)
  }
  return { status: response.status, headers: response.headers, json };
}

function text(result: unknown): string {
  return (result as { content: { text: string }[] }).content.map((c) => c.text).join("");
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const whoamiCall = (id: number) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "whoami", arguments: {} },
});

const VARIANTS: Variant[] = [
  { name: "body copied", forwardBody: "copy" },
  { name: "parsed body", forwardBody: "parsed" },
  { name: "body read before the guard", forwardBody: "copy", preRead: true },
];

for (const variant of VARIANTS) {
  Deno.test(`hono (${variant.name}): alice's session is hers; the tool sees who calls`, async (t) => {
    await using server = startHono(variant);
    const [aliceJwt, malloryJwt] = await Promise.all([token("alice"), token("mallory")]);
    await using alice = await connect(server.url, aliceJwt);
    const sid = alice.sessionId;

    await t.step("alice initialized: the issued id went back through the guard", async () => {
      assert.ok(server.decisions.some((d) => d.reason === "bound" && d.sessionId === sid));
      assert.ok(server.transports.has(sid));
      // Her SDK client's listening stream (GET) is let through to @hono/mcp.
      await waitFor(
        () => server.decisions.some((d) => d.method === "GET" && d.outcome === "allow"),
        "alice's listening stream",
      );
      // The body reached the MCP route readable, or was handed over parsed.
      assert.ok(server.bodyUsed.length > 0);
      const expected = variant.forwardBody === "parsed" && !variant.preRead;
      assert.ok(server.bodyUsed.every((used) => used === expected), String(server.bodyUsed));
    });

    await t.step("alice calls a tool, which sees her identity", async () => {
      const reply = await alice.client.callTool({ name: "whoami", arguments: {} });
      assert.equal(text(reply), "alice");
      assert.deepEqual(
        server.tools.map((e) => [e.tool, e.caller, e.sessionId]),
        [["whoami", "alice", sid]],
      );
    });

    await t.step("mallory's POST in alice's session: 403, the tool never runs", async () => {
      const refused = await raw(server.url, "POST", malloryJwt, sid, whoamiCall(77));
      assert.equal(refused.status, 403);
      assert.equal(refused.json?.error?.code, -32600);
      assert.equal(refused.headers.get("mcp-session-id"), null);
      assert.equal(server.tools.length, 1);
      assert.ok(server.decisions.some((d) => d.reason === "not-owner" && d.method === "POST"));
    });

    await t.step("mallory's GET on alice's session: 403", async () => {
      const refused = await raw(server.url, "GET", malloryJwt, sid);
      assert.equal(refused.status, 403);
      assert.equal(refused.json?.error?.code, -32600);
    });

    await t.step("mallory's DELETE of alice's session: 403, the session lives", async () => {
      const refused = await raw(server.url, "DELETE", malloryJwt, sid);
      assert.equal(refused.status, 403);
      assert.ok(server.transports.has(sid));
      const reply = await alice.client.callTool({ name: "whoami", arguments: {} });
      assert.equal(text(reply), "alice");
    });

    await t.step("mallory in a session of her own is mallory", async () => {
      await using mallory = await connect(server.url, malloryJwt, false);
      assert.notEqual(mallory.sessionId, sid);
      const reply = await mallory.client.callTool({ name: "whoami", arguments: {} });
      assert.equal(text(reply), "mallory");
    });

    await t.step("alice's DELETE ends her session", async () => {
      const deleted = await raw(server.url, "DELETE", aliceJwt, sid);
      assert.equal(deleted.status, 200);
      assert.equal(server.transports.has(sid), false);
      assert.equal((await raw(server.url, "POST", aliceJwt, sid, whoamiCall(78))).status, 404);
    });
    assert.deepEqual(server.errors, []);
  });
}

Deno.test("hono: no JWT or a bad one is answered 401 by hono/jwt, before the guard", async () => {
  await using server = startHono();
  const initialize = initializeRequest();
  const bad = [
    null,
    await token("alice", "another-secret-0123456789abcdef!"),
    await token("alice", SECRET, -60), // expired
    "not-a-jwt",
  ];
  for (const jwt of bad) {
    const answer = await raw(server.url, "POST", jwt, null, initialize);
    assert.equal(answer.status, 401, String(jwt));
    assert.match(answer.headers.get("www-authenticate") ?? "", /Bearer/);
    assert.equal(answer.headers.get("mcp-session-id"), null);
  }
  assert.deepEqual(server.decisions, []); // the guard never saw them
  assert.equal(server.transports.size, 0);
});

Deno.test("hono: a cancellation reaches only a request of its own session", async () => {
  await using server = startHono({ forwardBody: "parsed" });
  const [aliceJwt, malloryJwt] = await Promise.all([token("alice"), token("mallory")]);
  await using alice = await connect(server.url, aliceJwt);
  const abort = new AbortController();
  const call = alice.client.callTool({ name: "slow", arguments: {} }, undefined, {
    signal: abort.signal,
  });
  call.catch(() => {});
  await waitFor(() => server.tools.some((e) => e.kind === "started"), "slow to start");
  const started = server.tools.find((e) => e.kind === "started")!;
  assert.equal(started.caller, "alice");

  // Mallory knows the session id and the request id: refused, the tool keeps running.
  const cancel = {
    jsonrpc: "2.0",
    method: "notifications/cancelled",
    params: { requestId: started.requestId, reason: "mallory says stop" },
  };
  assert.equal((await raw(server.url, "POST", malloryJwt, alice.sessionId, cancel)).status, 403);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(server.tools.some((e) => e.kind === "stopped"), false);

  // Alice cancels: her SDK client sends notifications/cancelled in her session.
  abort.abort("alice changed her mind");
  await assert.rejects(call);
  await waitFor(() => server.tools.some((e) => e.kind === "stopped"), "slow to stop");
  assert.ok(
    server.decisions.some((d) => d.reason === "cancelled" && d.sessionId === alice.sessionId),
  );
});

Deno.test("hono: an evicted session is closed through internalHandler", async () => {
  await using server = startHono({ ownerOptions: { maxPerPrincipal: 1 } });
  const aliceJwt = await token("alice");
  await using first = await connect(server.url, aliceJwt, false);
  await using second = await connect(server.url, aliceJwt, false);
  // Alice may hold one session: binding the second evicted the first, and the guard closed it.
  await waitFor(() => server.closed.length > 0, "the evicted session to close");
  assert.deepEqual(server.closed, [{ sessionId: first.sessionId, cause: "evicted" }]);
  assert.equal(server.transports.has(first.sessionId), false);
  assert.ok(server.transports.has(second.sessionId));
  assert.deepEqual(server.errors, []);
});

/** A `tasks/list` POST as `user`, with `cursor`; returns the status and the page's `nextCursor`. */
async function listTasks(
  url: URL,
  user: string,
  cursor?: string,
): Promise<{ status: number; nextCursor: unknown }> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      accept: "application/json, text/event-stream",
      "content-type": "application/json",
      "x-user": user,
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tasks/list",
      params: cursor === undefined ? {} : { cursor },
    }),
  });
  const body = await response.json();
  return { status: response.status, nextCursor: body.result?.nextCursor };
}

for (const forwardBody of ["copy", "parsed"] as const) {
  Deno.test(
    `hono (${forwardBody}, body read before the guard): downstream gets the task cursor the guard rewrote, never the client's`,
    async () => {
      await using owners = new SessionOwnerRegistry();
      await using cancellations = new CancellationRegistry();
      /** Per tasks/list reaching the route: the cursor in `parsedBody`, and what `c.req.json()` gave. */
      const seen: { parsed: unknown; json: unknown }[] = [];
      const app = new Hono<McpGuardEnv>();
      // An earlier middleware that reads the JSON body through Hono (logging, validation...):
      // Hono keeps what it read in c.req.bodyCache and answers later c.req.json() from it.
      app.use("/mcp", async (c, next) => {
        if (c.req.method === "POST") await c.req.json();
        await next();
      });
      app.use(
        "/mcp",
        mcpGuard({ owners, cancellations, forwardBody, principal: (c) => c.req.header("x-user") }),
      );
      // Stands in for the SDK's task store, whose cursor is the last task id of the page.
      app.post("/mcp", async (c) => {
        const parsed = c.get("mcpGuard").parsedBody as { id: number; params: { cursor?: string } };
        const json = await c.req.json().then(
          (body: { params: { cursor?: string } }) => ({ cursor: body.params.cursor }),
          () => "unreadable",
        );
        seen.push({ parsed: parsed.params.cursor, json });
        const result = { tasks: [], nextCursor: "task-41" };
        return c.json({ jsonrpc: "2.0", id: parsed.id, result });
      });
      await using server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
      const url = new URL(`http://127.0.0.1:${server.addr.port}/mcp`);
      /** What the route read the cursor as: `c.req.json()`'s in "copy", `parsedBody`'s in "parsed". */
      const reached = () => {
        const last = seen.at(-1)!;
        if (forwardBody === "parsed") {
          // The body is consumed, as without the earlier middleware: parsedBody is the body.
          assert.equal(last.json, "unreadable");
          return last.parsed;
        }
        assert.deepEqual(last.json, { cursor: last.parsed });
        return last.parsed;
      };

      // Mallory's guess at a task id (the SDK's store would answer the page after it, were the
      // task real): the server reads a cursor it never issued, not the task id.
      assert.equal((await listTasks(url, "mallory", "task-41")).status, 200);
      assert.notEqual(reached(), "task-41");

      // Alice's first page: the server's cursor (a task id) goes back to her sealed.
      const first = await listTasks(url, "alice");
      assert.equal(first.status, 200);
      assert.equal(reached(), undefined);
      assert.equal(typeof first.nextCursor, "string");
      assert.notEqual(first.nextCursor, "task-41");
      // Her sealed cursor, opened by the guard, is what the server reads.
      assert.equal((await listTasks(url, "alice", first.nextCursor as string)).status, 200);
      assert.equal(reached(), "task-41");

      // Alice's sealed cursor replayed by mallory does not open for her.
      assert.equal((await listTasks(url, "mallory", first.nextCursor as string)).status, 200);
      assert.notEqual(reached(), "task-41");
      assert.equal(seen.length, 4);
    },
  );
}
