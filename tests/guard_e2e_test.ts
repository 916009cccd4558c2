/**
 * End to end: the official MCP SDK client against the official SDK server
 * (`WebStandardStreamableHTTPServerTransport`) on a real `Deno.serve`, wrapped
 * by `guardSessions`. One test per rule, and the unguarded control showing the
 * same attacks succeed without the guard.
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { fingerprint, type GuardOwners, InvalidInputError, SessionOwnerRegistry } from "../mod.ts";
import { createMcpApp, type ToolEvent } from "../examples/mcp_app.ts";
import {
  bearer,
  connect,
  intruder,
  startServer,
  type TestServer,
  waitFor,
} from "./support/mcp_server.ts";

type ToolResult = { content: { type: string; text: string }[]; isError?: boolean };

function text(result: unknown): string {
  return (result as ToolResult).content.map((c) => c.text).join("");
}

async function rejectsWithStatus(promise: Promise<unknown>, status: number): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StreamableHTTPError, `expected StreamableHTTPError, got ${err}`);
    assert.equal((err as { code?: number }).code, status, String(err));
    return true;
  });
}

/** A raw GET on the listening stream; returns the status and the JSON error body (if any). */
async function listen(
  server: TestServer,
  token: string | null,
  sessionId: string,
): Promise<{ status: number; code: number | null; response: Response }> {
  const response = await fetch(server.url, {
    headers: { accept: "text/event-stream", "mcp-session-id": sessionId, ...bearer(token) },
  });
  if (response.ok) return { status: response.status, code: null, response };
  const body = await response.json();
  return { status: response.status, code: body?.error?.code ?? null, response };
}

/** Wraps a registry for the guard, counting its `ownerOf` round trips. */
function countingLookups(owners: SessionOwnerRegistry) {
  const lookups = {
    count: 0,
    reset() {
      this.count = 0;
    },
  };
  const counting: GuardOwners = {
    bind: (s, f) => owners.bind(s, f),
    authorizeAttach: (s, f, o) => owners.authorizeAttach(s, f, o),
    ownerOf: (s) => {
      lookups.count++;
      return owners.ownerOf(s);
    },
    forget: (s, f) => owners.forget(s, f),
    unpin: (s) => owners.unpin(s),
    knownOwner: (s) => owners.knownOwner(s),
  };
  return { counting, lookups };
}

/** Starts `count` for `client` without awaiting it; resolves its request id once the tool runs. */
async function startCount(
  server: TestServer,
  call: () => Promise<unknown>,
): Promise<{ result: Promise<unknown>; requestId: string | number; sessionId: string }> {
  const before = server.tools.length;
  const result = call();
  result.catch(() => {});
  await waitFor(
    () => server.tools.slice(before).some((e) => e.tool === "count" && e.kind === "started"),
    5_000,
    "count to start",
  );
  const started = server.tools.slice(before).find((e) => e.kind === "started")!;
  return { result, requestId: started.requestId, sessionId: started.sessionId! };
}

Deno.test("guard: initialize binds the session to its creator", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token");
  assert.equal(await server.owners.ownerOf(alice.sessionId), await fingerprint("alice"));
  assert.ok(server.decisions.some((d) => d.reason === "bound" && d.sessionId === alice.sessionId));
  const reply = await alice.client.callTool({ name: "echo", arguments: { text: "hi" } });
  assert.equal(text(reply), "hi");
});

Deno.test("guard: another principal's listening stream is refused with 403 and -32600", async (t) => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });

  await t.step("raw GET by mallory", async () => {
    const { status, code } = await listen(server, "mallory-token", alice.sessionId);
    assert.equal(status, 403);
    assert.equal(code, -32600);
  });

  await t.step("SDK transport by mallory", async () => {
    await using mallory = await intruder(server.url, "mallory-token", alice.sessionId);
    await rejectsWithStatus(mallory.resumeStream("0"), 403);
  });

  await t.step("mallory never receives alice's server messages", async () => {
    const got: unknown[] = [];
    await using alice2 = await connect(server.url, "alice-token", { onLog: (d) => got.push(d) });
    const { status } = await listen(server, "mallory-token", alice2.sessionId);
    assert.equal(status, 403);
    await waitFor(() => server.app.sessions.get(alice2.sessionId) !== undefined);
    // Alice's own listener (opened by her SDK client) does get them.
    await waitFor(
      async () => (await server.owners.stats!()).pinned === 1,
      5_000,
      "a pinned stream",
    );
    await alice2.client.callTool({ name: "broadcast", arguments: { text: "for alice only" } });
    await waitFor(() => got.length > 0, 5_000, "alice's log message");
    assert.deepEqual(got, ["for alice only"]);
  });
});

Deno.test("guard: a live stream pins its session; closing it unpins but keeps the claim", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const owners = server.owners;
  const alicePrint = await fingerprint("alice");

  const first = await listen(server, "alice-token", alice.sessionId);
  assert.equal(first.status, 200);
  await waitFor(async () => (await owners.stats!()).pinned === 1, 5_000, "pinned");
  await first.response.body!.cancel();
  await waitFor(async () => (await owners.stats!()).pinned === 0, 5_000, "unpinned");
  assert.equal(await owners.ownerOf(alice.sessionId), alicePrint);

  // Unpinned is not forgotten: mallory still cannot take it, alice can come back.
  assert.equal((await listen(server, "mallory-token", alice.sessionId)).status, 403);
  const again = await listen(server, "alice-token", alice.sessionId);
  assert.equal(again.status, 200);
  await waitFor(async () => (await owners.stats!()).pinned === 1, 5_000, "pinned again");
  await again.response.body!.cancel();
  await waitFor(async () => (await owners.stats!()).pinned === 0, 5_000, "unpinned again");
});

Deno.test("guard: POST and DELETE with another principal's session id get 403", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  await alice.client.callTool({ name: "remember", arguments: { text: "alice's secret" } });
  await using mallory = await intruder(server.url, "mallory-token", alice.sessionId);
  const heard: unknown[] = [];
  mallory.onmessage = (m: unknown) => heard.push(m);

  await rejectsWithStatus(
    mallory.send({
      jsonrpc: "2.0",
      id: 99,
      method: "tools/call",
      params: { name: "recall", arguments: {} },
    }),
    403,
  );
  const raw = await fetch(server.url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-session-id": alice.sessionId,
      ...bearer("mallory-token"),
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "ping" }),
  });
  assert.equal(raw.status, 403);
  assert.deepEqual((await raw.json()).error.code, -32600);
  await rejectsWithStatus(mallory.terminateSession(), 403);

  assert.deepEqual(heard, []);
  const refused = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(
    refused.map((d) => [d.method, d.rpcMethod, d.status, d.reason]),
    [
      ["POST", "tools/call", 403, "not-owner"],
      ["POST", "ping", 403, "not-owner"],
      ["DELETE", null, 403, "not-owner"],
    ],
  );
  // Alice's session is untouched.
  assert.equal(
    text(await alice.client.callTool({ name: "recall", arguments: {} })),
    "alice's secret",
  );
});

Deno.test("guard: a cancellation reaches only requests of its own session (202)", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  await using mallory = await connect(server.url, "mallory-token", { listen: false });
  const run = await startCount(
    server,
    () => alice.client.callTool({ name: "count", arguments: { steps: 4, stepMs: 100 } }),
  );

  // Mallory, in her own session, guesses alice's request id: accepted as a notification, no effect.
  const raw = await fetch(server.url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-session-id": mallory.sessionId,
      "mcp-protocol-version": "2025-11-25",
      ...bearer("mallory-token"),
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: run.requestId, reason: "guessed" },
    }),
  });
  assert.equal(raw.status, 202);
  await raw.body?.cancel();
  await mallory.client.notification({
    method: "notifications/cancelled",
    params: { requestId: run.requestId, reason: "guessed again" },
  });
  // In alice's session: refused outright.
  await using intruding = await intruder(server.url, "mallory-token", alice.sessionId);
  await rejectsWithStatus(
    intruding.send({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: run.requestId },
    }),
    403,
  );

  assert.equal(text(await run.result), "counted to 4");
  assert.ok(server.tools.some((e) => e.requestId === run.requestId && e.kind === "completed"));
  assert.ok(!server.tools.some((e) => e.kind === "stopped"));
  assert.equal(
    server.decisions.filter((d) => d.reason === "cancel-unmatched").length,
    2,
  );
  assert.equal(server.decisions.filter((d) => d.reason === "cancelled").length, 0);
});

Deno.test("guard: the owner's cancellation stops the tool and drops its entry", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const stop = new AbortController();
  const run = await startCount(
    server,
    () =>
      alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 50 } }, undefined, {
        signal: stop.signal,
      }),
  );
  assert.equal(await server.cancellations.size!(), 1);
  stop.abort("alice changed her mind");
  await assert.rejects(run.result);
  await waitFor(
    () => server.tools.some((e) => e.requestId === run.requestId && e.kind === "stopped"),
    5_000,
    "the tool to stop",
  );
  const stopped = server.tools.find((e) => e.kind === "stopped")!;
  assert.ok(stopped.step! < 50, `stopped after ${stopped.step} steps`);
  assert.ok(server.decisions.some((d) => d.reason === "cancelled"));
  await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
});

Deno.test("guard: an operator's cancel aborts the tool's own signal and answers -32000", async (t) => {
  for (const jsonResponse of [false, true]) {
    await t.step(jsonResponse ? "JSON answers" : "SSE answers", async () => {
      // Tools that honour only the SDK's own `extra.signal` (no signalFor).
      const tools: ToolEvent[] = [];
      const app = createMcpApp({ jsonResponse, onToolEvent: (e) => tools.push(e) });
      try {
        await using server = await startServer({ handler: app.handler });
        await using alice = await connect(server.url, "alice-token", { listen: false });
        const before = tools.length;
        const result = alice.client.callTool({
          name: "count",
          arguments: { steps: 50, stepMs: 50 },
        });
        result.catch(() => {});
        await waitFor(() => tools.slice(before).some((e) => e.kind === "started"), 5_000);
        const started = tools.slice(before).find((e) => e.kind === "started")!;
        // Another session's id finds nothing; the right one stops the tool through its own signal.
        assert.equal(
          await server.cancellations.cancel("some-other-session", started.requestId),
          false,
        );
        const cancelledAt = performance.now();
        assert.equal(await server.cancellations.cancel(alice.sessionId, started.requestId), true);
        await assert.rejects(result, (err: unknown) => {
          assert.equal((err as { code?: number }).code, -32000, String(err));
          assert.match(String(err), /Request cancelled by the server: request \d+ of session/);
          return true;
        });
        assert.ok(performance.now() - cancelledAt < 1_000, "answered promptly");
        await waitFor(() => tools.some((e) => e.kind === "stopped"), 5_000, "the tool to stop");
        const stopped = tools.find((e) => e.kind === "stopped")!;
        assert.ok(stopped.step! < 50);
        // The SDK's signal aborted, with the reason the guard told the handler.
        assert.match(stopped.reason!, /^Request cancelled by the server: /);
        await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "dropped");
        // The session goes on.
        const next = await alice.client.callTool({ name: "echo", arguments: { text: "again" } });
        assert.equal(text(next), "again");
        assert.ok(!tools.some((e) => e.kind === "completed" && e.tool === "count"));
      } finally {
        await app.close();
      }
    });
  }
});

Deno.test("guard: signalFor combines the guard's signal and the SDK's", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const run = await startCount(
    server,
    () => alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 50 } }),
  );
  assert.equal(await server.cancellations.cancel(run.sessionId, run.requestId), true);
  await assert.rejects(run.result, /Request cancelled by the server/);
  const stopped = server.tools.find((e) => e.kind === "stopped");
  assert.ok(stopped !== undefined && stopped.step! < 50);
  await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  // Untracked requests get the SDK's own signal (or a live one).
  const own = new AbortController();
  assert.equal(
    server.guard!.signalFor({ sessionId: "x", requestId: 1, signal: own.signal }),
    own.signal,
  );
  assert.equal(server.guard!.signalFor({ requestId: 1 }).aborted, false);
});

Deno.test("guard: DELETE by the owner terminates, cancels in-flight work, forgets", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const sessionId = alice.sessionId;
  const run = await startCount(
    server,
    () => alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 50 } }),
  );
  await alice.transport.terminateSession();
  // (run.result stays pending until the client closes: the SDK server sends no answer for it.)
  await waitFor(
    () => server.tools.some((e) => e.requestId === run.requestId && e.kind === "stopped"),
    5_000,
    "the tool to stop",
  );
  assert.equal(await server.owners.ownerOf(sessionId), null);
  assert.equal(server.app.sessions.has(sessionId), false);
  await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  // The id is now unknown to the guard: 404, and nobody can claim it.
  assert.equal((await listen(server, "alice-token", sessionId)).status, 404);
  assert.equal((await listen(server, "mallory-token", sessionId)).status, 404);
});

Deno.test("guard: anonymous callers can never claim or own a session in strict mode", async () => {
  await using server = await startServer();
  await rejectsWithStatus(connect(server.url, null), 401);
  await rejectsWithStatus(connect(server.url, "no-such-token"), 401);
  assert.equal(server.app.sessions.size, 0);
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const probe = await listen(server, null, alice.sessionId);
  assert.equal(probe.status, 401);
  assert.equal(probe.response.headers.get("www-authenticate"), "Bearer");
  assert.equal(await server.owners.ownerOf(alice.sessionId), await fingerprint("alice"));
});

Deno.test("guard: entries are dropped when the response ends or the client disconnects", async (t) => {
  await using server = await startServer();

  await t.step("a finished response", async () => {
    await using alice = await connect(server.url, "alice-token", { listen: false });
    await alice.client.callTool({ name: "echo", arguments: { text: "x" } });
    await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  });

  await t.step("a client that goes away mid-call", async () => {
    const alice = await connect(server.url, "alice-token", { listen: false });
    const run = await startCount(
      server,
      () => alice.client.callTool({ name: "count", arguments: { steps: 50, stepMs: 50 } }),
    );
    assert.equal(await server.cancellations.size!(), 1);
    await alice.client.close();
    await assert.rejects(run.result);
    await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  });

  await t.step("a tool that fails", async () => {
    await using alice = await connect(server.url, "alice-token", { listen: false });
    const reply = await alice.client.callTool({ name: "count", arguments: { steps: 0 } });
    assert.equal((reply as ToolResult).isError, true);
    await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  });
});

Deno.test("guard: JSON responses (enableJsonResponse) are guarded and tracked too", async () => {
  await using server = await startServer({ jsonResponse: true });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  assert.equal(text(await alice.client.callTool({ name: "echo", arguments: { text: "j" } })), "j");
  await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  await using mallory = await intruder(server.url, "mallory-token", alice.sessionId);
  await rejectsWithStatus(
    mallory.send({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "recall" } }),
    403,
  );
});

Deno.test("guard: ownerCacheMs skips lookups for the owner only, and only for that long", async () => {
  await using owners = new SessionOwnerRegistry({ knownOwners: false });
  const { counting, lookups } = countingLookups(owners);
  await using server = await startServer({
    guard: { owners: counting, tasks: false, credentials: false, ownerCacheMs: 400 },
  });
  await using alice = await connect(server.url, "alice-token", { listen: false });

  // Another principal is never let in by the cache: it is looked up, and refused.
  await using mallory = await intruder(server.url, "mallory-token", alice.sessionId);
  lookups.reset();
  await rejectsWithStatus(mallory.send({ jsonrpc: "2.0", id: 9, method: "ping" }), 403);
  assert.equal(lookups.count, 1);

  // The owner: the first POST asks the registry, the next ones within 400 ms do not.
  lookups.reset();
  const cached = performance.now();
  // When the last call that asked the registry ended: the entry was cached by then (on a slow
  // machine the five calls can outlast the entry, and a later one caches it again).
  let lastCached = 0;
  for (let i = 0; i < 5; i++) {
    const asked: number = lookups.count;
    assert.equal(
      text(await alice.client.callTool({ name: "echo", arguments: { text: "x" } })),
      "x",
    );
    if (lookups.count !== asked) lastCached = performance.now();
  }
  assert.ok(lookups.count >= 1, "the first call asks the registry");
  if (performance.now() - cached < 350) assert.equal(lookups.count, 1);

  // An operator drops the binding: the owner keeps going for at most ownerCacheMs, then 404.
  // Bounds that hold however slow the machine is: a call decides after it starts and before
  // it ends, and the entry was cached after `cached` and before `lastCached`.
  await owners.forget(alice.sessionId);
  await waitFor(
    async () => {
      const started = performance.now() - lastCached;
      try {
        await alice.client.callTool({ name: "echo", arguments: { text: "y" } });
        assert.ok(started < 400, `served a call started ${Math.round(started)} ms after the entry`);
        return false;
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        const refused = err instanceof Error && /404|not found/i.test(err.message);
        const ended = performance.now() - cached;
        if (refused && ended < 400) assert.fail(`refused ${Math.round(ended)} ms after: too early`);
        return refused;
      }
    },
    3_000,
    "the owner to be refused once the cache entry expired",
  );
});

Deno.test("guard: the owner's POSTs need no lookup (knownOwner); anyone else is looked up and refused", async () => {
  await using owners = new SessionOwnerRegistry();
  const { counting, lookups } = countingLookups(owners);
  await using server = await startServer({
    guard: { owners: counting, tasks: false, credentials: false },
  });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  lookups.reset();
  for (let i = 0; i < 5; i++) {
    assert.equal(
      text(await alice.client.callTool({ name: "echo", arguments: { text: "x" } })),
      "x",
    );
  }
  assert.equal(lookups.count, 0, "the bind taught the registry who owns the session");

  await using mallory = await intruder(server.url, "mallory-token", alice.sessionId);
  await rejectsWithStatus(mallory.send({ jsonrpc: "2.0", id: 9, method: "ping" }), 403);
  assert.equal(lookups.count, 1, "a different principal is always looked up");

  // An operator drops the binding: the very next POST of the owner is looked up and refused.
  await owners.forget(alice.sessionId);
  await assert.rejects(
    alice.client.callTool({ name: "echo", arguments: { text: "y" } }),
    /404|not found/i,
  );
  assert.equal(lookups.count, 2);
});

Deno.test("guard: signalFor takes SDK 1.32's extra or SDK v2's ctx, and refuses anything else", async () => {
  await using server = await startServer();
  const guard = server.guard!;
  const own = new AbortController();
  assert.equal(guard.signalFor({ mcpReq: { id: 7, signal: own.signal } }), own.signal);
  assert.equal(guard.signalFor({ sessionId: "x", mcpReq: { id: "a" } }).aborted, false);
  for (const wrong of [undefined, null, {}, { text: "tool arguments" }, { requestId: {} }, 42]) {
    assert.throws(
      () => guard.signalFor(wrong as never),
      (err: unknown) =>
        err instanceof InvalidInputError && /pass the tool's `extra`/.test(err.message),
      JSON.stringify(wrong),
    );
  }
});
