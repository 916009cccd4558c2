/**
 * Cold start: process start to the first answered `initialize`, and the
 * process's peak RSS then, for the benchmark server (`bench/http_server.ts`,
 * the example SDK app on `Deno.serve`) guarded and unguarded, in
 * interleaved rounds (a fresh process each).
 *
 * ```sh
 * deno task bench:cold                # 10 rounds
 * deno task bench:cold --rounds=20
 * deno task bench:cold --server-arg=--no-credentials   # passed on to the guarded server
 * deno task bench:cold --against=/tmp/old                # + another checkout's guarded server
 * ```
 *
 * Prints min / median / max of each side and of the per-round differences.
 * With `--against=<checkout>`, that checkout's `bench/http_server.ts`,
 * guarded, is a third side of every round (an A/B of two builds under the
 * same noise): its differences to the unguarded server are printed too.
 *
 * @module
 */

const SERVER = new URL("./http_server.ts", import.meta.url).pathname;

/** Arguments for the guarded server (`--server-arg=...`, repeatable). */
const serverArgs: string[] = [];
/** Another checkout's server (`--against=<checkout>`), or `null`. */
let against: string | null = null;

function parseRounds(): number {
  let rounds = 10;
  for (const arg of Deno.args) {
    if (arg.startsWith("--server-arg=")) {
      serverArgs.push(arg.slice("--server-arg=".length));
      continue;
    }
    if (arg.startsWith("--against=")) {
      against = `${arg.slice("--against=".length).replace(/\/$/, "")}/bench/http_server.ts`;
      continue;
    }
    const match = /^--rounds=(\d+)$/.exec(arg);
    if (match === null) throw new Error(`bench:cold: unknown argument ${JSON.stringify(arg)}`);
    rounds = Number(match[1]);
    if (rounds < 1) throw new Error(`bench:cold: --rounds must be at least 1, got ${match[1]}`);
  }
  return rounds;
}

interface Sample {
  ms: number;
  rssMiB: number;
}

/** Peak resident set of `pid` (VmHWM), MiB. */
async function peakRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
  return kb / 1024;
}

/** Starts the server, sends one `initialize` as soon as it listens, returns the times. */
async function once(guarded: boolean, server = SERVER): Promise<Sample> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      server,
      `--guard=${guarded ? "on" : "off"}`,
      ...(guarded ? serverArgs : []),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    let port: number | null = null;
    while (port === null) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server exited before it listened");
      text += value;
      const match = /listening (\d+)/.exec(text);
      if (match !== null) port = Number(match[1]);
    }
    reader.releaseLock();
    const response = await fetch(`http://127.0.0.1:${port}/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: "Bearer alice-token",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "cold", version: "0" },
        },
      }),
    });
    await response.text();
    if (response.status !== 200) throw new Error(`initialize answered ${response.status}`);
    const ms = performance.now() - started;
    return { ms, rssMiB: await peakRss(child.pid) };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
}

function summary(values: number[], digits = 1): string {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return `${sorted[0].toFixed(digits)} / ${median.toFixed(digits)} / ${
    sorted.at(-1)!.toFixed(digits)
  }`;
}

if (import.meta.main) {
  const rounds = parseRounds();
  await once(true); // fill the module cache
  if (against !== null) await once(true, against);
  const plain: Sample[] = [];
  const guarded: Sample[] = [];
  const other: Sample[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternate the order, so drift hits every side alike.
    const sides = [
      () => once(false).then((s) => plain.push(s)),
      () => once(true).then((s) => guarded.push(s)),
      ...(against === null ? [] : [() => once(true, against!).then((s) => other.push(s))]),
    ];
    if (round % 2 === 1) sides.reverse();
    for (const side of sides) await side();
  }
  const diff = (key: keyof Sample, of = guarded) => of.map((g, i) => g[key] - plain[i][key]);
  console.log(`cold start, ${rounds} interleaved rounds, min / median / max:`);
  console.log(
    `  unguarded: ${summary(plain.map((s) => s.ms))} ms, peak RSS ${
      summary(plain.map((s) => s.rssMiB))
    } MiB`,
  );
  console.log(
    `  guarded:   ${summary(guarded.map((s) => s.ms))} ms, peak RSS ${
      summary(guarded.map((s) => s.rssMiB))
    } MiB`,
  );
  console.log(`  difference per round: ${summary(diff("ms"))} ms, ${summary(diff("rssMiB"))} MiB`);
  if (against !== null) {
    console.log(
      `  ${against}, guarded: ${summary(other.map((s) => s.ms))} ms, peak RSS ${
        summary(other.map((s) => s.rssMiB))
      } MiB`,
    );
    console.log(
      `  its difference per round: ${summary(diff("ms", other))} ms, ${
        summary(diff("rssMiB", other))
      } MiB`,
    );
  }
}
