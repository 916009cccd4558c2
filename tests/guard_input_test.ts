/**
 * Bad input against the guarded SDK server, with raw `fetch`: every request
 * gets a clear 4xx with a JSON-RPC error body naming the problem, the guard
 * (not the SDK behind it) is the one answering, invalid session ids never
 * reach the registry, and none of it disturbs a session running next to it.
 */

import assert from "node:assert/strict";
import { fingerprint, SessionOwnerRegistry } from "../mod.ts";
import type { GuardOwners } from "../mod.ts";
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import {
  bearer,
  connect,
  initializeRequest,
  openSession,
  postRpc,
  sessionHeaders,
  startServer,
  waitFor,
} from "./support/mcp_server.ts";

const MAX_BODY = 4096;

/** A real owner registry that records which methods the guard called. */
function spyOwners(): { owners: GuardOwners; calls: string[]; real: SessionOwnerRegistry } {
  const real = new SessionOwnerRegistry();
  const calls: string[] = [];
  const owners: GuardOwners = {
    bind: (s, f) => (calls.push("bind"), real.bind(s, f)),
    authorizeAttach: (s, f, o) => (calls.push("authorizeAttach"), real.authorizeAttach(s, f, o)),
    ownerOf: (s) => (calls.push("ownerOf"), real.ownerOf(s)),
    forget: (s, f) => (calls.push("forget"), real.forget(s, f)),
    unpin: (s) => (calls.push("unpin"), real.unpin(s)),
  };
  return { owners, calls, real };
}

interface Case {
  name: string;
  method?: string;
  body?: BodyInit | null;
  headers?: Record<string, string>;
  status: number;
  code: number;
  reason: string;
  message: RegExp;
}

const ping = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });

const CASES: Case[] = [
  {
    name: "malformed JSON",
    body: '{"jsonrpc": "2.0", "id": 1, "method": "ping"',
    status: 400,
    code: -32700,
    reason: "parse-error",
    message: /Parse error/,
  },
  {
    name: "empty body",
    body: "",
    status: 400,
    code: -32700,
    reason: "parse-error",
    message: /Parse error/,
  },
  {
    name: "batch body",
    body: `[${ping}, ${ping}]`,
    status: 400,
    code: -32600,
    reason: "batch",
    message: /batches are not supported/,
  },
  {
    name: "empty batch",
    body: "[]",
    status: 400,
    code: -32600,
    reason: "batch",
    message: /batches/,
  },
  {
    name: "not JSON-RPC 2.0",
    body: JSON.stringify({ jsonrpc: "1.0", id: 4, method: "ping" }),
    status: 400,
    code: -32600,
    reason: "invalid-request",
    message: /"jsonrpc" must be "2.0"/,
  },
  {
    name: "a JSON string, not a message",
    body: '"ping"',
    status: 400,
    code: -32600,
    reason: "invalid-request",
    message: /one JSON-RPC message object/,
  },
  {
    name: "array params",
    body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "tools/list", params: [1] }),
    status: 400,
    code: -32602,
    reason: "invalid-params",
    message: /params must be an object/,
  },
  {
    name: "neither request nor response",
    body: JSON.stringify({ jsonrpc: "2.0", id: 6, result: {}, error: { code: 1 } }),
    status: 400,
    code: -32600,
    reason: "invalid-request",
    message: /exactly one of result and error/,
  },
  {
    name: "text/plain body",
    body: ping,
    headers: { "content-type": "text/plain" },
    status: 415,
    code: -32000,
    reason: "unsupported-media-type",
    message: /application\/json/,
  },
  {
    name: "missing Content-Type",
    body: new Blob([ping]),
    headers: { "content-type": "" },
    status: 415,
    code: -32000,
    reason: "unsupported-media-type",
    message: /Content-Type/,
  },
  {
    name: "oversized body (Content-Length)",
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 7,
      method: "ping",
      params: { pad: "x".repeat(MAX_BODY) },
    }),
    status: 413,
    code: -32000,
    reason: "body-too-large",
    message: /must not exceed 4096 bytes/,
  },
  {
    name: "oversized body (chunked, no Content-Length)",
    body: "stream",
    status: 413,
    code: -32000,
    reason: "body-too-large",
    message: /Payload Too Large/,
  },
  {
    name: "PUT",
    method: "PUT",
    body: ping,
    status: 405,
    code: -32000,
    reason: "method-not-allowed",
    message: /Method Not Allowed: PUT/,
  },
];

function chunkedOversize(): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent > MAX_BODY * 2) return controller.close();
      sent += 1024;
      controller.enqueue(new TextEncoder().encode(" ".repeat(1024)));
    },
  });
}

Deno.test("guard: bad input gets a clear 4xx and leaves other sessions alone", async (t) => {
  await using server = await startServer({ guard: { maxBodyBytes: MAX_BODY } });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  await using bob = await connect(server.url, "bob-token", { listen: false });
  await bob.client.callTool({ name: "remember", arguments: { text: "bob's note" } });
  // Bob's long call runs through all of it.
  const bobCall = bob.client.callTool({ name: "count", arguments: { steps: 8, stepMs: 60 } });
  await waitFor(() => server.tools.some((e) => e.kind === "started"), 5_000, "bob's call");
  const sessionsBefore = server.app.sessions.size;

  for (const c of CASES) {
    await t.step(c.name, async () => {
      const before = server.decisions.length;
      const method = c.method ?? "POST";
      const headers = new Headers({
        accept: "application/json, text/event-stream",
        ...bearer("alice-token"),
      });
      if (method === "POST") headers.set("content-type", "application/json");
      headers.set("mcp-session-id", alice.sessionId);
      for (const [k, v] of Object.entries(c.headers ?? {})) {
        if (v === "") headers.delete(k);
        else headers.set(k, v);
      }
      const body = c.body === "stream" ? chunkedOversize() : c.body;
      const response = await fetch(server.url, { method, headers, body });
      assert.equal(response.status, c.status);
      assert.equal(response.headers.get("content-type"), "application/json");
      const json = await response.json();
      assert.equal(json.jsonrpc, "2.0");
      assert.equal(json.error.code, c.code);
      assert.match(json.error.message, c.message);
      if (c.status === 405) assert.equal(response.headers.get("allow"), "GET, POST, DELETE");
      // The guard answered (not the SDK behind it).
      const decided = server.decisions.slice(before);
      assert.deepEqual(decided.map((d) => [d.outcome, d.status, d.reason]), [
        ["refuse", c.status, c.reason],
      ]);
    });
  }

  await t.step("other sessions were not disturbed", async () => {
    const reply = await bobCall as { content: { text: string }[] };
    assert.equal(reply.content[0].text, "counted to 8");
    const note = await bob.client.callTool({ name: "recall", arguments: {} });
    assert.equal((note as { content: { text: string }[] }).content[0].text, "bob's note");
    assert.equal(server.app.sessions.size, sessionsBefore);
    assert.equal(await server.owners.ownerOf(alice.sessionId), await fingerprint("alice"));
    assert.equal(await server.owners.ownerOf(bob.sessionId), await fingerprint("bob"));
    await alice.client.ping();
    await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "deregistered");
  });
});

Deno.test("guard: GET and DELETE without Mcp-Session-Id reach the handler, as unguarded", async () => {
  async function answers(url: URL) {
    const seen = [];
    for (const method of ["GET", "DELETE"]) {
      const response = await fetch(url, {
        method,
        headers: { accept: "text/event-stream", ...bearer("alice-token") },
      });
      seen.push([method, response.status, await response.text()]);
    }
    return seen;
  }
  let unguarded;
  {
    await using control = await startServer({ guarded: false });
    unguarded = await answers(control.url);
  }
  const { owners, calls, real } = spyOwners();
  try {
    await using server = await startServer({ guard: { owners, tasks: false, credentials: false } });
    assert.deepEqual(await answers(server.url), unguarded);
    assert.deepEqual(calls, [], "no ownership question was asked");
    assert.deepEqual(server.decisions.map((d) => [d.method, d.outcome, d.reason]), [
      ["GET", "allow", "allowed"],
      ["DELETE", "allow", "allowed"],
    ]);
  } finally {
    await real.close();
  }
});

Deno.test("guard: every id reaches the handler, and a cancellation naming an id it never tracked", async () => {
  // JSON-RPC allows any string id. Ids no registry keys (a lone surrogate, which UTF-8 stores
  // would merge with others; over 1,024 UTF-8 bytes) run untracked, answered as unguarded; and
  // what is no JSON-RPC id at all is the handler's to refuse, with its own code.
  const messages = [
    `{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}`,
    `{"jsonrpc":"2.0","id":"${"y".repeat(2_000)}","method":"ping"}`,
    `{"jsonrpc":"2.0","id":"\\udfff-${"z".repeat(1_100)}","method":"tools/call",` +
    `"params":{"name":"count","arguments":{"steps":1,"stepMs":1}}}`,
    JSON.stringify({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: { guess: 1 } },
    }),
    `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"\\ud800"}}`,
    `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":null}}`,
    // Not JSON-RPC ids: the handler answers (SDK 1.32: 400 -32700), not the guard.
    `{"jsonrpc":"2.0","id":null,"method":"ping"}`,
    `{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}`,
    `{"jsonrpc":"2.0","id":1e999,"method":"ping"}`,
  ];
  async function answers(url: URL) {
    const sid = await openSession(url, "alice-token");
    const seen = [];
    for (const message of messages) {
      const response = await postRpc(url, "alice-token", sid, message);
      // Event ids differ per run (and the guard tags them for their session).
      const body = (await response.text()).replace(/^id:.*$/gm, "id: <event-id>");
      seen.push([response.status, response.headers.get("content-type"), body]);
    }
    return seen;
  }
  let unguarded;
  {
    await using control = await startServer({ guarded: false });
    unguarded = await answers(control.url);
  }
  assert.deepEqual(unguarded.map(([status]) => status), [
    200,
    200,
    200,
    202,
    202,
    202,
    400,
    400,
    400,
  ]);
  await using server = await startServer();
  assert.deepEqual(await answers(server.url), unguarded);
  assert.ok(server.decisions.every((d) => d.outcome === "allow"));
  await waitFor(async () => (await server.cancellations.size!()) === 0, 5_000, "nothing tracked");
});

Deno.test("guard: invalid session ids get 400 and never reach the registry", async () => {
  const { owners, calls, real } = spyOwners();
  try {
    await using server = await startServer({ guard: { owners, tasks: false, credentials: false } });
    const bad = ["has space", "x".repeat(257), "caf\u00e9", "tab\there", "a,b"];
    const duplicated = new Headers({ accept: "text/event-stream", ...bearer("alice-token") });
    duplicated.append("mcp-session-id", "one");
    duplicated.append("mcp-session-id", "two");
    const requests: Request[] = [
      ...bad.flatMap((sid) => [
        new Request(server.url, {
          headers: { accept: "text/event-stream", "mcp-session-id": sid, ...bearer("alice-token") },
        }),
        new Request(server.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
            "mcp-session-id": sid,
            ...bearer("alice-token"),
          },
          body: ping,
        }),
        new Request(server.url, {
          method: "DELETE",
          headers: { "mcp-session-id": sid, ...bearer("alice-token") },
        }),
      ]),
      new Request(server.url, { headers: duplicated }),
    ];
    for (const request of requests) {
      const response = await fetch(request);
      const body = await response.json();
      const sid = request.headers.get("mcp-session-id");
      // "a,b" is itself a valid id (visible ASCII); it is just unknown: 404 after one lookup.
      if (sid === "a,b") {
        assert.equal(response.status, 404, `${request.method} ${sid}`);
        continue;
      }
      assert.equal(response.status, 400, `${request.method} ${JSON.stringify(sid)}`);
      assert.equal(body.error.code, -32600);
      assert.match(body.error.message, /Mcp-Session-Id must be 1 to 256 visible ASCII/);
    }
    assert.deepEqual(calls, ["ownerOf", "ownerOf", "ownerOf"]); // only the three "a,b" requests
    assert.equal(server.decisions.filter((d) => d.reason === "invalid-session-id").length, 13);
  } finally {
    await real.close();
  }
});

Deno.test("guard: every method reaches the handler, which decides what exists", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const headers = {
    "content-type": "application/json",
    ...sessionHeaders(alice.sessionId, "alice-token"),
  };
  // Methods of newer revisions and extensions, a vendor method, and a server-to-client method
  // sent the wrong way: the guard passes each to the SDK, which answers its own -32601 in the
  // stream (the guard itself would answer 400 with a JSON body).
  const methods = [
    "server/discover",
    "subscriptions/listen",
    "tasks/update",
    "x-vendor/hello",
    "sampling/createMessage",
  ];
  for (const [i, method] of methods.entries()) {
    const response = await fetch(server.url, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", id: 100 + i, method, params: {} }),
    });
    assert.equal(response.status, 200, method);
    assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/, method);
    const text = await response.text();
    assert.match(text, /-32601/, method);
    assert.match(text, new RegExp(`"id":${100 + i}`), method);
  }
  const notification = await fetch(server.url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/x-vendor", params: {} }),
  });
  assert.equal(notification.status, 202);
  await notification.body?.cancel();
  const allowed = server.decisions.filter((d) => d.outcome === "allow" && d.rpcMethod !== null);
  for (const method of [...methods, "notifications/x-vendor"]) {
    assert.ok(allowed.some((d) => d.rpcMethod === method), `${method} was not allowed`);
  }
  // Still strict: the same methods with Mallory's token are refused by the guard.
  const mallory = await fetch(server.url, {
    method: "POST",
    headers: { ...headers, ...bearer("mallory-token") },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "server/discover", params: {} }),
  });
  assert.equal(mallory.status, 403);
  assert.equal((await mallory.json()).error.code, -32600);
});

Deno.test("guard: an unknown or ended session is answered byte for byte as the SDK's transport answers one", async () => {
  // The SDK's own answer: a stateful transport, initialized, asked about another session id.
  const sdkTransport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: () => "the-only-session",
  });
  const sdkServer = new McpServer({ name: "sdk", version: "0" });
  await sdkServer.connect(sdkTransport);
  const sdkPost = (sid: string | null, body: unknown) =>
    sdkTransport.handleRequest(
      new Request("http://localhost/mcp", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(sid === null
            ? { accept: "application/json, text/event-stream" }
            : sessionHeaders(sid, null)),
        },
        body: JSON.stringify(body),
      }),
    );
  await (await sdkPost(null, initializeRequest())).body?.cancel();
  const sdk = await sdkPost("no-such-session", { jsonrpc: "2.0", id: 7, method: "ping" });
  const want = {
    status: sdk.status,
    type: sdk.headers.get("content-type"),
    body: await sdk.text(),
  };
  await sdkServer.close();
  assert.equal(want.status, 404);

  await using server = await startServer({ guard: { notOwnerStatus: 404 } });
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const ended = await openSession(server.url, "alice-token");
  const end = await fetch(server.url, {
    method: "DELETE",
    headers: sessionHeaders(ended, "alice-token"),
  });
  await end.body?.cancel();
  assert.equal(end.status, 200);
  const cases: [string, string, string][] = [
    ["never issued", "no-such-session", "alice-token"],
    ["ended by its owner", ended, "alice-token"],
    ["another principal's (notOwnerStatus 404)", alice.sessionId, "mallory-token"],
  ];
  for (const [what, sid, token] of cases) {
    for (
      const [method, body] of [
        ["POST", { jsonrpc: "2.0", id: 7, method: "ping" }],
        ["POST", { jsonrpc: "2.0", method: "notifications/initialized" }],
        ["GET", undefined],
        ["DELETE", undefined],
      ] as const
    ) {
      const response = await fetch(server.url, {
        method,
        headers: { "content-type": "application/json", ...sessionHeaders(sid, token) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const got = {
        status: response.status,
        type: response.headers.get("content-type"),
        body: await response.text(),
      };
      assert.deepEqual(got, want, `${method} ${body?.method ?? ""} in a session ${what}`);
    }
  }
});

Deno.test("guard: notOwnerStatus 404 answers another principal's session as an unknown one", async () => {
  for (const notOwnerStatus of [403, 404] as const) {
    await using server = await startServer({ guard: { notOwnerStatus } });
    await using alice = await connect(server.url, "alice-token", { listen: false });
    const answers: Record<string, { status: number; body: string }> = {};
    for (const sid of [alice.sessionId, "no-such-session"]) {
      for (const method of ["GET", "POST", "DELETE"]) {
        const response = await fetch(server.url, {
          method,
          headers: {
            accept: "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-session-id": sid,
            ...bearer("mallory-token"),
          },
          body: method === "POST" ? ping : undefined,
        });
        answers[`${method} ${sid === alice.sessionId ? "alice" : "unknown"}`] = {
          status: response.status,
          body: (await response.text()).replace(/"id":\d+/, '"id":null'),
        };
      }
    }
    for (const method of ["GET", "POST", "DELETE"]) {
      const own = answers[`${method} alice`];
      const unknown = answers[`${method} unknown`];
      assert.equal(unknown.status, 404, method);
      if (notOwnerStatus === 404) {
        assert.deepEqual(own, unknown, `${method}: indistinguishable from an unknown session`);
      } else {
        assert.equal(own.status, 403, method);
        assert.match(own.body, /another principal/);
      }
    }
    const reasons = server.decisions.filter((d) => d.outcome === "refuse").map((d) => d.reason);
    assert.equal(reasons.filter((r) => r === "not-owner").length, 3, "logs still say not-owner");
    // Alice's session is untouched.
    const still = await alice.client.callTool({ name: "echo", arguments: { text: "hi" } });
    assert.deepEqual(still.content, [{ type: "text", text: "hi" }]);
  }
  assert.throws(
    () => startServer({ guard: { notOwnerStatus: 401 as never } }),
    /notOwnerStatus must be 403 or 404, got 401/,
  );
});
