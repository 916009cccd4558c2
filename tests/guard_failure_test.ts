/**
 * The guard when things go wrong: registries that are down (fail closed with
 * 503, never allow), session ids that cannot be bound (the session is closed
 * and its id never reaches the caller), failing `principal()` and hooks, and
 * option validation.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  fingerprint,
  type GuardCancellations,
  type GuardOwners,
  guardSessions,
  InvalidInputError,
  RegistryUnavailableError,
  type RequestHandler,
  SessionOwnerRegistry,
} from "../mod.ts";
import { clients } from "../src/registry/registry_options.ts";
import { bearer, connect, initializeRequest, startServer, waitFor } from "./support/mcp_server.ts";

const JSON_HEADERS = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
};
const INITIALIZE = JSON.stringify(initializeRequest());

function post(url: URL, token: string | null, body: string, sessionId?: string): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: {
      ...JSON_HEADERS,
      ...bearer(token),
      ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
    },
    body,
  });
}

async function expectError(
  response: Response,
  status: number,
  code: number,
  message: RegExp,
): Promise<void> {
  assert.equal(response.status, status);
  assert.equal(response.headers.get("mcp-session-id"), null, "no session id may leak");
  const body = await response.json();
  assert.equal(body.error.code, code);
  assert.match(body.error.message, message);
}

const down = () => Promise.reject(new RegistryUnavailableError("test: store is down"));
const downOwners: GuardOwners = {
  bind: down,
  authorizeAttach: down,
  ownerOf: down,
  forget: down,
  unpin: down,
};

Deno.test("guard: when bind fails after the session was created, it is closed (503)", async () => {
  await using server = await startServer({
    guard: { owners: downOwners, tasks: false, credentials: false },
  });
  const response = await post(server.url, "alice-token", INITIALIZE);
  await expectError(response, 503, -32000, /registry is unavailable/);
  assert.equal(response.headers.get("retry-after"), "1");
  assert.equal(server.app.sessions.size, 0, "the SDK session was terminated");
  assert.ok(server.errors.some((e) => e.context === "registry"));
});

Deno.test("guard: registries that are down fail closed with 503 on every method", async (t) => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const sid = alice.sessionId;
  const ping = JSON.stringify({ jsonrpc: "2.0", id: 5, method: "ping" });

  await t.step("cancellation registry down: requests and cancellations get 503", async () => {
    await (server.cancellations as CancellationRegistry).close();
    const before = server.tools.length;
    await expectError(
      await post(
        server.url,
        "alice-token",
        JSON.stringify({
          jsonrpc: "2.0",
          id: 6,
          method: "tools/call",
          params: { name: "count", arguments: { steps: 2, stepMs: 50 } },
        }),
        sid,
      ),
      503,
      -32000,
      /unavailable/,
    );
    const cancel = JSON.stringify({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: 6 },
    });
    await expectError(await post(server.url, "alice-token", cancel, sid), 503, -32000, /unavail/);
    // Registration overlaps the handler: a tool that already started is stopped by its signal.
    const events = server.tools.slice(before);
    assert.ok(!events.some((e) => e.kind === "completed"), JSON.stringify(events));
    if (events.some((e) => e.kind === "started")) {
      await waitFor(() => server.tools.slice(before).some((e) => e.kind === "stopped"));
    }
  });

  await t.step("owner registry down: POST, GET and DELETE are refused", async () => {
    await (server.owners as SessionOwnerRegistry).close();
    await expectError(await post(server.url, "alice-token", ping, sid), 503, -32000, /unavail/);
    const get = await fetch(server.url, {
      headers: { accept: "text/event-stream", "mcp-session-id": sid, ...bearer("alice-token") },
    });
    await expectError(get, 503, -32000, /unavailable/);
    const del = await fetch(server.url, {
      method: "DELETE",
      headers: { "mcp-session-id": sid, ...bearer("alice-token") },
    });
    await expectError(del, 503, -32000, /unavailable/);
    assert.ok(server.app.sessions.has(sid), "a refused DELETE terminated nothing");
  });
});

Deno.test("guard: a registration that fails after the answer started stops the request", async () => {
  await using real = new CancellationRegistry();
  // A registry whose registrations are lost after 150 ms (a store outage mid-request).
  const lossy: GuardCancellations = {
    track: (sessionId, requestId, controller) => {
      const tracked = real.track(sessionId, requestId, controller);
      const registered = new Promise<boolean>((_, reject) =>
        setTimeout(() => reject(new RegistryUnavailableError("test: store went away")), 150)
      );
      registered.catch(() => {});
      return { ...tracked, registered };
    },
    deregister: (entryId) => real.deregister(entryId),
    cancel: (s, r, reason) => real.cancel(s, r, reason),
    cancelAll: (s, reason) => real.cancelAll(s, reason),
  };
  await using server = await startServer({ guard: { cancellations: lossy } });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const run = alice.client.callTool({ name: "count", arguments: { steps: 40, stepMs: 50 } });
  run.catch(() => {});
  await waitFor(() => server.tools.some((e) => e.kind === "stopped"), 5_000, "the tool to stop");
  const stopped = server.tools.find((e) => e.kind === "stopped")!;
  assert.ok(stopped.step! < 40, `stopped after ${stopped.step} steps`);
  assert.match(stopped.reason!, /store went away/);
  assert.ok(server.errors.some((e) => e.context === "register"), "the failure was reported");
  assert.ok(!server.tools.some((e) => e.kind === "completed"));
});

Deno.test("guard: a crashed registry worker fails closed, and its lost ids stay unclaimable", async () => {
  // A registry that asks its worker on every call (no knownOwner), so a worker that died
  // without a word is noticed by the owner's very next request.
  await using owners = new SessionOwnerRegistry({ callTimeoutMs: 200, knownOwners: false });
  await using server = await startServer({ guard: { owners } });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const ping = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });
  clients.get(owners)!.worker!.terminate();
  await expectError(
    await post(server.url, "alice-token", ping, alice.sessionId),
    503,
    -32000,
    /unavailable/,
  );
  // A fresh worker lost the bindings: strict mode answers 404 and never re-claims the id.
  await expectError(
    await post(server.url, "alice-token", ping, alice.sessionId),
    404,
    -32001,
    /Session not found/,
  );
  const mallory = await fetch(server.url, {
    headers: {
      accept: "text/event-stream",
      "mcp-session-id": alice.sessionId,
      ...bearer("mallory-token"),
    },
  });
  await expectError(mallory, 404, -32001, /Session not found/);
  assert.equal(await owners.ownerOf(alice.sessionId), null);
});

Deno.test("guard: a worker crash the runtime reports drops knownOwner at once: 404, never allow", async () => {
  await using owners = new SessionOwnerRegistry({ callTimeoutMs: 200 });
  await using server = await startServer({ guard: { owners } });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const ping = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });
  const ok = await post(server.url, "alice-token", ping, alice.sessionId);
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  assert.equal(owners.knownOwner(alice.sessionId), await fingerprint("alice"));
  // What the runtime does when a worker throws: an error event on the Worker object.
  clients.get(owners)!.worker!.dispatchEvent(new ErrorEvent("error", { message: "test crash" }));
  assert.equal(owners.knownOwner(alice.sessionId), undefined);
  await expectError(
    await post(server.url, "alice-token", ping, alice.sessionId),
    404,
    -32001,
    /Session not found/,
  );
  assert.equal((await owners.stats()).restarts, 1);
});

/** A stand-in MCP handler that issues `issue` on every session-less POST and records DELETEs. */
function issuing(issue: string): { handler: RequestHandler; deletes: Request[] } {
  const deletes: Request[] = [];
  const handler: RequestHandler = (request) => {
    if (request.method === "DELETE") {
      deletes.push(request);
      return new Response(null, { status: 200 });
    }
    if (request.headers.get("mcp-session-id") === null) {
      return new Response(JSON.stringify({ jsonrpc: "2.0", id: 0, result: {} }), {
        headers: { "content-type": "application/json", "mcp-session-id": issue },
      });
    }
    return new Response(null, { status: 202 });
  };
  return { handler, deletes };
}

Deno.test("guard: a session id owned by someone else is never handed out (409, closed)", async () => {
  const inner = issuing("fixed-session-id");
  await using server = await startServer({ handler: inner.handler });
  const first = await post(server.url, "alice-token", INITIALIZE);
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("mcp-session-id"), "fixed-session-id");
  await first.body?.cancel();

  const second = await post(server.url, "mallory-token", INITIALIZE);
  await expectError(second, 409, -32600, /another principal owns; the session was closed/);
  assert.equal(inner.deletes.length, 1);
  assert.equal(inner.deletes[0].headers.get("mcp-session-id"), "fixed-session-id");
  assert.equal(inner.deletes[0].headers.get("authorization"), "Bearer mallory-token");
  assert.equal(await server.owners.ownerOf("fixed-session-id"), await fingerprint("alice"));
  assert.ok(server.decisions.some((d) => d.reason === "bind-refused" && d.status === 409));
});

Deno.test("guard: an invalid issued session id is refused (500) and closed", async () => {
  const inner = issuing("bad id");
  await using server = await startServer({ handler: inner.handler });
  await expectError(
    await post(server.url, "alice-token", INITIALIZE),
    500,
    -32000,
    /invalid session id/,
  );
  assert.equal(inner.deletes.length, 1);
});

Deno.test("guard: a full session table refuses a new session (503) and closes it", async () => {
  await using server = await startServer({ ownerOptions: { maxEntries: 1 } });
  await using alice = await connect(server.url, "alice-token");
  await waitFor(async () => (await server.owners.stats!()).pinned === 1, 5_000, "alice's stream");
  const response = await post(server.url, "bob-token", INITIALIZE);
  await expectError(response, 503, -32000, /session table is full/);
  assert.equal(response.headers.get("retry-after"), "5");
  assert.deepEqual([...server.app.sessions.keys()], [alice.sessionId]);
  assert.equal(await server.owners.ownerOf(alice.sessionId), await fingerprint("alice"));
});

Deno.test("guard: principal() failures fail closed (503, 500 for a bad answer); throwing hooks change nothing", async () => {
  let mode: "throw" | "number" | "ok" = "throw";
  const errors: string[] = [];
  await using server = await startServer({
    guard: {
      principal: (request) => {
        if (mode === "throw") throw new Error("auth backend down");
        if (mode === "number") return 42 as unknown as string;
        return request.headers.get("authorization");
      },
      onDecision: () => {
        throw new Error("broken logger");
      },
      onError: (_error, context) => {
        errors.push(context);
        throw new Error("broken error hook");
      },
    },
  });
  await expectError(await post(server.url, "alice-token", INITIALIZE), 503, -32000, /identify/);
  mode = "number"; // a bug, not an outage: retrying will not help
  await expectError(
    await post(server.url, "alice-token", INITIALIZE),
    500,
    -32603,
    /could not name the caller/,
  );
  mode = "ok";
  await using alice = await connect(server.url, "alice-token", { listen: false });
  await alice.client.ping();
  assert.equal(errors.filter((c) => c === "principal").length, 2);
  assert.ok(errors.includes("onDecision"));
});

Deno.test("guard: a secret makes fingerprints HMACs; the cache can be off", async () => {
  await using server = await startServer({
    guard: { secret: "cluster-secret", fingerprintCacheSize: 0 },
  });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  assert.equal(
    await server.owners.ownerOf(alice.sessionId),
    await fingerprint("alice", { secret: "cluster-secret" }),
  );
  await alice.client.ping();
});

Deno.test("guard: options are validated with InvalidInputError", async () => {
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const handler: RequestHandler = () => new Response(null);
  const base = { owners, cancellations, principal: () => null };
  const bad: [string, () => unknown][] = [
    ["handler", () => guardSessions(null as unknown as RequestHandler, base)],
    ["options", () => guardSessions(handler, undefined as never)],
    ["owners", () => guardSessions(handler, { ...base, owners: {} as GuardOwners })],
    ["cancellations", () => guardSessions(handler, { ...base, cancellations: null as never })],
    ["principal", () => guardSessions(handler, { ...base, principal: "alice" as never })],
    ["mode", () => guardSessions(handler, { ...base, mode: "lenient" as never })],
    ["maxBodyBytes", () => guardSessions(handler, { ...base, maxBodyBytes: 0 })],
    ["fingerprintCacheSize", () => guardSessions(handler, { ...base, fingerprintCacheSize: -1 })],
    ["secret", () => guardSessions(handler, { ...base, secret: "" })],
  ];
  for (const [name, make] of bad) {
    assert.throws(make, InvalidInputError, name);
  }
  const ok = guardSessions(handler, base);
  assert.equal(typeof ok, "function");
  assert.equal(typeof ok.signalFor, "function");
});
