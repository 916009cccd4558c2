/**
 * `deno task demo`: starts the guarded example server, then scripts two
 * clients on the official MCP SDK.
 *
 * Alice initializes a session and starts the long `count` tool. Mallory, with
 * her own token and Alice's session id, tries to attach a listener, post into
 * the session, cancel Alice's request by guessing its id, and delete the
 * session: every attempt is refused and Alice's tool completes. Then Alice
 * cancels her own request and the tool stops. It ends with the table of
 * what the guard decided, by reason, which the server counts with its
 * `onDecision` hook (no telemetry needed; `docs/observability.md` has the
 * OpenTelemetry side).
 *
 * Exits 0 when everything happened as described, 1 otherwise.
 *
 * @module
 */

// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const STEPS = 5;
const STEP_MS = 600;

const root = new URL("../", import.meta.url);
const failures: string[] = [];

function say(line = ""): void {
  console.log(line);
}

function check(ok: boolean, what: string): void {
  if (!ok) failures.push(what);
}

/** The guarded server as a child process; its log lines are shown indented. */
class ServerProcess {
  readonly lines: string[] = [];
  /** Lines are shown as they come until the server is asked to stop. */
  #echo = true;
  readonly #child: Deno.ChildProcess;
  readonly #waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  readonly #pump: Promise<void>;

  constructor() {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--config",
        new URL("deno.json", root).pathname,
        // The demo's own lock: only the packages the demo runs, not the tests' (see the README).
        `--lock=${new URL("examples/demo.lock", root).pathname}`,
        "--allow-net=127.0.0.1",
        "--allow-read",
        new URL("examples/server.ts", root).pathname,
        "--port=0",
        `--steps=${STEPS}`,
        `--step-ms=${STEP_MS}`,
      ],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    this.#pump = this.#read();
  }

  async #read(): Promise<void> {
    let rest = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      let newline: number;
      while ((newline = rest.indexOf("\n")) !== -1) {
        const line = rest.slice(0, newline);
        rest = rest.slice(newline + 1);
        this.lines.push(line);
        if (this.#echo) say(`      server | ${line}`);
        for (const waiter of [...this.#waiters]) {
          if (waiter.pattern.test(line)) {
            this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
            waiter.resolve(line);
          }
        }
      }
    }
  }

  /** Resolves with the first server line (already seen or upcoming) matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const seen = this.lines.find((line) => pattern.test(line));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.findIndex((w) => w.pattern === pattern), 1);
        reject(new Error(`the server never logged ${pattern}`));
      }, timeoutMs);
      this.#waiters.push({
        pattern,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      });
    });
  }

  /** The table of decisions the server prints as it stops (see `examples/server.ts`). */
  decisionTable(): string[] {
    const start = this.lines.findIndex((line) => line.startsWith("decisions by reason"));
    if (start === -1) return [];
    const end = this.lines.indexOf("stopped", start);
    return this.lines.slice(start + 1, end === -1 ? undefined : end).map((line) => line.trim());
  }

  async stop(): Promise<void> {
    this.#echo = false;
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#child.status;
    await this.#pump;
  }
}

function transportFor(url: URL, token: string, sessionId?: string): StreamableHTTPClientTransport {
  return new StreamableHTTPClientTransport(url, {
    sessionId,
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
}

/** Runs one of Mallory's attempts and prints how it went. */
async function attempt(what: string, action: () => Promise<unknown>): Promise<boolean> {
  const label = `${what} `.padEnd(58, ".");
  try {
    await action();
    say(`    !! ${label} ALLOWED`);
    return false;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const status = (err as { code?: number }).code;
    const detail = message.match(/"message":"([^"]+)"/)?.[1] ??
      message.replace(/^Streamable HTTP error: /, "");
    say(`    OK ${label} REFUSED (HTTP ${status}: ${detail})`);
    return status === 403;
  }
}

async function main(): Promise<void> {
  say("mcp-session-guard demo: session hijacking and cross-session cancellation, refused");
  say("==================================================================================");
  say();
  say("[1] Starting the guarded MCP server (examples/server.ts, official SDK, bearer tokens)");
  const server = new ServerProcess();
  const clients: Client[] = [];
  const extras: StreamableHTTPClientTransport[] = [];
  try {
    const listening = await server.waitFor(/^listening on /, 30_000);
    const url = new URL(listening.replace(/^listening on /, "").trim());

    say();
    say("[2] Alice initializes a session with her token");
    const alice = new Client({ name: "alice", version: "1.0.0" });
    clients.push(alice);
    const aliceTransport = transportFor(url, "alice-token");
    await alice.connect(aliceTransport);
    const sessionId = aliceTransport.sessionId!;
    say(`    Alice's session id: ${sessionId}`);

    say();
    say(`[3] Alice starts the long tool \`count\` (${STEPS} steps, ${STEP_MS} ms each)`);
    const firstCall = alice.callTool(
      { name: "count", arguments: {} },
      undefined,
      {
        onprogress: (p: { progress: number; total?: number }) =>
          say(`      alice  | progress ${p.progress}/${p.total}`),
      },
    );
    await server.waitFor(/\[tool\] count started/);

    say();
    say("[4] Mallory has her own token and has learned Alice's session id. She tries to:");
    const intruder = transportFor(url, "mallory-token", sessionId);
    intruder.onerror = () => {};
    extras.push(intruder);
    await intruder.start();
    intruder.setProtocolVersion("2025-11-25");

    check(
      await attempt("attach a listener to Alice's session", () => intruder.resumeStream("0")),
      "listener attach was not refused with 403",
    );
    check(
      await attempt("call a tool in Alice's session (recall)", () =>
        intruder.send({
          jsonrpc: "2.0",
          id: "mallory-1",
          method: "tools/call",
          params: { name: "recall", arguments: {} },
        })),
      "post into Alice's session was not refused with 403",
    );
    for (const guess of [0, 1, 2, 3]) {
      check(
        await attempt(`cancel Alice's request, guessing id ${guess}`, () =>
          intruder.send({
            jsonrpc: "2.0",
            method: "notifications/cancelled",
            params: { requestId: guess, reason: "mallory" },
          })),
        `cancel guess ${guess} was not refused with 403`,
      );
    }
    check(
      await attempt("delete Alice's session", () => intruder.terminateSession()),
      "delete was not refused with 403",
    );

    say();
    say("    From her OWN session she sends the same guesses (a notification is always 202):");
    const mallory = new Client({ name: "mallory", version: "6.6.6" });
    clients.push(mallory);
    await mallory.connect(transportFor(url, "mallory-token"));
    for (const guess of [0, 1, 2, 3]) {
      await mallory.notification({
        method: "notifications/cancelled",
        params: { requestId: guess, reason: "mallory" },
      });
    }
    await server.waitFor(/matched no request of that session/);
    say("    ...accepted, and matched nothing: a request id only counts inside its session.");

    say();
    say("[5] Meanwhile, Alice's tool keeps running");
    const first = await firstCall as { content: { text: string }[] };
    const completed = first.content[0].text === `counted to ${STEPS}`;
    check(completed, "Alice's first call did not complete");
    say(`    Alice's count COMPLETED: "${first.content[0].text}"`);

    say();
    say("[6] Alice starts `count` again and cancels it herself after two steps");
    const stop = new AbortController();
    let steps = 0;
    const secondCall = alice.callTool(
      { name: "count", arguments: {} },
      undefined,
      {
        signal: stop.signal,
        onprogress: (p: { progress: number; total?: number }) => {
          steps = p.progress;
          say(`      alice  | progress ${p.progress}/${p.total}`);
          if (p.progress === 2) stop.abort("Alice changed her mind");
        },
      },
    );
    const cancelled = await secondCall.then(() => false, () => true);
    check(cancelled, "Alice's cancel did not reject her call");
    say(`    Alice cancelled her request after ${steps} steps`);
    const stoppedLine = await server.waitFor(/count STOPPED/);
    const stoppedAt = Number(stoppedLine.match(/after (\d+) steps/)?.[1]);
    check(stoppedAt < STEPS, "the tool did not stop early");
    say(`    The server-side tool STOPPED after ${stoppedAt} of ${STEPS} steps.`);

    say();
    say("[7] Alice closes her session (she owns it, so DELETE is allowed)");
    await aliceTransport.terminateSession();
    say("    session terminated");
  } finally {
    for (const client of clients) await client.close().catch(() => {});
    for (const transport of extras) await transport.close().catch(() => {});
    await server.stop();
  }

  const table = server.decisionTable();
  check(table.length > 1, "the server printed no decision table");
  check(
    table.some((row) => /^refuse\s+not-owner\s+403\s+\d+$/.test(row)),
    "the table has no refused not-owner row",
  );
  say();
  if (failures.length === 0) {
    say("Result: every one of Mallory's attempts was refused; Alice's tool completed, and");
    say("stopped when she cancelled it. Without the guard each attempt would have worked");
    say("(see tests/guard_control_test.ts).");
  } else {
    say(`Result: ${failures.length} expectation(s) failed:`);
    for (const failure of failures) say(`  - ${failure}`);
    Deno.exitCode = 1;
  }
  say();
  say("[8] What the guard decided, by reason (its onDecision hook, counted by the server):");
  for (const row of table) say(`    ${row}`);
}

await main();
