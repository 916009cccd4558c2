/**
 * The median of one awaited registry call, which `deno bench` does not print:
 * 20,000 awaited `authorizeAttach` calls, each followed by a bare worker
 * `postMessage` round trip (the platform's floor), interleaved so both see the
 * same machine.
 *
 * ```sh
 * deno run --allow-read bench/median_latency.ts
 * ```
 *
 * @module
 */

import { SessionOwnerRegistry } from "../mod.ts";

const SAMPLES = 20_000;
const FP = "f".repeat(64);

const registry = new SessionOwnerRegistry();
await registry.bind("session-1", FP);
const echo = new Worker(new URL("./echo_worker.ts", import.meta.url), { type: "module" });
let echoed: (() => void) | null = null;
echo.onmessage = () => echoed!();
const roundTrip = () =>
  new Promise<void>((resolve) => {
    echoed = resolve;
    echo.postMessage({ kind: "batch", id: 1, ops: [2], args: ["session-1", FP, false] });
  });

const call: number[] = [];
const floor: number[] = [];
for (let i = 0; i < SAMPLES / 4; i++) {
  await registry.authorizeAttach("session-1", FP);
  await roundTrip();
}
for (let i = 0; i < SAMPLES; i++) {
  let started = performance.now();
  if (!(await registry.authorizeAttach("session-1", FP))) throw new Error("refused");
  call.push(performance.now() - started);
  started = performance.now();
  await roundTrip();
  floor.push(performance.now() - started);
}
const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.floor(q * xs.length)] * 1000;
for (const [name, xs] of [["registry call", call], ["bare worker round trip", floor]] as const) {
  console.log(
    `${name.padEnd(24)} p50 ${quantile(xs, 0.5).toFixed(1)} µs  p90 ${
      quantile(xs, 0.9).toFixed(1)
    } µs  p99 ${quantile(xs, 0.99).toFixed(1)} µs`,
  );
}
console.log(`median ratio ${(quantile(call, 0.5) / quantile(floor, 0.5)).toFixed(2)}`);
echo.terminate();
await registry.close();
