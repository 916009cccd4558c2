/**
 * Calls the guard makes to the handler: the request it let through, and the
 * requests it sends itself, a `notifications/cancelled` for a request it had
 * to stop and a DELETE for a session it must close (one it could not bind, or
 * whose binding was evicted or expired). Those two are best effort: a
 * failure is reported, never thrown.
 *
 * @module
 */

import type { ResponseWrap } from "./task_gate.ts";
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

/**
 * Calls the handler with a request the guard let through; `produced` sees its
 * answer at once (before any other task runs), then `wrap` (the task gate's)
 * gets it.
 */
export async function invokeHandler(
  handler: RequestHandler,
  inner: Request,
  ctx: GuardContext,
  wrap: ResponseWrap | null,
  produced?: (response: Response) => void,
): Promise<Response> {
  const answer = handler(inner, ctx);
  const response = answer instanceof Response ? answer : await answer;
  produced?.(response);
  return wrap === null ? response : wrap(response);
}
