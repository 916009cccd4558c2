/**
 * Real third-party MCP clients, as a new user would run them, against the example SDK 1.32
 * server (`tests/support/mcp_server.ts`) unguarded and guarded: list tools, call one, cancel a
 * call (the tool sees its own signal abort), recover from an ended session (the client notices,
 * the application re-initializes and goes on), and a second principal in the first one's
 * session (the control shows the attack working unguarded; the guard refuses it).
 *
 * Clients, at pinned versions: the SDK 1.32 client and the SDK v2 client
 * (`@modelcontextprotocol/client`), `@ai-sdk/mcp` (all three from `deno.json`, versions read from
 * `deno.lock`), and the MCP Inspector CLI, installed from npm into `.conformance/inspector/` on
 * first use and run with node as a subprocess.
 *
 * A client that cannot do a step has that cell `n/a`, with the reason beside it in
 * {@linkcode CLIENTS}; where the reason is something the client does (or does not do) on the
 * wire, the cell checks it. The last test prints the table and, when every cell ran and
 * passed, requires `docs/clients.md` to show the same table.
 *
 * @module
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client as Client132 } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import {
  StreamableHTTPClientTransport as Transport132,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  Client as ClientV2,
  SdkHttpError,
  StreamableHTTPClientTransport as TransportV2,
} from "@modelcontextprotocol/client";
import { createMCPClient } from "@ai-sdk/mcp";
import {
  bearer,
  sessionHeaders,
  startServer,
  type TestServer,
  waitFor,
} from "./support/mcp_server.ts";
import { npmTool } from "./support/npm_tool.ts";

/** The MCP Inspector version the tests install and run. */
export const INSPECTOR_VERSION = "2.12.0";

type Mode = "unguarded" | "guarded";
const MODES: readonly Mode[] = ["unguarded", "guarded"];
type Step = "list" | "call" | "cancel" | "expiry" | "hijack";
const STEPS: readonly Step[] = ["list", "call", "cancel", "expiry", "hijack"];
const HEADINGS: Record<Step, string> = {
  list: "list tools",
  call: "call a tool",
  cancel: "cancel a call",
  expiry: "session ended: recover",
  hijack: "second principal",
};

/** One HTTP exchange a client made, as its `fetch` saw it. */
interface Exchange {
  method: string;
  sessionId: string | null;
  rpcMethod: string | null;
  status: number;
}

/** A connected client, as the steps use it. */
interface Conn {
  /** The session the server issued (the Inspector CLI: none kept, every run has its own). */
  sessionId: string | null;
  /** Every HTTP exchange of this connection. */
  wire: Exchange[];
  tools(): Promise<string[]>;
  /** Calls a tool; resolves with its text. */
  call(name: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<string>;
  /** Whether the client told the application its session is gone (`error`: the failed call's). */
  expired(error: unknown): boolean;
  close(): Promise<void>;
}

/** How a client connects: as `token`'s holder, in a new session or (`resume`) in an existing one. */
type Connect = (url: URL, token: string, resume?: string) => Promise<Conn>;

interface ClientUnderTest {
  name: string;
  version: () => Promise<string>;
  connect: Connect;
  /** Steps this client cannot take, and why: the cell reads `n/a`. */
  na: Partial<Record<Step, string>>;
  /** `n/a` steps that still run, to check the reason on the wire. */
  checked?: Step[];
}

/** A `fetch` that records what it sends and the status it gets. */
function spy(wire: Exchange[]): typeof fetch {
  return async (input, init) => {
    const request = new Request(input, init);
    let rpcMethod: string | null = null;
    if (typeof init?.body === "string") {
      try {
        rpcMethod = JSON.parse(init.body).method ?? null;
      } catch {
        // Not JSON: not ours to read.
      }
    }
    const response = await fetch(request);
    wire.push({
      method: request.method,
      sessionId: request.headers.get("mcp-session-id"),
      rpcMethod,
      status: response.status,
    });
    return response;
  };
}

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((c) => c.text ?? "").join("");
}

async function lockedVersion(specifier: string): Promise<string> {
  const lock = JSON.parse(await Deno.readTextFile(new URL("../deno.lock", import.meta.url)));
  const resolved: string | undefined = lock.specifiers[specifier];
  assert.ok(resolved !== undefined, `${specifier} is not in deno.lock`);
  return resolved.split("_")[0];
}

function importSpecifier(name: string): string {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  const mapped: string = config.imports[name];
  return mapped.replace(/^npm:\/?/, "npm:").replace(/\/$/, "");
}

// --- the clients ---------------------------------------------------------------------------

const sdk132: Connect = async (url, token, resume) => {
  const wire: Exchange[] = [];
  const transport = new Transport132(url, {
    sessionId: resume,
    requestInit: { headers: bearer(token) },
    fetch: spy(wire),
  });
  const client = new Client132({ name: "clients-test", version: "0" });
  client.onerror = () => {}; // a refused or ended listening stream: reported, not thrown
  await client.connect(transport);
  if (resume !== undefined) transport.setProtocolVersion("2025-11-25");
  return {
    sessionId: transport.sessionId ?? null,
    wire,
    tools: async () => (await client.listTools()).tools.map((t: { name: string }) => t.name),
    call: async (name, args, signal) =>
      textOf(await client.callTool({ name, arguments: args }, undefined, { signal })),
    // The transport throws the HTTP status; recovering is the application's part.
    expired: (error) => error instanceof StreamableHTTPError && error.code === 404,
    close: () => client.close(),
  };
};

const sdkV2: Connect = async (url, token, resume) => {
  const wire: Exchange[] = [];
  const transport = new TransportV2(url, {
    sessionId: resume,
    protocolVersion: resume === undefined ? undefined : "2025-11-25",
    requestInit: { headers: bearer(token) },
    fetch: spy(wire),
  });
  const client = new ClientV2({ name: "clients-test", version: "0" });
  client.onerror = () => {};
  await client.connect(transport);
  return {
    sessionId: transport.sessionId ?? null,
    wire,
    tools: async () => (await client.listTools()).tools.map((t) => t.name),
    call: async (name, args, signal) =>
      textOf(await client.callTool({ name, arguments: args }, { signal })),
    // Like SDK 1.32: an SdkHttpError with the HTTP status.
    expired: (error) => error instanceof SdkHttpError && error.status === 404,
    close: () => client.close(),
  };
};

const aiSdk: Connect = async (url, token, resume) => {
  const wire: Exchange[] = [];
  const expired: string[] = [];
  let sessionId = resume ?? null;
  const client = await createMCPClient({
    transport: {
      type: "http",
      url: url.href,
      headers: bearer(token),
      fetch: spy(wire),
      initialSessionId: resume,
      // A second principal's client must not end the session it borrowed when it closes.
      terminateSessionOnClose: resume === undefined,
      onSessionIdChange: (id) => {
        if (id !== undefined) sessionId = id;
      },
      // What the AI SDK documents for an ended session: it clears the id and says so here.
      onSessionExpired: (id) => expired.push(id),
    },
    // Joining an existing session: no initialize (what `initialSessionId` is for).
    initialInitializeResult: resume === undefined ? undefined : {
      protocolVersion: "2025-11-25",
      capabilities: { tools: {} },
      serverInfo: { name: "resumed", version: "0" },
    },
    onUncaughtError: () => {}, // its listening stream's refusals, reported, not thrown
  });
  return {
    get sessionId() {
      return sessionId;
    },
    wire,
    tools: async () => (await client.listTools()).tools.map((t) => t.name),
    call: async (name, args, signal) =>
      textOf(await client.callTool({ name, arguments: args, options: { signal } })),
    expired: () => sessionId !== null && expired.includes(sessionId),
    close: () => client.close(),
  };
};

let inspector: Promise<{ launcher: string; home: string }> | undefined;

/** The Inspector, installed on first use: its launcher's path, and a `HOME` for it. */
function inspectorCli(): Promise<{ launcher: string; home: string }> {
  inspector ??= (async () => {
    const tool = await npmTool("@modelcontextprotocol/inspector", INSPECTOR_VERSION, "inspector");
    const manifest = JSON.parse(await Deno.readTextFile(new URL("package.json", tool.dir)));
    const launcher = new URL(manifest.bin["mcp-inspector"], tool.dir);
    return { launcher: decodeURIComponent(launcher.pathname), home: tool.home };
  })();
  return inspector;
}

/** One Inspector CLI run (`--cli <url> --method ...`); resolves with its `result`. */
async function runInspector(url: URL, token: string, args: string[]): Promise<unknown> {
  const { launcher, home } = await inspectorCli();
  const { code, stdout, stderr } = await new Deno.Command("node", {
    args: [
      launcher,
      "--cli",
      url.href,
      "--header",
      `Authorization: Bearer ${token}`,
      "--format",
      "json",
      ...args,
    ],
    // It keeps a catalog and settings under $HOME: give it a home of its own.
    env: { HOME: home },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const out = new TextDecoder().decode(stdout);
  assert.equal(
    code,
    0,
    `inspector ${args.join(" ")}: exit ${code}\n${out}\n${new TextDecoder().decode(stderr)}`,
  );
  return JSON.parse(out).result;
}

const inspectorCliConnect: Connect = (url, token) =>
  Promise.resolve({
    sessionId: null,
    wire: [],
    tools: async () => {
      const result = await runInspector(url, token, ["--method", "tools/list"]);
      return (result as { tools: { name: string }[] }).tools.map((t) => t.name);
    },
    call: async (name, args) =>
      textOf(
        await runInspector(url, token, [
          "--method",
          "tools/call",
          "--tool-name",
          name,
          "--tool-args-json",
          JSON.stringify(args),
        ]),
      ),
    expired: () => false,
    close: () => Promise.resolve(),
  });

const CLIENTS: readonly ClientUnderTest[] = [
  {
    name: "SDK 1.32 client (`@modelcontextprotocol/sdk`)",
    version: () => lockedVersion(importSpecifier("@modelcontextprotocol/sdk/")),
    connect: sdk132,
    na: {},
  },
  {
    name: "SDK v2 client (`@modelcontextprotocol/client`)",
    version: () => lockedVersion(importSpecifier("@modelcontextprotocol/client")),
    connect: sdkV2,
    na: {},
  },
  {
    name: "AI SDK (`@ai-sdk/mcp`)",
    version: () => lockedVersion(importSpecifier("@ai-sdk/mcp")),
    connect: aiSdk,
    na: {
      // Aborting a call only aborts its HTTP request: the AI SDK sends no
      // `notifications/cancelled`, and a 2025-11-25 session server (SDK 1.32) does not take a
      // disconnect for a cancellation, so the tool runs to its end, guarded as unguarded
      // (checked: the call rejects at once, nothing is sent, the tool completes).
      cancel: "aborting a call sends no `notifications/cancelled`; the tool runs on",
    },
    checked: ["cancel"],
  },
  {
    name: "MCP Inspector CLI (`@modelcontextprotocol/inspector --cli`)",
    version: () => Promise.resolve(INSPECTOR_VERSION),
    connect: inspectorCliConnect,
    na: {
      // One method per run; no request timeout, and SIGINT/SIGTERM only end the process (the
      // tool runs on: a disconnect is not a cancellation).
      cancel: "one method per run; stopping the process does not cancel",
      // Every run initializes a session of its own and never names one again (an
      // `Mcp-Session-Id` given with `--header` is replaced by its own).
      expiry: "every run opens a session of its own; none outlives the run",
      hijack: "cannot join an existing session: every run initializes its own",
    },
  },
];

// --- the steps -----------------------------------------------------------------------------

const TOOLS = ["count", "echo", "recall", "remember"];

/** The tool events of kind `kind` in session `sessionId`. */
function events(server: TestServer, sessionId: string | null, kind: string) {
  return server.tools.filter((e) => e.sessionId === sessionId && e.kind === kind);
}

async function settle<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  try {
    return { value: await promise };
  } catch (error) {
    return { error };
  }
}

type StepRun = (c: ClientUnderTest, server: TestServer, mode: Mode) => Promise<string>;

const RUN: Record<Step, StepRun> = {
  async list(c, server) {
    const alice = await c.connect(server.url, "alice-token");
    try {
      const names = await alice.tools();
      for (const tool of TOOLS) assert.ok(names.includes(tool), `${tool} in ${names}`);
    } finally {
      await alice.close();
    }
    return "ok";
  },

  async call(c, server) {
    const alice = await c.connect(server.url, "alice-token");
    try {
      assert.equal(
        await alice.call("echo", { text: `hello from ${c.name}` }),
        `hello from ${c.name}`,
      );
    } finally {
      await alice.close();
    }
    return "ok";
  },

  async cancel(c, server) {
    const alice = await c.connect(server.url, "alice-token");
    try {
      const cancels = c.na.cancel === undefined;
      const controller = new AbortController();
      // Long enough to be cancelled; short enough to end soon when it is not (n/a).
      const args = cancels ? { steps: 100, stepMs: 20 } : { steps: 10, stepMs: 20 };
      const call = settle(alice.call("count", args, controller.signal));
      await waitFor(() => events(server, alice.sessionId, "started").length === 1, 5_000, "start");
      controller.abort();
      assert.ok("error" in await call, "an aborted call rejects");
      const sent = () => alice.wire.filter((x) => x.rpcMethod === "notifications/cancelled");
      if (!cancels) {
        await waitFor(
          () => events(server, alice.sessionId, "completed").length === 1,
          5_000,
          "the tool to run to its end",
        );
        assert.equal(sent().length, 0, "no notifications/cancelled");
        return "n/a";
      }
      // The tool itself sees its signal abort and stops.
      await waitFor(
        () => events(server, alice.sessionId, "stopped").length === 1,
        5_000,
        "the tool's signal to abort",
      );
      await waitFor(() => sent().length === 1, 5_000, "the notification's answer");
      assert.equal(sent()[0].status, 202);
      assert.equal(events(server, alice.sessionId, "completed").length, 0);
    } finally {
      await alice.close();
    }
    return "ok";
  },

  async expiry(c, server) {
    const first = await c.connect(server.url, "alice-token");
    const ended = first.sessionId!;
    assert.equal(await first.call("echo", { text: "before" }), "before");
    // The session ends elsewhere: its owner's DELETE (another tab, an operator's tool); the
    // guard forgets the binding, the server the session, as it would after an eviction.
    const deleted = await fetch(server.url, {
      method: "DELETE",
      headers: sessionHeaders(ended, "alice-token"),
    });
    await deleted.body?.cancel();
    assert.equal(deleted.status, 200);
    const failed = await settle(first.call("echo", { text: "after" }));
    assert.ok("error" in failed, "a call in the ended session fails");
    const last = first.wire.findLast((x) => x.rpcMethod === "tools/call")!;
    assert.equal(last.status, 404);
    assert.ok(first.expired(failed.error), `the client reports its session gone: ${failed.error}`);
    await first.close().catch(() => {});
    // The application's part: a new client, which initializes a new session.
    const second = await c.connect(server.url, "alice-token");
    try {
      assert.notEqual(second.sessionId, ended);
      assert.equal(await second.call("echo", { text: "again" }), "again");
    } finally {
      await second.close();
    }
    return "ok";
  },

  async hijack(c, server, mode) {
    const alice = await c.connect(server.url, "alice-token");
    try {
      const note = `alice's note for ${c.name}`;
      assert.equal(await alice.call("remember", { text: note }), "noted");
      const mallory = await c.connect(server.url, "mallory-token", alice.sessionId!);
      const recalled = await settle(mallory.call("recall", {}));
      await mallory.close();
      if (mode === "unguarded") {
        // The control: without the guard, the attack works.
        assert.ok("value" in recalled && recalled.value === note, "Mallory reads Alice's note");
        return "not refused";
      }
      assert.ok("error" in recalled, "Mallory's call is refused");
      const refused = mallory.wire.findLast((x) => x.rpcMethod === "tools/call")!;
      assert.equal(refused.status, 403);
      assert.equal(await alice.call("recall", {}), note, "Alice's session goes on");
      return "refused 403";
    } finally {
      await alice.close();
    }
  },
};

// --- the matrix ----------------------------------------------------------------------------

/** client name -> step -> mode -> what the cell shows. */
const results = new Map<string, Map<Step, Map<Mode, string>>>();

function record(client: string, step: Step, mode: Mode, cell: string): void {
  const steps = results.get(client) ?? new Map<Step, Map<Mode, string>>();
  results.set(client, steps);
  const modes = steps.get(step) ?? new Map<Mode, string>();
  steps.set(step, modes);
  modes.set(mode, cell);
}

for (const c of CLIENTS) {
  for (const mode of MODES) {
    Deno.test(`clients: ${c.name}, ${mode}`, async (t) => {
      await using server = await startServer({ guarded: mode === "guarded", countStepMs: 20 });
      for (const step of STEPS) {
        const reason = c.na[step];
        if (reason !== undefined && !c.checked?.includes(step)) {
          // Nothing this client can do here; the reason is in CLIENTS.
          record(c.name, step, mode, "n/a");
          continue;
        }
        record(c.name, step, mode, "FAILED");
        await t.step(step, async () => {
          record(c.name, step, mode, await RUN[step](c, server, mode));
        });
      }
    });
  }
}

/** The table: one row per client, one column per step, `unguarded / guarded` in each cell. */
async function table(): Promise<string> {
  const lines = [
    `| Client | ${STEPS.map((s) => HEADINGS[s]).join(" | ")} |`,
    `| --- | ${STEPS.map(() => "---").join(" | ")} |`,
  ];
  for (const c of CLIENTS) {
    const steps = results.get(c.name);
    const cells = STEPS.map((s) => MODES.map((m) => steps?.get(s)?.get(m) ?? "-").join(" / "));
    lines.push(`| ${c.name} ${await c.version()} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

Deno.test("clients: the table (unguarded / guarded), as docs/clients.md shows it", async () => {
  const shown = await table();
  console.log(`\n${shown}\n`);
  const complete = CLIENTS.every((c) =>
    STEPS.every((s) => MODES.every((m) => results.get(c.name)?.get(s)?.has(m)))
  );
  const failed = shown.includes("FAILED");
  if (!complete || failed) return; // a filtered run, or a failure already reported above
  const doc = await Deno.readTextFile(new URL("../docs/clients.md", import.meta.url));
  const start = doc.indexOf("<!-- clients-table -->");
  const end = doc.indexOf("<!-- /clients-table -->");
  assert.ok(start !== -1 && end > start, "docs/clients.md has the clients-table markers");
  const documented = doc.slice(start + "<!-- clients-table -->".length, end).trim();
  assert.equal(normalize(documented), normalize(shown), "docs/clients.md's table is the test's");
});

/** A markdown table without the padding `deno fmt` adds. */
function normalize(markdown: string): string {
  return markdown.split("\n").map((line) =>
    line.split("|").map((cell) => cell.trim().replace(/^-+$/, "---")).join("|")
  ).join("\n");
}
