/**
 * Idle CPU: what a `SessionOwnerRegistry` plus a `CancellationRegistry` cost
 * once the traffic stops. Each scenario puts both registries under ~2 s of
 * pipelined load (bind, attach, touch, register, cancel, deregister), stops,
 * and measures the whole process's CPU time (user + sys: the main thread and
 * every worker together) over 5 s of idle with the registries still open.
 * Scenarios: the default in-memory store, and `memoryStore({ idleTtlMs:
 * 60_000 })` (its sweep timer keeps running while idle).
 *
 * CPU time comes from `Deno.cpuUsage()` (getrusage: every thread of the
 * process), cross-checked against utime + stime in `/proc/self/stat` (10 ms
 * ticks; Deno lets a script read it only with `--allow-all`, otherwise the
 * cross-check is left out).
 *
 * Each scenario runs in a fresh process (so one scenario's garbage is not
 * collected in another's idle window), in `--rounds=N` (default 3) rounds of
 * rotating order; exits non-zero when a scenario's median idles above 1% of
 * one core.
 *
 * ```sh
 * deno task bench:idle        # deno run -A bench/idle_cpu.ts [--rounds=N]
 * ```
 *
 * @module
 */

import {
  CancellationRegistry,
  memoryStore,
  type RegistryStore,
  SessionOwnerRegistry,
} from "../mod.ts";

const LOAD_MS = 2_000;
const IDLE_MS = 5_000;
const CALLERS = 1_000;
const LIMIT_PERCENT = 1;

// ---------------------------------------------------------------- process CPU time

type CpuUsage = () => { user: number; system: number };
/** `Deno.cpuUsage()` (µs, whole process: getrusage), present at run time but not in every typing. */
const denoCpuUsage = (Deno as unknown as { cpuUsage?: CpuUsage }).cpuUsage;

/** utime + stime of the whole process (all threads) from /proc, in µs; null off Linux. */
function procCpuMicros(): number | null {
  try {
    // The command name (field 2) may contain spaces: count fields after its ")".
    const stat = Deno.readTextFileSync("/proc/self/stat");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After ")": state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1_000_000) / 100; // USER_HZ: /proc reports in 1/100 s on Linux
  } catch {
    return null;
  }
}

/** Process CPU time in µs, with the source it came from. */
function cpuMicros(): { deno: number | null; proc: number | null } {
  const usage = denoCpuUsage?.call(Deno);
  return {
    deno: usage === undefined ? null : usage.user + usage.system,
    proc: procCpuMicros(),
  };
}

if (denoCpuUsage === undefined && procCpuMicros() === null) {
  console.error("no way to read process CPU time here (no Deno.cpuUsage, no /proc/self/stat)");
  Deno.exit(2);
}

// ---------------------------------------------------------------- load

async function load(owners: SessionOwnerRegistry, cancels: CancellationRegistry): Promise<number> {
  const deadline = performance.now() + LOAD_MS;
  let ops = 0;
  const caller = async (c: number) => {
    const sid = `session-${c}`;
    const fp = `fp-${c}`;
    for (let n = 0; performance.now() < deadline; n++) {
      if ((await owners.bind(sid, fp)) !== "bound") throw new Error(`bind ${sid} refused`);
      if (!(await owners.authorizeAttach(sid, fp))) throw new Error(`attach ${sid} refused`);
      await owners.touch(sid, fp);
      const reg = await cancels.register(sid, n);
      if (reg === null) throw new Error(`register ${sid}/${n} refused`);
      if (n % 4 === 0 && !(await cancels.cancel(sid, n))) {
        throw new Error(`cancel ${sid}/${n} missed`);
      }
      await cancels.deregister(reg.entryId);
      ops += n % 4 === 0 ? 6 : 5;
    }
  };
  await Promise.all(Array.from({ length: CALLERS }, (_, c) => caller(c)));
  return ops;
}

interface Idle {
  label: string;
  ops: number;
  wallMs: number;
  percent: number;
  source: string;
  procPercent: number | null;
}

async function scenario(label: string, store?: RegistryStore): Promise<Idle> {
  const owners = new SessionOwnerRegistry(store === undefined ? {} : { store });
  const cancels = new CancellationRegistry(store === undefined ? {} : { store });
  try {
    const ops = await load(owners, cancels);
    const before = cpuMicros();
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const after = cpuMicros();
    const wallMs = performance.now() - started;
    // Still open and answering after the idle stretch.
    if ((await owners.size()) !== CALLERS) throw new Error(`${label}: bindings lost while idle`);
    await cancels.size();
    const pct = (a: number | null, b: number | null) =>
      a === null || b === null ? null : ((b - a) / (wallMs * 1000)) * 100;
    const denoPct = pct(before.deno, after.deno);
    const procPct = pct(before.proc, after.proc);
    return {
      label,
      ops,
      wallMs,
      percent: denoPct ?? procPct!,
      source: denoPct !== null ? "Deno.cpuUsage" : "/proc/self/stat",
      procPercent: procPct,
    };
  } finally {
    await owners.close();
    await cancels.close();
  }
}

const SCENARIOS: Record<string, () => RegistryStore | undefined> = {
  default: () => undefined,
  idleTtlMs: () => memoryStore({ idleTtlMs: 60_000 }),
};
let ROUNDS = 3;
let only: string | undefined; // set in the child processes
for (const arg of Deno.args) {
  const rounds = /^--rounds=([1-9]\d{0,3})$/.exec(arg);
  if (rounds !== null) ROUNDS = Number(rounds[1]);
  else if (arg.startsWith("--scenario=")) only = arg.slice("--scenario=".length);
  else throw new Error(`bad argument ${JSON.stringify(arg)} (use --rounds=N, 1 <= N <= 9999)`);
}

if (only !== undefined) {
  // A child: one scenario in a fresh process, so no other scenario's garbage lands in its window.
  const make = SCENARIOS[only];
  if (make === undefined) throw new Error(`unknown scenario ${JSON.stringify(only)}`);
  console.log(JSON.stringify(await scenario(only, make())));
  Deno.exit(0);
}

/** Runs one scenario in a child process (same flags as this one: `--allow-all`). */
async function child(label: string): Promise<Idle> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(import.meta.url).pathname, `--scenario=${label}`],
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`scenario ${label} failed: ${text}`);
  return JSON.parse(text.split("\n").at(-1)!) as Idle;
}

const results = new Map<string, Idle[]>(Object.keys(SCENARIOS).map((k) => [k, []]));
for (let round = 1; round <= ROUNDS; round++) {
  // Rotate the order so neither scenario always runs right after the other.
  const labels = Object.keys(SCENARIOS);
  if (round % 2 === 0) labels.reverse();
  for (const label of labels) {
    const r = await child(label);
    results.get(label)!.push(r);
    console.log(
      `round ${round}/${ROUNDS}: ${label.padEnd(10)} load ${(r.ops / 1000).toFixed(0)}k calls in ${
        (LOAD_MS / 1000).toFixed(1)
      } s, then idle ${(r.wallMs / 1000).toFixed(1)} s: ${
        r.percent.toFixed(3)
      }% of one core (${r.source}${
        r.procPercent === null || r.source !== "Deno.cpuUsage"
          ? ""
          : `; /proc/self/stat, 10 ms ticks: ${r.procPercent.toFixed(2)}%`
      })`,
    );
  }
}

const summary = [...results].map(([label, rs]) => {
  const sorted = rs.map((r) => r.percent).sort((a, b) => a - b);
  return {
    label,
    min: sorted[0],
    median: sorted[Math.floor(sorted.length / 2)],
    max: sorted.at(-1)!,
  };
});
console.log(
  `idle CPU over ${
    (IDLE_MS / 1000).toFixed(1)
  } s after load, min / median / max of ${ROUNDS} rounds, ` +
    `each in a fresh process: ${
      summary.map((s) =>
        `${s.min.toFixed(2)} / ${s.median.toFixed(2)} / ${s.max.toFixed(2)}% (${s.label})`
      ).join(", ")
    }`,
);
const over = summary.filter((s) => s.median > LIMIT_PERCENT);
if (over.length > 0) {
  console.error(
    `FAIL: median above ${LIMIT_PERCENT}% of one core while idle: ${
      over.map((s) => s.label).join(", ")
    }`,
  );
  Deno.exit(1);
}
