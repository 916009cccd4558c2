/** Unit tests of the guard's building blocks: JSON-RPC classification, bounded body reads, body-end hooks; and its handling of the request object. */

import assert from "node:assert/strict";
import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../mod.ts";
import { onBodyEnd } from "../src/http/body_end.ts";
import { classify, isJsonMediaType, readBody, rpcError } from "../src/http/jsonrpc.ts";

Deno.test("classify: requests, notifications and responses", () => {
  assert.deepEqual(classify({ jsonrpc: "2.0", id: 1, method: "ping" }), {
    kind: "request",
    id: 1,
    method: "ping",
    params: undefined,
  });
  assert.deepEqual(classify({ jsonrpc: "2.0", id: "1", method: "tools/list", params: {} }), {
    kind: "request",
    id: "1",
    method: "tools/list",
    params: {},
  });
  assert.equal(
    classify({ jsonrpc: "2.0", method: "notifications/initialized" }).kind,
    "notification",
  );
  assert.deepEqual(classify({ jsonrpc: "2.0", id: 9, result: {} }), {
    kind: "response",
    id: 9,
    result: {},
    error: undefined,
  });
  assert.equal(classify({ jsonrpc: "2.0", id: 9, error: { code: 1 } }).kind, "response");
  // A cancellation without requestId is valid (nothing to cancel), and so is one naming an id
  // the guard never tracks: the handler answers both, as unguarded.
  for (const requestId of [undefined, null, { guess: 1 }, "\ud800", "x".repeat(1025)]) {
    assert.equal(
      classify({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId } }).kind,
      "notification",
    );
  }
  // Any string id is JSON-RPC's: one no registry keys (ill-formed, over 1,024 UTF-8 bytes) is
  // still a request (it runs untracked).
  for (const id of ["\ud800", "x".repeat(1025)]) {
    assert.deepEqual(classify({ jsonrpc: "2.0", id, method: "ping" }), {
      kind: "request",
      id,
      method: "ping",
      params: undefined,
    });
  }
  // What is no JSON-RPC id at all is the handler's to refuse: a request with id null here.
  for (const id of [null, true, { a: 1 }, [1], 1.5e400]) {
    const got = classify({ jsonrpc: "2.0", id, method: "ping" });
    assert.equal(got.kind === "request" && got.id, null, JSON.stringify(id));
  }
});

Deno.test("classify: every refusal names its reason and keeps a readable id", () => {
  const cases: [unknown, string, number][] = [
    [[], "batch", -32600],
    [null, "invalid-request", -32600],
    [42, "invalid-request", -32600],
    [{ id: 1, method: "ping" }, "invalid-request", -32600],
    [{ jsonrpc: "2.0", id: 1, method: "" }, "invalid-request", -32600],
    [{ jsonrpc: "2.0", id: 1, method: 7 }, "invalid-request", -32600],
    [{ jsonrpc: "2.0", id: 1, method: "ping", params: "x" }, "invalid-params", -32602],
    [{ jsonrpc: "2.0", result: {} }, "invalid-request", -32600],
  ];
  for (const [value, reason, code] of cases) {
    const got = classify(value);
    assert.equal(got.kind, "problem", JSON.stringify(value)?.slice(0, 80));
    if (got.kind !== "problem") continue;
    assert.equal(got.reason, reason, JSON.stringify(value)?.slice(0, 80));
    assert.equal(got.code, code);
    assert.ok(got.status >= 400 && got.status < 500);
  }
  const badParams = classify({ jsonrpc: "2.0", id: "abc", method: "ping", params: [] });
  assert.equal(badParams.kind === "problem" && badParams.id, "abc");
});

Deno.test("isJsonMediaType", () => {
  assert.equal(isJsonMediaType("application/json"), true);
  assert.equal(isJsonMediaType("Application/JSON; charset=utf-8"), true);
  assert.equal(isJsonMediaType("application/jsonx"), false);
  assert.equal(isJsonMediaType("text/plain; application/json"), false);
  assert.equal(isJsonMediaType(null), false);
});

Deno.test("readBody: the limit holds with and without Content-Length", async () => {
  const exact = new Request("http://x/", { method: "POST", body: "x".repeat(10) });
  assert.deepEqual(await readBody(exact, 10), { kind: "text", text: "x".repeat(10) });
  const over = new Request("http://x/", { method: "POST", body: "x".repeat(11) });
  assert.equal((await readBody(over, 10)).kind, "problem");

  const chunks = (n: number) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < n; i++) controller.enqueue(new TextEncoder().encode("é"));
        controller.close();
      },
    });
  const streamed = new Request("http://x/", { method: "POST", body: chunks(5) });
  assert.deepEqual(await readBody(streamed, 10), { kind: "text", text: "ééééé" });
  // A character split across chunks, and a lone chunk, read as one text.
  const split = (parts: number[][]) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const part of parts) controller.enqueue(new Uint8Array(part));
        controller.close();
      },
    });
  const halves = new Request("http://x/", { method: "POST", body: split([[0x61, 0xc3], [0xa9]]) });
  assert.deepEqual(await readBody(halves, 10), { kind: "text", text: "aé" });
  const lone = new Request("http://x/", {
    method: "POST",
    body: split([[0xef, 0xbb, 0xbf, 0x7b]]),
  });
  assert.deepEqual(await readBody(lone, 10), { kind: "text", text: "{" });
  const big = new Request("http://x/", { method: "POST", body: split([Array(11).fill(0x78)]) });
  const bigRefused = await readBody(big, 10);
  assert.equal(bigRefused.kind === "problem" && bigRefused.status, 413);
  const tooMuch = new Request("http://x/", { method: "POST", body: chunks(6) });
  const refused = await readBody(tooMuch, 10);
  assert.equal(refused.kind === "problem" && refused.status, 413);

  const lying = new Request("http://x/", {
    method: "POST",
    body: "{}",
    headers: { "content-length": "-1" },
  });
  assert.equal((await readBody(lying, 10)).kind, "problem");
  await lying.body?.cancel();
});

Deno.test("rpcError: a JSON-RPC error body with the status and headers", async () => {
  const response = rpcError(403, -32600, "Forbidden", 7, { "x-a": "b" });
  assert.equal(response.status, 403);
  assert.equal(response.headers.get("x-a"), "b");
  assert.deepEqual(await response.json(), {
    jsonrpc: "2.0",
    error: { code: -32600, message: "Forbidden" },
    id: 7,
  });
});

Deno.test("onBodyEnd: once on end, on cancel, on error, at once without a body", async () => {
  let ends = 0;
  const ended = () => ends++;

  const done = onBodyEnd(new Response("abc", { status: 201, headers: { "x-k": "v" } }), ended);
  assert.equal(done.status, 201);
  assert.equal(done.headers.get("x-k"), "v");
  assert.equal(ends, 0);
  assert.equal(await done.text(), "abc");
  assert.equal(ends, 1);

  let sourceCancelled: unknown = null;
  const endless = new ReadableStream<Uint8Array>({
    pull: (c) => c.enqueue(new Uint8Array([1])),
    cancel: (reason) => {
      sourceCancelled = reason;
    },
  });
  const cancelled = onBodyEnd(new Response(endless), ended);
  const reader = cancelled.body!.getReader();
  await reader.read();
  await reader.cancel("client left");
  assert.equal(ends, 2);
  assert.equal(sourceCancelled, "client left");

  const failing = new ReadableStream<Uint8Array>({
    pull: (c) => c.error(new Error("boom")),
  });
  await assert.rejects(onBodyEnd(new Response(failing), ended).text(), /boom/);
  assert.equal(ends, 3);

  const empty = new Response(null, { status: 204 });
  assert.equal(onBodyEnd(empty, ended), empty);
  assert.equal(ends, 4);
});

Deno.test("the guard never touches request.signal (Deno.serve would abort it after every response)", async () => {
  // Deno.serve warns (once per isolate, through console.warn) when a request's signal was
  // read: from then on it aborts that signal after each response with a new DOMException.
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const seen: Request[] = [];
  const handler = async (request: Request) => {
    seen.push(request);
    await request.text();
    return new Response('{"jsonrpc":"2.0","id":1,"result":{}}', {
      headers: { "content-type": "application/json", "mcp-session-id": "s-1" },
    });
  };
  const guard = guardSessions(handler, { owners, cancellations, principal: () => "alice" });
  const warnings: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => void warnings.push(args.map(String).join(" "));
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, guard);
  try {
    const url = `http://127.0.0.1:${server.addr.port}/mcp`;
    for (
      const [body, sid] of [[{ id: 0, method: "initialize", params: {} }], [
        { id: 1, method: "tools/list" },
        "s-1",
      ]] as const
    ) {
      const response = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(sid === undefined ? {} : { "mcp-session-id": sid }),
        },
        body: JSON.stringify({ jsonrpc: "2.0", ...body }),
      });
      assert.equal(response.status, 200);
      await response.text();
    }
  } finally {
    await server.shutdown();
    console.warn = warn;
  }
  assert.equal(seen.length, 2, "both requests reached the handler");
  assert.deepEqual(warnings.filter((w) => w.includes("request.signal")), []);
});
