/**
 * A registry worker started bare, for tests that speak its message protocol
 * directly: `next()` waits for the worker's next message.
 *
 * @module
 */

import type { FromWorker } from "../../src/actor/protocol.ts";

/** A bare registry worker and its inbox. */
export interface RawWorker {
  worker: Worker;
  /** The worker's next message (waits for one). */
  next(): Promise<FromWorker>;
}

/** Starts `src/actor/worker.ts` with nobody but the test talking to it. */
export function rawWorker(): RawWorker {
  const worker = new Worker(new URL("../../src/actor/worker.ts", import.meta.url), {
    type: "module",
  });
  const inbox: FromWorker[] = [];
  let wake: () => void = () => {};
  worker.onmessage = (e: MessageEvent<FromWorker>) => {
    inbox.push(e.data);
    wake();
  };
  const next = async (): Promise<FromWorker> => {
    while (inbox.length === 0) await new Promise<void>((r) => wake = r);
    return inbox.shift()!;
  };
  return { worker, next };
}
