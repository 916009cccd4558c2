/**
 * Scope-bound sessions: a session remembers what the credential that opened
 * it allowed (its scopes, its OAuth client), and a later GET, POST or DELETE
 * of the session with a credential that lacks one of those scopes is
 * answered 403 with the step-up challenge `WWW-Authenticate: Bearer
 * error="insufficient_scope", scope="..."`, as the SDK 1.32 client parses
 * it. Real SDK 1.32 server on Deno.serve, memory store and Redis.
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/auth"
import { extractWWWAuthenticateParams } from "@modelcontextprotocol/sdk/client/auth.js";
import {
  CancellationRegistry,
  fingerprint,
  type GuardOwners,
  guardSessions,
  InvalidInputError,
  type Principal,
  SessionOwnerRegistry,
} from "../mod.ts";
import { redisStore } from "../redis.ts";
import { derivedRegistry } from "../src/registry/session_owner_registry.ts";
import {
  connect,
  initializeRequest,
  openSession,
  postRpc,
  sessionHeaders,
  startServer,
  type TestServer,
  waitFor,
} from "./support/mcp_server.ts";
import { startRedis } from "./support/redis_server.ts";

const READ_WRITE = ["mcp:read", "mcp:write"];

/** Bearer tokens and what a token verifier would say about each. */
const TOKENS: Record<string, string | Principal> = {
  "alice-write": { subject: "alice", scopes: ["mcp:write", "mcp:read"], clientId: "app" },
  "alice-read": { subject: "alice", scopes: ["mcp:read"], clientId: "app" },
  "alice-admin": { subject: "alice", scopes: [...READ_WRITE, "mcp:admin"], clientId: "app" },
  "alice-other-app": { subject: "alice", scopes: READ_WRITE, clientId: "other-app" },
  "alice-api-key": "alice",
  "alice-subject": { subject: "alice" },
  "mallory-write": { subject: "mallory", scopes: READ_WRITE, clientId: "app" },
};

/** The guard's `principal`: the token's entry in `tokens`, or anonymous. */
function tokenPrincipal(tokens: Record<string, unknown> = TOKENS) {
  return (request: Request) => {
    const header = request.headers.get("authorization");
    if (header === null || !header.startsWith("Bearer ")) return null;
    const token = header.slice(7);
    return (Object.hasOwn(tokens, token) ? tokens[token] : null) as string | Principal | null;
  };
}

/** The credential records of a guard whose owners are `owners` (the guard's derived registry). */
function recordsOf(owners: unknown): SessionOwnerRegistry {
  return derivedRegistry(owners as SessionOwnerRegistry, { redis: "s:", kv: ":s" }, "mirror");
}

const PING = { jsonrpc: "2.0", id: 7, method: "ping" };

/** GET (listening stream), POST (ping) and DELETE of session `sid` with `token`. */
async function threeMethods(url: URL, token: string, sid: string): Promise<Response[]> {
  const answers: Response[] = [];
  answers.push(await fetch(url, { headers: sessionHeaders(sid, token) }));
  answers.push(await postRpc(url, token, sid, PING));
  answers.push(await fetch(url, { method: "DELETE", headers: sessionHeaders(sid, token) }));
  return answers;
}

/** A 403 with the insufficient_scope challenge naming `scopes`, as the SDK client reads it. */
async function assertStepUp(response: Response, scopes: string | null, what: string) {
  assert.equal(response.status, 403, what);
  const challenge = response.headers.get("www-authenticate");
  assert.equal(
    challenge,
    scopes === null
      ? 'Bearer error="insufficient_scope"'
      : `Bearer error="insufficient_scope", scope="${scopes}"`,
    what,
  );
  const params = extractWWWAuthenticateParams(response);
  assert.equal(params.error, "insufficient_scope", what);
  assert.equal(params.scope, scopes ?? undefined, what);
  const body = await response.json();
  assert.equal(body.jsonrpc, "2.0");
  assert.equal(body.error.code, -32600, what);
  assert.match(body.error.message, /insufficient scope/, what);
}

/** The status of a ping in `sid` with `token`. */
async function ping(server: { url: URL }, token: string, sid: string): Promise<number> {
  const response = await postRpc(server.url, token, sid, PING);
  await response.body?.cancel();
  return response.status;
}

function reasons(server: TestServer): string[] {
  return server.decisions.map((d) => d.reason);
}

Deno.test("scopes: Alice's read-only token is refused GET, POST and DELETE of the session her write token opened", async () => {
  await using server = await startServer({ guard: { principal: tokenPrincipal() } });
  // The SDK client opens the session with the write token.
  await using alice = await connect(server.url, "alice-write", { listen: false });
  const sid = alice.sessionId;
  const records = recordsOf(server.owners);
  const record = await records.ownerOf(sid);
  assert.match(record!, / s:mcp:read mcp:write$/, "the session remembers the creating scopes");

  // Before, each of these reached the session: ownership follows the subject alone.
  const [get, post, del] = await threeMethods(server.url, "alice-read", sid);
  await assertStepUp(get, "mcp:read mcp:write", "GET");
  await assertStepUp(post, "mcp:read mcp:write", "POST");
  await assertStepUp(del, "mcp:read mcp:write", "DELETE");
  assert.deepEqual(reasons(server).slice(-3), Array(3).fill("insufficient-scope"));
  // A credential without the session's client (an API key, a bare subject) is another client.
  for (const token of ["alice-api-key", "alice-subject"]) {
    for (const response of await threeMethods(server.url, token, sid)) {
      assert.equal(response.status, 403, token);
      await response.body?.cancel();
    }
    assert.deepEqual(reasons(server).slice(-3), Array(3).fill("other-client"), token);
  }
  assert.equal(server.app.sessions.has(sid), true, "the refused DELETEs closed nothing");
  assert.equal(await records.ownerOf(sid), record, "and changed no record");

  // The write token passes, and so does one with more scopes; the SDK client keeps working.
  await alice.client.ping();
  assert.equal(await ping(server, "alice-admin", sid), 200);
  const listening = await fetch(server.url, { headers: sessionHeaders(sid, "alice-admin") });
  assert.equal(listening.status, 200);
  // A live stream pins the record with its session: never evicted, never expired.
  await waitFor(async () => (await records.stats()).pinned === 1, 3_000, "record pinned");
  await listening.body?.cancel();
  await waitFor(async () => (await records.stats()).pinned === 0, 3_000, "record unpinned");
  // Mallory, with the very same scopes, is still another principal.
  assert.equal(await ping(server, "mallory-write", sid), 403);
  assert.equal(server.decisions.at(-1)?.reason, "not-owner");

  const ended = await fetch(server.url, {
    method: "DELETE",
    headers: sessionHeaders(sid, "alice-write"),
  });
  await ended.body?.cancel();
  assert.equal(ended.status, 200);
  assert.equal(await records.ownerOf(sid), null, "the record is forgotten with its session");
});

Deno.test("scopes: credentials: false is the explicit opt-out: the subject alone, the hole as before (control)", async () => {
  await using server = await startServer({
    guard: { principal: tokenPrincipal(), credentials: false },
  });
  const sid = await openSession(server.url, "alice-write");
  // What every guard did before: Alice's read token and her other app reach the write session.
  for (const [method, response] of (await threeMethods(server.url, "alice-read", sid)).entries()) {
    await response.body?.cancel();
    assert.equal(response.status, 200, ["GET", "POST", "DELETE"][method]);
  }
  assert.equal(server.app.sessions.has(sid), false, "the read token closed it");
  // Ownership still holds.
  const other = await openSession(server.url, "alice-write");
  assert.equal(await ping(server, "mallory-write", other), 403);
  assert.equal(await ping(server, "alice-other-app", other), 200);
});

Deno.test("scopes: resourceMetadata rides along in the guard's challenges", async () => {
  const metadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
  await using server = await startServer({
    guard: { principal: tokenPrincipal(), resourceMetadata: new URL(metadata) },
  });
  const sid = await openSession(server.url, "alice-write");
  const refused = await postRpc(server.url, "alice-read", sid, PING);
  assert.equal(
    refused.headers.get("www-authenticate"),
    `Bearer error="insufficient_scope", scope="mcp:read mcp:write", resource_metadata="${metadata}"`,
  );
  const params = extractWWWAuthenticateParams(refused);
  assert.equal(params.resourceMetadataUrl?.href, metadata);
  assert.equal(params.scope, "mcp:read mcp:write");
  await refused.body?.cancel();
  // An anonymous caller is told where to get a token, too.
  const anonymous = await postRpc(server.url, null, null, initializeRequest());
  await anonymous.body?.cancel();
  assert.equal(anonymous.status, 401);
  assert.equal(extractWWWAuthenticateParams(anonymous).resourceMetadataUrl?.href, metadata);
  assert.throws(
    () =>
      guardSessions(() => new Response(null), {
        owners: server.owners,
        cancellations: server.cancellations,
        principal: () => "alice",
        resourceMetadata: "/relative",
      }),
    (err: Error) => err instanceof InvalidInputError && /resourceMetadata/.test(err.message),
  );
});

Deno.test("scopes: another OAuth client of the same user is refused (403), unless matchClientId is false", async () => {
  {
    await using server = await startServer({ guard: { principal: tokenPrincipal() } });
    const sid = await openSession(server.url, "alice-write");
    const [get, post, del] = await threeMethods(server.url, "alice-other-app", sid);
    for (const [what, response] of [["GET", get], ["POST", post], ["DELETE", del]] as const) {
      assert.equal(response.status, 403, what);
      assert.equal(response.headers.get("www-authenticate"), null, "no scope would help");
      assert.match((await response.json()).error.message, /another client/);
    }
    assert.deepEqual(reasons(server).slice(-3), ["other-client", "other-client", "other-client"]);
    assert.equal(await ping(server, "alice-write", sid), 200);
  }
  {
    await using server = await startServer({
      guard: { principal: tokenPrincipal(), matchClientId: false },
    });
    const sid = await openSession(server.url, "alice-write");
    assert.equal(await ping(server, "alice-other-app", sid), 200);
    // Scopes still bind, for any credential of the subject.
    for (const token of ["alice-read", "alice-api-key", "alice-subject"]) {
      const refused = await postRpc(server.url, token, sid, PING);
      await assertStepUp(refused, "mcp:read mcp:write", token);
    }
  }
});

Deno.test("scopes: a session opened by a string principal imposes nothing on the subject's credentials", async () => {
  await using server = await startServer({ guard: { principal: tokenPrincipal() } });
  const sid = await openSession(server.url, "alice-api-key");
  assert.equal(await recordsOf(server.owners).ownerOf(sid), await fingerprint("alice"));
  for (const token of ["alice-read", "alice-write", "alice-other-app", "alice-subject"]) {
    assert.equal(await ping(server, token, sid), 200, token);
  }
  const listening = await fetch(server.url, { headers: sessionHeaders(sid, "alice-read") });
  assert.equal(listening.status, 200);
  await listening.body?.cancel();
  assert.equal(await ping(server, "mallory-write", sid), 403);
  // { subject } alone is the same principal as the string.
  const own = await openSession(server.url, "alice-subject");
  assert.equal(await ping(server, "alice-api-key", own), 200);
  assert.equal(await server.owners.ownerOf(own), await fingerprint("alice"));
  const ended = await fetch(server.url, {
    method: "DELETE",
    headers: sessionHeaders(sid, "alice-read"),
  });
  await ended.body?.cancel();
  assert.equal(ended.status, 200);
});

Deno.test("scopes: malformed scopes, client ids or keys are a 500 principal-invalid naming the cause", async () => {
  const tokens: Record<string, unknown> = {
    good: { subject: "alice", scopes: ["mcp:read"] },
    "one-string": { subject: "alice", scopes: "mcp:read mcp:write" },
    "joined-scopes": { subject: "alice", scopes: ["mcp:read mcp:write"] },
    "blank-scope": { subject: "alice", scopes: [""] },
    "quoted-scope": { subject: "alice", scopes: ['mcp:"read"'] },
    "number-scope": { subject: "alice", scopes: [7] },
    "long-scope": { subject: "alice", scopes: ["x".repeat(257)] },
    "many-scopes": { subject: "alice", scopes: Array.from({ length: 65 }, (_, i) => `s${i}`) },
    "blank-client": { subject: "alice", clientId: " " },
    "control-client": { subject: "alice", clientId: "app\n" },
    "no-subject": { sub: "alice", scopes: ["mcp:read"] },
    "typo-key": { subject: "alice", scope: "mcp:read" },
    "array-answer": ["alice"],
  };
  const causes: Record<string, RegExp> = {
    "one-string": /scopes that are not an array \(got string\)/,
    "joined-scopes": /scopes\[0\] "mcp:read mcp:write", not a scope.*no spaces/,
    "blank-scope": /scopes\[0\] "", not a scope/,
    "quoted-scope": /scopes\[0\] "mcp:\\"read\\"", not a scope/,
    "number-scope": /scopes\[0\] \(number\), not a scope/,
    "long-scope": /not a scope: 1 to 256/,
    "many-scopes": /65 scopes, more than 64/,
    "blank-client": /clientId must be a non-blank string/,
    "control-client": /clientId has no control characters/,
    "no-subject": /unknown option "sub"; did you mean "subject"\?/,
    "typo-key": /unknown option "scope"; did you mean "scopes"\?/,
    "array-answer": /must return a string, a Principal or null, got an array/,
  };
  await using server = await startServer({ guard: { principal: tokenPrincipal(tokens) } });
  for (const [token, cause] of Object.entries(causes)) {
    const before = server.errors.length;
    const response = await postRpc(server.url, token, null, initializeRequest());
    assert.equal(response.status, 500, token);
    assert.equal(response.headers.get("mcp-session-id"), null, token);
    assert.equal((await response.json()).error.code, -32603, token);
    assert.equal(server.decisions.at(-1)?.reason, "principal-invalid", token);
    assert.equal(server.errors.length, before + 1, token);
    const error = server.errors.at(-1)!;
    assert.equal(error.context, "principal");
    assert.ok(error.error instanceof InvalidInputError, token);
    assert.match(String(error.error), cause, token);
  }
  assert.equal(server.app.sessions.size, 0, "no session was opened");
  // A well-formed Principal opens one.
  const sid = await openSession(server.url, "good");
  assert.match((await recordsOf(server.owners).ownerOf(sid))!, / s:mcp:read$/);
});

Deno.test("scopes: scopes too long to list are kept as a hash: the same scopes pass, any other set is refused", async () => {
  const many = Array.from({ length: 30 }, (_, i) => `https://scopes.example.com/mcp/${i}/read`);
  const tokens: Record<string, Principal> = {
    all: { subject: "alice", scopes: many },
    "all-reordered": { subject: "alice", scopes: [...many].reverse() },
    fewer: { subject: "alice", scopes: many.slice(1) },
    more: { subject: "alice", scopes: [...many, "extra"] },
  };
  await using server = await startServer({ guard: { principal: tokenPrincipal(tokens) } });
  const sid = await openSession(server.url, "all");
  const record = (await recordsOf(server.owners).ownerOf(sid))!;
  assert.match(record, / h:[0-9a-f]{64}$/);
  assert.ok(new TextEncoder().encode(record).length <= 1024);
  assert.equal(await ping(server, "all-reordered", sid), 200);
  // Fail closed: the scopes themselves are not kept, so a superset cannot be told from a subset.
  for (const token of ["fewer", "more"]) {
    await assertStepUp(await postRpc(server.url, token, sid, PING), null, token);
  }
});

Deno.test("scopes: a live session without its record fails closed (404), and its record goes with it", async () => {
  await using server = await startServer({
    guard: { principal: tokenPrincipal() },
    ownerOptions: { maxPerPrincipal: 1 },
  });
  const records = recordsOf(server.owners);
  const first = await openSession(server.url, "alice-write");
  // A record lost while its session lives (an operator's forget): the session cannot be checked.
  assert.equal(await records.forget(first), true);
  const lost = await postRpc(server.url, "alice-write", first, PING);
  assert.equal(lost.status, 404);
  assert.equal((await lost.json()).error.code, -32001);
  const listening = await fetch(server.url, { headers: sessionHeaders(first, "alice-write") });
  await listening.body?.cancel();
  assert.equal(listening.status, 404);
  assert.deepEqual(reasons(server).slice(-2), ["credentials-missing", "credentials-missing"]);
  // Alice's cap is 1: her next session evicts the first, and its record goes with it.
  const second = await openSession(server.url, "alice-read");
  await waitFor(() => !server.app.sessions.has(first), 3_000, "the evicted session closed");
  const third = await openSession(server.url, "alice-write");
  await waitFor(async () => await records.ownerOf(second) === null, 3_000, "record forgotten");
  assert.equal(await records.size(), 1);
  assert.equal(await ping(server, "alice-write", third), 200);
});

Deno.test("scopes: a record evicted on its own closes its session, which is then unknown", async () => {
  await using credentials = new SessionOwnerRegistry({ maxEntries: 1 });
  const closed: string[] = [];
  await using server = await startServer({
    guard: {
      principal: tokenPrincipal(),
      credentials,
      onSessionClosed: (sid, cause) => closed.push(`${cause}:${sid}`),
    },
  });
  const first = await openSession(server.url, "alice-write");
  await openSession(server.url, "mallory-write"); // its record takes the only slot
  await waitFor(() => closed.length === 1, 3_000, "the first session closed");
  assert.deepEqual(closed, [`evicted:${first}`]);
  assert.equal(server.app.sessions.has(first), false);
  await waitFor(async () => await server.owners.ownerOf(first) === null, 3_000, "unbound");
  const gone = await postRpc(server.url, "alice-write", first, PING);
  await gone.body?.cancel();
  assert.equal(gone.status, 404);
  assert.equal(server.decisions.at(-1)?.reason, "unknown-session");
});

Deno.test("scopes: custom owners need credentials (a registry, or false to bind the subject alone)", async () => {
  await using real = new SessionOwnerRegistry();
  await using cancellations = new CancellationRegistry();
  const owners: GuardOwners = {
    bind: (s, f) => real.bind(s, f),
    authorizeAttach: (s, f, o) => real.authorizeAttach(s, f, o),
    ownerOf: (s) => real.ownerOf(s),
    forget: (s, f) => real.forget(s, f),
    unpin: (s) => real.unpin(s),
  };
  const handler = () => new Response(null, { status: 202 });
  const base = { owners, cancellations, principal: () => "alice", tasks: false as const };
  assert.throws(
    () => guardSessions(handler, base),
    (err: Error) =>
      err instanceof InvalidInputError && /options\.credentials is required/.test(err.message) &&
      /credentials: false/.test(err.message),
  );
  assert.throws(
    () => guardSessions(handler, { ...base, credentials: {} as never }),
    /options\.credentials must be a SessionOwnerRegistry .* or false, got object/,
  );
  assert.throws(
    () => guardSessions(handler, { ...base, credentials: false, matchClientId: "no" as never }),
    /matchClientId must be true or false/,
  );
  guardSessions(handler, { ...base, credentials: false });
  guardSessions(handler, { ...base, mode: "attach-only" });
  await using own = new SessionOwnerRegistry();
  guardSessions(handler, { ...base, credentials: own });
});

Deno.test("scopes: on Redis, a session opened through one guard is scope-bound through another", async () => {
  await using redis = await startRedis();
  const prefix = `scopes-${crypto.randomUUID().slice(0, 8)}:`;
  const guard = { principal: tokenPrincipal(), secret: "cluster-secret" };
  await using a = await startServer({
    guard,
    ownerOptions: { store: redisStore({ url: redis.url, prefix }) },
  });
  // B serves A's SDK sessions (one server behind two guard processes, sharing the store).
  await using b = await startServer({
    guard,
    ownerOptions: { store: redisStore({ url: redis.url, prefix }) },
    handler: a.app.handler,
  });
  await using alice = await connect(a.url, "alice-write", { listen: false });
  const sid = alice.sessionId;
  const stored = await redis.command("HGET", `${prefix}s:o:own`, sid);
  assert.match(stored, / c:[0-9a-f]{32} s:mcp:read mcp:write\r\n$/, "the record is in Redis");
  assert.doesNotMatch(stored, /app/, "the client id is kept as a keyed hash");

  const [get, post, del] = await threeMethods(b.url, "alice-read", sid);
  await assertStepUp(get, "mcp:read mcp:write", "GET through B");
  await assertStepUp(post, "mcp:read mcp:write", "POST through B");
  await assertStepUp(del, "mcp:read mcp:write", "DELETE through B");
  assert.equal(await ping(b, "alice-other-app", sid), 403);
  assert.equal(await ping(b, "alice-write", sid), 200);
  assert.equal(await ping(b, "alice-admin", sid), 200);
  assert.equal(await ping(a, "alice-read", sid), 403);

  // A string principal's session through A imposes nothing through B.
  const plain = await openSession(a.url, "alice-api-key");
  assert.equal(await ping(b, "alice-read", plain), 200);

  const ended = await fetch(b.url, {
    method: "DELETE",
    headers: sessionHeaders(sid, "alice-write"),
  });
  await ended.body?.cancel();
  assert.equal(ended.status, 200);
  assert.match(await redis.command("HEXISTS", `${prefix}s:o:own`, sid), /:0/);
  assert.match(await redis.command("HEXISTS", `${prefix}o:own`, sid), /:0/);
});
