/**
 * The package as a remote dependency, the way a container image builds it:
 * this repo is served over HTTP (a real `Deno.serve` static file server),
 * `deno cache mod.ts redis.ts` runs in a fresh `DENO_DIR`, the file server
 * stops, and the quick starts run with `--cached-only`. Whatever a registry's
 * worker loads (the worker module, the Redis and KV backends, `npm:redis`) must
 * come from that cache, though the worker starts from `new Worker(new URL(...))`
 * and loads backends with `import(url)`: neither is an edge `deno cache`
 * follows on its own (see `src/actor/worker_graph.ts`, `src/store/redis/redis_graph.ts`).
 */

import assert from "node:assert/strict";
import { startRedis } from "./support/redis_server.ts";

const ROOT = new URL("../", import.meta.url);

const CONTENT_TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
};

/** Serves the repo's files on a free loopback port; records every path asked for. */
function serveRepo(): {
  server: Deno.HttpServer<Deno.NetAddr>;
  origin: string;
  asked: Set<string>;
} {
  const asked = new Set<string>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const path = new URL(request.url).pathname; // already normalized: no ".." left
      asked.add(path);
      const type = CONTENT_TYPES[path.slice(path.lastIndexOf("."))];
      if (type === undefined) return new Response("not found", { status: 404 });
      try {
        const body = await Deno.readFile(new URL(`.${path}`, ROOT));
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  return { server, origin: `http://127.0.0.1:${server.addr.port}`, asked };
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno <args>` in `cwd` with its own `DENO_DIR`, no config file, no colours. */
async function deno(args: string[], cwd: string, denoDir: string): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { DENO_DIR: denoDir, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    signal: AbortSignal.timeout(40_000),
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

function expectOk(run: Run, what: string): string[] {
  assert.equal(run.code, 0, `${what} exited ${run.code}:\n${run.stdout}\n${run.stderr}`);
  return run.stdout.trim().split("\n");
}

/** Quick start on the in-memory store: two registries, the guard, real requests. */
const MEMORY_QUICK_START = (pkg: string) => `
import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "${pkg}/mod.ts";

await using owners = new SessionOwnerRegistry();
await using cancellations = new CancellationRegistry();
const guarded = guardSessions(
  () => Response.json({ jsonrpc: "2.0", id: 1, result: {} }, { headers: { "mcp-session-id": "session-1" } }),
  { owners, cancellations, principal: (request) => request.headers.get("x-user") },
);
async function post(user: string, body: unknown, sessionId?: string): Promise<Response> {
  const response = await guarded(new Request("http://localhost/mcp", {
    method: "POST",
    headers: {
      "x-user": user,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
    },
    body: JSON.stringify(body),
  }));
  await response.text();
  return response;
}
const init = await post("alice", { jsonrpc: "2.0", id: 1, method: "initialize", params: {} });
console.log("initialize", init.status, init.headers.get("mcp-session-id"));
const mallory = await post("mallory", { jsonrpc: "2.0", id: 2, method: "tools/list" }, "session-1");
console.log("mallory", mallory.status);
console.log("owned", (await owners.ownerOf("session-1")) !== null);
console.log("main thread onmessage", typeof (globalThis as Record<string, unknown>).onmessage);
`;

/** Quick start on the shared stores: Redis (`redis.ts`) and Deno KV (a file). */
const STORES_QUICK_START = (pkg: string, redisUrl: string, kvPath: string) => `
import { kvStore, SessionOwnerRegistry } from "${pkg}/mod.ts";
import { redisStore } from "${pkg}/redis.ts";

const stores = {
  redis: redisStore({ url: ${JSON.stringify(redisUrl)}, prefix: "deploy-test:" }),
  kv: kvStore({ path: ${JSON.stringify(kvPath)} }),
};
for (const [name, store] of Object.entries(stores)) {
  await using owners = new SessionOwnerRegistry({ store });
  const first = await owners.bind("s1", "fp-alice");
  const second = await owners.bind("s1", "fp-mallory");
  console.log(name, first, second, await owners.ownerOf("s1"));
}
`;

Deno.test({
  name: "deno cache mod.ts redis.ts caches what the workers load: quick starts run --cached-only",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mcp-guard-deploy-" });
    const denoDir = `${dir}/deno_dir`;
    const { server, origin, asked } = serveRepo();
    let serving = true;
    try {
      const allowImport = `--allow-import=${new URL(origin).host}`;
      // mod.ts alone: the worker and the KV backend, not the Redis backend (nor npm:redis).
      expectOk(
        await deno(
          ["cache", "--no-config", allowImport, `${origin}/mod.ts`],
          dir,
          `${dir}/mod_only`,
        ),
        "deno cache mod.ts",
      );
      assert.ok(
        asked.has("/src/actor/worker.ts") && asked.has("/src/store/kv/kv_backend.ts"),
        "worker and KV",
      );
      assert.ok(
        !asked.has("/src/store/redis/redis_backend.ts"),
        "mod.ts alone does not reach npm:redis",
      );

      asked.clear();
      const cached = await deno(
        ["cache", "--no-config", allowImport, `${origin}/mod.ts`, `${origin}/redis.ts`],
        dir,
        denoDir,
      );
      expectOk(cached, "deno cache");
      for (
        const path of [
          "/src/actor/worker.ts",
          "/src/store/kv/kv_backend.ts",
          "/src/store/redis/redis_backend.ts",
        ]
      ) {
        assert.ok(asked.has(path), `deno cache fetched ${path}`);
      }

      // Nothing can be fetched from here on: only the cache answers.
      await server.shutdown();
      serving = false;

      await Deno.writeTextFile(`${dir}/memory.ts`, MEMORY_QUICK_START(origin));
      const memory = expectOk(
        await deno(["run", "--no-config", "--cached-only", allowImport, "memory.ts"], dir, denoDir),
        "memory quick start",
      );
      assert.deepEqual(memory, [
        "initialize 200 session-1",
        "mallory 403",
        "owned true",
        "main thread onmessage undefined", // worker.ts was never run on the main thread
      ]);

      await using redis = await startRedis();
      const kvPath = `${dir}/sessions.kv`;
      await Deno.writeTextFile(`${dir}/stores.ts`, STORES_QUICK_START(origin, redis.url, kvPath));
      const stores = expectOk(
        await deno(
          [
            "run",
            "--no-config",
            "--cached-only",
            "--unstable-kv",
            allowImport,
            `--allow-net=127.0.0.1:${redis.port}`,
            `--allow-read=${dir}`,
            `--allow-write=${dir}`,
            "stores.ts",
          ],
          dir,
          denoDir,
        ),
        "Redis and KV quick start",
      );
      assert.deepEqual(stores, [
        "redis bound refused fp-alice",
        "kv bound refused fp-alice",
      ]);
    } finally {
      if (serving) await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
