/**
 * End to end across two processes: server A (a separate `deno run`) and
 * server B (this process), each the example MCP app behind `guardSessions`
 * on its own `Deno.serve` port, sharing one Redis for both registries.
 *
 * A session initialized on A cannot be attached, posted to, cancelled or
 * deleted by another principal through B; its owner can attach through B;
 * a cancel the owner sends through B stops the tool running on A. While
 * Redis is down both answer 503 (fail closed); once it is back they resume.
 */

import assert from "node:assert/strict";
import { CancellationRegistry, fingerprint, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { bearer, connect, startServer, waitFor } from "./support/mcp_server.ts";
import { startRedis } from "./support/redis_server.ts";
import { Child } from "./support/store_child.ts";

interface ToolEvent {
  tool: string;
  sessionId?: string;
  requestId: string | number;
  kind: string;
  step?: number;
}

/** Reads the child's lines until a tool event matches. */
async function untilTool(child: Child, match: (e: ToolEvent) => boolean): Promise<ToolEvent> {
  for (;;) {
    const line = await child.next();
    const event = line.tool as ToolEvent | undefined;
    if (event !== undefined && match(event)) return event;
  }
}

function post(
  url: URL,
  token: string,
  sessionId: string,
  body: unknown,
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-session-id": sessionId,
      "mcp-protocol-version": "2025-11-25",
      ...bearer(token),
    },
    body: JSON.stringify(body),
  });
}

async function refusedWith403(response: Promise<Response>): Promise<void> {
  const r = await response;
  assert.equal(r.status, 403);
  assert.equal((await r.json()).error.code, -32600);
}

Deno.test("cluster: two guarded servers in two processes share ownership and cancellation through Redis", async () => {
  await using redis = await startRedis({ persistent: true });
  const prefix = "e2e:";
  const a = Child.spawn({
    store: { kind: "redis", url: redis.url, prefix },
    action: "serve",
  });
  try {
    const urlA = new URL(`http://127.0.0.1:${(await a.next()).port}/mcp`);
    const store = redisStore({ url: redis.url, prefix });
    await using owners = new SessionOwnerRegistry({ store });
    await using cancellations = new CancellationRegistry({ store });
    await using b = await startServer({ guard: { owners, cancellations } });

    // Alice starts her session on A.
    await using alice = await connect(urlA, "alice-token", { listen: false });
    const sid = alice.sessionId;
    assert.equal(await owners.ownerOf(sid), await fingerprint("alice")); // seen from B's side

    // Mallory, through B: no attach, no post, no delete.
    await refusedWith403(fetch(b.url, {
      headers: { accept: "text/event-stream", "mcp-session-id": sid, ...bearer("mallory-token") },
    }));
    await refusedWith403(post(b.url, "mallory-token", sid, {
      jsonrpc: "2.0",
      id: 5,
      method: "tools/call",
      params: { name: "recall", arguments: {} },
    }));
    await refusedWith403(fetch(b.url, {
      method: "DELETE",
      headers: { "mcp-session-id": sid, ...bearer("mallory-token") },
    }));

    // Alice, through B: her attach passes the guard (B's own app has no such session and
    // answers for itself: the point is that B's guard knows she owns it).
    const attach = await fetch(b.url, {
      headers: { accept: "text/event-stream", "mcp-session-id": sid, ...bearer("alice-token") },
    });
    await attach.body?.cancel();
    assert.notEqual(attach.status, 403);
    const attachDecision = b.decisions.findLast((d) => d.method === "GET" && d.sessionId === sid);
    assert.equal(attachDecision?.outcome, "allow");

    // A long tool runs on A.
    const call = alice.client.callTool({ name: "count", arguments: { steps: 100, stepMs: 50 } });
    call.catch(() => {});
    const started = await untilTool(a, (e) => e.tool === "count" && e.kind === "started");
    assert.equal(started.sessionId, sid);

    // Mallory's cancel through B, in alice's session: refused; the tool keeps counting.
    await refusedWith403(post(b.url, "mallory-token", sid, {
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: started.requestId },
    }));
    await untilTool(a, (e) => e.kind === "step" && (e.step ?? 0) >= 2);
    // A's cancellation worker starts with its first request (loading the Redis client and
    // subscribing): wait until the registration is in Redis, as seen from B.
    await waitFor(async () => (await cancellations.size()) === 1, 10_000, "A's registration");

    // Alice's cancel through B stops the tool on A.
    const cancel = await post(b.url, "alice-token", sid, {
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: started.requestId, reason: "changed my mind" },
    });
    await cancel.body?.cancel();
    assert.ok(b.decisions.some((d) => d.reason === "cancelled" && d.sessionId === sid));
    const stopped = await untilTool(
      a,
      (e) => e.requestId === started.requestId && (e.kind === "stopped" || e.kind === "completed"),
    );
    assert.equal(stopped.kind, "stopped");
    assert.ok((stopped.step ?? 0) < 100);

    // The session still belongs to alice, and still works on A.
    assert.equal(await owners.ownerOf(sid), await fingerprint("alice"));
    const echo = { jsonrpc: "2.0", id: 77, method: "tools/call", params: { name: "echo" } };
    const reply = await alice.client.callTool({ name: "echo", arguments: { text: "still mine" } });
    assert.equal((reply as { content: { text: string }[] }).content[0].text, "still mine");

    // Redis goes down: both servers fail closed with 503, for the owner and the intruder.
    await redis.stop();
    for (const url of [urlA, b.url]) {
      for (const token of ["alice-token", "mallory-token"]) {
        const r = await post(url, token, sid, echo);
        await r.body?.cancel();
        assert.equal(r.status, 503, `${url} ${token}`);
      }
    }
    // Redis is back (it persists to its append-only file): service resumes by itself,
    // alice's binding is intact, mallory is still refused.
    await redis.start();
    // Each process reconnects on its own: wait for both (alice's call below goes to A).
    for (const url of [b.url, urlA]) {
      const deadline = Date.now() + 10_000;
      let status = 0;
      while (status !== 403 && Date.now() < deadline) {
        const r = await post(url, "mallory-token", sid, echo);
        await r.body?.cancel();
        status = r.status;
        assert.ok(status === 403 || status === 503, `${url}: got ${status}`);
        if (status === 503) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(status, 403, `${url}`);
    }
    const again = await alice.client.callTool({ name: "echo", arguments: { text: "back" } });
    assert.equal((again as { content: { text: string }[] }).content[0].text, "back");
  } finally {
    assert.equal(await a.close(), 0);
  }
});
