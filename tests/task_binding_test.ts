import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkMcpName,
  decodeMcpHeaderValue,
  isModernRequest,
  isValidTaskId,
  relatedTask,
  renamedMcpName,
  taskIdOfResult,
  taskRequest,
  unissuedTaskId,
} from "../src/http/tasks.ts";
import {
  MessageTooLargeError,
  ResponseWatchError,
  rewriteResult,
  watchResponse,
} from "../src/http/response_watch.ts";
import { parseEvent, type SseEvent, SseFramer } from "../src/http/sse_events.ts";

// ---------------------------------------------------------------- helpers

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { ignoreBOM: true });
const MODERN = { "io.modelcontextprotocol/protocolVersion": "2026-07-28" };
const TASKS_CAPS = {
  "io.modelcontextprotocol/clientCapabilities": {
    extensions: { "io.modelcontextprotocol/tasks": {} },
  },
};

function b64(text: string): string {
  return btoa(String.fromCharCode(...enc.encode(text)));
}

/** A source body delivering `chunks`, recording a cancellation. */
function source(chunks: Uint8Array[]) {
  const state = { cancelled: false, reason: undefined as unknown };
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]);
      else controller.close();
    },
    cancel(reason) {
      state.cancelled = true;
      state.reason = reason;
    },
  }, { highWaterMark: 0 });
  return { stream, state };
}

function splitAt(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const cuts = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(bytes.slice(at, cut));
    at = cut;
  }
  return out;
}

function response(chunks: Uint8Array[], type: string, headers: Record<string, string> = {}) {
  const src = source(chunks);
  const res = new Response(src.stream, {
    status: 200,
    headers: { "content-type": type, "mcp-session-id": "s1", ...headers },
  });
  return { res, state: src.state };
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(body).arrayBuffer());
}

const PENDING = Symbol("pending");
function settledSoon<T>(promise: Promise<T>): Promise<T | typeof PENDING> {
  return Promise.race([promise, new Promise<typeof PENDING>((r) => setTimeout(r, 20, PENDING))]);
}

const notification = (text: string) =>
  JSON.stringify({ jsonrpc: "2.0", method: "notifications/progress", params: { message: text } });
const taskResult = (id: string | number, taskId: string) =>
  JSON.stringify({ jsonrpc: "2.0", id, result: { task: { taskId, status: "working" } } });

// A stream with CRLF, a comment, multi-byte text, a server request reusing
// the id, and a response whose data spans two lines.
const PREFIX = ": keepalive\n\n" +
  `id: 1\r\nevent: message\r\ndata: ${notification("héllo €😀")}\r\n\r\n` +
  `data: {"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}}\n\n`;
const MATCH = `id: 2\ndata: {"jsonrpc":"2.0","id":7,\r\n` +
  `data: "result":{"task":{"taskId":"t-é","status":"working"}}}\r\n\r\n`;
const SSE = enc.encode(PREFIX + MATCH);
const MATCH_START = enc.encode(PREFIX).length;

// ---------------------------------------------------------------- tasks.ts

Deno.test("taskIdOfResult reads both result shapes", () => {
  assert.equal(taskIdOfResult({ task: { taskId: "a", status: "working" } }), "a");
  assert.equal(taskIdOfResult({ resultType: "task", taskId: "b", status: "working" }), "b");
  for (
    const bad of [
      null,
      undefined,
      "x",
      [],
      {},
      { content: [] },
      { task: null },
      { task: { taskId: 5 } },
      { task: { taskId: "" } },
      { task: "a" },
      { resultType: "task" },
      { resultType: "task", taskId: 1 },
      { resultType: "complete", taskId: "c" },
      { resultType: "task", taskId: "x".repeat(1025) },
      { task: { taskId: "\ud800" } },
    ]
  ) assert.equal(taskIdOfResult(bad), null, JSON.stringify(bad));
});

Deno.test("isValidTaskId bounds UTF-8 bytes and refuses lone surrogates", () => {
  assert.ok(isValidTaskId("x".repeat(1024)));
  assert.ok(!isValidTaskId("x".repeat(1025)));
  assert.ok(isValidTaskId("€".repeat(341) + "x")); // 1024 bytes
  assert.ok(!isValidTaskId("€".repeat(342))); // 1026 bytes, 342 characters
  assert.ok(isValidTaskId(" padded "));
  for (const bad of ["", "a\udc00", 1, null, undefined, {}]) assert.ok(!isValidTaskId(bad));
});

Deno.test("taskRequest classifies every kind", async (t) => {
  const req = (method: string, params?: unknown) => taskRequest({ method, params, id: 1 });
  await t.step("create: 2025 task augmentation or a declared 2026 tasks extension", () => {
    assert.deepEqual(req("tools/call", { name: "t", task: {} }), { kind: "create" });
    assert.deepEqual(req("tools/call", { name: "t", task: { ttl: 60000 } }), { kind: "create" });
    assert.deepEqual(req("tools/call", { name: "t", _meta: { ...MODERN, ...TASKS_CAPS } }), {
      kind: "create",
    });
  });
  await t.step("none: plain tools/call, modern without the extension, other methods", () => {
    const none = { kind: "none" };
    assert.deepEqual(req("tools/call", { name: "t" }), none);
    assert.deepEqual(req("tools/call"), none);
    assert.deepEqual(req("tools/call", { name: "t", _meta: MODERN }), none);
    const other = { extensions: { "other/ext": {} } };
    const meta = { ...MODERN, "io.modelcontextprotocol/clientCapabilities": other };
    assert.deepEqual(req("tools/call", { name: "t", _meta: meta }), none);
    const off = { extensions: { "io.modelcontextprotocol/tasks": null } };
    const metaOff = { ...MODERN, "io.modelcontextprotocol/clientCapabilities": off };
    assert.deepEqual(req("tools/call", { name: "t", _meta: metaOff }), none);
    for (const m of ["initialize", "tools/list", "tasks", "tasks/", "resources/read"]) {
      assert.deepEqual(req(m, { taskId: "a" }), none);
    }
  });
  await t.step("access: get/result/cancel/update with a valid taskId", () => {
    for (const method of ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"]) {
      assert.deepEqual(req(method, { taskId: "t-1" }), {
        kind: "access",
        method,
        taskId: "t-1",
        modern: false,
        serverRefuses: false,
      });
      // A 2026-07-28 client that did not declare the tasks extension: the server refuses (-32021).
      assert.deepEqual(req(method, { taskId: "t-é", _meta: MODERN }), {
        kind: "access",
        method,
        taskId: "t-é",
        modern: true,
        serverRefuses: true,
      });
      const declared = { ...MODERN, ...TASKS_CAPS };
      assert.deepEqual(req(method, { taskId: "t-2", _meta: declared }), {
        kind: "access",
        method,
        taskId: "t-2",
        modern: true,
        // tasks/result is gone from the extension (SEP-2663): the server answers -32601.
        serverRefuses: method === "tasks/result",
      });
    }
  });
  await t.step("relatedTask: _meta of params, result or error.data", () => {
    const key = "io.modelcontextprotocol/related-task";
    const none = { kind: "none" };
    assert.deepEqual(relatedTask({ params: { _meta: { [key]: { taskId: "t" } } } }), {
      kind: "task",
      taskId: "t",
    });
    assert.deepEqual(relatedTask({ result: { _meta: { [key]: { taskId: "r" } } } }), {
      kind: "task",
      taskId: "r",
    });
    assert.deepEqual(relatedTask({ error: { data: { _meta: { [key]: { taskId: "e" } } } } }), {
      kind: "task",
      taskId: "e",
    });
    assert.deepEqual(relatedTask({ params: { _meta: { [key]: {} } } }), none);
    assert.deepEqual(relatedTask({ params: { _meta: { [key]: "t" } } }), none);
    assert.deepEqual(relatedTask({ params: {} }), none);
    assert.deepEqual(relatedTask({}), none);
    for (const taskId of [5, "", null, "\ud800", "x".repeat(1025)]) {
      const out = relatedTask({ params: { _meta: { [key]: { taskId } } } });
      assert.equal(out.kind, "invalid", JSON.stringify(taskId));
    }
  });
  await t.step("none without a taskId: no task named, the server answers", () => {
    for (const method of ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"]) {
      assert.deepEqual(req(method, undefined), { kind: "none" });
      assert.deepEqual(req(method, {}), { kind: "none" });
    }
  });
  await t.step("invalid: malformed taskId", () => {
    for (const method of ["tasks/get", "tasks/result", "tasks/cancel", "tasks/update"]) {
      for (
        const params of [
          { taskId: 1 },
          { taskId: "" },
          { taskId: null },
          { taskId: ["a"] },
          { taskId: "x".repeat(1025) },
          { taskId: "\ud800" },
        ]
      ) {
        const out = req(method, params);
        assert.equal(out.kind, "invalid", `${method} ${JSON.stringify(params)}`);
        assert.match((out as { message: string }).message, /taskId/);
      }
    }
  });
  await t.step("list", () => {
    assert.deepEqual(req("tasks/list"), { kind: "list" });
    assert.deepEqual(req("tasks/list", { cursor: "c" }), { kind: "list" });
  });
  await t.step("isModernRequest needs a string protocol version in _meta", () => {
    assert.ok(isModernRequest({ _meta: MODERN }));
    assert.ok(!isModernRequest({ _meta: { "io.modelcontextprotocol/protocolVersion": 1 } }));
    assert.ok(!isModernRequest({}));
    assert.ok(!isModernRequest(undefined));
  });
});

Deno.test("checkMcpName: plain, base64, mismatched and absent values", () => {
  assert.deepEqual(checkMcpName("t-1", "t-1", true), { ok: true });
  assert.deepEqual(checkMcpName("t-1", "t-1", false), { ok: true });
  assert.deepEqual(checkMcpName(`=?base64?${b64("tâche ✓")}?=`, "tâche ✓", true), { ok: true });
  assert.deepEqual(checkMcpName(`=?base64?${b64("t-1")}?=`, "t-1", true), { ok: true });
  // A literal value that looks like the sentinel is itself encoded.
  const literal = "=?base64?literal?=";
  assert.deepEqual(checkMcpName(`=?base64?${b64(literal)}?=`, literal, true), { ok: true });
  const fail = (v: string | null, id: string, modern: boolean) => {
    const out = checkMcpName(v, id, modern);
    return out.ok ? "ok" : out.reason;
  };
  assert.equal(fail("t-2", "t-1", true), "mismatch");
  assert.equal(
    fail("t-2", "t-1", false),
    "mismatch",
    "a present header is checked on old requests",
  );
  assert.equal(fail("T-1", "t-1", true), "mismatch");
  assert.equal(fail(`=?base64?${b64("t-2")}?=`, "t-1", true), "mismatch");
  assert.equal(fail(`=?BASE64?${b64("t-1")}?=`, "t-1", true), "mismatch", "markers are lowercase");
  assert.equal(fail("=?base64?not base64!?=", "t-1", true), "malformed");
  assert.equal(fail("=?base64?dC0x?=", "t-1", true), "ok"); // base64 of "t-1" (no padding needed)
  assert.equal(fail("=?base64?dC0?=", "t-", true), "malformed", "padding is required");
  assert.equal(fail("=?base64?/w==?=", "\ufffd", true), "malformed", "not UTF-8");
  assert.equal(fail(null, "t-1", true), "missing");
  assert.equal(fail(null, "t-1", false), "ok");
  assert.equal(decodeMcpHeaderValue("=?base64?"), "=?base64?");
  assert.equal(decodeMcpHeaderValue("=?base64??="), "");
  assert.equal(decodeMcpHeaderValue("plain"), "plain");
});

// ---------------------------------------------------------------- watchResponse, JSON

Deno.test("watchResponse (JSON) calls back before delivering, at every split", async () => {
  const body = enc.encode(taskResult("r-1", "t-ü"));
  for (let cut = 0; cut <= body.length; cut++) {
    const { res } = response(splitAt(body, [cut]), "application/json; charset=utf-8");
    const seen: unknown[] = [];
    const out = watchResponse(res, "r-1", (m) => void seen.push(m));
    assert.equal(out.headers.get("mcp-session-id"), "s1");
    assert.deepEqual(await readAll(out.body!), body);
    assert.equal(seen.length, 1);
    assert.equal(taskIdOfResult((seen[0] as { result: unknown }).result), "t-ü");
  }
});

Deno.test("watchResponse (JSON) ignores other ids and non-JSON bodies", async () => {
  const body = enc.encode(taskResult(1, "t"));
  let calls = 0;
  const { res } = response([body], "application/json");
  assert.deepEqual(await readAll(watchResponse(res, "1", () => void calls++).body!), body);
  const bad = enc.encode("{not json");
  const { res: res2 } = response([bad], "application/json");
  assert.deepEqual(await readAll(watchResponse(res2, 1, () => void calls++).body!), bad);
  assert.equal(calls, 0);
  const text = new Response("hi", { headers: { "content-type": "text/plain" } });
  assert.equal(watchResponse(text, 1, () => {}), text);
  const empty = new Response(null, { status: 202 });
  assert.equal(watchResponse(empty, 1, () => {}), empty);
});

Deno.test("watchResponse (JSON) holds the body until the callback resolves", async () => {
  const { res } = response([enc.encode(taskResult(3, "t"))], "application/json");
  const gate = Promise.withResolvers<void>();
  let called = false;
  const out = watchResponse(res, 3, async () => {
    called = true;
    await gate.promise;
  });
  const reading = out.body!.getReader().read();
  assert.equal(await settledSoon(reading), PENDING);
  assert.ok(called);
  gate.resolve();
  const chunk = await reading;
  assert.equal(dec.decode(chunk.value), taskResult(3, "t"));
});

Deno.test("watchResponse fails closed: callback error, oversize, content-encoding", async () => {
  const boom = new Error("registry down");
  const { res } = response([enc.encode(taskResult(3, "t"))], "application/json");
  const out = watchResponse(res, 3, () => Promise.reject(boom));
  await assert.rejects(readAll(out.body!), (err) => err === boom);
  const big = response(
    [enc.encode(" ".repeat(60)), enc.encode(" ".repeat(60))],
    "application/json",
  );
  const out2 = watchResponse(big.res, 3, () => {}, { maxMessageBytes: 100 });
  await assert.rejects(readAll(out2.body!), MessageTooLargeError);
  assert.ok(big.state.cancelled, "the source is cancelled");
  const gz = response([enc.encode("x")], "application/json", { "content-encoding": "gzip" });
  await assert.rejects(readAll(watchResponse(gz.res, 3, () => {}).body!), ResponseWatchError);
  assert.ok(gz.state.cancelled);
});

// ---------------------------------------------------------------- watchResponse, SSE

async function watchSse(chunks: Uint8Array[], id: string | number = 7) {
  const { res } = response(chunks, "text/event-stream");
  const received: number[] = [];
  let total = 0;
  const messages: unknown[] = [];
  const out = watchResponse(res, id, (m) => {
    messages.push(m);
    received.push(total);
  });
  const parts: Uint8Array[] = [];
  const reader = out.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    total += value.length;
  }
  const bytes = new Uint8Array(total);
  parts.reduce((at, p) => (bytes.set(p, at), at + p.length), 0);
  return { bytes, messages, received };
}

Deno.test("watchResponse (SSE) passes bytes through and calls back first, at every split", async () => {
  const runs = [[...SSE].map((_, i) => i)]; // byte by byte
  for (let cut = 0; cut <= SSE.length; cut++) runs.push([cut]);
  for (let cut = 0; cut + 7 <= SSE.length; cut += 3) runs.push([cut, cut + 1, cut + 7]);
  for (const cuts of runs) {
    const { bytes, messages, received } = await watchSse(splitAt(SSE, cuts));
    assert.deepEqual(bytes, SSE, `cuts ${cuts}`);
    assert.equal(messages.length, 1, `cuts ${cuts}`);
    assert.equal(taskIdOfResult((messages[0] as { result: unknown }).result), "t-é");
    assert.ok(received[0] <= MATCH_START, "no byte of the response before the callback");
  }
});

Deno.test("watchResponse (SSE) forwards earlier events while the callback is pending", async () => {
  const { res } = response([SSE], "text/event-stream");
  const gate = Promise.withResolvers<void>();
  const out = watchResponse(res, 7, () => gate.promise);
  const reader = out.body!.getReader();
  let before = "";
  let pending: Promise<ReadableStreamReadResult<Uint8Array>>;
  for (;;) {
    pending = reader.read();
    const next = await settledSoon(pending);
    if (next === PENDING) break;
    assert.ok(!next.done, "the callback must hold the response");
    before += dec.decode(next.value);
  }
  assert.equal(before, PREFIX, "every earlier event, none of the response");
  assert.equal(await settledSoon(pending), PENDING);
  gate.resolve();
  let after = "";
  for (let next = await pending; !next.done; next = await reader.read()) {
    after += dec.decode(next.value);
  }
  assert.equal(after, MATCH);
});

Deno.test("watchResponse (SSE) callback failure errors the stream after earlier events", async () => {
  const { res, state } = response([SSE], "text/event-stream");
  const boom = new Error("bind failed");
  const reader = watchResponse(res, 7, () => {
    throw boom;
  }).body!.getReader();
  let before = "";
  await assert.rejects(async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      before += dec.decode(value);
    }
  }, (err) => err === boom);
  assert.equal(before, PREFIX);
  assert.ok(state.cancelled);
  assert.equal(state.reason, boom);
});

Deno.test("watchResponse (SSE) cancel propagates to the source, even mid-callback", async () => {
  const first = response([enc.encode(PREFIX), enc.encode(MATCH)], "text/event-stream");
  const reader = watchResponse(first.res, 7, () => {}).body!.getReader();
  await reader.read();
  await reader.cancel("client gone");
  assert.ok(first.state.cancelled);
  assert.equal(first.state.reason, "client gone");

  const second = response([SSE], "text/event-stream");
  const gate = Promise.withResolvers<void>();
  const body = watchResponse(second.res, 7, () => gate.promise).body!;
  const r2 = body.getReader();
  for (;;) {
    const next = await settledSoon(r2.read());
    if (next === PENDING) break;
    assert.ok(!next.done, "the callback must hold the response");
  }
  await r2.cancel("bye");
  assert.equal(second.state.reason, "bye");
  gate.resolve();
});

Deno.test("watchResponse (SSE) edge cases", async (t) => {
  const match = taskResult(7, "t");
  // name, stream, callbacks, byte offset of the matching event
  const cases: [string, string, number, number?][] = [
    ["lone CR line ends", `data: ${match}\r\r`, 1],
    ["no space after the colon", `data:${match}\n\n`, 1],
    ["other event types are inspected too", `event: weird\ndata: ${match}\n\n`, 1],
    ["unterminated last event", `: x\n\ndata: ${match}`, 1, 5],
    ["leading BOM", `\ufeffdata: ${match}\n\n`, 1],
    ["leading BOM then a blank line", `\ufeff\ndata: ${match}\n\n`, 1, 4],
    ["BOM elsewhere is part of the field name", `\n\ufeffdata: ${match}\n\n`, 0],
    ["batch", `data: [${notification("n")},${match}]\n\n`, 1],
    ["error response", `data: {"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}\n\n`, 1],
    ["string id does not match a number", `data: ${taskResult("7", "t")}\n\n`, 0],
    ["a request with the id", `data: {"jsonrpc":"2.0","id":7,"method":"ping"}\n\n`, 0],
    ['"Data" is not data', `Data: ${match}\n\n`, 0],
    ["split data lines", `data: {"id":7,\ndata:"result":{}}\n\n`, 1],
  ];
  for (const [name, text, calls, start = 0] of cases) {
    await t.step(name, async () => {
      const bytes = enc.encode(text);
      for (let cut = 0; cut <= bytes.length; cut++) {
        const out = await watchSse(splitAt(bytes, [cut]));
        assert.deepEqual(out.bytes, bytes);
        assert.equal(out.messages.length, calls);
        if (calls) assert.ok(out.received[0] <= start);
      }
    });
  }
  await t.step("an event over the bound errors the stream; smaller ones pass", async () => {
    const small = enc.encode(`data: ${notification("x".repeat(50))}\n\n`.repeat(10));
    const ok = response([small], "text/event-stream");
    const out = watchResponse(ok.res, 7, () => {}, { maxMessageBytes: 200 });
    assert.deepEqual(await readAll(out.body!), small);
    const big = enc.encode(`data: ${notification("x".repeat(300))}\n\n`);
    for (const chunks of [[big], splitAt(big, [50, 100, 150])]) {
      const bad = response(chunks, "text/event-stream");
      const out2 = watchResponse(bad.res, 7, () => {}, { maxMessageBytes: 200 });
      await assert.rejects(readAll(out2.body!), MessageTooLargeError);
      assert.ok(bad.state.cancelled);
    }
  });
});

// ---------------------------------------------------------------- rewriteResult

const LIST = {
  jsonrpc: "2.0",
  id: "L",
  result: { tasks: [{ taskId: "mine" }, { taskId: "theirs" }], nextCursor: "c" },
};
type ListMessage = { result: { tasks: { taskId: string }[] } };
const onlyMine = (m: Record<string, unknown>) => {
  const msg = structuredClone(m) as ListMessage;
  msg.result.tasks = msg.result.tasks.filter((task) => task.taskId === "mine");
  return msg;
};

Deno.test("rewriteResult filters a tasks/list result (JSON)", async () => {
  const body = enc.encode(JSON.stringify(LIST));
  const { res } = response(splitAt(body, [9]), "application/json", {
    "content-length": String(body.length),
  });
  const out = rewriteResult(res, "L", onlyMine);
  assert.equal(out.headers.get("content-length"), null);
  assert.equal(out.headers.get("mcp-session-id"), "s1");
  const got = JSON.parse(dec.decode(await readAll(out.body!)));
  assert.deepEqual(got.result, { tasks: [{ taskId: "mine" }], nextCursor: "c" });
  const other = response([body], "application/json", { "content-length": String(body.length) });
  assert.deepEqual(await readAll(rewriteResult(other.res, "X", onlyMine).body!), body);
});

Deno.test("rewriteResult filters a tasks/list result (SSE), keeping other bytes", async () => {
  const before = `: hi\r\n\r\ndata: ${notification("€")}\r\n\r\n`;
  const text = `${before}id: 5\r\nevent: message\r\ndata: ${
    JSON.stringify(LIST)
  }\r\n\r\n: after\n\n`;
  const bytes = enc.encode(text);
  // The rewritten event keeps its CR end: the LF that follows completes it.
  const expected = `${before}id: 5\nevent: message\ndata: ${
    JSON.stringify(onlyMine(LIST))
  }\n\r\n: after\n\n`;
  for (let cut = 0; cut <= bytes.length; cut++) {
    const { res } = response(splitAt(bytes, [cut]), "text/event-stream");
    const out = rewriteResult(res, "L", async (m) => {
      await Promise.resolve();
      return onlyMine(m);
    });
    assert.equal(dec.decode(await readAll(out.body!)), expected);
  }
  const { res } = response([bytes], "text/event-stream");
  await assert.rejects(readAll(rewriteResult(res, "L", () => undefined).body!), TypeError);
});

// ---------------------------------------------------------------- properties

const lineText = fc.string({ unit: "binary", maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, ""));
const line = fc.oneof(
  lineText.map((s) => `:${s}`),
  lineText.map((s) => `id: ${s}`),
  fc.constantFrom("event: message", "event: x", "retry: 10", "data", "data:"),
  lineText.map((s) => `data: ${notification(s)}`),
  lineText.map((s) => `data: ${s}`),
  fc.integer().map((n) => `data: ${taskResult(n, "t")}`),
  lineText,
);
const eol = fc.constantFrom("\n", "\r\n", "\r");
// One line end per event: a "\r" line end followed by a "\n" blank line would be one CRLF.
const sseEvent = fc.tuple(fc.array(line, { maxLength: 5 }), eol)
  .map(([lines, end]) => lines.map((l) => l + end).join("") + end);
const sseStream = fc.tuple(
  fc.boolean(),
  fc.array(sseEvent, { maxLength: 6 }),
  fc.option(lineText),
).map(([bom, events, tail]) => enc.encode((bom ? "\ufeff" : "") + events.join("") + (tail ?? "")));

Deno.test("property: SSE streams without a match pass through byte-identical", async () => {
  await fc.assert(
    fc.asyncProperty(sseStream, fc.array(fc.nat(), { maxLength: 8 }), async (bytes, cuts) => {
      const out = await watchSse(splitAt(bytes, cuts), "no-such-id");
      assert.deepEqual(out.bytes, bytes);
      assert.equal(out.messages.length, 0);
    }),
    { numRuns: 300 },
  );
  const noise = fc.uint8Array({ maxLength: 80 }).map((a) =>
    a.map((b) => [0x0d, 0x0a, 0x3a, 0x61, 0xef, 0xbb, 0xbf, 0xe2, 0x82, 0xac, 0x64][b % 11])
  );
  await fc.assert(
    fc.asyncProperty(noise, fc.array(fc.nat(), { maxLength: 8 }), async (bytes, cuts) => {
      assert.deepEqual((await watchSse(splitAt(bytes, cuts), "x")).bytes, bytes);
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: a match anywhere is called back once, before its bytes", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(sseEvent, { maxLength: 4 }),
      fc.array(sseEvent, { maxLength: 4 }),
      eol,
      fc.array(fc.nat(), { maxLength: 8 }),
      async (before, after, end, cuts) => {
        const head = enc.encode(before.join(""));
        const bytes = enc.encode(
          `${before.join("")}data: ${taskResult("m", "t")}${end}${end}${after.join("")}`,
        );
        const out = await watchSse(splitAt(bytes, cuts), "m");
        assert.deepEqual(out.bytes, bytes);
        assert.equal(out.messages.length, 1);
        assert.ok(out.received[0] <= head.length);
      },
    ),
    { numRuns: 300 },
  );
});

function fieldValue(l: string): [string, string] {
  const colon = l.indexOf(":");
  if (colon === -1) return [l, ""];
  const v = l.slice(colon + 1);
  return [l.slice(0, colon), v.startsWith(" ") ? v.slice(1) : v];
}

/** The HTML event-stream algorithm over the whole text, also reading an unterminated last event. */
function reference(bytes: Uint8Array): string[] {
  const lines = new TextDecoder().decode(bytes).split(/\r\n|\r|\n/); // one BOM stripped
  const out: string[] = [];
  let data: string | null = null;
  lines.forEach((l, i) => {
    const last = i === lines.length - 1; // the unterminated tail
    if (l === "") {
      if (!last && data !== null) out.push(data);
      if (!last) data = null;
      return;
    }
    const [field, value] = fieldValue(l);
    if (field === "data") data = data === null ? value : `${data}\n${value}`;
  });
  if (data !== null) out.push(data);
  return out;
}

Deno.test("property: SseFramer + parseEvent agree with the HTML algorithm", () => {
  fc.assert(
    fc.property(sseStream, fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
      const framer = new SseFramer(1 << 20);
      const events: SseEvent[] = [];
      for (const chunk of splitAt(bytes, cuts)) events.push(...framer.push(chunk));
      const last = framer.end();
      if (last) events.push(last);
      const got = events.map((e) => parseEvent(e).data).filter((d) => d !== null);
      assert.deepEqual(got, reference(bytes));
    }),
    { numRuns: 500 },
  );
});

Deno.test("unissuedTaskId: a valid task id of its own form, from the secret or random", () => {
  const form = /^mcp-guard\.unissued\.[0-9a-f]{32}$/;
  const keyed = unissuedTaskId("fleet secret");
  assert.match(keyed, form);
  assert.ok(isValidTaskId(keyed));
  assert.equal(unissuedTaskId("fleet secret"), keyed, "the same on every process of a fleet");
  assert.equal(unissuedTaskId(new TextEncoder().encode("fleet secret")), keyed);
  assert.notEqual(unissuedTaskId("another secret"), keyed);
  const random = unissuedTaskId();
  assert.match(random, form);
  assert.notEqual(unissuedTaskId(), random);
});

Deno.test("renamedMcpName: the substitute in the form the client used, only for a name of the task", () => {
  const sub = "mcp-guard.unissued.0123456789abcdef0123456789abcdef";
  const b64 = (text: string) =>
    `=?base64?${btoa(String.fromCharCode(...new TextEncoder().encode(text)))}?=`;
  assert.equal(renamedMcpName("task-1", "task-1", sub), sub);
  assert.equal(renamedMcpName(b64("task-1"), "task-1", sub), b64(sub));
  assert.equal(renamedMcpName(b64("tâche"), "tâche", sub), b64(sub));
  // The replaced pair still checks out, in both forms.
  assert.deepEqual(checkMcpName(renamedMcpName(b64("t"), "t", sub), sub, true), { ok: true });
  assert.deepEqual(checkMcpName(renamedMcpName("t", "t", sub), sub, true), { ok: true });
  // A header that does not name the task is left as it is.
  assert.equal(renamedMcpName("other", "task-1", sub), null);
  assert.equal(renamedMcpName("=?base64?!!?=", "task-1", sub), null);
});
