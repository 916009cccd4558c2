/**
 * A guarded MCP server on the official SDK v2 (`createMcpHandler`), which
 * speaks MCP 2026-07-28 and serves 2025-era clients statelessly.
 *
 * There are no protocol sessions to steal here: the guard identifies the
 * caller, refuses anonymous ones, hands the body it already parsed and the
 * caller's identity to the SDK (`forwardBody: "parsed"`), and keeps the
 * request's signal, so a client that disconnects cancels its tool call.
 *
 * ```sh
 * deno run --allow-net --allow-read examples/server_v2.ts   # http://127.0.0.1:8788/mcp
 * ```
 *
 * @module
 */

import { createMcpHandler, McpServer } from "@modelcontextprotocol/server";
import * as z from "zod4";
import {
  CancellationRegistry,
  type GuardDecision,
  guardSessions,
  SessionOwnerRegistry,
} from "../mod.ts";
import { bearerPrincipal } from "./server.ts";

/** What the `slow` tool saw, for logs and tests. */
export interface SlowToolEvent {
  /** Who called it. */
  principal: string | undefined;
  /** `"completed"` or `"aborted"`. */
  outcome: "completed" | "aborted";
}

/** Options of {@linkcode startV2Server}. */
export interface V2ServerOptions {
  /** Port (default 8788; 0 picks a free one). */
  port?: number;
  /** `false` serves the SDK handler unguarded (a control for tests). @default {true} */
  guarded?: boolean;
  /** How the guard hands the body on. @default {"parsed"} */
  forwardBody?: "copy" | "parsed";
  /** Called for every guard decision. */
  onDecision?: (decision: GuardDecision) => void;
  /** Called when the `slow` tool ends. */
  onSlowTool?: (event: SlowToolEvent) => void;
}

/** A running v2 server. */
export interface V2Server extends AsyncDisposable {
  /** `http://127.0.0.1:PORT/mcp`. */
  url: URL;
}

/** Starts the guarded SDK v2 server. */
export function startV2Server(options: V2ServerOptions = {}): Promise<V2Server> {
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const principal = bearerPrincipal();

  const mcp = createMcpHandler(() => {
    const server = new McpServer({ name: "guarded-v2", version: "1.0.0" });
    server.registerTool("whoami", {
      description: "Names the authenticated caller.",
      inputSchema: z.object({}),
    }, (_args, ctx) => ({
      content: [{ type: "text", text: ctx.http?.authInfo?.clientId ?? "(anonymous)" }],
    }));
    server.registerTool("slow", {
      description: "Waits up to `ms`, stopping early when the request is cancelled.",
      inputSchema: z.object({ ms: z.number().int().min(0).max(60_000) }),
    }, async ({ ms }, ctx) => {
      const signal = ctx.mcpReq.signal; // the SDK aborts it when the client goes away
      const who = ctx.http?.authInfo?.clientId;
      const aborted = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve(true);
        }, { once: true });
      });
      options.onSlowTool?.({ principal: who, outcome: aborted ? "aborted" : "completed" });
      return { content: [{ type: "text", text: aborted ? "aborted" : `waited ${ms} ms` }] };
    });
    return server;
    // SSE answers send their headers at once; on Deno.serve that is what lets a client's
    // disconnect reach `request.signal` while the tool still runs (a JSON answer notices
    // only when it is written).
  }, { responseMode: "sse" });

  const guarded = guardSessions(
    (request, { principal, parsedBody }) =>
      mcp.fetch(request, {
        parsedBody,
        authInfo: principal === null ? undefined : { token: "", clientId: principal, scopes: [] },
      }),
    {
      owners,
      cancellations,
      principal,
      forwardBody: options.forwardBody ?? "parsed",
      onDecision: options.onDecision,
    },
  );
  const unguarded = (request: Request) => {
    const who = principal(request);
    return mcp.fetch(request, {
      authInfo: who === null ? undefined : { token: "", clientId: who, scopes: [] },
    });
  };
  const serve = options.guarded === false ? unguarded : guarded;

  return new Promise((resolve) => {
    const server = Deno.serve({
      port: options.port ?? 8788,
      hostname: "127.0.0.1",
      onListen: ({ port }) =>
        resolve({
          url: new URL(`http://127.0.0.1:${port}/mcp`),
          async [Symbol.asyncDispose]() {
            await server.shutdown();
            await mcp.close();
            await owners.close();
            await cancellations.close();
          },
        }),
    }, serve);
  });
}

if (import.meta.main) {
  const server = await startV2Server();
  console.log(`guarded SDK v2 server on ${server.url} (tokens: alice-token, bob-token)`);
}
