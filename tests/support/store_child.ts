/**
 * A separate `deno run` process for the shared-store tests. It opens
 * registries on a Redis or Deno KV store and does one job, reporting JSON
 * lines on stdout:
 *
 * - `claim`: prints `{"ready":true}`, waits for a line `go <epoch ms>` on
 *   stdin and then for that instant (a start barrier shared by every
 *   process), claims `ids` for `fp` with {@linkcode claimInTurns}, prints
 *   `{"results":[...]}`.
 * - `bind`: binds `ids` to `fp`, prints `{"results":[...]}` and exits (the
 *   "process restart" tests read them back from another process).
 * - `owners`: prints `{"owners":[...]}` (`ownerOf` for each id).
 * - `register`: registers `(sid, rid)`, prints `{"ready":true}`, then waits
 *   (at most 10 s) for the request to be aborted by a cancel sent through
 *   another process and prints `{"aborted":true,"reason":"..."}`.
 *
 * - `serve`: the example MCP app behind `guardSessions`, with both registries
 *   on the store, on a free loopback port: prints `{"port":N}`, then one
 *   `{"tool":{...}}` line per tool event, until its stdin closes.
 *
 * Usage: `deno run -A --unstable-kv store_child.ts '<json job>'`.
 *
 * @module
 */

import { CancellationRegistry, kvStore, SessionOwnerRegistry } from "../../mod.ts";
import { redisStore } from "../../redis.ts";
import type { RegistryStore } from "../../mod.ts";

/** What a child is asked to do. */
export interface ChildJob {
  store:
    | { kind: "redis"; url: string; prefix: string }
    | { kind: "redis-cluster"; rootNodes: string[]; prefix: string }
    | { kind: "kv"; path: string; prefix: string };
  action: "claim" | "bind" | "owners" | "register" | "serve";
  ids?: string[];
  fp?: string;
  /** `claim` with `bind` instead of `authorizeAttach`. */
  useBind?: boolean;
  /** `claim`: seeds the claiming order. */
  seed?: number;
  sid?: string;
  rid?: string | number;
}

function out(value: unknown): void {
  console.log(JSON.stringify(value));
}

async function readLine(): Promise<string> {
  const reader = Deno.stdin.readable.getReader();
  try {
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += decoder.decode(value);
    }
    return text.slice(0, text.indexOf("\n"));
  } finally {
    reader.releaseLock();
  }
}

/** Sleeps until the wall-clock time `at` (ms since the epoch): a start barrier across processes. */
export async function waitUntil(at: number): Promise<void> {
  const ms = at - Date.now();
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
}

/**
 * Claims every id for `fp` in a shuffled order (seeded by `seed`), a few at a
 * time, each group awaited: claimants that start together interleave their
 * batches, so the race is real. Returns the results in `ids` order.
 */
export async function claimInTurns(
  owners: SessionOwnerRegistry,
  ids: string[],
  fp: string,
  useBind: boolean,
  seed: number,
): Promise<unknown[]> {
  const order = ids.map((_, i) => i);
  let x = seed * 2654435761 + 1;
  for (let i = order.length - 1; i > 0; i--) {
    x = (Math.imul(x ^ (x >>> 15), 2246822507) + 0x6d2b79f5) >>> 0;
    const j = x % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const out = new Array<unknown>(ids.length);
  for (let k = 0; k < order.length; k += 5) {
    await Promise.all(
      order.slice(k, k + 5).map(async (i) => {
        out[i] = useBind ? await owners.bind(ids[i], fp) : await owners.authorizeAttach(ids[i], fp);
      }),
    );
  }
  return out;
}

async function main(job: ChildJob): Promise<void> {
  const store: RegistryStore = job.store.kind === "redis"
    ? redisStore({ url: job.store.url, prefix: job.store.prefix })
    : job.store.kind === "redis-cluster"
    ? redisStore({ cluster: { rootNodes: job.store.rootNodes }, prefix: job.store.prefix })
    : kvStore({ path: job.store.path, prefix: job.store.prefix, pollIntervalMs: 20 });
  const ids = job.ids ?? [];
  switch (job.action) {
    case "claim": {
      await using owners = new SessionOwnerRegistry({
        store,
        maxEntries: 100_000,
        maxPerPrincipal: 10_000,
      });
      await owners.size(); // connected and warm before the barrier
      out({ ready: true });
      await waitUntil(Number((await readLine()).split(" ")[1]));
      out({
        results: await claimInTurns(owners, ids, job.fp!, job.useBind === true, job.seed ?? 0),
      });
      return;
    }
    case "bind": {
      await using owners = new SessionOwnerRegistry({
        store,
        maxEntries: 100_000,
        maxPerPrincipal: 10_000,
      });
      out({ results: await Promise.all(ids.map((id) => owners.bind(id, job.fp!))) });
      return;
    }
    case "owners": {
      await using owners = new SessionOwnerRegistry({
        store,
        maxEntries: 100_000,
        maxPerPrincipal: 10_000,
      });
      out({ owners: await Promise.all(ids.map((id) => owners.ownerOf(id))) });
      return;
    }
    case "serve": {
      const { startServer } = await import("./mcp_server.ts");
      await using owners = new SessionOwnerRegistry({ store });
      await using cancellations = new CancellationRegistry({ store });
      await using server = await startServer({
        guard: {
          owners,
          cancellations,
          // On stderr (inherited by the parent's test): why a request was answered 503.
          onError: (error, context) => console.error(`[serve child] ${context}:`, error),
        },
      });
      out({ port: Number(server.url.port) });
      let seen = 0;
      const pump = setInterval(() => {
        while (seen < server.tools.length) out({ tool: server.tools[seen++] });
      }, 5);
      try {
        await readLine(); // until the parent closes stdin
      } finally {
        clearInterval(pump);
      }
      return;
    }
    case "register": {
      await using cancels = new CancellationRegistry({ store });
      const reg = await cancels.register(job.sid!, job.rid!);
      if (reg === null) throw new Error("registration refused");
      out({ ready: true });
      const aborted = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 10_000);
        reg.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve(true);
        }, { once: true });
      });
      const reason = reg.signal.reason;
      out({
        aborted,
        reason: typeof reason === "string" ? reason : reason?.name ?? null,
      });
      await cancels.deregister(reg.entryId);
      return;
    }
  }
}

const CHILD_URL = new URL(import.meta.url);
const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

/** A running child process, driven from a test. */
export class Child {
  readonly #proc: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #buffer = "";

  private constructor(proc: Deno.ChildProcess) {
    this.#proc = proc;
    this.#lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#stdin = proc.stdin.getWriter();
  }

  /** Starts `deno run` on this file with `job`. */
  static spawn(job: ChildJob): Child {
    const proc = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--unstable-kv",
        "--quiet",
        "--config",
        CONFIG,
        CHILD_URL.href,
        JSON.stringify(job),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    return new Child(proc);
  }

  /** The next JSON line the child printed (throws if it exited first). */
  async next(): Promise<Record<string, unknown>> {
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#lines.read();
      if (done) throw new Error(`child exited before answering (${this.#buffer})`);
      this.#buffer += value;
    }
    const nl = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, nl);
    this.#buffer = this.#buffer.slice(nl + 1);
    return JSON.parse(line);
  }

  /** Writes one line to the child's stdin. */
  async send(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(line + "\n"));
  }

  /** Closes stdin, drains stdout and waits for the exit; returns the exit code. */
  async close(): Promise<number> {
    await this.#stdin.close().catch(() => {});
    while (!(await this.#lines.read()).done) { /* drain */ }
    return (await this.#proc.status).code;
  }
}

/** Spawns a child for `job`, returns its first line and waits for it to exit. */
export async function runChild(job: ChildJob): Promise<Record<string, unknown>> {
  const child = Child.spawn(job);
  let line: Record<string, unknown>;
  try {
    line = await child.next();
  } catch (err) {
    await child.close();
    throw err;
  }
  const code = await child.close();
  if (code !== 0) throw new Error(`child ${job.action} exited with ${code}`);
  return line;
}

if (import.meta.main) {
  await main(JSON.parse(Deno.args[0]) as ChildJob);
}
