/**
 * Identities are compared losslessly: two principals whose strings differ
 * never share a fingerprint, and the strings that cannot name one caller
 * (ill-formed Unicode, blank, a stringified `null`/`undefined`) are refused
 * with an error naming the cause. Real SDK 1.32 server on Deno.serve.
 */

import assert from "node:assert/strict";
import { fingerprint, InvalidInputError } from "../mod.ts";
import { openSession, postRpc, startServer } from "./support/mcp_server.ts";

Deno.test("fingerprint: lone surrogates, blanks and stringified nulls are refused by name", async (t) => {
  await t.step("two ill-formed identities that UTF-8 would merge", async () => {
    // TextEncoder turns both lone surrogates into U+FFFD: one fingerprint for two callers.
    assert.deepEqual(
      new TextEncoder().encode("ops-team-\uD835"),
      new TextEncoder().encode("ops-team-\uD83D"),
    );
    for (const identity of ["ops-team-\uD835", "ops-team-\uD83D", "\uDE00x"]) {
      await assert.rejects(
        fingerprint(identity),
        (err: Error) =>
          err instanceof InvalidInputError && /lone surrogate \(\\uD[0-9A-F]{3}\) at index/.test(
            err.message,
          ),
      );
    }
  });
  await t.step("likely bugs", async () => {
    for (
      const [identity, cause] of [
        ["", /non-blank/],
        ["  ", /non-blank/],
        ["null", /stringified/],
        ["undefined", /stringified/],
        ["[object Object]", /stringified/],
      ] as const
    ) {
      await assert.rejects(fingerprint(identity), cause, JSON.stringify(identity));
    }
  });
  await t.step("well-formed identities, astral characters included, still work", async () => {
    const a = await fingerprint("ops-team-\uD835\uDC00");
    const b = await fingerprint("ops-team-\uD83D\uDE00");
    assert.notEqual(a, b);
    assert.match(a, /^[0-9a-f]{64}$/);
  });
});

Deno.test("guard: principals that UTF-8 would merge cannot reach each other's session", async () => {
  // The principal is the token's suffix after "ops-team-", as a sloppy decoder might produce.
  const identities: Record<string, string> = {
    "alice-token": "ops-team-\uD835",
    "mallory-token": "ops-team-\uD83D",
    "blank-token": "",
    "null-token": "null",
    "good-token": "ops-team-alice",
  };
  await using server = await startServer({
    guard: {
      principal: (request) =>
        identities[request.headers.get("authorization")?.replace(/^Bearer /, "") ?? ""] ?? null,
    },
  });
  // Before, alice's initialize bound the session and mallory's POST into it was allowed.
  const init = await postRpc(server.url, "alice-token", null, {
    jsonrpc: "2.0",
    id: 0,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "a", version: "0" },
    },
  });
  assert.equal(init.status, 500);
  assert.equal(init.headers.get("mcp-session-id"), null, "no session for an ill-formed identity");
  const body = await init.json();
  assert.equal(body.error.code, -32603);
  for (const token of ["mallory-token", "blank-token", "null-token"]) {
    const res = await postRpc(server.url, token, null, { jsonrpc: "2.0", id: 1, method: "ping" });
    await res.body?.cancel();
    assert.equal(res.status, 500, token);
  }
  assert.deepEqual(
    server.decisions.map((d) => d.reason),
    ["principal-invalid", "principal-invalid", "principal-invalid", "principal-invalid"],
  );
  assert.equal(server.errors.length, 4);
  assert.match(String(server.errors[0].error), /lone surrogate \(\\uD835\) at index 9/);
  assert.match(String(server.errors[2].error), /non-blank string, got ""/);
  assert.match(String(server.errors[3].error), /stringified value.*"null"/);
  // A well-formed identity is unaffected.
  const sid = await openSession(server.url, "good-token");
  assert.ok(sid.length > 0);
});
