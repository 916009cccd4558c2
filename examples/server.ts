/**
 * A guarded MCP server on the official SDK: `deno task serve`.
 *
 * Bearer tokens from a small demo table name the principal; the guard binds
 * each session to the principal that initialized it. The `count` tool runs for
 * several seconds, reports progress, and stops when its request is cancelled.
 *
 * ```sh
 * deno task serve                 # http://127.0.0.1:8787/mcp (or $PORT, with --allow-env)
 * deno task serve --port=0        # any free port (printed)
 * deno task serve --steps=5 --step-ms=1000 --mode=attach-only
 * ```
 *
 * @module
 */

import {
  CancellationRegistry,
  type GuardDecision,
  type GuardMode,
  guardSessions,
  SessionOwnerRegistry,
} from "../mod.ts";
import { createMcpApp, type ToolEvent } from "./mcp_app.ts";

/** Demo bearer tokens and the principal each one names. */
export const DEMO_TOKENS: Readonly<Record<string, string>> = {
  "alice-token": "alice",
  "bob-token": "bob",
  "mallory-token": "mallory",
};

/**
 * A `principal` function for the guard: the user named by the request's
 * `Authorization: Bearer <token>` in `tokens`, or `null` (anonymous).
 */
export function bearerPrincipal(
  tokens: Readonly<Record<string, string>> = DEMO_TOKENS,
): (request: Request) => string | null {
  return (request) => {
    const header = request.headers.get("authorization");
    if (header === null || !header.startsWith("Bearer ")) return null;
    const token = header.slice(7).trim();
    return Object.hasOwn(tokens, token) ? tokens[token] : null;
  };
}

/** Options of {@linkcode startDemoServer}. */
export interface DemoServerOptions {
  /** Port (default 8787; 0 picks a free one). */
  port?: number;
  /** Interface (default 127.0.0.1). */
  hostname?: string;
  /** Steps of the `count` tool (default 5). */
  countSteps?: number;
  /** Delay between steps, ms (default 1,000). */
  countStepMs?: number;
  /** Guard mode (default strict). */
  mode?: GuardMode;
  /** Where log lines go (default `console.log`). */
  log?: (line: string) => void;
}

/** A running demo server. */
export interface DemoServer {
  /** The MCP endpoint, e.g. `http://127.0.0.1:8787/mcp`. */
  url: URL;
  /** What the guard decided so far, counted by outcome, reason and status: a table's lines. */
  decisionTable(): string[];
  /**
   * Stops serving (new connections refused; the open sessions are closed so
   * their streams end), then closes the registries, whose workers would
   * otherwise keep the process alive.
   */
  close(): Promise<void>;
}

const short = (id: string | null | undefined) => (id ? `${id.slice(0, 8)}…` : "-");

function describeDecision(d: GuardDecision): string | null {
  const what = `${d.method}${d.rpcMethod ? ` ${d.rpcMethod}` : ""}`;
  if (d.outcome === "refuse") {
    return `[guard] REFUSED ${what} on session ${short(d.sessionId)}: ${d.status} ${d.reason}`;
  }
  if (d.reason === "bound") return `[guard] new session ${short(d.sessionId)} bound to its creator`;
  if (d.reason === "cancelled") {
    return `[guard] cancellation accepted in session ${short(d.sessionId)}`;
  }
  if (d.reason === "cancel-unmatched") {
    return `[guard] cancellation in session ${
      short(d.sessionId)
    } matched no request of that session`;
  }
  return null;
}

/** Counts the guard's decisions (from `onDecision`: no telemetry needed) for a closing table. */
export class DecisionTally {
  readonly #counts = new Map<string, { decision: GuardDecision; count: number }>();

  /** Counts one decision. */
  record(decision: GuardDecision): void {
    const key = `${decision.outcome} ${decision.reason} ${decision.status}`;
    const counted = this.#counts.get(key);
    if (counted === undefined) this.#counts.set(key, { decision, count: 1 });
    else counted.count++;
  }

  /** The counts as table lines: allowed first, then refused, most frequent first. */
  table(): string[] {
    const rows = [...this.#counts.values()].sort((a, b) =>
      a.decision.outcome === b.decision.outcome
        ? b.count - a.count || a.decision.reason.localeCompare(b.decision.reason)
        : a.decision.outcome === "allow"
        ? -1
        : 1
    );
    const line = (outcome: string, reason: string, status: string, count: string) =>
      `${outcome.padEnd(8)} ${reason.padEnd(17)} ${status.padStart(6)} ${count.padStart(6)}`;
    return [
      line("outcome", "reason", "status", "count"),
      ...rows.map(({ decision, count }) =>
        line(decision.outcome, decision.reason, String(decision.status ?? "-"), String(count))
      ),
    ];
  }
}

function describeTool(e: ToolEvent): string {
  const where = `session ${short(e.sessionId)} request ${JSON.stringify(e.requestId)}`;
  switch (e.kind) {
    case "started":
      return `[tool] ${e.tool} started (${where})`;
    case "step":
      return `[tool] ${e.tool} step ${e.step} (${where})`;
    case "completed":
      return `[tool] ${e.tool} COMPLETED after ${e.step} steps (${where})`;
    case "stopped":
      return `[tool] ${e.tool} STOPPED after ${e.step} steps: ${e.reason} (${where})`;
  }
}

/** Starts the guarded demo server. */
export function startDemoServer(options: DemoServerOptions = {}): Promise<DemoServer> {
  const log = options.log ?? ((line: string) => console.log(line));
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const tally = new DecisionTally();
  const app = createMcpApp({
    countSteps: options.countSteps,
    countStepMs: options.countStepMs,
    // No signalFor needed: the guard forwards its own cancellations (an operator's, a closed
    // session's) to the SDK, so tools stop on their `extra.signal`.
    onToolEvent: (event) => {
      if (event.kind !== "step") log(describeTool(event));
    },
  });
  const guarded = guardSessions(app.handler, {
    owners,
    cancellations,
    principal: bearerPrincipal(),
    mode: options.mode,
    forwardBody: "parsed", // the app hands the parsed body to the SDK: the body is read once
    onDecision: (decision) => {
      tally.record(decision);
      const line = describeDecision(decision);
      if (line !== null) log(line);
    },
    onError: (error, context) => log(`[guard] ${context} failed: ${error}`),
  });
  return new Promise((resolve) => {
    const server = Deno.serve({
      port: options.port ?? 8787,
      hostname: options.hostname ?? "127.0.0.1",
      onListen: ({ hostname, port }) => {
        const url = new URL(`http://${hostname}:${port}/mcp`);
        resolve({
          url,
          decisionTable: () => tally.table(),
          async close() {
            const stopped = server.shutdown();
            await app.close();
            await stopped;
            await Promise.all([owners.close(), cancellations.close()]);
          },
        });
      },
    }, (request) => {
      if (new URL(request.url).pathname !== "/mcp") {
        return new Response("not found: the MCP endpoint is /mcp\n", { status: 404 });
      }
      return guarded(request);
    });
  });
}

/** `PORT` from the environment, read only when the process may (`--allow-env`): not needed. */
function envPort(): string | undefined {
  const env = Deno.permissions.querySync({ name: "env", variable: "PORT" });
  return env.state === "granted" ? Deno.env.get("PORT") : undefined;
}

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

if (import.meta.main) {
  const server = await startDemoServer({
    port: Number(flag("port") ?? envPort() ?? 8787),
    countSteps: flag("steps") === undefined ? undefined : Number(flag("steps")),
    countStepMs: flag("step-ms") === undefined ? undefined : Number(flag("step-ms")),
    mode: flag("mode") as GuardMode | undefined,
  });
  console.log(`listening on ${server.url}`);
  console.log(`tokens: ${Object.keys(DEMO_TOKENS).join(", ")} (Authorization: Bearer <token>)`);
  // Ctrl-C or SIGTERM: the server stops, then the registries; nothing is left to keep the
  // process alive, so it exits (0) on its own.
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await server.close();
    console.log("decisions by reason (counted with onDecision):");
    for (const line of server.decisionTable()) console.log(`  ${line}`);
    console.log("stopped");
  };
  Deno.addSignalListener("SIGINT", stop);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", stop);
}
