/**
 * The Redis store backend's pub/sub side: every registry's worker listens on
 * a channel and reports what it hears to its facade.
 *
 * - The owner registry listens on the store's `<prefix>o:ev`, where the owner
 *   script publishes every binding it evicts or idle-expires, in any
 *   process (the session may live here): reported as `removed` events. This
 *   instance's own removals are skipped: the backend reports them from the
 *   script's answer.
 * - The cancellation registry listens on its own `<prefix>c:ch:<instance>`,
 *   for cancels sent through other processes: reported as `abort` events.
 *
 * `<prefix>` is the key prefix (`{prefix}` on a cluster, where these are
 * sharded channels in the keys' slot). Messages that are not ours (someone
 * published garbage on a channel) are ignored. node-redis restores the
 * subscription after every reconnect, before the connection counts as
 * ready.
 *
 * @module
 */

import type { BackendContext } from "../backend.ts";
import type { RemovalCause } from "../../core/operations.ts";
import { REMOVED_CHANNEL } from "./redis_scripts.ts";
import type { Connection } from "./redis_connection.ts";

/** A registry's subscription to its channel. */
export interface Subscription {
  /** Settles, never rejecting, once the server answered the first `SUBSCRIBE` (or it failed). */
  readonly settled: Promise<unknown>;
  /** True once the server confirmed the subscription. */
  readonly subscribed: boolean;
}

/** Reads a published removal event; `null` when the message is not one. */
function parseRemoved(
  message: string,
): { cause: RemovalCause; sessionIds: string[]; from: unknown } | null {
  try {
    const event = JSON.parse(message);
    const cause = event?.cause;
    if ((cause !== "evicted" && cause !== "expired") || !Array.isArray(event.sessionIds)) {
      return null;
    }
    // cjson encodes an empty array as {}: never published, but never trusted either.
    return { cause, sessionIds: event.sessionIds.map(String), from: event.from };
  } catch {
    return null; // not ours (someone published garbage on the channel)
  }
}

/**
 * Subscribes `sub` (a connection with an offline queue, connecting) to the
 * channel of `ctx.init`'s registry under the key prefix `prefix`, reporting
 * what it hears through `ctx.emit`.
 */
export function subscribeEvents(
  sub: Connection,
  prefix: string,
  ctx: BackendContext,
): Subscription {
  const { init } = ctx;
  let subscribing: Promise<unknown>;
  if (init.registry === "owner") {
    subscribing = sub.subscribe(`${prefix}${REMOVED_CHANNEL}`, (message: string) => {
      const event = parseRemoved(message);
      // This instance's own removals were emitted from the script's answer already.
      if (event === null || event.from === init.instanceId || event.sessionIds.length === 0) {
        return;
      }
      ctx.emit({ kind: "removed", cause: event.cause, sessionIds: event.sessionIds });
    });
  } else {
    subscribing = sub.subscribe(`${prefix}c:ch:${init.instanceId}`, (message: string) => {
      const nl = message.indexOf("\n");
      try {
        const [sessionId, requestId, reason] = JSON.parse(message.slice(0, nl));
        const ids = JSON.parse(message.slice(nl + 1));
        if (!Array.isArray(ids) || typeof sessionId !== "string") return;
        ctx.emit({
          kind: "abort",
          entryIds: ids.map(String),
          sessionId,
          requestId: typeof requestId === "string" || typeof requestId === "number"
            ? requestId
            : null,
          ...(typeof reason === "string" ? { reason } : {}),
        });
      } catch {
        // Not ours (someone published garbage on our channel): ignore.
      }
    });
  }
  let subscribed = false;
  const settled = subscribing.then(() => subscribed = true, () => {});
  return {
    settled,
    get subscribed() {
      return subscribed;
    },
  };
}
