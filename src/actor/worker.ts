/**
 * Worker entry: hosts one registry's store and applies its batches one at a
 * time, in arrival order (the actor). See `actor/worker_main.ts`.
 *
 * @module
 */

import { startWorker } from "./worker_main.ts";

startWorker();
