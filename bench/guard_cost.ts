/**
 * What the HTTP guard costs the main thread per request, without the network
 * (whose noise on a shared VM hides a few µs): `guardSessions` around a
 * handler that answers at once, 32 requests in flight, main-thread CPU time
 * per request (Linux `/proc/thread-self/schedstat`, which Deno lets a
 * program read only with `--allow-all`), in interleaved rounds of one process.
 *
 * - Default: the guarded handler against the same handler unguarded (which
 *   then reads the body itself, as the SDK does when the guard does not hand
 *   it over).
 * - `--against=<path or URL of another checkout's mod.ts>`: this checkout's
 *   guard against that one's (an A/B run of two builds).
 *
 * ```sh
 * deno task bench:guard                                  # JSON answers
 * deno task bench:guard --sse                            # SSE answers
 * deno task bench:guard --sse --ids                      # ... with event ids, as with an event store
 * deno task bench:guard --sse --late=5                   # ... written 5 microtask turns after the handler answered
 * deno task bench:guard --content-length                 # requests declare their length
 * deno task bench:guard --against=/tmp/old/mod.ts --rounds=40
 * deno task bench:guard --against=/tmp/old/mod.ts --otel  # this side with guardTelemetry()
 * OTEL_DENO=true deno task bench:guard --against=/tmp/old/mod.ts --otel  # ... recording
 * ```
 *
 * Requests made in the process carry no `Content-Length`, so the guard reads
 * their body as a stream, within its limit; `--content-length` gives them
 * one, as `Deno.serve` does for a request that declared its length (an SDK
 * client's `fetch` of a string body does): the guard then reads it at once.
 *
 * `--otel` plugs `guardTelemetry()` (`otel.ts`) into this checkout's guard,
 * and runs every request of both sides in a span, as `Deno.serve` does when
 * OpenTelemetry is on (without a tracer provider, the span is a no-op): the
 * difference is what the guard's telemetry adds. Without `OTEL_DENO=true` (or
 * another registered provider) nothing is recorded, and `instrument` hands
 * the options back unchanged.
 *
 * Prints the median per-request CPU of both sides and the median of the
 * per-round differences with its quartiles.
 *
 * @module
 */

import { type Span, trace } from "@opentelemetry/api";
import * as current from "../mod.ts";
import { guardTelemetry } from "../otel.ts";
import { headers } from "./mcp_headers.ts";

type Mod = typeof current;

interface Settings {
  sse: boolean;
  /** SSE answers carry event ids: a priming event and the answer, as SDK 1.32 with an event store. */
  ids: boolean;
  /**
   * The SSE answer is written this many microtask turns after the handler answered (SDK 1.32
   * writes a quick tool's answer 5 turns after handing its response back); 0: before.
   */
  late: number;
  rounds: number;
  requests: number;
  against: string | null;
  otel: boolean;
  /** Requests carry a `Content-Length` header. */
  contentLength: boolean;
}

function parseArgs(args: string[]): Settings {
  const settings: Settings = {
    sse: false,
    ids: false,
    late: 0,
    rounds: 20,
    requests: 10_000,
    against: null,
    otel: false,
    contentLength: false,
  };
  for (const arg of args) {
    const count = /^--(rounds|requests|late)=(\d[\d_]*)$/.exec(arg);
    if (count !== null) {
      const value = Number(count[2].replaceAll("_", ""));
      if (!Number.isSafeInteger(value) || value < (count[1] === "late" ? 0 : 1)) {
        throw new Error(`bad value in ${arg}`);
      }
      settings[count[1] as "rounds" | "requests" | "late"] = value;
      if (count[1] === "late") settings.sse = true;
    } else if (arg === "--sse") settings.sse = true;
    else if (arg === "--ids") settings.sse = settings.ids = true;
    else if (arg === "--otel") settings.otel = true;
    else if (arg === "--content-length") settings.contentLength = true;
    else if (arg.startsWith("--against=") && arg.length > 10) settings.against = arg.slice(10);
    else {
      throw new Error(
        `unknown argument ${arg} (use --sse, --ids, --late=N, --otel, --content-length, --rounds=N, --requests=N, --against=<mod.ts>)`,
      );
    }
  }
  return settings;
}

const settings = parseArgs(Deno.args);
const IN_FLIGHT = 32;
const SESSIONS = 32;
const TOKENS: Record<string, string> = { "alice-token": "alice", "bob-token": "bob" };
const URL_ = "http://127.0.0.1/mcp";
const encoder = new TextEncoder();

let nextSession = 0;
let nextEvent = 0;
/** An event id as SDK 1.32's example store makes them: `<stream>_<ms>_<random>`. */
const eventId = () => `${crypto.randomUUID()}_${Date.now()}_${(nextEvent++).toString(36)}`;
/** Answers at once: initialize opens a session, a request gets a one-event SSE or a JSON answer. */
async function inner(request: Request, ctx?: { parsedBody?: unknown }): Promise<Response> {
  const body = (ctx?.parsedBody ?? await request.json()) as { id?: number; method: string };
  if (body.method === "initialize") {
    const sid = `00000000-0000-4000-8000-${String(nextSession++).padStart(12, "0")}`;
    return Response.json({ jsonrpc: "2.0", id: body.id, result: {} }, {
      headers: { "mcp-session-id": sid },
    });
  }
  if (body.id === undefined) return new Response(null, { status: 202 });
  const answer = {
    jsonrpc: "2.0",
    id: body.id,
    result: { content: [{ type: "text", text: "hi" }] },
  };
  if (!settings.sse) return Response.json(answer);
  const data = JSON.stringify(answer);
  const event = encoder.encode(
    settings.ids
      ? `id: ${eventId()}\ndata: \n\nevent: message\nid: ${eventId()}\ndata: ${data}\n\n`
      : `event: message\ndata: ${data}\n\n`,
  );
  const write = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    controller.enqueue(event);
    controller.close();
  };
  const stream = new ReadableStream({
    start(controller) {
      if (settings.late === 0) return write(controller);
      (async () => {
        for (let turn = 0; turn < settings.late; turn++) await null;
        write(controller);
      })();
    },
  });
  return new Response(stream, { headers: { "content-type": "text/event-stream" } });
}

const principal = (request: Request) =>
  TOKENS[request.headers.get("authorization")?.slice(7) ?? ""] ?? null;

interface Side {
  name: string;
  handler: (request: Request) => Promise<Response>;
  sessions: { token: string; sid: string }[];
  close(): Promise<void>;
}

/** `--otel`: this checkout's guard reports to OpenTelemetry (when a provider is registered). */
const telemetry = settings.otel ? guardTelemetry() : null;
/** `--otel`: each request runs in a span, as under `Deno.serve` with OpenTelemetry on. */
const tracer = settings.otel ? trace.getTracer("bench") : null;

async function guarded(name: string, mod: Mod, instrumented = false): Promise<Side> {
  const owners = new mod.SessionOwnerRegistry();
  const cancellations = new mod.CancellationRegistry();
  const options = { owners, cancellations, principal, forwardBody: "parsed" as const };
  const handler = mod.guardSessions(
    inner,
    instrumented && telemetry !== null ? telemetry.instrument(options) : options,
  );
  return {
    name,
    handler,
    sessions: await openSessions(handler),
    close: async () => {
      await owners.close();
      await cancellations.close();
    },
  };
}

async function openSessions(handler: Side["handler"]): Promise<Side["sessions"]> {
  const tokens = Object.keys(TOKENS);
  const sessions: Side["sessions"] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const token = tokens[i % tokens.length];
    const response = await handler(
      new Request(URL_, {
        method: "POST",
        headers: headers(token),
        body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: {} }),
      }),
    );
    await response.body?.cancel();
    const sid = response.headers.get("mcp-session-id");
    if (sid === null) throw new Error(`initialize answered HTTP ${response.status}`);
    sessions.push({ token, sid });
  }
  return sessions;
}

/** Calls the handler, in a request span with `--otel`. */
function serve(handler: Side["handler"], request: Request): Promise<Response> {
  if (tracer === null) return handler(request);
  return tracer.startActiveSpan("POST", async (span: Span) => {
    try {
      return await handler(request);
    } finally {
      span.end();
    }
  });
}

/** CPU time this thread has used (ns). */
const cpuNs = () => Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]);

let nextId = 1;
/** `count` requests, `IN_FLIGHT` at a time; returns main-thread CPU µs per request. */
async function run(side: Side, count: number): Promise<number> {
  let sent = 0;
  const client = async () => {
    while (sent < count) {
      const { token, sid } = side.sessions[sent++ % side.sessions.length];
      const body = JSON.stringify({
        jsonrpc: "2.0",
        id: nextId++,
        method: "tools/call",
        params: { name: "echo", arguments: { text: "hi" } },
      });
      const requestHeaders = headers(token, sid);
      // The body is ASCII: its length in UTF-16 code units is its length in bytes.
      if (settings.contentLength) requestHeaders["content-length"] = String(body.length);
      const response = await serve(
        side.handler,
        new Request(URL_, { method: "POST", headers: requestHeaders, body }),
      );
      const text = await response.text();
      if (response.status !== 200 || !text.includes('"hi"')) {
        throw new Error(`${side.name}: HTTP ${response.status}: ${text.slice(0, 200)}`);
      }
    }
  };
  const started = cpuNs();
  await Promise.all(Array.from({ length: IN_FLIGHT }, client));
  return (cpuNs() - started) / count / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.round(q * (xs.length - 1))];

const a: Side = settings.against === null
  ? {
    name: "unguarded",
    handler: (request) => inner(request),
    sessions: await openSessions((request) => inner(request)),
    close: () => Promise.resolve(),
  }
  : await guarded(
    `guarded (${settings.against})`,
    await import(new URL(settings.against, `file://${Deno.cwd()}/`).href) as Mod,
  );
const b = await guarded(
  settings.otel
    ? `guarded (this checkout, telemetry ${telemetry!.enabled ? "recording" : "off"})`
    : "guarded (this checkout)",
  current,
  true,
);
try {
  for (let i = 0; i < 3; i++) await Promise.all([run(a, 2_000), run(b, 2_000)]); // JIT warm-up
  const costA: number[] = [], costB: number[] = [], diff: number[] = [];
  for (let round = 0; round < settings.rounds; round++) {
    // Alternate which side goes first, so neither always follows the other.
    const [first, second] = round % 2 === 0 ? [a, b] : [b, a];
    const x = await run(first, settings.requests);
    const y = await run(second, settings.requests);
    const [ua, ub] = first === a ? [x, y] : [y, x];
    costA.push(ua);
    costB.push(ub);
    diff.push(ub - ua);
  }
  const f = (n: number) => n.toFixed(2);
  console.log(
    `${settings.sse ? "SSE" : "JSON"} answers${
      settings.contentLength ? " (requests with Content-Length)" : ""
    }, ${settings.rounds} rounds of ${settings.requests} ` +
      `requests, main-thread CPU per request (median):`,
  );
  console.log(`  ${a.name}: ${f(median(costA))} µs`);
  console.log(`  ${b.name}: ${f(median(costB))} µs`);
  console.log(
    `  difference, median of rounds: ${f(median(diff))} µs ` +
      `(quartiles ${f(quantile(diff, 0.25))} / ${f(quantile(diff, 0.75))}; ` +
      `min ${f(quantile(diff, 0))}, max ${f(quantile(diff, 1))})`,
  );
} finally {
  await a.close();
  await b.close();
}
