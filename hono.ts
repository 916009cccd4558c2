/**
 * Hono middleware for the HTTP guard: `app.use("/mcp", auth, mcpGuard(...))`
 * makes each MCP session belong to the principal that initialized it, with
 * `principal` reading what the authentication middleware already verified
 * from the Hono context (no second token check), and the request body still
 * readable downstream (or taken parsed from `c.get("mcpGuard").parsedBody`).
 *
 * Import it from `@mcp-guard/session/hono`. It imports nothing from `hono`
 * (it is typed by the parts of Hono's `Context` it uses), so the package
 * keeps no dependency. In front of `@hono/mcp`'s `StreamableHTTPTransport`,
 * hand it the guard's parse: `transport.handleRequest(c,
 * c.get("mcpGuard").parsedBody)`; in front of the SDK's web-standard
 * transport, `transport.handleRequest(c.req.raw, { parsedBody })`.
 *
 * @example JWT-authenticated MCP endpoint
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { jwt, sign } from "hono/jwt";
 * import { CancellationRegistry, SessionOwnerRegistry } from "@mcp-guard/session";
 * import { type McpGuardEnv, mcpGuard } from "@mcp-guard/session/hono";
 *
 * const secret = "a-secret-of-at-least-32-characters!";
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * const guard = mcpGuard({
 *   owners,
 *   cancellations,
 *   principal: (c) => (c.get("jwtPayload") as { sub?: string } | undefined)?.sub,
 *   forwardBody: "parsed", // the MCP route takes c.get("mcpGuard").parsedBody
 * });
 *
 * const app = new Hono<McpGuardEnv>();
 * app.use("/mcp", jwt({ secret, alg: "HS256" }), guard);
 * // Stands in for `transport.handleRequest(c, c.get("mcpGuard").parsedBody)`.
 * app.post("/mcp", (c) => {
 *   const { principal, parsedBody } = c.get("mcpGuard");
 *   c.header("mcp-session-id", c.req.header("mcp-session-id") ?? "session-1");
 *   return c.json({ jsonrpc: "2.0", id: (parsedBody as { id: number }).id, result: { principal } });
 * });
 *
 * const post = async (sub: string | null, sessionId?: string) =>
 *   await app.request("/mcp", {
 *     method: "POST",
 *     headers: {
 *       "content-type": "application/json",
 *       ...(sub === null ? {} : { authorization: `Bearer ${await sign({ sub }, secret)}` }),
 *       ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
 *     },
 *     body: JSON.stringify({ jsonrpc: "2.0", id: 7, method: "initialize" }),
 *   });
 *
 * const alice = await post("alice");
 * assert.deepEqual(await alice.json(), { jsonrpc: "2.0", id: 7, result: { principal: "alice" } });
 * assert.equal((await post("mallory", "session-1")).status, 403); // a valid token, not the owner
 * assert.equal((await post(null, "session-1")).status, 401); // hono/jwt: no token
 * assert.equal((await post("alice", "session-1")).status, 200);
 * ```
 *
 * @module
 */

export {
  type HonoContextLike,
  mcpGuard,
  type McpGuardEnv,
  type McpGuardMiddleware,
  type McpGuardOptions,
  type McpGuardVariables,
} from "./src/http/hono.ts";
