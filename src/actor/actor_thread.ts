/**
 * One registry worker, as the facades' side sees it: a Web Worker that hosts
 * the stores of one or more registries (each a host, see `actor/protocol.ts`),
 * shared by their clients (`actor/actor_client.ts`).
 *
 * A client joins when it first needs the worker ({@linkcode ActorThread.join}):
 * the thread starts the worker if none is running, gives the client a host
 * number, and from then on hands it every message the worker sends for that
 * host. The worker's death (a crash, an unreadable message, or one client's
 * watchdog giving up on it) is every host's: each client hears it and rejects
 * what it has pending, and the next call of any of them starts a fresh worker
 * that each client joins again. A client that closes leaves; the last one to
 * leave stops the worker, and a client joining after that gets a fresh one.
 *
 * The members of one worker all send their batches the same way: through a
 * ring each (in-memory stores), or as messages (store modules, whose I/O
 * needs the worker's event loop, which a ring loop blocks between batches).
 * `ActorClient.share` only moves a client to a worker whose first client
 * keeps its state the same way; a registry's derived registries always do.
 *
 * @module
 */

import { missingPermission } from "../core/errors.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";
import { countPost, newBell, sharedMemoryAvailable, wakeBell } from "./shared_channel.ts";

/** What a client of a thread hears from it. */
export interface ThreadMember {
  /** A message the worker sent for this member's host. */
  message(message: FromWorker): void;
  /**
   * The worker is gone (`reason` says why): reject everything pending.
   * `permission`: the missing permission that kept it from starting, if
   * that was why (retrying cannot help).
   */
  lost(reason: string, permission: string | null): void;
  /** The worker was terminated from outside: what is in its rings will never be answered. */
  severed(): void;
}

/** A member's place in one running worker. */
export interface Seat {
  /** The host number of the member in this worker. */
  readonly host: number;
  /** The worker (for tests that simulate a crash). */
  readonly worker: Worker;
  /** The worker's bell (shared by every ring it serves), or `null` without shared memory. */
  readonly bell: SharedArrayBuffer | null;
  /** Posts a message to the worker, and wakes it (a ring loop may be blocked waiting). */
  post(message: ToWorker, transfer?: Transferable[]): void;
  /** Wakes the worker (a control message is coming, or was posted). */
  wake(): void;
  /** Stops the worker and tells every member (`reason`: why). */
  kill(reason: string): void;
  /**
   * Gives the seat up for good (the member closes). Returns `true` when it was
   * the last member: the worker may exit once this member's host closed, and
   * nobody joins it any more.
   */
  leave(): boolean;
  /** After {@linkcode leave}: stops the worker if this member was its last. */
  release(): void;
}

const DEFAULT_WORKER_URL = new URL("./worker.ts", import.meta.url);

/** One running worker and its members. */
class Live {
  readonly worker: Worker;
  readonly bell: SharedArrayBuffer | null;
  readonly bellView: Int32Array | null;
  /** Members by host number (a member that left stays until its host closed). */
  readonly members = new Map<number, ThreadMember>();
  /** Members that have not left. */
  joined = 0;
  dead = false;

  constructor(url: URL) {
    this.worker = new Worker(url, { type: "module" });
    this.bell = sharedMemoryAvailable() ? newBell() : null;
    this.bellView = this.bell === null ? null : new Int32Array(this.bell);
  }

  wake(): void {
    if (this.bellView !== null) wakeBell(this.bellView);
  }
}

/**
 * A registry worker shared by the clients that join it. See the module
 * documentation.
 */
export class ActorThread {
  readonly #url: URL;
  #live: Live | null = null;
  #nextHost = 0;

  /** `workerUrl`: the worker module (tests substitute a fixture); defaults to `./worker.ts`. */
  constructor(workerUrl: URL = DEFAULT_WORKER_URL) {
    this.#url = workerUrl;
  }

  /** The worker module this thread starts. */
  get url(): URL {
    return this.#url;
  }

  /** True while a worker runs that members may still join. */
  get running(): boolean {
    return this.#live !== null;
  }

  /** Joins `member` to the running worker, starting one if none runs. */
  join(member: ThreadMember): Seat {
    const live = this.#live ?? this.#start();
    const host = this.#nextHost++;
    live.members.set(host, member);
    live.joined++;
    let left = false;
    return {
      host,
      worker: live.worker,
      bell: live.bell,
      post: (message, transfer) => {
        if (live.dead) return;
        live.worker.postMessage(message, transfer ?? []);
        // Counted (once posted: a message that could not be cloned never arrives), so the
        // worker's ring loop does not block while it waits to be handled; then the wake-up.
        if (live.bellView !== null) countPost(live.bellView);
        live.wake();
      },
      wake: () => live.wake(),
      kill: (reason) => this.#kill(live, reason, null),
      leave: () => {
        if (left) return false;
        left = true;
        live.joined--;
        if (live.joined > 0) return false;
        // Nobody joins a worker that is about to exit.
        if (this.#live === live) this.#live = null;
        return true;
      },
      release: () => {
        live.members.delete(host);
        // The last member to be done stops it (the others may still wait for their `closed`).
        if (live.joined === 0 && live.members.size === 0 && !live.dead) {
          live.dead = true;
          live.worker.terminate();
        }
      },
    };
  }

  #start(): Live {
    const live = new Live(this.#url);
    const worker = live.worker;
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      if (live.dead) return; // a late message of a worker already replaced settles nothing
      const message = event.data;
      live.members.get(message?.host ?? 0)?.message(message);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      if (live.dead) return;
      const permission = missingPermission(event.message);
      this.#kill(
        live,
        permission === null ? `worker crashed: ${event.message}` : "missing permission",
        permission,
      );
    };
    worker.onmessageerror = () => {
      if (!live.dead) this.#kill(live, "worker sent an unreadable message", null);
    };
    // Terminated from outside (a test simulating a crash): like a dead thread, it answers
    // nothing more, so what is in flight times out (a shared slot could still be written
    // by a worker not yet stopped).
    const terminate = worker.terminate.bind(worker);
    worker.terminate = () => {
      if (!live.dead) { for (const member of live.members.values()) member.severed(); }
      terminate();
    };
    this.#live = live;
    return live;
  }

  /** The worker is gone: stop it, and tell every member. */
  #kill(live: Live, reason: string, permission: string | null): void {
    if (live.dead) return;
    live.dead = true;
    if (this.#live === live) this.#live = null;
    live.worker.terminate();
    const members = [...live.members.values()];
    live.members.clear();
    for (const member of members) member.lost(reason, permission);
  }
}
