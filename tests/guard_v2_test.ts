/**
 * The guard in front of the official SDK v2 (`createMcpHandler`, MCP
 * 2026-07-28): modern and 2025-era clients pass with the caller's identity
 * available to tools, anonymous callers are refused, and a modern client that
 * disconnects cancels its tool call, guarded as unguarded.
 */

import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import type { GuardDecision } from "../mod.ts";
import { type SlowToolEvent, startV2Server } from "../examples/server_v2.ts";
import { waitFor } from "./support/mcp_server.ts";

async function client(url: URL, token: string | null, era: "modern" | "legacy") {
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: token === null ? {} : { authorization: `Bearer ${token}` } },
  });
  const c = new Client(
    { name: "test", version: "1.0.0" },
    era === "modern" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {},
  );
  await c.connect(transport);
  return Object.assign(c, { [Symbol.asyncDispose]: () => c.close() });
}

function textOf(result: { content?: unknown }): string {
  return (result.content as { text: string }[])[0].text;
}

/** A raw 2026-07-28 `tools/call` of `slow`, whose client goes away after `abortAfterMs`. */
async function modernSlowCall(url: URL, abortAfterMs: number): Promise<void> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), abortAfterMs);
  try {
    const response = await fetch(url, {
      method: "POST",
      signal: controller.signal,
      headers: {
        authorization: "Bearer alice-token",
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "slow",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "tools/call",
        params: {
          name: "slow",
          arguments: { ms: 10_000 },
          _meta: {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": { name: "raw", version: "1" },
            "io.modelcontextprotocol/clientCapabilities": {},
          },
        },
      }),
    });
    await response.text(); // the stream, until the client goes away
  } catch (err) {
    if (!(err instanceof DOMException && err.name === "AbortError")) throw err;
  } finally {
    clearTimeout(timer);
  }
}

for (const era of ["modern", "legacy"] as const) {
  Deno.test(`v2: a ${era} client passes with its identity; anonymous is refused`, async () => {
    const decisions: GuardDecision[] = [];
    await using server = await startV2Server({ port: 0, onDecision: (d) => decisions.push(d) });
    {
      await using alice = await client(server.url, "alice-token", era);
      assert.equal(textOf(await alice.callTool({ name: "whoami", arguments: {} })), "alice");
      await using bob = await client(server.url, "bob-token", era);
      assert.equal(textOf(await bob.callTool({ name: "whoami", arguments: {} })), "bob");
    }
    assert.ok(decisions.length > 0 && decisions.every((d) => d.sessionId === null));
    assert.ok(decisions.some((d) => d.rpcMethod === "tools/call" && d.outcome === "allow"));
    if (era === "modern") {
      assert.ok(decisions.some((d) => d.rpcMethod === "server/discover" && d.outcome === "allow"));
    }
    await assert.rejects(() => client(server.url, null, era), /401|Unauthorized/);
    assert.ok(decisions.some((d) => d.reason === "anonymous" && d.status === 401));
  });
}

for (
  const [name, guarded, forwardBody] of [
    ["unguarded (control)", false, undefined],
    ["guarded, forwardBody parsed", true, "parsed"],
    ["guarded, forwardBody copy", true, "copy"],
  ] as const
) {
  Deno.test(`v2: a modern client's disconnect cancels its tool call (${name})`, async () => {
    const events: SlowToolEvent[] = [];
    await using server = await startV2Server({
      port: 0,
      guarded,
      forwardBody,
      onSlowTool: (e) => events.push(e),
    });
    const started = performance.now();
    await modernSlowCall(server.url, 100);
    await waitFor(() => events.length > 0, 5_000, "the tool to end");
    assert.deepEqual(events, [{ principal: "alice", outcome: "aborted" }]);
    assert.ok(performance.now() - started < 5_000, "stopped long before its 10 s");
  });
}

Deno.test("v2: GET and DELETE without Mcp-Session-Id get the server's own answer, guarded as unguarded", async () => {
  /** Status, Allow, content type and JSON-RPC error code of each no-session GET and DELETE. */
  async function answers(url: URL, token: string | null) {
    const seen = [];
    for (const method of ["GET", "DELETE"]) {
      const response = await fetch(url, {
        method,
        headers: {
          accept: "text/event-stream",
          ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        },
      });
      const body = await response.text();
      seen.push({
        method,
        status: response.status,
        allow: response.headers.get("allow"),
        code: body === "" ? null : JSON.parse(body).error?.code ?? null,
      });
    }
    return seen;
  }
  const decisions: GuardDecision[] = [];
  let unguarded;
  {
    await using control = await startV2Server({ port: 0, guarded: false });
    unguarded = await answers(control.url, "alice-token");
  }
  assert.ok(unguarded.every((a) => a.status === 405), JSON.stringify(unguarded));
  await using server = await startV2Server({ port: 0, onDecision: (d) => decisions.push(d) });
  assert.deepEqual(await answers(server.url, "alice-token"), unguarded);
  assert.deepEqual(
    decisions.map((d) => [d.method, d.outcome, d.reason, d.sessionId]),
    [["GET", "allow", "allowed", null], ["DELETE", "allow", "allowed", null]],
  );
  // Strict mode still wants an identified caller, as for a POST without a session id.
  assert.deepEqual((await answers(server.url, null)).map((a) => a.status), [401, 401]);
  // The SDK v2 client's own probe of the listening stream is a normal 405, not an error.
  const errors: Error[] = [];
  const transport = new StreamableHTTPClientTransport(server.url, {
    requestInit: { headers: { authorization: "Bearer alice-token" } },
  });
  const c = new Client({ name: "test", version: "1.0.0" });
  c.onerror = (error) => errors.push(error);
  await c.connect(transport);
  await c.callTool({ name: "whoami", arguments: {} });
  await c.close();
  assert.deepEqual(errors.map(String), []);
});
