/**
 * The headers an SDK client sends with each POST, for the HTTP benchmarks.
 *
 * @module
 */

/** JSON-RPC over streamable HTTP with a bearer token, and its session once it has one. */
export function headers(token: string, sessionId?: string): Record<string, string> {
  return {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    authorization: `Bearer ${token}`,
    "mcp-protocol-version": "2025-06-18",
    ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
  };
}
