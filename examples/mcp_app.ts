/**
 * A small MCP server on the official SDK, routed per session the way the SDK
 * documents it: one `McpServer` + `WebStandardStreamableHTTPServerTransport`
 * per session, found by its `Mcp-Session-Id`. It knows nothing about the
 * guard; `examples/server.ts` and the tests wrap its handler with
 * `guardSessions`.
 *
 * Tools:
 * - `count`: counts to `steps`, one step every `stepMs`, reporting progress;
 *   stops as soon as its `AbortSignal` aborts.
 * - `remember` / `recall`: keep a note in the session (what a hijacker wants).
 * - `broadcast`: sends a log message on the session's listening stream.
 * - `echo`: answers at once (used by the benchmark).
 *
 * @module
 */

// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { z } from "zod4";
import type { GuardContext, SdkExtraRef } from "../mod.ts";

/** Something a tool did, for logs and tests. */
export interface ToolEvent {
  /** Tool name. */
  tool: string;
  /** The session it ran in. */
  sessionId: string | undefined;
  /** Its JSON-RPC id. */
  requestId: string | number;
  /** What happened. */
  kind: "started" | "step" | "completed" | "stopped";
  /** Steps done so far (`count` only). */
  step?: number;
  /** Why it stopped. */
  reason?: string;
}

/**
 * The parts of the SDK's request-handler `extra` argument the tools use
 * (spelled out: the SDK's own types reach this project partly as `any`).
 */
export interface ToolExtra {
  /** The session the request arrived in. */
  sessionId?: string;
  /** The request's JSON-RPC id. */
  requestId: string | number;
  /**
   * The SDK's own signal: aborted by a same-session cancellation (the client's,
   * or one the guard forwards for an operator or a closed session) or a closed session.
   */
  signal: AbortSignal;
  /** Request metadata (the client's progress token). */
  _meta?: { progressToken?: string | number };
  /** Sends a notification related to this request (on its response stream). */
  sendNotification(notification: {
    method: "notifications/progress";
    params: { progressToken: string | number; progress: number; total: number; message: string };
  }): Promise<void>;
}

/** Options of {@linkcode createMcpApp}. */
export interface McpAppOptions {
  /**
   * The signal tools honour. Default: the SDK's `extra.signal`, which the
   * guard aborts too when it cancels a request itself (an operator's cancel, a
   * closed session), so a guarded app needs nothing here.
   * `(extra) => guard.signalFor(extra)` still works (the guard's signal and
   * the SDK's, combined).
   */
  signalFor?: (extra: SdkExtraRef) => AbortSignal;
  /** Default number of `count` steps (5). */
  countSteps?: number;
  /** Default delay between `count` steps, ms (1,000). */
  countStepMs?: number;
  /** Answer with JSON instead of SSE streams. */
  jsonResponse?: boolean;
  /** Session id generator (default `crypto.randomUUID`). */
  sessionIdGenerator?: () => string;
  /** Called for every tool event. */
  onToolEvent?: (event: ToolEvent) => void;
}

/** What {@linkcode createMcpApp} returns. */
export interface McpApp {
  /** The MCP endpoint: route every request of `/mcp` here. */
  /**
   * The MCP endpoint. Behind the guard it takes the guard's context and
   * hands the body the guard already parsed to the SDK (`parsedBody`), so
   * the body is read once (use the guard's `forwardBody: "parsed"`).
   */
  handler: (request: Request, context?: GuardContext) => Promise<Response>;
  /** Live sessions, by id. */
  sessions: ReadonlyMap<string, WebStandardStreamableHTTPServerTransport>;
  /** Closes every session (ends their streams and timers). */
  close(): Promise<void>;
}

function jsonError(status: number, code: number, message: string): Response {
  return new Response(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Builds the per-session MCP app. */
export function createMcpApp(options: McpAppOptions = {}): McpApp {
  const sessions = new Map<string, WebStandardStreamableHTTPServerTransport>();
  const signalFor = options.signalFor ?? ((extra: ToolExtra) => extra.signal);
  const emit = (event: ToolEvent) => options.onToolEvent?.(event);

  function createServer(): McpServer {
    const server = new McpServer(
      { name: "mcp-session-guard-example", version: "0.1.0" },
      { capabilities: { logging: {} } },
    );
    let note: string | null = null;

    server.registerTool("count", {
      description: "Counts to `steps`, one step every `stepMs`, reporting progress. Cancellable.",
      inputSchema: {
        steps: z.number().int().min(1).max(100).optional(),
        stepMs: z.number().int().min(1).max(60_000).optional(),
      },
    }, async ({ steps, stepMs }, extra) => {
      const total = steps ?? options.countSteps ?? 5;
      const delay = stepMs ?? options.countStepMs ?? 1_000;
      const signal = signalFor(extra);
      const base = { tool: "count", sessionId: extra.sessionId, requestId: extra.requestId };
      emit({ ...base, kind: "started", step: 0 });
      const progressToken = extra._meta?.progressToken;
      for (let step = 1; step <= total; step++) {
        try {
          await sleep(delay, signal);
        } catch (reason) {
          emit({ ...base, kind: "stopped", step: step - 1, reason: describe(reason) });
          throw reason;
        }
        emit({ ...base, kind: "step", step });
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress: step, total, message: `step ${step} of ${total}` },
          });
        }
      }
      emit({ ...base, kind: "completed", step: total });
      return { content: [{ type: "text", text: `counted to ${total}` }] };
    });

    server.registerTool("remember", {
      description: "Keeps a note in this session.",
      inputSchema: { text: z.string().max(10_000) },
    }, ({ text }: { text: string }) => {
      note = text;
      return { content: [{ type: "text", text: "noted" }] };
    });

    server.registerTool("recall", {
      description: "Returns the note kept in this session.",
    }, () => ({ content: [{ type: "text", text: note ?? "(no note)" }] }));

    server.registerTool("broadcast", {
      description: "Sends a log message on this session's listening stream.",
      inputSchema: { text: z.string().max(10_000) },
    }, async ({ text }: { text: string }) => {
      await server.server.sendLoggingMessage({ level: "info", data: text });
      return { content: [{ type: "text", text: "sent" }] };
    });

    server.registerTool("echo", {
      description: "Answers with its input at once.",
      inputSchema: { text: z.string().max(10_000) },
    }, ({ text }: { text: string }) => ({ content: [{ type: "text", text }] }));

    return server;
  }

  async function handler(request: Request, context?: GuardContext): Promise<Response> {
    // The body the guard read and parsed (POST), so the SDK does not read it again.
    const parsed = context?.parsedBody === undefined
      ? undefined
      : { parsedBody: context.parsedBody };
    const sessionId = request.headers.get("mcp-session-id");
    if (sessionId !== null) {
      const transport = sessions.get(sessionId);
      if (transport === undefined) return jsonError(404, -32001, "Session not found");
      return await transport.handleRequest(request, parsed);
    }
    if (request.method !== "POST") {
      return jsonError(400, -32000, "Bad Request: Mcp-Session-Id header is required");
    }
    // No session yet: a new transport decides whether this is an `initialize`.
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: options.sessionIdGenerator ?? (() => crypto.randomUUID()),
      enableJsonResponse: options.jsonResponse ?? false,
      onsessioninitialized: (id: string) => {
        sessions.set(id, transport);
      },
    });
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && sessions.get(id) === transport) sessions.delete(id);
    };
    const server = createServer();
    await server.connect(transport);
    const response = await transport.handleRequest(request, parsed);
    if (transport.sessionId === undefined) await server.close();
    return response;
  }

  return {
    handler,
    sessions,
    async close() {
      await Promise.all([...sessions.values()].map((transport) => transport.close()));
      sessions.clear();
    },
  };
}

function describe(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return typeof reason === "string" ? reason : String(reason);
}
