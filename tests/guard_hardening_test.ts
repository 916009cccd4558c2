/**
 * Hardening of the guard and the in-memory store: every allowed request
 * counts as use, evicted or expired bindings close their sessions, a client
 * that drops mid-body gets a decision (not a throw), `principal()` can say
 * 401 apart from 503, and option typos are refused. Real SDK 1.32 server on
 * Deno.serve, real fetch clients.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  guardSessions,
  InvalidInputError,
  memoryStore,
  SessionOwnerRegistry,
  UnauthenticatedError,
} from "../mod.ts";
import { OwnerTable } from "../src/core/owner_table.ts";
import { clients } from "../src/registry/registry_options.ts";
import { redisStore } from "../redis.ts";
import {
  bearer,
  connect,
  initializeRequest,
  openSession,
  postRpc,
  startServer,
  type TestServer,
  waitFor,
} from "./support/mcp_server.ts";
import { startRedis } from "./support/redis_server.ts";
// @ts-types="@modelcontextprotocol/sdk/client/auth"
import { extractWWWAuthenticateParams } from "@modelcontextprotocol/sdk/client/auth.js";

const JSON_HEADERS = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
};

function initializeBody(id = 0): string {
  return JSON.stringify(initializeRequest(id));
}

/** Initializes a session as `token`'s holder; returns its id. */
function initialize(server: TestServer, token: string): Promise<string> {
  return openSession(server.url, token);
}

/** A ping in the session; returns the HTTP status. */
async function ping(server: TestServer, token: string, sid: string, id = 1): Promise<number> {
  const response = await postRpc(server.url, token, sid, { jsonrpc: "2.0", id, method: "ping" });
  await response.body?.cancel();
  return response.status;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("OwnerTable: touch, idle expiry and sweep on a fake clock", () => {
  let now = 0;
  const removed: [string, string][] = [];
  const table = new OwnerTable(
    {
      maxEntries: 10,
      maxPerPrincipal: 1,
      maxPerSharedPrincipal: 2,
      idleTtlMs: 100,
      now: () => now,
    },
    (sid, cause) => removed.push([sid, cause]),
  );
  assert.equal(table.bind("a", "alice"), "bound");
  assert.equal(table.bind("b", "bob"), "bound");
  assert.equal(table.authorizeAttach("p", "pat", true), true); // pinned: never expires
  now = 80;
  assert.equal(table.touch("a", "alice"), true);
  assert.equal(table.touch("a", "bob"), false, "another principal's touch changes nothing");
  assert.equal(table.touch("zz", "alice"), false, "a touch never claims");
  assert.equal(table.ownerOf("zz"), null);
  now = 150; // b idle 150 > 100; a idle 70
  assert.equal(table.ownerOf("b"), null, "an expired binding is gone before any sweep");
  assert.equal(table.ownerOf("a"), "alice");
  now = 300;
  assert.equal(table.sweep(), 1);
  assert.deepEqual(removed, [["b", "expired"], ["a", "expired"]]);
  assert.equal(table.ownerOf("p"), "pat");
  // The per-principal cap, and a shared bind under its own (larger) bound.
  assert.equal(table.bind("c1", "carol"), "bound");
  assert.equal(table.bind("c2", "carol", true), "bound");
  assert.equal(table.ownerOf("c1"), "carol", "a shared bind does not evict the caller's own");
  assert.equal(table.bind("c3", "carol"), "bound");
  assert.deepEqual(removed.at(-1), ["c1", "evicted"]);
});

Deno.test("SessionOwnerRegistry: touches are coalesced per session, and count as use", async () => {
  await using owners = new SessionOwnerRegistry({ maxEntries: 2, touchIntervalMs: 60_000 });
  const client = clients.get(owners)!;
  await owners.bind("s-1", "alice");
  await owners.bind("s-2", "bob");
  const before = client.batches;
  await owners.touch("s-1", "alice");
  assert.equal(client.batches, before + 1, "the first touch reaches the worker");
  for (let i = 0; i < 50; i++) await owners.touch("s-1", "alice");
  assert.equal(client.batches, before + 1, "later touches within the interval do not");
  await owners.bind("s-3", "carol");
  assert.equal(await owners.ownerOf("s-1"), "alice", "the touched session is not the LRU");
  assert.equal(await owners.ownerOf("s-2"), null);
});

Deno.test("options: typos and wrong types are refused with the nearest valid key", async (t) => {
  await t.step("registries", () => {
    assert.throws(
      () => new SessionOwnerRegistry({ maxEntry: 5 } as never),
      (err: Error) =>
        err instanceof InvalidInputError && /"maxEntry".*"maxEntries"/.test(err.message),
    );
    assert.throws(
      () => new CancellationRegistry({ maxEntires: 5 } as never),
      /unknown option "maxEntires"; did you mean "maxEntries"\?/,
    );
    assert.throws(() => memoryStore({ idleTTL: 5 } as never), /did you mean "idleTtlMs"/);
    assert.throws(
      () => new SessionOwnerRegistry({ sharedPrincipals: "x" as never }),
      /sharedPrincipals must be an array of principal fingerprints, got "x"/,
    );
    assert.throws(
      () => new SessionOwnerRegistry({ store: memoryStore({ idleTtlMs: 1_000 }) }),
      /touchIntervalMs \(1000\) must be at most half the store's idleTtlMs \(1000\)/,
    );
  });
  await t.step("guard", async () => {
    await using owners = new SessionOwnerRegistry();
    await using cancellations = new CancellationRegistry();
    const base = { owners, cancellations, principal: () => "alice" };
    const handler = () => new Response(null, { status: 202 });
    assert.throws(
      () => guardSessions(handler, { ...base, mod: "strict" } as never),
      /guardSessions: unknown option "mod"; did you mean "mode"\?/,
    );
    assert.throws(
      () => guardSessions(handler, { ...base, sharedPrincipals: "root" } as never),
      /sharedPrincipals must be an array of identities .*got "root"/,
    );
    assert.throws(
      () => guardSessions(handler, { ...base, sharedPrincipals: ["ok", " "] }),
      /sharedPrincipals\[1\] must be a non-blank string, got " "/,
    );
  });
});

Deno.test("guard: sharedPrincipals takes raw identities and exempts them from the cap", async () => {
  await using server = await startServer({
    ownerOptions: { maxPerPrincipal: 2 },
    guard: { sharedPrincipals: ["alice"] },
  });
  const alice = [];
  for (let i = 0; i < 4; i++) alice.push(await initialize(server, "alice-token"));
  for (const sid of alice) assert.equal(await ping(server, "alice-token", sid), 200, sid);
  const bob = [];
  for (let i = 0; i < 3; i++) bob.push(await initialize(server, "bob-token"));
  assert.equal(await ping(server, "bob-token", bob[0]), 404, "bob is capped at 2");
});

Deno.test("guard: a session used only by POST is never the one evicted", async (t) => {
  for (const mode of ["strict", "attach-only"] as const) {
    await t.step(mode, async () => {
      await using server = await startServer({
        ownerOptions: { maxEntries: 3, maxPerPrincipal: 1, touchIntervalMs: 50 },
        // Every token is its own principal: four principals.
        guard: { mode, principal: (r) => r.headers.get("authorization")?.slice(7) ?? null },
      });
      const owners = server.owners as SessionOwnerRegistry;
      const alice = await initialize(server, "alice-token");
      await initialize(server, "bob-token");
      await sleep(60);
      assert.equal(await ping(server, "alice-token", alice), 200);
      await sleep(60); // a touch within 50 ms of the last one is sent at the interval's end
      await waitFor(async () => (await owners.stats()).size === 2, 2_000, "bind settled");
      const bob = await owners.ownerOf(alice);
      await initialize(server, "mallory-token"); // the table is full now
      // Alice keeps using her session; a 4th principal's initialize evicts the LRU: Bob's.
      assert.equal(await ping(server, "alice-token", alice, 2), 200);
      await initialize(server, "dave-token");
      assert.equal(await ping(server, "alice-token", alice, 3), 200, "Alice's session lives");
      assert.equal(await owners.ownerOf(alice), bob === null ? null : bob);
      assert.equal((await owners.stats()).evictions, 1);
      // Mallory cannot attach to it either.
      const attach = await fetch(server.url, {
        headers: {
          ...bearer("mallory-token"),
          "mcp-session-id": alice,
          accept: "text/event-stream",
        },
      });
      await attach.body?.cancel();
      assert.equal(attach.status, 403);
    });
  }
});

Deno.test("guard: evicted sessions are closed in the handler (flood of initializes)", async () => {
  const closed: string[] = [];
  await using server = await startServer({
    ownerOptions: { maxPerPrincipal: 10 },
    guard: { onSessionClosed: (sid, cause) => closed.push(`${cause}:${sid}`) },
  });
  const first = await initialize(server, "mallory-token");
  for (let i = 0; i < 59; i++) {
    const response = await postRpc(server.url, "mallory-token", null, initializeBody(i));
    await response.body?.cancel();
    assert.equal(response.status, 200);
  }
  await waitFor(() => closed.length === 50, 3_000, "evicted sessions closed");
  assert.equal(server.app.sessions.size, 10);
  assert.ok(closed.every((c) => c.startsWith("evicted:")));
  assert.ok(closed.includes(`evicted:${first}`));
  assert.equal(await ping(server, "mallory-token", first), 404);
  assert.deepEqual(server.errors, []);
});

Deno.test("guard: a call in flight in an evicted or expired session is answered -32000 before it closes", async (t) => {
  const cases = [
    { name: "evicted, SSE answer", jsonResponse: false, cause: "evicted" },
    { name: "evicted, JSON answer", jsonResponse: true, cause: "evicted" },
    { name: "expired, SSE answer", jsonResponse: false, cause: "expired" },
  ] as const;
  for (const { name, jsonResponse, cause } of cases) {
    await t.step(name, async () => {
      const closed: string[] = [];
      await using server = await startServer({
        jsonResponse,
        ownerOptions: cause === "evicted"
          ? { maxPerPrincipal: 2 }
          : { store: memoryStore({ idleTtlMs: 300 }), touchIntervalMs: 100 },
        guard: { onSessionClosed: (sid, why) => closed.push(`${why}:${sid}`) },
      });
      // The SDK 1.32 client, whose own timeout (60 s) would be all it gets without an answer.
      await using alice = await connect(server.url, "alice-token", { listen: false });
      const call = alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 100 } });
      call.catch(() => {});
      await waitFor(() => server.tools.some((e) => e.kind === "started"), 5_000, "the tool");
      const startedAt = performance.now();
      if (cause === "evicted") {
        await initialize(server, "alice-token");
        await initialize(server, "alice-token"); // Alice's third: her oldest (the call's) goes
      }
      await assert.rejects(call, (err: unknown) => {
        assert.equal((err as { code?: number }).code, -32000, String(err));
        assert.match(
          String(err),
          new RegExp(`Request cancelled by the server: session ${alice.sessionId} ${cause}`),
        );
        return true;
      });
      const waited = performance.now() - startedAt;
      assert.ok(waited < 3_000, `answered after ${Math.round(waited)} ms`);
      await waitFor(() => closed.length === 1, 3_000, "the session closed");
      assert.deepEqual(closed, [`${cause}:${alice.sessionId}`]);
      assert.equal(server.app.sessions.has(alice.sessionId), false);
      await waitFor(() => server.tools.some((e) => e.kind === "stopped"), 3_000, "the tool stops");
      assert.ok(!server.tools.some((e) => e.kind === "completed"));
      assert.deepEqual(server.errors, []);
    });
  }
});

Deno.test("guard: idle sessions expire and close; active ones stay (memoryStore idleTtlMs)", async () => {
  const closed: string[] = [];
  await using server = await startServer({
    ownerOptions: { store: memoryStore({ idleTtlMs: 400 }), touchIntervalMs: 100 },
    guard: { onSessionClosed: (sid, cause) => closed.push(`${cause}:${sid}`) },
  });
  const active = await initialize(server, "alice-token");
  const idle = await initialize(server, "bob-token");
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) {
    await sleep(100);
    statuses.push(await ping(server, "alice-token", active, i + 1));
  }
  assert.deepEqual(statuses, new Array(12).fill(200), "1.2 s of use at TTL 0.4 s");
  await waitFor(() => closed.includes(`expired:${idle}`), 2_000, "the idle session closed");
  assert.equal(server.app.sessions.has(idle), false);
  assert.equal(server.app.sessions.has(active), true);
  assert.equal(await ping(server, "bob-token", idle), 404);
});

Deno.test("guard: a client that drops mid-body gets a decision, not a thrown error", async () => {
  await using server = await startServer();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
  const head = [
    "POST /mcp HTTP/1.1",
    "host: 127.0.0.1",
    "content-type: application/json",
    "accept: application/json, text/event-stream",
    "authorization: Bearer alice-token",
    "content-length: 5000",
    "",
    "",
  ].join("\r\n");
  await conn.write(new TextEncoder().encode(head + '{"jsonrpc":"2.0",'));
  await waitFor(() => server.decisions.length === 0, 100);
  await sleep(50);
  conn.close();
  await waitFor(
    () => server.decisions.some((d) => d.reason === "client-aborted"),
    3_000,
    "a client-aborted decision",
  );
  const decision = server.decisions.find((d) => d.reason === "client-aborted")!;
  assert.equal(decision.outcome, "refuse");
  assert.equal(decision.method, "POST");
  assert.deepEqual(server.errors, []);
});

Deno.test("guard: principal() can say 401 (UnauthenticatedError) apart from 503", async () => {
  await using server = await startServer({
    guard: {
      principal: (request) => {
        const auth = request.headers.get("authorization");
        if (auth === "Bearer expired") {
          throw new UnauthenticatedError("token expired", {
            challenge: 'Bearer error="invalid_token"',
          });
        }
        if (auth === "Bearer keyserver-down") throw new Error("JWKS fetch failed");
        return auth === "Bearer alice-token" ? "alice" : null;
      },
    },
  });
  const expired = await postRpc(server.url, "expired", null, initializeBody());
  assert.equal(expired.status, 401);
  assert.equal(expired.headers.get("www-authenticate"), 'Bearer error="invalid_token"');
  assert.match((await expired.json()).error.message, /credentials were not accepted/);
  const down = await postRpc(server.url, "keyserver-down", null, initializeBody());
  await down.body?.cancel();
  assert.equal(down.status, 503);
  assert.equal(down.headers.get("retry-after"), "1");
  assert.deepEqual(server.decisions.map((d) => d.reason), ["unauthenticated", "principal-error"]);
  assert.equal(server.errors.length, 1, "only the outage is reported as an error");
  assert.match(String(server.errors[0].error), /JWKS fetch failed/);
});

Deno.test("UnauthenticatedError: resourceMetadata puts RFC 9728 resource_metadata in the challenge", () => {
  const url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
  assert.equal(
    new UnauthenticatedError("no token", { resourceMetadata: url }).challenge,
    `Bearer resource_metadata="${url}"`,
  );
  assert.equal(
    new UnauthenticatedError("bad token", {
      challenge: 'Bearer error="invalid_token"',
      resourceMetadata: new URL(url),
    }).challenge,
    `Bearer error="invalid_token", resource_metadata="${url}"`,
  );
  for (const bad of ["/.well-known/oauth-protected-resource", "ftp://x/y", "", 42]) {
    assert.throws(
      () => new UnauthenticatedError("x", { resourceMetadata: bad as string }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidInputError, String(err));
        assert.ok(err.message.includes(JSON.stringify(String(bad))), err.message);
        return true;
      },
    );
  }
});

Deno.test("guard: a bad token's 401 tells an MCP client where the resource metadata is", async () => {
  let metadata = "";
  await using server = await startServer({
    guard: {
      principal: (request) => {
        const auth = request.headers.get("authorization");
        if (auth === null) return null;
        if (auth === "Bearer alice-token") return "alice";
        metadata = new URL("/.well-known/oauth-protected-resource/mcp", request.url).href;
        throw new UnauthenticatedError("invalid token", {
          challenge: 'Bearer error="invalid_token"',
          resourceMetadata: metadata,
        });
      },
    },
  });
  const typo = await postRpc(server.url, "alice-tokn", null, initializeBody());
  assert.equal(typo.status, 401);
  await typo.body?.cancel();
  assert.equal(
    typo.headers.get("www-authenticate"),
    `Bearer error="invalid_token", resource_metadata="${metadata}"`,
  );
  // What the SDK client reads from it to find the authorization server.
  const params = extractWWWAuthenticateParams(typo);
  assert.equal(params.resourceMetadataUrl?.href, metadata);
  assert.equal(params.error, "invalid_token");
});

Deno.test("guard: a session evicted through another server (shared Redis) is closed where it lives", async () => {
  await using redis = await startRedis();
  const store = () => redisStore({ url: redis.url, prefix: "evict-e2e:" });
  const closedOnA: string[] = [];
  const closedOnB: string[] = [];
  await using a = await startServer({
    ownerOptions: { store: store(), maxPerPrincipal: 2 },
    guard: { onSessionClosed: (sid, cause) => closedOnA.push(`${cause}:${sid}`) },
  });
  await using b = await startServer({
    ownerOptions: { store: store(), maxPerPrincipal: 2 },
    guard: { onSessionClosed: (sid, cause) => closedOnB.push(`${cause}:${sid}`) },
  });
  const first = await initialize(a, "mallory-token");
  assert.equal(a.app.sessions.has(first), true);
  await initialize(b, "mallory-token");
  await initialize(b, "mallory-token"); // Mallory's third: her oldest, on A, is evicted
  await waitFor(() => closedOnA.length > 0, 3_000, "A closed the evicted session");
  assert.deepEqual(closedOnA, [`evicted:${first}`]);
  assert.equal(a.app.sessions.has(first), false);
  assert.deepEqual(closedOnB, [], "B does not hold it, so B closes nothing");
  assert.equal(b.app.sessions.size, 2);
  assert.equal(await ping(a, "mallory-token", first), 404);
});

Deno.test("guard: a DELETE the handler refused leaves the session closable on eviction", async () => {
  const closed: string[] = [];
  await using server = await startServer({
    ownerOptions: { maxPerPrincipal: 1 },
    guard: { onSessionClosed: (sid) => closed.push(sid) },
  });
  const first = await initialize(server, "alice-token");
  const refused = await fetch(server.url, {
    method: "DELETE",
    headers: { ...bearer("alice-token"), "mcp-session-id": first, "mcp-protocol-version": "1999" },
  });
  await refused.body?.cancel();
  assert.equal(refused.status, 400, "the SDK refuses an unknown protocol version");
  await initialize(server, "alice-token"); // evicts the first
  await waitFor(() => closed.length === 1, 3_000, "the evicted session closed");
  assert.deepEqual(closed, [first]);
  assert.equal(server.app.sessions.has(first), false);
});

Deno.test("guard: a bind's own eviction, announced before its reply, still closes it", async () => {
  // A handler that issues session ids at once, so that many binds travel in one batch and a
  // bind's eviction is announced before that batch's reply.
  const live = new Set<string>();
  const handler = (request: Request) => {
    const sid = request.headers.get("mcp-session-id");
    if (request.method === "DELETE") {
      live.delete(sid!);
      return new Response(null, { status: 200 });
    }
    const issued = crypto.randomUUID();
    live.add(issued);
    return new Response("{}", {
      headers: { "content-type": "application/json", "mcp-session-id": issued },
    });
  };
  const closed: string[] = [];
  await using owners = new SessionOwnerRegistry({ maxPerPrincipal: 1 });
  await using cancellations = new CancellationRegistry();
  const guard = guardSessions(handler, {
    owners,
    cancellations,
    principal: () => "mallory",
    onSessionClosed: (sid) => closed.push(sid),
  });
  const answers = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      guard(
        new Request("http://localhost/mcp", {
          method: "POST",
          headers: JSON_HEADERS,
          body: initializeBody(i),
        }),
      )),
  );
  assert.ok(answers.every((a) => a.status === 200));
  await waitFor(() => closed.length === 19, 3_000, "19 sessions closed");
  assert.equal(live.size, 1);
});

Deno.test("SessionOwnerRegistry: another principal's touches never use up the owner's", async () => {
  const expired: string[] = [];
  await using owners = new SessionOwnerRegistry({
    store: memoryStore({ idleTtlMs: 200 }),
    touchIntervalMs: 100,
  });
  owners.onRemoved(({ sessionIds }) => expired.push(...sessionIds));
  await owners.bind("s-1", "alice");
  for (let i = 0; i < 20; i++) {
    await owners.touch("s-1", "mallory");
    await owners.touch("s-1", "alice");
    await owners.touch("s-1", "mallory");
    await sleep(20);
  }
  assert.equal(await owners.ownerOf("s-1"), "alice");
  assert.deepEqual(expired, []);
});
