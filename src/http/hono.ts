/**
 * {@linkcode mcpGuard}: the HTTP guard as Hono middleware, for `app.use("/mcp", ...)`.
 *
 * Nothing here imports `hono`, not even its types: the middleware is typed
 * by the few parts of Hono's `Context` it touches ({@linkcode HonoContextLike}),
 * which every Hono `Context` has, so the package keeps no dependency on Hono.
 *
 * @module
 */

import {
  type GuardContext,
  type GuardOptions,
  guardSessions,
  InvalidInputError,
  type Principal,
  type RequestHandler,
  type RequestRef,
} from "../../mod.ts";
import { originalRequest } from "./resume.ts";

/**
 * The parts of a Hono `Context` {@linkcode mcpGuard} uses. Hono's own
 * `Context`, of any environment, fits; annotate `principal`'s parameter with
 * it (`(c: Context<MyEnv>) => ...`) to read typed variables.
 *
 * @example Hono's Context fits
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Context, Hono } from "hono";
 * import type { HonoContextLike } from "@mcp-guard/session/hono";
 *
 * const seen: HonoContextLike[] = [];
 * const app = new Hono().get("/", (c: Context) => {
 *   seen.push(c);
 *   return c.text("ok");
 * });
 * await app.request("/");
 * assert.equal(seen[0].req.raw.method, "GET");
 * ```
 */
export interface HonoContextLike {
  /** The request: `c.req`. */
  readonly req: {
    /** The web-standard request (the middleware may replace it). */
    raw: Request;
    /** The body as text, read once and kept. */
    text(): Promise<string>;
    /** A request header. */
    header(name: string): string | undefined;
    /**
     * Hono's cache of the body it read (`c.req.json()`, `text()`, ...),
     * which later reads answer from: the middleware empties it once the
     * guard has read the body, so downstream never gets the client's body
     * where the guard rewrote it.
     */
    bodyCache?: object;
  };
  /** A variable an earlier middleware set (`c.get("jwtPayload")`). */
  get(key: string): unknown;
  /** Sets the variable downstream reads as `c.get("mcpGuard")`. */
  set(key: "mcpGuard", value: GuardContext): void;
  /** The response (Hono's setter also takes `undefined`: no response yet). */
  res: Response;
}

/**
 * Options of {@linkcode mcpGuard}: those of `guardSessions`, with
 * `principal` reading the Hono context, and `internalHandler`.
 *
 * @typeParam C The context `principal` takes: Hono's `Context`, or any
 *   {@linkcode HonoContextLike}.
 *
 * @example The verified JWT subject is the principal
 * ```ts
 * import assert from "node:assert/strict";
 * import { type Context, Hono } from "hono";
 * import type { JwtVariables } from "hono/jwt";
 * import { CancellationRegistry, SessionOwnerRegistry } from "@mcp-guard/session";
 * import type { McpGuardOptions } from "@mcp-guard/session/hono";
 *
 * type Env = { Variables: JwtVariables<{ sub: string }> };
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * const options: McpGuardOptions<Context<Env>> = {
 *   owners,
 *   cancellations,
 *   principal: (c) => c.get("jwtPayload").sub,
 * };
 * const app = new Hono<Env>().get("/", async (c) => {
 *   c.set("jwtPayload", { sub: "alice" });
 *   return c.text(String(await options.principal(c)));
 * });
 * assert.equal(await (await app.request("/")).text(), "alice");
 * ```
 */
export interface McpGuardOptions<C extends HonoContextLike = HonoContextLike>
  extends Omit<GuardOptions, "principal"> {
  /**
   * The caller's identity, read from the Hono context: what an earlier
   * middleware verified (the `sub` of `c.get("jwtPayload")` after
   * `hono/jwt`), or `null` for anonymous; a `Principal` (`{ subject,
   * scopes, clientId }`) binds sessions to the token's scopes and client
   * too. Throw `UnauthenticatedError` for a bad or expired credential
   * (401); anything else thrown answers 503.
   */
  principal: (
    c: C,
  ) => string | Principal | null | undefined | Promise<string | Principal | null | undefined>;
  /**
   * Where the guard sends requests of its own, which come from no client and
   * so have no Hono context to run `next()` in: the DELETE that closes a
   * session whose binding was evicted, expired or refused, and the
   * `notifications/cancelled` that stops a request whose registration failed.
   * Point it at the MCP routes without the auth middleware, e.g.
   * `(request) => mcpRoutes.fetch(request)` (`c.get("mcpGuard")` is unset
   * there, the body readable). Without it, those requests fail and are
   * reported to `onError`, and the server keeps such sessions until its own
   * cleanup.
   */
  internalHandler?: RequestHandler;
}

/**
 * The Hono variables {@linkcode mcpGuard} sets: `c.get("mcpGuard")` is the
 * guard's context for the request (the caller's identity and, for a POST,
 * the JSON-RPC message it parsed).
 *
 * @example Typed access downstream
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import type { McpGuardVariables } from "@mcp-guard/session/hono";
 *
 * const app = new Hono<{ Variables: McpGuardVariables }>();
 * app.post("/mcp", (c) => c.json(c.get("mcpGuard")?.parsedBody ?? null));
 * assert.equal((await app.request("/mcp", { method: "POST" })).status, 200);
 * ```
 */
export interface McpGuardVariables {
  /** The guard's context; unset where the middleware did not run. */
  mcpGuard: GuardContext;
}

/**
 * The Hono environment of the routes behind {@linkcode mcpGuard}: `new
 * Hono<McpGuardEnv>()` types `c.get("mcpGuard")`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import type { McpGuardEnv } from "@mcp-guard/session/hono";
 *
 * const routes = new Hono<McpGuardEnv>().all("/mcp", (c) => c.text(c.get("mcpGuard")?.era ?? "-"));
 * assert.equal(await (await routes.request("/mcp")).text(), "-");
 * ```
 */
export interface McpGuardEnv {
  /** The variables the middleware sets. */
  Variables: McpGuardVariables;
}

/**
 * The Hono middleware {@linkcode mcpGuard} returns, with the guard's
 * `signalFor`.
 *
 * @typeParam C The context it takes (as `principal` does).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CancellationRegistry, SessionOwnerRegistry } from "@mcp-guard/session";
 * import { type McpGuardMiddleware, mcpGuard } from "@mcp-guard/session/hono";
 *
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * const guard: McpGuardMiddleware = mcpGuard({ owners, cancellations, principal: () => "alice" });
 * // A request the guard does not track: a signal that never aborts.
 * assert.equal(guard.signalFor({ sessionId: "s", requestId: 1 }).aborted, false);
 * ```
 */
export interface McpGuardMiddleware<C extends HonoContextLike = HonoContextLike> {
  /** Guards one request (Hono's `MiddlewareHandler` signature). */
  (c: C, next: () => Promise<void>): Promise<void>;
  /**
   * The `AbortSignal` of an in-flight request, as `GuardedHandler.signalFor`:
   * pass the tool's `extra` (SDK 1.32) or `ctx` (SDK v2).
   */
  signalFor(ref: RequestRef): AbortSignal;
}

/** A request handed to the guard, with the Hono context it came in. */
interface Pending {
  c: HonoContextLike;
  next: () => Promise<void>;
  /** Whether the guard let it through to `next()`. */
  ran: boolean;
}

/**
 * Hono middleware that makes MCP sessions belong to the principal that
 * initialized them (the rules of `guardSessions`). Put it after the
 * authentication middleware and before the MCP route.
 *
 * A refused request gets the guard's answer and never reaches `next()`.
 * An allowed one runs `next()` with `c.get("mcpGuard")` set, and the
 * response downstream produced goes back through the guard (binding an
 * issued session id, tracking the request until its stream ends).
 *
 * The body of a POST is read and parsed once, by the guard:
 * `c.get("mcpGuard").parsedBody` holds it. With `forwardBody: "copy"`
 * (default) `c.req.raw` is also replaced with a fresh request carrying that
 * JSON (serialized again), so `c.req.json()` and any handler that reads the
 * body work; with `"parsed"`, `c.req.raw` keeps the original request (its
 * body consumed) and the handler must take `parsedBody`, as `@hono/mcp`'s
 * `transport.handleRequest(c, parsedBody)` does. Either way the body an
 * earlier middleware read through Hono is dropped from `c.req`'s cache,
 * since the guard may have rewritten it (a `tasks/list` cursor); what such
 * a middleware kept itself (a validator's `c.req.valid("json")`) is still
 * the client's body.
 *
 * Methods other than GET, POST and DELETE are answered 405 by the guard:
 * put `cors()` before it to answer preflights. Requests the guard makes
 * itself (closing an evicted session) go to `internalHandler`, never
 * through Hono's middleware chain.
 *
 * @example Alice's session refuses Bob
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { CancellationRegistry, SessionOwnerRegistry } from "@mcp-guard/session";
 * import { type McpGuardEnv, mcpGuard } from "@mcp-guard/session/hono";
 *
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * const app = new Hono<McpGuardEnv>();
 * app.use("/mcp", mcpGuard({ owners, cancellations, principal: (c) => c.req.header("x-user") }));
 * // Stands in for an MCP server: issues a session on a POST without one.
 * app.post("/mcp", async (c) => {
 *   const body = await c.req.json(); // the body is still readable
 *   c.header("mcp-session-id", c.req.header("mcp-session-id") ?? "s-1");
 *   return c.json({ jsonrpc: "2.0", id: body.id, result: { who: c.get("mcpGuard").principal } });
 * });
 *
 * const call = (user: string, sessionId?: string) =>
 *   app.request("/mcp", {
 *     method: "POST",
 *     headers: {
 *       "content-type": "application/json",
 *       "x-user": user,
 *       ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
 *     },
 *     body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize" }),
 *   });
 * const alice = await call("alice");
 * assert.equal(alice.headers.get("mcp-session-id"), "s-1");
 * assert.deepEqual((await alice.json()).result, { who: "alice" });
 * assert.equal((await call("bob", "s-1")).status, 403);
 * assert.equal((await call("alice", "s-1")).status, 200);
 * ```
 */
export function mcpGuard<C extends HonoContextLike = HonoContextLike>(
  options: McpGuardOptions<C>,
): McpGuardMiddleware<C> {
  if (options === null || typeof options !== "object") {
    throw new InvalidInputError("mcpGuard: options are required");
  }
  const { principal, internalHandler, forwardBody = "copy", ...rest } = options;
  if (typeof principal !== "function") {
    throw new InvalidInputError("mcpGuard: options.principal must be a function of the context");
  }
  if (internalHandler !== undefined && typeof internalHandler !== "function") {
    throw new InvalidInputError("mcpGuard: options.internalHandler must be a function");
  }
  if (forwardBody !== "copy" && forwardBody !== "parsed") {
    throw new InvalidInputError(
      `mcpGuard: forwardBody must be "copy" or "parsed", got ${JSON.stringify(forwardBody)}`,
    );
  }
  const pending = new WeakMap<Request, Pending>();
  const handler: RequestHandler = async (request, context) => {
    // A GET whose Last-Event-ID the guard rewrote comes as a copy of the request it got.
    const original = originalRequest(request);
    const entry = pending.get(original);
    if (entry === undefined) {
      // A request of the guard's own (closing or cancelling): no client, no Hono context.
      if (internalHandler !== undefined) return await internalHandler(request, context);
      throw new Error(
        `mcpGuard: no internalHandler for the guard's own ${request.method} ` +
          `(session ${request.headers.get("mcp-session-id")})`,
      );
    }
    pending.delete(original); // next() runs once
    const { c } = entry;
    c.set("mcpGuard", context);
    if (original !== request) c.req.raw = request;
    if (forwardBody === "copy" && context.parsedBody !== undefined) {
      const headers = new Headers(request.headers);
      headers.delete("content-length"); // the body is serialized again
      const body = JSON.stringify(context.parsedBody);
      c.req.raw = new Request(request.url, { method: request.method, headers, body });
    }
    if (original !== request || context.parsedBody !== undefined) {
      // Hono answers c.req.json() from a body it read before (an earlier middleware's): the
      // client's, not the guard's rewrite (a task cursor it sealed or replaced). Empty that
      // cache: downstream reads the body of c.req.raw, the rewrite ("copy") or none ("parsed":
      // consumed, as when no middleware read it first).
      if (c.req.bodyCache !== undefined) c.req.bodyCache = {};
    }
    entry.ran = true;
    await entry.next();
    return c.res;
  };
  const guarded = guardSessions(handler, {
    ...rest,
    forwardBody: "parsed", // the guard hands over the request it got: the key to its context
    principal: (request) => {
      const entry = pending.get(request);
      if (entry === undefined) throw new Error("mcpGuard: principal() for an unknown request");
      return principal(entry.c as C);
    },
  });
  const middleware = async (c: C, next: () => Promise<void>): Promise<void> => {
    let request = c.req.raw;
    if (request.bodyUsed && request.method === "POST") {
      // An earlier middleware read the body through Hono (which keeps it): hand the guard a copy.
      const text = await c.req.text().catch(() => null);
      if (text !== null) {
        request = new Request(request.url, {
          method: "POST",
          headers: request.headers,
          body: text,
        });
      }
    }
    const entry: Pending = { c, next, ran: false };
    pending.set(request, entry);
    let response: Response;
    try {
      response = await guarded(request);
    } finally {
      pending.delete(request);
    }
    if (!entry.ran) {
      c.res = response; // a refusal: keeps headers set earlier (CORS)
    } else if (response !== c.res) {
      // The guard wrapped or replaced downstream's answer. Setting c.res merges the previous
      // response's headers into the new one: drop it first, so a refusal never carries the
      // session id of the answer it replaced.
      (c as { res: Response | undefined }).res = undefined;
      c.res = response;
    }
  };
  return Object.assign(middleware, { signalFor: guarded.signalFor });
}
