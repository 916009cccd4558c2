/**
 * Core registry benchmarks: one awaited call, and pipelined throughput with
 * 1,000 concurrent callers (batched and unbatched), against in-thread
 * baselines, all in one run.
 *
 *   deno task bench bench/core_bench.ts
 *
 * Each "pipelined" iteration is 1,000 concurrent callers x 10 awaited
 * `authorizeAttach` calls = 10,000 operations, so ops/s = 10,000 / (time per
 * iteration).
 *
 * The registries' workers stay up until the bench process exits.
 */

import { OwnerTable } from "../src/core/owner_table.ts";
import { SessionOwnerRegistry } from "../mod.ts";

const CALLERS = 1_000;
const ROUNDS = 10;
const FP = "f".repeat(64);
const sessions = Array.from({ length: CALLERS }, (_, i) => `session-${i}-${crypto.randomUUID()}`);

const batched = new SessionOwnerRegistry({ maxEntries: 10_000 });
const unbatched = new SessionOwnerRegistry({ maxEntries: 10_000, batching: false });
for (const reg of [batched, unbatched]) {
  await Promise.all(sessions.map((s) => reg.bind(s, FP)));
}
const table = new OwnerTable({ maxEntries: 10_000 });
for (const s of sessions) table.bind(s, FP);
const map = new Map<string, string>(sessions.map((s) => [s, FP]));

// deno-lint-ignore require-await
async function mapAttach(sid: string, fp: string): Promise<boolean> {
  const owner = map.get(sid);
  if (owner === undefined) {
    map.set(sid, fp);
    return true;
  }
  if (owner !== fp) return false;
  map.delete(sid);
  map.set(sid, owner);
  return true;
}

// deno-lint-ignore require-await
async function tableAttach(sid: string, fp: string): Promise<boolean> {
  return table.authorizeAttach(sid, fp);
}

async function pipelined(attach: (sid: string, fp: string) => Promise<boolean>): Promise<void> {
  let ok = 0;
  await Promise.all(sessions.map(async (sid) => {
    for (let r = 0; r < ROUNDS; r++) if (await attach(sid, FP)) ok++;
  }));
  if (ok !== CALLERS * ROUNDS) throw new Error(`expected every attach to succeed, got ${ok}`);
}

Deno.bench({
  name: "single awaited authorizeAttach (worker)",
  group: "latency",
  baseline: true,
  async fn() {
    if (!(await batched.authorizeAttach(sessions[0], FP))) throw new Error("refused");
  },
});

// The platform's floor: a bare worker that echoes each message back, with no
// registry behind it. A registry call cannot be faster than this round trip.
const echo = new Worker(new URL("./echo_worker.ts", import.meta.url), { type: "module" });
let echoed: (() => void) | null = null;
echo.onmessage = () => echoed!();

Deno.bench({
  name: "bare worker postMessage round trip (floor)",
  group: "latency",
  async fn() {
    await new Promise<void>((resolve) => {
      echoed = resolve;
      echo.postMessage({ kind: "batch", id: 1, ops: [2], args: [sessions[0], FP, false] });
    });
  },
});

Deno.bench({
  name: "single awaited authorizeAttach (in-thread Map)",
  group: "latency",
  async fn() {
    if (!(await mapAttach(sessions[0], FP))) throw new Error("refused");
  },
});

Deno.bench({
  name: "pipelined 1,000 callers x 10 (in-thread Map)",
  group: "pipelined",
  baseline: true,
  fn: async () => await pipelined(mapAttach),
});

Deno.bench({
  name: "pipelined 1,000 callers x 10 (in-thread OwnerTable)",
  group: "pipelined",
  fn: async () => await pipelined(tableAttach),
});

Deno.bench({
  name: "pipelined 1,000 callers x 10 (worker, batched)",
  group: "pipelined",
  fn: async () => await pipelined((s, f) => batched.authorizeAttach(s, f)),
});

Deno.bench({
  name: "pipelined 1,000 callers x 10 (worker, unbatched)",
  group: "pipelined",
  fn: async () => await pipelined((s, f) => unbatched.authorizeAttach(s, f)),
});
