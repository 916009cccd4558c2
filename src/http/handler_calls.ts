/**
 * Requests the guard itself sends to the handler: a `notifications/cancelled`
 * for a request it had to stop, and a DELETE for a session it must close
 * (one it could not bind, or whose binding was evicted or expired). Both are
 * best effort: a failure is reported, never thrown.
 *
 * @module
 */

import type { GuardContext, RequestHandler } from "./types.ts";

/** Tells the handler that a request it started is cancelled (the SDK then stops it). */
export async function notifyCancelled(
  handler: RequestHandler,
  request: Request,
  sid: string,
  ctx: GuardContext,
  requestId: string | number,
  reason: string,
): Promise<void> {
  const headers = new Headers(request.headers);
  headers.delete("content-length");
  headers.set("mcp-session-id", sid);
  const notification = {
    jsonrpc: "2.0",
    method: "notifications/cancelled",
    params: { requestId, reason },
  };
  const response = await handler(
    new Request(request.url, { method: "POST", headers, body: JSON.stringify(notification) }),
    { ...ctx, parsedBody: notification },
  );
  await response.body?.cancel().catch(() => {});
}

/**
 * Asks the handler to terminate session `sid` with a DELETE to `url`,
 * carrying `headers` (the original request's, when there is one: a handler
 * may route or authenticate on them) and discards its answer.
 */
export async function closeSession(
  handler: RequestHandler,
  url: string,
  sid: string,
  ctx: GuardContext,
  headers: Headers = new Headers(),
): Promise<void> {
  const sent = new Headers(headers);
  sent.delete("content-type");
  sent.delete("content-length");
  sent.set("mcp-session-id", sid);
  const closed = await handler(
    new Request(url, { method: "DELETE", headers: sent }),
    { ...ctx, parsedBody: undefined, era: "legacy" },
  );
  await closed.body?.cancel().catch(() => {});
}
