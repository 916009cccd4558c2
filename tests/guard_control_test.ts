/**
 * One attack script, run against the SDK server without the guard (the
 * control: every attack works) and with it (every attack is refused), so the
 * tests prove the guard is what stops them. Then the same script against the
 * weaker `"attach-only"` mode, to pin down what that mode does and does not
 * protect.
 */

import assert from "node:assert/strict";
import type { GuardMode } from "../mod.ts";
import { connect, intruder, startServer, type TestServer, waitFor } from "./support/mcp_server.ts";

interface Outcome {
  /** Mallory opened a listening stream on alice's session. */
  listened: boolean;
  /** What mallory heard on it. */
  heard: unknown[];
  /** Alice's note, as read by mallory through alice's session. */
  stole: string | null;
  /** Mallory's guessed-id cancellation stopped alice's tool. */
  cancelledAlice: boolean;
  /** Mallory terminated alice's session. */
  deleted: boolean;
  /** Alice can still use her session afterwards. */
  aliceStillWorks: boolean;
}

async function attack(server: TestServer): Promise<Outcome> {
  await using alice = await connect(server.url, "alice-token", { listen: false });
  const sessionId = alice.sessionId;
  await alice.client.callTool({ name: "remember", arguments: { text: "alice's secret" } });

  await using mallory = await intruder(server.url, "mallory-token", sessionId);
  const heard: unknown[] = [];
  const replies = new Map<unknown, { result?: { content: { text: string }[] } }>();
  mallory.onmessage = (message: Record<string, unknown>) => {
    if (message.method === "notifications/message") {
      heard.push((message.params as { data: unknown }).data);
    }
    if ("id" in message) replies.set(message.id, message);
  };

  // 1. Attach a listener to alice's session and wait for her server messages.
  let listened = false;
  try {
    await mallory.resumeStream("0");
    listened = true;
  } catch { /* refused */ }
  await alice.client.callTool({ name: "broadcast", arguments: { text: "alice's broadcast" } });
  if (listened) await waitFor(() => heard.length > 0, 5_000, "mallory to hear");

  // 2. Post into alice's session.
  let stole: string | null = null;
  try {
    await mallory.send({
      jsonrpc: "2.0",
      id: "m-1",
      method: "tools/call",
      params: { name: "recall", arguments: {} },
    });
    await waitFor(() => replies.has("m-1"), 5_000, "mallory's reply");
    stole = replies.get("m-1")!.result!.content[0].text;
  } catch { /* refused */ }

  // 3. Cancel alice's running tool by guessing its request id.
  const before = server.tools.length;
  const call = alice.client.callTool({ name: "count", arguments: { steps: 4, stepMs: 100 } });
  call.catch(() => {});
  await waitFor(() => server.tools.slice(before).some((e) => e.kind === "started"), 5_000, "start");
  const { requestId } = server.tools.slice(before).find((e) => e.kind === "started")!;
  try {
    await mallory.send({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId, reason: "mallory was here" },
    });
  } catch { /* refused */ }
  const ended = () =>
    server.tools.find((e) =>
      e.requestId === requestId && e.sessionId === sessionId &&
      (e.kind === "completed" || e.kind === "stopped")
    );
  await waitFor(() => ended() !== undefined, 5_000, "alice's tool to end");
  const cancelledAlice = ended()!.kind === "stopped";

  // 4. Terminate alice's session.
  let deleted = false;
  try {
    await mallory.terminateSession();
    deleted = true;
  } catch { /* refused */ }

  const aliceStillWorks = await alice.client.callTool({ name: "recall", arguments: {} }).then(
    (r: unknown) => (r as { content: { text: string }[] }).content[0].text === "alice's secret",
    () => false,
  );
  return { listened, heard, stole, cancelledAlice, deleted, aliceStillWorks };
}

Deno.test("control: WITHOUT the guard, mallory hijacks alice's session", async () => {
  await using server = await startServer({ guarded: false });
  assert.deepEqual(await attack(server), {
    listened: true,
    heard: ["alice's broadcast"],
    stole: "alice's secret",
    cancelledAlice: true,
    deleted: true,
    aliceStillWorks: false,
  });
});

Deno.test("guard: WITH the guard (strict), every attack is refused", async () => {
  await using server = await startServer();
  assert.deepEqual(await attack(server), {
    listened: false,
    heard: [],
    stole: null,
    cancelledAlice: false,
    deleted: false,
    aliceStillWorks: true,
  });
  assert.deepEqual(
    server.decisions.filter((d) => d.outcome === "refuse").map((d) => [
      d.method,
      d.rpcMethod,
      d.status,
      d.reason,
    ]),
    [
      ["GET", null, 403, "not-owner"],
      ["POST", "tools/call", 403, "not-owner"],
      ["POST", "notifications/cancelled", 403, "not-owner"],
      ["DELETE", null, 403, "not-owner"],
    ],
  );
});

Deno.test("guard: attach-only mode guards the stream and DELETE, not POSTs", async () => {
  const mode: GuardMode = "attach-only";
  await using server = await startServer({ guard: { mode } });
  const outcome = await attack(server);
  assert.equal(outcome.listened, false);
  assert.equal(outcome.deleted, false);
  // The documented gap of attach-only: POSTs carrying a known session id pass.
  assert.equal(outcome.stole, "alice's secret");
  assert.equal(outcome.cancelledAlice, true);
  assert.equal(outcome.aliceStillWorks, true);
});

Deno.test("guard: attach-only lets anonymous callers in without owning anything", async () => {
  await using server = await startServer({ guard: { mode: "attach-only" } });
  await using anon = await connect(server.url, null, { listen: false });
  assert.equal(await server.owners.ownerOf(anon.sessionId), null);
  // Anyone may claim an unowned session's stream trust-on-first-use...
  const first = await fetch(server.url, {
    headers: {
      accept: "text/event-stream",
      "mcp-session-id": anon.sessionId,
      authorization: "Bearer bob-token",
    },
  });
  assert.equal(first.status, 200);
  await first.body!.cancel();
  // ...and then it is bob's: anonymous and mallory are refused.
  for (const token of [null, "mallory-token"]) {
    const again = await fetch(server.url, {
      headers: {
        accept: "text/event-stream",
        "mcp-session-id": anon.sessionId,
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      },
    });
    assert.equal(again.status, 403);
    await again.body?.cancel();
  }
});
