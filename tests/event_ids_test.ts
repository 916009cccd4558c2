/**
 * Resumption (`Last-Event-ID`) stays within its session, against the
 * official SDK 1.32 with an event store shared by every session (as in the
 * SDK's own `ssePollingExample`). Each attack runs unguarded first (the
 * control: it works) and then guarded.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CancellationRegistry, SessionOwnerRegistry } from "../mod.ts";
import { mcpGuard, type McpGuardEnv } from "../hono.ts";
import { SUFFIX_LENGTH } from "../src/http/event_ids.ts";
import { bearer, initializeRequest, postRpc } from "./support/mcp_server.ts";
import {
  callTool,
  type ClientEvent,
  getStream,
  openRawSession,
  readEvents,
  type ResumableServer,
  type ResumableServerOptions,
  startResumableServer,
  texts,
} from "./support/resumable_server.ts";

const ALICE = "alice-token";
const MALLORY = "mallory-token";
const AWAY_AND_DONE = ["away:alice-secret", "done:alice-secret"];

/** A GET with `Last-Event-ID`, again while the SDK still holds the previous stream (409). */
async function resume(
  server: ResumableServer,
  token: string,
  sid: string,
  cursor: string,
): Promise<Response> {
  for (let attempt = 0;; attempt++) {
    const response = await getStream(server.url, token, sid, cursor);
    if (response.status !== 409 || attempt === 20) return response;
    await response.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Alice calls `poll` and reads its stream until the server closes it (SEP-1699 polling). */
async function alicePolls(server: ResumableServer, sid: string, text: string) {
  const answer = await callTool(server.url, ALICE, sid, 1, "poll", { text });
  assert.equal(answer.status, 200);
  const seen = await readEvents(answer);
  // The priming event (an id, empty data), then the notification before the close.
  assert.deepEqual(texts(seen), [`before:${text}`]);
  assert.equal(seen[0].data, "");
  await server.storedText(`done:${text}`);
  return seen;
}

/**
 * Attack (a): Mallory sends Alice's event id as `Last-Event-ID` on a GET in
 * HER OWN session. Returns the status and what she read.
 */
async function replayAlicesEventInOwnSession(server: ResumableServer) {
  const alice = await openRawSession(server.url, ALICE);
  const mallory = await openRawSession(server.url, MALLORY);
  const seen = await alicePolls(server, alice, "alice-secret");
  // Alice's GET on her session is hers; Mallory's on Alice's session is refused (403 guarded).
  const results: { status: number; texts: string[] }[] = [];
  // The ids as Alice read them, and (guarded) the raw ids the handler wrote, from a log, say.
  const cursors = [seen[0].id, seen[1].id];
  if (server.decisions.length > 0) {
    cursors.push(...cursors.map((id) => id.slice(0, -SUFFIX_LENGTH)));
  }
  for (const cursor of cursors) {
    const response = await resume(server, MALLORY, mallory, cursor);
    const events = response.ok
      ? await readEvents(response, (e) => AWAY_AND_DONE.every((t) => texts(e).includes(t)), 500)
      : (await response.body?.cancel(), []);
    results.push({ status: response.status, texts: texts(events) });
  }
  return results;
}

Deno.test("attack (a) control: unguarded, Alice's event id on Mallory's own session replays Alice's tool result", async () => {
  await using server = await startResumableServer({ guarded: false, store: "sdk-shared" });
  const [fromPriming, fromNotification] = await replayAlicesEventInOwnSession(server);
  // What the tool sent while Alice was away, and its result. (The SDK's example store orders
  // events of the same millisecond at random: "before" may sort before or after the priming id.)
  for (const { status, texts } of [fromPriming, fromNotification]) {
    assert.equal(status, 200);
    assert.deepEqual(texts.filter((t) => !t.startsWith("before")).sort(), AWAY_AND_DONE);
  }
});

Deno.test("attack (a) guarded: Alice's event id on Mallory's own session is refused, nothing replayed", async () => {
  await using server = await startResumableServer({ store: "sdk-shared" });
  const results = await replayAlicesEventInOwnSession(server);
  for (const { status, texts } of results) {
    assert.equal(status, 400);
    assert.deepEqual(texts, []);
  }
  assert.equal(results.length, 4); // the ids as Alice read them, and the raw ids
  const refusals = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(
    refusals.map((d) => [d.method, d.reason, d.status]),
    Array(4).fill(["GET", "unknown-event-id", 400]),
  );
});

/**
 * Attack (c): a stateless server (no sessions) with one shared store. Alice
 * polls; Mallory resumes with Alice's event id on a GET without a session.
 * Returns, per cursor tried, the status and what Mallory read, and what Alice
 * reads resuming her own stream.
 */
async function replayStatelessStream(server: ResumableServer) {
  const call = (token: string) =>
    postRpc(server.url, token, null, {
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "poll", arguments: { text: "alice-secret" } },
    });
  const get = (token: string, cursor: string) =>
    fetch(server.url, {
      method: "GET",
      headers: {
        accept: "text/event-stream",
        "mcp-protocol-version": "2025-11-25",
        "last-event-id": cursor,
        ...bearer(token),
      },
    });
  const answer = await call(ALICE);
  assert.equal(answer.status, 200);
  const seen = await readEvents(answer);
  await server.storedText("done:alice-secret");
  // A stateless stream is not closed early (no polling): resume from its first event.
  assert.deepEqual(texts(seen), ["before:alice-secret", ...AWAY_AND_DONE]);
  const cursor = seen[0].id;
  const cursors = server.decisions.length > 0
    ? [cursor, cursor.slice(0, -SUFFIX_LENGTH)]
    : [cursor];
  const read = async (response: Response) =>
    response.ok
      ? texts(await readEvents(response, (e) => texts(e).includes("done:alice-secret"), 500))
      : (await response.body?.cancel(), []);
  const mallory = [];
  for (const tried of cursors) {
    const response = await get(MALLORY, tried);
    mallory.push({ status: response.status, texts: await read(response) });
  }
  const own = await get(ALICE, cursor);
  return { mallory, alice: { status: own.status, texts: await read(own) } };
}

Deno.test("attack (c) control: unguarded, a stateless server replays Alice's stream to Mallory", async () => {
  await using server = await startResumableServer({ guarded: false, stateless: true });
  const { mallory, alice } = await replayStatelessStream(server);
  assert.equal(mallory[0].status, 200);
  assert.ok(mallory[0].texts.includes("done:alice-secret"), JSON.stringify(mallory));
  assert.ok(alice.texts.includes("done:alice-secret"));
});

Deno.test("attack (c) guarded: a stateless server's streams are tagged for their caller", async () => {
  await using server = await startResumableServer({ stateless: true });
  const { mallory, alice } = await replayStatelessStream(server);
  assert.deepEqual(mallory, [{ status: 400, texts: [] }, { status: 400, texts: [] }]);
  // Alice resumes her own stream as unguarded.
  assert.equal(alice.status, 200);
  assert.ok(alice.texts.includes("done:alice-secret"), JSON.stringify(alice));
  const refusals = server.decisions.filter((d) => d.outcome === "refuse");
  assert.deepEqual(refusals.map((d) => [d.method, d.reason]), [
    ["GET", "unknown-event-id"],
    ["GET", "unknown-event-id"],
  ]);
});

/**
 * Attack (b): every session's listening stream is `_GET_stream` in one
 * shared store. Mallory resumes her OWN listening stream from her own event
 * id, after Alice's session sent a notification on its listening stream.
 */
async function resumeOwnListeningStream(server: ResumableServer): Promise<{
  status: number;
  heard: string[];
}> {
  const mallory = await openRawSession(server.url, MALLORY);
  const listening = await getStream(server.url, MALLORY, mallory);
  assert.equal(listening.status, 200);
  const announced = await callTool(server.url, MALLORY, mallory, 1, "announce", {
    text: "mallory-1",
  });
  await announced.body?.cancel();
  const before = await readEvents(listening, (e) => texts(e).includes("mallory-1"));
  assert.deepEqual(texts(before), ["mallory-1"]);
  const cursor = before.at(-1)!.id;

  const alice = await openRawSession(server.url, ALICE);
  const secret = await callTool(server.url, ALICE, alice, 1, "announce", { text: "alice-secret" });
  await secret.body?.cancel();
  await server.storedText("alice-secret");

  const resumed = await resume(server, MALLORY, mallory, cursor);
  if (!resumed.ok) {
    await resumed.body?.cancel();
    return { status: resumed.status, heard: [] };
  }
  const later = setTimeout(async () => {
    const again = await callTool(server.url, MALLORY, mallory, 2, "announce", {
      text: "mallory-2",
    });
    await again.body?.cancel();
  }, 100);
  try {
    const events: ClientEvent[] = await readEvents(resumed, (e) => texts(e).includes("mallory-2"));
    return { status: resumed.status, heard: texts(events) };
  } finally {
    clearTimeout(later);
  }
}

Deno.test("attack (b) control: unguarded, Mallory resuming her own listening stream hears Alice", async () => {
  await using server = await startResumableServer({ guarded: false, store: "shared" });
  const { status, heard } = await resumeOwnListeningStream(server);
  assert.equal(status, 200);
  assert.deepEqual(heard, ["alice-secret", "mallory-2"]);
});

Deno.test("attack (b) guarded: Mallory resuming her own listening stream hears only her own session", async () => {
  await using server = await startResumableServer({ store: "shared" });
  const { status, heard } = await resumeOwnListeningStream(server);
  assert.equal(status, 200);
  assert.deepEqual(heard, ["mallory-2"]);
});

Deno.test('attack (a) with resumption: "unchecked": the opt-out leaves the hole open', async () => {
  await using server = await startResumableServer({
    store: "sdk-shared",
    guard: { resumption: "unchecked" },
  });
  const [fromPriming] = await replayAlicesEventInOwnSession(server);
  assert.equal(fromPriming.status, 200);
  assert.ok(fromPriming.texts.includes("done:alice-secret"));
});

Deno.test('attack (b) with resumption: "all" and a shared store: the opt-in is for stores that keep sessions apart', async () => {
  await using server = await startResumableServer({
    store: "shared",
    guard: { resumption: "all" },
  });
  const { heard } = await resumeOwnListeningStream(server);
  assert.deepEqual(heard, ["alice-secret", "mallory-2"]);
});

/** Alice polls and resumes her request's stream from each id she read; what she reads after. */
async function aliceResumesHerRequest(options: ResumableServerOptions) {
  // The list store replays in order (the SDK's example store orders same-millisecond events at
  // random, guarded or not).
  await using server = await startResumableServer({ store: "shared", ...options });
  const alice = await openRawSession(server.url, ALICE);
  const seen = await alicePolls(server, alice, "mine");
  const after: string[][] = [];
  for (const event of seen) {
    const response = await resume(server, ALICE, alice, event.id);
    assert.equal(response.status, 200);
    after.push(texts(await readEvents(response, (e) => texts(e).includes("done:mine"))));
  }
  return { seen, after };
}

Deno.test("fidelity: Alice resuming her own request's stream reads exactly what she reads unguarded", async () => {
  const unguarded = await aliceResumesHerRequest({ guarded: false });
  const guarded = await aliceResumesHerRequest({});
  assert.deepEqual(unguarded.after, [
    ["before:mine", "away:mine", "done:mine"],
    ["away:mine", "done:mine"],
  ]);
  assert.deepEqual(guarded.after, unguarded.after);
  assert.deepEqual(
    guarded.seen.map((e) => [e.event, e.data]),
    unguarded.seen.map((e) => [e.event, e.data]),
  );
  // The ids carry the guard's tag; nothing else of the events changed.
  for (const event of guarded.seen) assert.match(event.id, /\.r[A-Za-z0-9_-]{22}$/);
  for (const event of unguarded.seen) assert.doesNotMatch(event.id, /\.r[A-Za-z0-9_-]{22}$/);
});

/** The SDK client calls `poll`: its transport reconnects by itself with the Last-Event-ID it read. */
async function sdkClientPolls(options: ResumableServerOptions): Promise<unknown> {
  await using server = await startResumableServer({ store: "sdk-shared", ...options });
  const transport = new StreamableHTTPClientTransport(server.url, {
    requestInit: { headers: bearer(ALICE) },
  });
  const client = new Client({ name: "poller", version: "0" });
  const errors: Error[] = [];
  client.onerror = (error: Error) => errors.push(error);
  await client.connect(transport);
  try {
    const result = await client.callTool({ name: "poll", arguments: { text: "sdk" } });
    return { result, resumed: server.decisions.filter((d) => d.method === "GET").length };
  } finally {
    await client.close();
  }
}

Deno.test("fidelity: the SDK client's own resumption (SEP-1699 polling) works through the guard", async () => {
  const unguarded = await sdkClientPolls({ guarded: false });
  const guarded = await sdkClientPolls({});
  const result = { content: [{ type: "text", text: "done:sdk" }] };
  assert.deepEqual(unguarded, { result, resumed: 0 });
  // Guarded: the listening GET, and at least one GET resuming the request's stream.
  assert.deepEqual((guarded as { result: unknown }).result, result);
  assert.ok((guarded as { resumed: number }).resumed >= 2);
});

/** Alice listens, hears one announcement, leaves; two more are sent; she resumes; one more. */
async function aliceResumesListening(options: ResumableServerOptions): Promise<string[]> {
  await using server = await startResumableServer({ store: "per-session", ...options });
  const alice = await openRawSession(server.url, ALICE);
  const announce = async (id: number, text: string) => {
    const response = await callTool(server.url, ALICE, alice, id, "announce", { text });
    await response.body?.cancel();
    await server.storedText(text);
  };
  const listening = await getStream(server.url, ALICE, alice);
  await announce(1, "a-1");
  const heard = await readEvents(listening, (e) => texts(e).includes("a-1"));
  await announce(2, "a-2");
  await announce(3, "a-3");
  const resumed = await resume(server, ALICE, alice, heard.at(-1)!.id);
  assert.equal(resumed.status, 200);
  const later = setTimeout(() => announce(4, "a-4"), 100);
  try {
    return texts(await readEvents(resumed, (e) => texts(e).includes("a-4")));
  } finally {
    clearTimeout(later);
  }
}

Deno.test('fidelity: with one store per session and resumption: "all", a listening stream resumes exactly as unguarded', async () => {
  const unguarded = await aliceResumesListening({ guarded: false });
  assert.deepEqual(unguarded, ["a-2", "a-3", "a-4"]);
  assert.deepEqual(await aliceResumesListening({ guard: { resumption: "all" } }), unguarded);
  // The default opens a fresh listening stream: what was sent while Alice was away is not replayed.
  assert.deepEqual(await aliceResumesListening({}), ["a-4"]);
});

Deno.test("forged, foreign and malformed Last-Event-IDs are refused like the SDK refuses an unknown id", async () => {
  await using unguarded = await startResumableServer({ guarded: false, placesIds: true });
  const control = await openRawSession(unguarded.url, MALLORY);
  const sdk = await getStream(unguarded.url, MALLORY, control, "no-such-event");
  const sdkBody = await sdk.json();
  // The SDK, with a store that places ids (getStreamIdForEventId), on an id it does not know:
  assert.equal(sdk.status, 400);
  assert.deepEqual(sdkBody.error, { code: -32000, message: "Invalid event ID format" });

  await using server = await startResumableServer({ placesIds: true });
  const alice = await openRawSession(server.url, ALICE);
  const mallory = await openRawSession(server.url, MALLORY);
  const seen = await alicePolls(server, alice, "x");
  const own = (await alicePolls(server, alice, "y"))[1].id; // alice's, valid in her session
  const flip = (text: string, at: number) =>
    text.slice(0, at) + (text[at] === "A" ? "B" : "A") + text.slice(at + 1);
  const cursors: [string, string, string][] = [
    ["foreign", mallory, seen[1].id],
    ["raw", alice, seen[1].id.slice(0, -SUFFIX_LENGTH)],
    ["tag altered", alice, flip(own, own.length - 1)],
    ["raw id altered", alice, flip(own, 0)],
    ["kind altered", alice, own.replace(/\.r(?=[A-Za-z0-9_-]{22}$)/, ".l")],
    ["tag truncated", alice, own.slice(0, -1)],
    ["tag doubled", alice, own + own.slice(-SUFFIX_LENGTH)],
    ["suffix only", alice, own.slice(-SUFFIX_LENGTH)],
    ["garbage", alice, "x"],
    ["long", alice, "z".repeat(8_000)],
    ["latin-1", alice, "\u00e9v\u00e9nement.r" + "A".repeat(22)],
  ];
  for (const [what, sid, cursor] of cursors) {
    const token = sid === mallory ? MALLORY : ALICE;
    const response = await getStream(server.url, token, sid, cursor);
    if (response.status !== 400) await response.body?.cancel(); // a stream: it would never end
    assert.equal(response.status, 400, what);
    const body = await response.json();
    assert.equal(body.error.code, -32000, what);
    assert.match(
      body.error.message,
      /^Bad Request: Last-Event-ID is not an event id of this session/,
    );
    assert.equal(body.id, null);
  }
  assert.equal(
    server.decisions.filter((d) => d.reason === "unknown-event-id").length,
    cursors.length,
  );
  // An empty Last-Event-ID is no cursor (the SDK ignores it): a listening stream, guarded or not.
  for (const [url, sid] of [[server.url, alice], [unguarded.url, control]] as const) {
    const empty = await getStream(url, sid === alice ? ALICE : MALLORY, sid, "");
    assert.equal(empty.status, 200);
    await empty.body?.cancel();
  }
});

Deno.test("fleet: with a shared secret another process resumes the stream; with none it refuses", async () => {
  for (const secret of ["fleet-secret", undefined]) {
    await using server = await startResumableServer({
      store: "shared",
      processes: 2,
      guard: secret === undefined ? {} : { secret },
    });
    const alice = await openRawSession(server.urls[0], ALICE);
    const seen = await alicePolls(server, alice, "fleet");
    const elsewhere = await getStream(server.urls[1], ALICE, alice, seen[1].id);
    if (secret === undefined) {
      assert.equal(elsewhere.status, 400);
      await elsewhere.body?.cancel();
      continue;
    }
    assert.equal(elsewhere.status, 200);
    assert.deepEqual(
      texts(await readEvents(elsewhere, (e) => texts(e).includes("done:fleet"))),
      ["away:fleet", "done:fleet"],
    );
  }
});

Deno.test("hono: the handler behind mcpGuard gets the raw Last-Event-ID", async () => {
  await using owners = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const cursors: (string | undefined)[] = [];
  const app = new Hono<McpGuardEnv>();
  app.use("/mcp", mcpGuard({ owners, cancellations, principal: (c) => c.req.header("x-user") }));
  const sse = (text: string) =>
    new Response(text, { headers: { "content-type": "text/event-stream" } });
  app.post("/mcp", async (c) => {
    const body = await c.req.json();
    if (body.method === "initialize") {
      return c.json({ jsonrpc: "2.0", id: body.id, result: {} }, 200, { "mcp-session-id": "s-1" });
    }
    return sse(
      `id: post-1\ndata: ${JSON.stringify({ jsonrpc: "2.0", id: body.id, result: {} })}\n\n`,
    );
  });
  app.get("/mcp", (c) => {
    cursors.push(c.req.header("last-event-id"));
    return sse("id: get-1\ndata: {}\n\n");
  });
  await using http = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
  const url = new URL(`http://127.0.0.1:${http.addr.port}/mcp`);
  const headers = {
    "x-user": "alice",
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize" }),
  });
  await init.body?.cancel();
  const call = await fetch(url, {
    method: "POST",
    headers: { ...headers, "mcp-session-id": "s-1" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call" }),
  });
  const [answer] = await readEvents(call);
  assert.match(answer.id, /^post-1\.r/);
  const get = (lastEventId?: string) =>
    fetch(url, {
      headers: {
        "x-user": "alice",
        accept: "text/event-stream",
        "mcp-session-id": "s-1",
        ...(lastEventId === undefined ? {} : { "last-event-id": lastEventId }),
      },
    });
  const listening = await get();
  const [event] = await readEvents(listening);
  assert.match(event.id, /^get-1\.l/);
  const resumed = await get(answer.id);
  assert.equal(resumed.status, 200);
  await resumed.body?.cancel();
  const fresh = await get(event.id);
  await fresh.body?.cancel();
  const forged = await get("post-1");
  assert.equal(forged.status, 400);
  await forged.body?.cancel();
  assert.deepEqual(cursors, [undefined, "post-1", undefined]);
});

Deno.test("an initialize answered as SSE: its event id is tagged for the session it issues", async () => {
  await using server = await startResumableServer({ store: "shared" });
  const init = await postRpc(server.url, ALICE, null, initializeRequest());
  const sid = init.headers.get("mcp-session-id")!;
  const [answer] = await readEvents(init);
  assert.match(answer.id, /\.r[A-Za-z0-9_-]{22}$/);
  const mallory = await openRawSession(server.url, MALLORY);
  const foreign = await getStream(server.url, MALLORY, mallory, answer.id);
  assert.equal(foreign.status, 400);
  await foreign.body?.cancel();
  const own = await getStream(server.url, ALICE, sid, answer.id);
  assert.equal(own.status, 200);
  await own.body?.cancel();
});

Deno.test("attach-only, anonymous listeners (never pinned): ids are tagged and checked the same", async () => {
  await using server = await startResumableServer({
    store: "shared",
    guard: { mode: "attach-only", principal: () => null },
  });
  const alice = await openRawSession(server.url, ALICE); // nobody owns it: anonymous
  const other = await openRawSession(server.url, MALLORY);
  const listening = await getStream(server.url, ALICE, alice);
  const announced = await callTool(server.url, ALICE, alice, 1, "announce", { text: "anon" });
  await announced.body?.cancel();
  const [heard] = await readEvents(listening, (e) => texts(e).includes("anon"));
  assert.match(heard.id, /\.l[A-Za-z0-9_-]{22}$/);
  const foreign = await getStream(server.url, MALLORY, other, heard.id);
  assert.equal(foreign.status, 400);
  await foreign.body?.cancel();
  const seen = await alicePolls(server, alice, "anon-poll");
  const resumed = await resume(server, ALICE, alice, seen[1].id);
  assert.deepEqual(
    texts(await readEvents(resumed, (e) => texts(e).includes("done:anon-poll"))),
    ["away:anon-poll", "done:anon-poll"],
  );
});
