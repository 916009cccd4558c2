/**
 * The README quick start and `examples/server.ts` as a user runs them, in a
 * child `deno run`: after real use (an `initialize`, so the registries'
 * workers are running) they stop when asked and the process exits, within a
 * few seconds: nothing (a worker, a stream, a timer) keeps it alive. The
 * README's own checks (Alice's call, a mistyped token's 401 naming the
 * resource metadata, the metadata document) are read from its output.
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/client/index"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
// @ts-types="@modelcontextprotocol/sdk/client/streamableHttp"
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const ROOT = new URL("../", import.meta.url);
/** How long a stopped process may take to exit. */
const EXIT_WITHIN_MS = 5_000;

/** The first `ts` code block of the README. */
async function readmeQuickStart(): Promise<string> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const block = /```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(block !== null, "the README has a ts block");
  return block[1];
}

/** A child `deno` process whose stdout lines are collected as they come. */
class Child {
  readonly lines: string[] = [];
  readonly stderr: Promise<string>;
  readonly #process: Deno.ChildProcess;
  readonly #pump: Promise<void>;
  #exited: { code: number; at: number } | null = null;
  readonly status: Promise<{ code: number; at: number }>;

  constructor(args: string[]) {
    const process = new Deno.Command(Deno.execPath(), {
      args,
      cwd: ROOT.pathname,
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#process = process;
    this.stderr = new Response(process.stderr).text();
    this.#pump = (async () => {
      let rest = "";
      for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let newline: number;
        while ((newline = rest.indexOf("\n")) !== -1) {
          this.lines.push(rest.slice(0, newline));
          rest = rest.slice(newline + 1);
        }
      }
    })();
    this.status = this.#process.status.then((s) => {
      this.#exited = { code: s.code, at: performance.now() };
      return this.#exited;
    });
  }

  /** Waits for a stdout line matching `pattern`; returns it and when it was seen. */
  async line(pattern: RegExp, timeoutMs: number): Promise<{ line: string; at: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const line = this.lines.find((l) => pattern.test(l));
      if (line !== undefined) return { line, at: performance.now() };
      if (this.#exited !== null || performance.now() > deadline) {
        this.kill();
        await this.status;
        throw new Error(
          `no line ${pattern} (exit ${this.#exited?.code}); stdout:\n${this.lines.join("\n")}\n` +
            `stderr:\n${await this.stderr}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Waits for the exit, at most `timeoutMs`; kills the process when it overstays. */
  async exit(timeoutMs: number): Promise<{ code: number; at: number } | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const overstayed = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    });
    const exited = await Promise.race([this.status, overstayed]);
    clearTimeout(timer);
    if (exited === null) {
      this.kill();
      await this.status;
    }
    await this.#pump;
    await this.stderr;
    return exited;
  }

  signal(signal: Deno.Signal): void {
    this.#process.kill(signal);
  }

  kill(): void {
    try {
      this.#process.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

Deno.test("README quick start: after real requests it stops and the process exits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-readme-" });
  try {
    const code = (await readmeQuickStart()).replaceAll(
      '"@mcp-guard/session"',
      JSON.stringify(new URL("mod.ts", ROOT).href),
    );
    const file = `${dir}/quick_start.ts`;
    await Deno.writeTextFile(file, `${code}\nconsole.log("stopped");\n`);
    const child = new Child(["run", "--quiet", "--no-config", "--allow-net", "--allow-read", file]);
    const stopped = await child.line(/^stopped$/, 60_000);
    const exited = await child.exit(EXIT_WITHIN_MS);
    assert.ok(exited !== null, `still running ${EXIT_WITHIN_MS} ms after it stopped`);
    assert.equal(exited.code, 0, await child.stderr);
    assert.ok(exited.at - stopped.at < EXIT_WITHIN_MS);
    const out = child.lines.join("\n");
    assert.match(out, /text: "alice in session [0-9a-f-]{36}"/);
    // A mistyped token: a 401 that says so and names the RFC 9728 metadata, which is served
    // outside the guard.
    const metadata =
      /^401 Bearer error="invalid_token", resource_metadata="(http:\/\/localhost:\d+)\/\.well-known\/oauth-protected-resource\/mcp"$/m
        .exec(out);
    assert.ok(metadata !== null, out);
    assert.ok(out.includes(`resource: "${metadata[1]}/mcp"`), out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`examples/server.ts: after real use, ${signal} stops it and the process exits`, async () => {
    const child = new Child([
      "run",
      "--quiet",
      "--allow-net",
      "--allow-read", // no --allow-env: docs/deploy.md's permission table
      "examples/server.ts",
      "--port=0",
    ]);
    const listening = await child.line(/^listening on /, 60_000);
    const url = new URL(listening.line.slice("listening on ".length));
    // A real client: its session, a tool call, and its listening stream left open.
    const client = new Client({ name: "examples-test", version: "0.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(url, {
        requestInit: { headers: { authorization: "Bearer alice-token" } },
      }),
    );
    const reply = await client.callTool({ name: "echo", arguments: { text: "hi" } });
    assert.deepEqual(reply.content, [{ type: "text", text: "hi" }]);
    try {
      child.signal(signal);
      const stopped = await child.line(/^stopped$/, EXIT_WITHIN_MS);
      const exited = await child.exit(EXIT_WITHIN_MS);
      assert.ok(exited !== null, `still running ${EXIT_WITHIN_MS} ms after it stopped`);
      assert.equal(exited.code, 0, await child.stderr);
      assert.ok(exited.at - stopped.at < EXIT_WITHIN_MS);
    } finally {
      await client.close();
    }
  });
}

Deno.test("examples/demo.lock holds what the demo runs, and no test dependency", async () => {
  const lockPath = new URL("examples/demo.lock", ROOT);
  const packages = async (path: string | URL) =>
    Object.keys(JSON.parse(await Deno.readTextFile(path)).npm ?? {}).sort();
  const committed = await packages(lockPath);
  // The demo's graph, resolved against a copy of the lock: nothing may be missing from it.
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-demo-lock-" });
  try {
    const copy = `${dir}/demo.lock`;
    await Deno.copyFile(lockPath, copy);
    const cached = await new Deno.Command(Deno.execPath(), {
      args: ["cache", "--quiet", `--lock=${copy}`, "examples/demo.ts", "examples/server.ts"],
      cwd: ROOT.pathname,
      env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      stdin: "null",
    }).output();
    assert.equal(cached.code, 0, new TextDecoder().decode(cached.stderr));
    assert.deepEqual(await packages(copy), committed, "refresh it: see the README's demo");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const devOnly = [
    "fast-check@",
    "@sinonjs/",
    "autocannon@",
    "redis@",
    "@hono/mcp@",
    "@modelcontextprotocol/server@",
    "@modelcontextprotocol/client@",
    "@ai-sdk/",
  ];
  for (const dev of devOnly) {
    assert.ok(!committed.some((p) => p.startsWith(dev)), `${dev} is not the demo's`);
  }
});
