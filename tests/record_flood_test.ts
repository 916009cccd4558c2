/**
 * Scope-bound sessions under a flood: one principal's credential records
 * never push out another principal's (whose session the guard would then
 * close as `evicted`, and refuse as `unknown-session`).
 *
 * - A record is forgotten whenever its session's owner binding is evicted or
 *   expires, even when this guard no longer holds the session (the handler
 *   answered 404 for it): no orphan record outlives its binding.
 * - The records' registry caps each principal's records (counted by the
 *   owner's fingerprint, whatever the scopes), so records bound in flight for
 *   bindings already evicted by their principal's own cap only ever evict
 *   that principal's records.
 */

import assert from "node:assert/strict";
import {
  CancellationRegistry,
  guardSessions,
  kvStore,
  type RegistryStore,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { derivedRegistry } from "../src/registry/session_owner_registry.ts";
import { bearerPrincipal } from "../examples/server.ts";
import { initializeRequest, openSession, postRpc } from "./support/mcp_server.ts";
import { startRedis } from "./support/redis_server.ts";

const RECORDS = { redis: "s:", kv: ":s" };

Deno.test("mirror registry: a principal's records, whatever their scopes, evict only its own", async (t) => {
  const check = async (store: RegistryStore | undefined) => {
    await using owners = new SessionOwnerRegistry({ store, maxEntries: 4, maxPerPrincipal: 2 });
    // Room for 8 records, at most 4 of one principal's.
    const records = derivedRegistry(owners, RECORDS, "mirror");
    assert.equal(await records.bind("alice", "fp-a s:read"), "bound");
    for (let i = 0; i < 10; i++) {
      const record = i % 2 === 0 ? `fp-m s:scope-${i}` : `fp-m c:tag${i} s:read`;
      assert.equal(await records.bind(`m${i}`, record), "bound");
    }
    assert.equal(await records.ownerOf("alice"), "fp-a s:read");
    assert.equal(await records.size(), 5);
    assert.deepEqual(
      await Promise.all(["m5", "m6", "m7", "m8", "m9"].map((sid) => records.ownerOf(sid))),
      [null, "fp-m s:scope-6", "fp-m c:tag7 s:read", "fp-m s:scope-8", "fp-m c:tag9 s:read"],
    );
    // The owners' own table counts whole fingerprints, as before.
    assert.equal(await owners.bind("o1", "fp-x s:a"), "bound");
    assert.equal(await owners.bind("o2", "fp-x s:b"), "bound");
    assert.equal(await owners.bind("o3", "fp-x s:c"), "bound");
    assert.equal(await owners.ownerOf("o1"), "fp-x s:a");
  };
  await t.step("memory", () => check(undefined));
  await t.step("Deno KV", async () => {
    const path = await Deno.makeTempFile({ suffix: ".kv" });
    try {
      await check(kvStore({ path, prefix: "records" }));
    } finally {
      await Deno.remove(path).catch(() => {});
    }
  });
  await t.step("Redis", async () => {
    await using redis = await startRedis();
    await check(redisStore({ url: redis.url, prefix: "records:" }));
  });
});

/** A sessionful server: `initialize` issues a fresh id; `expired-probe` answers 404 (forgotten). */
async function handler(request: Request): Promise<Response> {
  if (request.method !== "POST") return new Response(null, { status: 200 });
  const body = await request.json();
  if (body.method === "initialize") {
    await new Promise((r) => setTimeout(r, Math.random() * 5));
    return Response.json({ jsonrpc: "2.0", id: body.id, result: {} }, {
      headers: { "mcp-session-id": crypto.randomUUID() },
    });
  }
  if (body.id === undefined) return new Response(null, { status: 202 });
  if (body.method === "expired-probe") {
    return Response.json(
      { jsonrpc: "2.0", id: null, error: { code: -32001, message: "Session not found" } },
      { status: 404 },
    );
  }
  return Response.json({ jsonrpc: "2.0", id: body.id, result: {} });
}

function start() {
  const owners = new SessionOwnerRegistry({ maxEntries: 8, maxPerPrincipal: 2 });
  const cancellations = new CancellationRegistry();
  const closed: string[] = [];
  const serve = guardSessions(handler, {
    owners,
    cancellations,
    principal: bearerPrincipal(),
    onSessionClosed: (sid, cause) => closed.push(`${sid}:${cause}`),
  });
  // The guard's own records registry (made once per owners' registry).
  const records = derivedRegistry(owners, { redis: "s:", kv: ":s" }, "mirror");
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, serve);
  return {
    url: new URL(`http://127.0.0.1:${server.addr.port}/mcp`),
    closed,
    owners,
    records,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await owners.close();
      await cancellations.close();
    },
  };
}

async function ping(url: URL, sid: string): Promise<void> {
  const response = await postRpc(url, "alice-token", sid, {
    jsonrpc: "2.0",
    id: 1,
    method: "ping",
  });
  const text = await response.text();
  assert.equal(response.status, 200, `Alice refused: ${response.status} ${text}`);
}

Deno.test("guard: sessions the server forgot leave no record behind to push out Alice's", async () => {
  await using srv = start();
  const alice = await openSession(srv.url, "alice-token");
  await ping(srv.url, alice);
  for (let i = 0; i < 24; i++) {
    const opened = await postRpc(srv.url, "mallory-token", null, initializeRequest(i));
    await opened.body?.cancel();
    const sid = opened.headers.get("mcp-session-id")!;
    // The server forgot it (404): the guard drops it, its binding stays until Mallory's cap
    // evicts it, and its record must go with it then.
    const gone = await postRpc(srv.url, "mallory-token", sid, {
      jsonrpc: "2.0",
      id: 1,
      method: "expired-probe",
    });
    assert.equal(gone.status, 404);
    await gone.body?.cancel();
  }
  await new Promise((r) => setTimeout(r, 100));
  await ping(srv.url, alice);
  assert.deepEqual(srv.closed.filter((c) => c.startsWith(alice)), []);
  // One record per binding: none outlived its binding.
  assert.equal(await srv.owners.size(), 3);
  assert.equal(await srv.records.size(), 3);
});

Deno.test("guard: a flood of concurrent initializes by one principal never closes another's session", async () => {
  await using srv = start();
  const alice = await openSession(srv.url, "alice-token");
  await ping(srv.url, alice);
  for (let round = 0; round < 30; round++) {
    await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const r = await postRpc(srv.url, "mallory-token", null, initializeRequest(i));
      await r.body?.cancel();
    }));
  }
  await new Promise((r) => setTimeout(r, 100));
  await ping(srv.url, alice);
  assert.deepEqual(srv.closed.filter((c) => c.startsWith(alice)), []);
  assert.ok(await srv.owners.size() <= 3);
});
