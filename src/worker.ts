/**
 * Worker entry: hosts one registry's store and applies its batches one at a
 * time, in arrival order (the actor). See `actor/worker_main.ts`.
 *
 * @module
 */

import { startWorker } from "./actor/worker_main.ts";

startWorker();
