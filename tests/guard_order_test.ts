/**
 * The guard never reorders a session's requests in a way the handler can
 * observe: a POST sent right after the session's listening GET (or DELETE)
 * reaches the handler after it, as it does unguarded, so a server message the
 * POST causes finds the stream it must travel on.
 */

import assert from "node:assert/strict";
import { SessionOrder } from "../src/http/session_order.ts";
import { connect, sessionHeaders, startServer, type TestServer } from "./support/mcp_server.ts";

const ROUNDS = 20;

/**
 * Opens the listening GET and, without waiting for it, posts a tool call that
 * logs on that stream; true when the log arrives on the stream.
 */
async function getThenPost(server: TestServer, round: number): Promise<boolean> {
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const headers = sessionHeaders(alice.sessionId, "alice-token");
  const text = `round ${round}`;
  const get = fetch(server.url, {
    method: "GET",
    headers: { ...headers, accept: "text/event-stream" },
  });
  const post = fetch(server.url, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "broadcast", arguments: { text } },
    }),
  });
  const [stream, answer] = await Promise.all([get, post]);
  assert.equal(stream.status, 200);
  assert.equal(answer.status, 200);
  assert.match(await answer.text(), /"sent"/);
  const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => reader.cancel(), 1_000);
  let seen = "";
  try {
    while (!seen.includes(text)) {
      const { done, value } = await reader.read();
      if (done) break;
      seen += value;
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
  return seen.includes(text);
}

for (
  const [name, guarded, mode] of [
    ["unguarded (control)", false, undefined],
    ["strict", true, "strict"],
    ["attach-only", true, "attach-only"],
  ] as const
) {
  Deno.test(`order: a POST never overtakes the session's earlier GET (${name})`, async () => {
    await using server = await startServer({ guarded, guard: mode ? { mode } : {} });
    let delivered = 0;
    for (let round = 0; round < ROUNDS; round++) {
      if (await getThenPost(server, round)) delivered++;
    }
    assert.equal(delivered, ROUNDS, `${delivered}/${ROUNDS} logs reached the GET stream`);
  });
}

Deno.test("order: a POST sent after a DELETE reaches the handler after it", async () => {
  await using server = await startServer();
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const headers = sessionHeaders(alice.sessionId, "alice-token");
  const del = fetch(server.url, { method: "DELETE", headers });
  const post = fetch(server.url, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
  });
  const [deleted, after] = await Promise.all([del, post]);
  assert.equal(deleted.status, 200);
  await deleted.body?.cancel();
  // The session was over before the POST reached anyone: 404, never a 200 from the old session.
  assert.equal(after.status, 404);
  await after.body?.cancel();
});

Deno.test("SessionOrder: a later request waits only for gates held when it arrived", async () => {
  const order = new SessionOrder();
  assert.equal(order.ahead("s"), undefined);
  const releaseGet = order.hold("s");
  const releaseDelete = order.hold("s");
  const ahead = order.ahead("s")!;
  assert.equal(order.ahead("other"), undefined, "gates are per session");
  let passed = false;
  ahead.then(() => passed = true);
  releaseDelete(); // out of order: the GET still holds
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(passed, false);
  assert.notEqual(order.ahead("s"), undefined);
  releaseGet();
  releaseGet(); // twice: no effect
  await ahead;
  assert.equal(passed, true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(order.size, 0, "released gates are dropped");
  // A gate held after a request arrived does not delay that request.
  const late = order.hold("s");
  assert.equal(ahead === order.ahead("s"), false);
  late();
});
