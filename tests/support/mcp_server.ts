/**
 * Test fixtures for the HTTP guard: the example SDK app on a real
 * `Deno.serve({ port: 0 })`, guarded or not, and SDK clients with bearer
 * tokens. Everything is `AsyncDisposable` so `await using` tears it down in
 * the right order (clients first, then the server, then the registries).
 *
 * @module
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import { LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import {
  CancellationRegistry,
  type GuardCancellations,
  type GuardDecision,
  type GuardedHandler,
  type GuardOptions,
  type GuardOwners,
  guardSessions,
  type RequestHandler,
  SessionOwnerRegistry,
} from "../../mod.ts";
import {
  createMcpApp,
  type McpApp,
  type McpAppOptions,
  type ToolEvent,
} from "../../examples/mcp_app.ts";
import { bearerPrincipal } from "../../examples/server.ts";

/** Options of {@linkcode startServer}. */
export interface TestServerOptions extends Omit<McpAppOptions, "signalFor" | "onToolEvent"> {
  /** `false` serves the app unguarded (the control). Default: guarded. */
  guarded?: boolean;
  /** Guard options to override (mode, hooks, registries...). */
  guard?: Partial<GuardOptions>;
  /** Options for the default owner registry. */
  ownerOptions?: ConstructorParameters<typeof SessionOwnerRegistry>[0];
  /** Serve this handler instead of the SDK app (for edge cases). */
  handler?: RequestHandler;
}

/** A running test server. */
export interface TestServer extends AsyncDisposable {
  /** `http://127.0.0.1:PORT/mcp`. */
  url: URL;
  /** The SDK app behind the guard. */
  app: McpApp;
  /** The guard, or `null` for the unguarded control. */
  guard: GuardedHandler | null;
  /** Registries in use. */
  owners: GuardOwners & Partial<SessionOwnerRegistry>;
  cancellations: GuardCancellations & Partial<CancellationRegistry>;
  /** Every guard decision, in order. */
  decisions: GuardDecision[];
  /** Every error reported to the guard's `onError`. */
  errors: { error: unknown; context: string }[];
  /** Every tool event, in order. */
  tools: ToolEvent[];
}

/** Starts the example app (guarded by default) on a free loopback port. */
export function startServer(options: TestServerOptions = {}): Promise<TestServer> {
  const ownOwners = options.guard?.owners === undefined;
  const ownCancels = options.guard?.cancellations === undefined;
  const owners = options.guard?.owners ?? new SessionOwnerRegistry(options.ownerOptions);
  const cancellations = options.guard?.cancellations ?? new CancellationRegistry();
  const decisions: GuardDecision[] = [];
  const errors: { error: unknown; context: string }[] = [];
  const tools: ToolEvent[] = [];
  let guard: GuardedHandler | null = null;
  const app = createMcpApp({
    ...options,
    signalFor: (extra) => guard === null ? extra.signal! : guard.signalFor(extra),
    onToolEvent: (event) => tools.push(event),
  });
  const inner = options.handler ?? app.handler;
  if (options.guarded !== false) {
    guard = guardSessions(inner, {
      principal: bearerPrincipal(),
      ...options.guard,
      owners,
      cancellations,
      onDecision: (d) => {
        decisions.push(d);
        options.guard?.onDecision?.(d);
      },
      onError: (error, context) => {
        errors.push({ error, context });
        options.guard?.onError?.(error, context);
      },
    });
  }
  // Unguarded, a handler gets no identity (what the guard would have told it).
  const serve = guard ??
    ((request: Request) =>
      inner(request, { principal: null, fingerprint: null, parsedBody: undefined, era: "legacy" }));
  return new Promise((resolve) => {
    const server = Deno.serve({
      port: 0,
      hostname: "127.0.0.1",
      onListen: ({ port }) => {
        resolve({
          url: new URL(`http://127.0.0.1:${port}/mcp`),
          app,
          guard,
          owners,
          cancellations,
          decisions,
          errors,
          tools,
          async [Symbol.asyncDispose]() {
            await app.close();
            await server.shutdown();
            if (ownOwners) await (owners as SessionOwnerRegistry).close();
            if (ownCancels) await (cancellations as CancellationRegistry).close();
          },
        });
      },
    }, (request) => serve(request));
  });
}

/** An SDK client connected as the holder of `token`. */
export interface TestClient extends AsyncDisposable {
  client: Client;
  transport: StreamableHTTPClientTransport;
  /** The session id the server issued. */
  sessionId: string;
  /** Errors the transport reported (e.g. a refused listening stream). */
  errors: Error[];
}

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * Open the listening GET stream after initializing (the SDK default). `false`
   * makes a POST-only client (its GET is answered 405 locally).
   */
  listen?: boolean;
  /** Called for every `notifications/message` the client receives. */
  onLog?: (data: unknown) => void;
}

/** A raw `initialize` request (protocol 2025-11-25) with JSON-RPC id `id`. */
export function initializeRequest(id: string | number = 0): {
  jsonrpc: "2.0";
  id: string | number;
  method: "initialize";
  params: Record<string, unknown>;
} {
  return {
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "raw", version: "0" },
    },
  };
}

/** The headers a client with `token` sends. */
export function bearer(token: string | null): Record<string, string> {
  return token === null ? {} : { authorization: `Bearer ${token}` };
}

/** The headers of a raw request in session `sessionId` (protocol 2025-11-25) with `token`. */
export function sessionHeaders(sessionId: string, token: string | null): Record<string, string> {
  return {
    accept: "application/json, text/event-stream",
    "mcp-session-id": sessionId,
    "mcp-protocol-version": "2025-11-25",
    ...bearer(token),
  };
}

/**
 * A raw JSON-RPC POST with `token` (`message` as is when a string, else as
 * JSON), in session `sessionId` when one is given.
 */
export function postRpc(
  url: URL,
  token: string | null,
  sessionId: string | null,
  message: unknown,
  signal?: AbortSignal,
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(sessionId === null
        ? { accept: "application/json, text/event-stream", ...bearer(token) }
        : sessionHeaders(sessionId, token)),
    },
    body: typeof message === "string" ? message : JSON.stringify(message),
    signal,
  });
}

/** Opens a raw session as `token`'s holder (initialize, then initialized); returns its id. */
export async function openSession(url: URL, token: string): Promise<string> {
  const init = await postRpc(url, token, null, initializeRequest());
  await init.body?.cancel();
  assert.equal(init.status, 200, `initialize as ${token}`);
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid !== null);
  const ready = await postRpc(url, token, sid, {
    jsonrpc: "2.0",
    method: "notifications/initialized",
  });
  await ready.body?.cancel();
  assert.equal(ready.status, 202, `initialized as ${token}`);
  return sid;
}

/** Connects an SDK client (initialize + initialized) with `token`. */
export async function connect(
  url: URL,
  token: string | null,
  options: ConnectOptions = {},
): Promise<TestClient> {
  const errors: Error[] = [];
  const fetchFn: typeof fetch | undefined = options.listen === false
    ? (input, init) => {
      if ((init?.method ?? "GET") === "GET") {
        return Promise.resolve(new Response(null, { status: 405 }));
      }
      return fetch(input, init);
    }
    : undefined;
  const transport = new StreamableHTTPClientTransport(url, {
    requestInit: { headers: bearer(token) },
    fetch: fetchFn,
  });
  const client = new Client({ name: "guard-test", version: "0.0.0" });
  client.onerror = (error: Error) => errors.push(error);
  if (options.onLog !== undefined) {
    const onLog = options.onLog;
    client.setNotificationHandler(
      LoggingMessageNotificationSchema,
      (n: { params: { data?: unknown } }) => onLog(n.params.data),
    );
  }
  await client.connect(transport);
  const sessionId = transport.sessionId;
  if (sessionId === undefined) throw new Error("the server issued no session id");
  return {
    client,
    transport,
    sessionId,
    errors,
    async [Symbol.asyncDispose]() {
      await client.close();
    },
  };
}

/**
 * A bare SDK transport that speaks for `token` in an EXISTING session (it never
 * initializes): what an attacker who learned the session id would use.
 */
export async function intruder(
  url: URL,
  token: string | null,
  sessionId: string,
): Promise<StreamableHTTPClientTransport & AsyncDisposable> {
  const transport = new StreamableHTTPClientTransport(url, {
    sessionId,
    requestInit: { headers: bearer(token) },
  });
  transport.onerror = () => {};
  await transport.start();
  transport.setProtocolVersion("2025-11-25");
  return Object.assign(transport, {
    async [Symbol.asyncDispose]() {
      await transport.close();
    },
  });
}

/** Waits until `predicate()` holds (polling), or throws after `timeoutMs`. */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Raw JSON-RPC POST helper for malformed-input tests; returns status, headers and parsed body. */
export async function rawPost(
  url: URL,
  body: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: Headers; json: unknown; text: string }> {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...headers,
    },
    body,
  });
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, headers: response.headers, json, text };
}

/** A JSON-RPC POST as an SDK client sends it (in session `sid`, if given), for a handler called directly. */
export function rpcRequest(body: unknown, sid?: string): Request {
  return new Request("http://x/mcp", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(sid === undefined ? {} : { "mcp-session-id": sid }),
    },
    body: JSON.stringify(body),
  });
}
