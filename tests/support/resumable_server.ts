/**
 * A resumable MCP server on the official SDK 1.32 (per-session
 * `McpServer` + `WebStandardStreamableHTTPServerTransport` with an
 * `eventStore`), on a real `Deno.serve({ port: 0 })`, guarded or not, and raw
 * SSE helpers for tests that need precise control of `Last-Event-ID`.
 *
 * Event stores:
 * - `"sdk-shared"`: ONE `InMemoryEventStore` (the SDK's example store) for
 *   every session, as in the SDK's `ssePollingExample`.
 * - `"shared"`: one store for every session that replays listening streams
 *   too (the SDK's example store cannot: it reads the stream id back from the
 *   event id up to the first `_`, and every listening stream is named
 *   `_GET_stream`). Every session's listening stream has the same id.
 * - `"per-session"`: the same store, one per session (sessions kept apart).
 *
 * Tools:
 * - `poll {text}`: a notification on the request's stream (`before:<text>`),
 *   then `closeSSEStream()` (SEP-1699 polling), then, while the client is
 *   away, `away:<text>` and the result `done:<text>`.
 * - `announce {text}`: a log message on the session's listening stream.
 *
 * @module
 */

import assert from "node:assert/strict";
// @ts-types="@modelcontextprotocol/sdk/server/mcp"
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import {
  type EventStore,
  WebStandardStreamableHTTPServerTransport,
} from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore"
import { InMemoryEventStore } from "@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod4";
import {
  CancellationRegistry,
  type GuardDecision,
  type GuardOptions,
  guardSessions,
  SessionOwnerRegistry,
} from "../../mod.ts";
import { bearerPrincipal } from "../../examples/server.ts";
import { bearer, initializeRequest, postRpc } from "./mcp_server.ts";
import type { ClientEvent } from "./sse_client.ts";

export { type ClientEvent, ClientParser, readEvents } from "./sse_client.ts";

/** Which event store the server uses; see the module doc. */
export type StoreKind = "sdk-shared" | "shared" | "per-session";

/**
 * An event store that keeps events in order and looks the stream of an event
 * up (instead of parsing it out of the id), so listening streams replay too.
 * `placesIds: true` adds `getStreamIdForEventId` (the SDK then answers an
 * unknown id 400 "Invalid event ID format").
 */
export class ListEventStore implements EventStore {
  readonly #events: { id: string; streamId: string; message: JSONRPCMessage }[] = [];
  #next = 0;
  /** Every stored message, in order (for tests to wait on). */
  readonly stored: { streamId: string; message: JSONRPCMessage }[] = [];

  constructor(placesIds = false) {
    if (!placesIds) (this as Partial<EventStore>).getStreamIdForEventId = undefined;
  }

  storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const id = `${streamId}.${++this.#next}.${crypto.randomUUID().slice(0, 8)}`;
    this.#events.push({ id, streamId, message });
    this.stored.push({ streamId, message });
    return Promise.resolve(id);
  }

  getStreamIdForEventId?(eventId: string): Promise<string | undefined> {
    return Promise.resolve(this.#events.find((e) => e.id === eventId)?.streamId);
  }

  async replayEventsAfter(
    lastEventId: string,
    { send }: { send: (eventId: string, message: JSONRPCMessage) => Promise<void> },
  ): Promise<string> {
    const at = this.#events.findIndex((e) => e.id === lastEventId);
    if (at < 0) return "";
    const { streamId } = this.#events[at];
    for (const event of this.#events.slice(at + 1)) {
      if (event.streamId === streamId) await send(event.id, event.message);
    }
    return streamId;
  }
}

/** Records what an event store was asked to store. */
function recording(store: EventStore, stored: JSONRPCMessage[]): EventStore {
  const storeEvent = store.storeEvent.bind(store);
  store.storeEvent = (streamId, message) => {
    stored.push(message);
    return storeEvent(streamId, message);
  };
  return store;
}

/** Options of {@linkcode startResumableServer}. */
export interface ResumableServerOptions {
  /** `false`: the SDK app alone (the control). Default: guarded. */
  guarded?: boolean;
  /** The event store (default `"shared"`). */
  store?: StoreKind;
  /** `getStreamIdForEventId` on `ListEventStore`s (default `false`). */
  placesIds?: boolean;
  /** Guard options to override. */
  guard?: Partial<GuardOptions>;
  /** How long `poll` works while the client is away, ms (default 20). */
  awayMs?: number;
  /**
   * A stateless server (no session ids: every request gets a transport of
   * its own over the shared store, as SDK 1.32 serves `sessionIdGenerator:
   * undefined`). Default `false`.
   */
  stateless?: boolean;
  /**
   * Guarded servers in front of the same app and registries, each with a
   * guard of its own (a fleet behind a load balancer); default 1.
   */
  processes?: number;
}

/** A running resumable server. */
export interface ResumableServer extends AsyncDisposable {
  url: URL;
  /** One URL per process (`url` is the first). */
  urls: URL[];
  /** Every message any session stored, in order. */
  stored: JSONRPCMessage[];
  /** Every guard decision (empty unguarded). */
  decisions: GuardDecision[];
  /** Waits until some stored message's JSON contains `text`. */
  storedText(text: string): Promise<void>;
}

/** Starts the resumable SDK server (guarded by default) on a free loopback port. */
export function startResumableServer(
  options: ResumableServerOptions = {},
): Promise<ResumableServer> {
  const kind = options.store ?? "shared";
  const stored: JSONRPCMessage[] = [];
  const newStore = (): EventStore =>
    recording(
      kind === "sdk-shared" ? new InMemoryEventStore() : new ListEventStore(options.placesIds),
      stored,
    );
  const shared = kind === "per-session" ? null : newStore();
  const sessions = new Map<string, WebStandardStreamableHTTPServerTransport>();
  const awayMs = options.awayMs ?? 20;

  function createServer(): McpServer {
    const mcp = new McpServer(
      { name: "resumable", version: "0.0.0" },
      { capabilities: { logging: {} } },
    );
    mcp.registerTool(
      "poll",
      {
        description: "closes its stream, answers while the client is away",
        inputSchema: { text: z.string() },
      },
      async (
        { text }: { text: string },
        extra: {
          sendNotification(n: unknown): Promise<void>;
          closeSSEStream?: () => void;
        },
      ) => {
        await extra.sendNotification({
          method: "notifications/message",
          params: { level: "info", data: `before:${text}` },
        });
        extra.closeSSEStream?.();
        await new Promise((resolve) => setTimeout(resolve, awayMs));
        await extra.sendNotification({
          method: "notifications/message",
          params: { level: "info", data: `away:${text}` },
        });
        return { content: [{ type: "text" as const, text: `done:${text}` }] };
      },
    );
    mcp.registerTool(
      "announce",
      { description: "a log message on the listening stream", inputSchema: { text: z.string() } },
      async ({ text }: { text: string }) => {
        // No related request: the SDK sends it on the session's listening stream.
        await mcp.server.notification({
          method: "notifications/message",
          params: { level: "info", data: text },
        });
        return { content: [{ type: "text" as const, text: "announced" }] };
      },
    );
    return mcp;
  }

  async function handler(request: Request): Promise<Response> {
    const sessionId = request.headers.get("mcp-session-id");
    if (sessionId !== null) {
      const transport = sessions.get(sessionId);
      if (transport === undefined) {
        return Response.json({
          jsonrpc: "2.0",
          error: { code: -32001, message: "Session not found" },
          id: null,
        }, {
          status: 404,
        });
      }
      return await transport.handleRequest(request);
    }
    if (options.stateless) {
      const transport = new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: undefined,
        eventStore: shared ?? newStore(),
        retryInterval: 20,
      });
      await createServer().connect(transport);
      // Not closed here: a polled tool goes on writing to the store after its answer returns.
      return await transport.handleRequest(request);
    }
    const transport: WebStandardStreamableHTTPServerTransport =
      new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        eventStore: shared ?? newStore(),
        retryInterval: 20,
        onsessioninitialized: (id: string) => {
          sessions.set(id, transport);
        },
      });
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && sessions.get(id) === transport) sessions.delete(id);
    };
    const server = createServer();
    await server.connect(transport);
    const response = await transport.handleRequest(request);
    if (transport.sessionId === undefined) await server.close();
    return response;
  }

  const decisions: GuardDecision[] = [];
  const owners = new SessionOwnerRegistry();
  const cancellations = new CancellationRegistry();
  const guard = () =>
    guardSessions(handler, {
      owners,
      cancellations,
      principal: bearerPrincipal(),
      ...options.guard,
      onDecision: (d) => decisions.push(d),
    });
  const servers = Array.from(
    { length: options.processes ?? 1 },
    () => {
      const serve = options.guarded === false ? handler : guard();
      let listening!: (url: URL) => void;
      const url = new Promise<URL>((resolve) => listening = resolve);
      const server = Deno.serve({
        port: 0,
        hostname: "127.0.0.1",
        onListen: ({ port }) => listening(new URL(`http://127.0.0.1:${port}/mcp`)),
      }, (request) => serve(request));
      return { server, url };
    },
  );
  return Promise.all(servers.map((s) => s.url)).then((urls) => ({
    url: urls[0],
    urls,
    stored,
    decisions,
    storedText: (text: string) =>
      waitUntil(
        () => stored.some((m) => JSON.stringify(m).includes(text)),
        `"${text}" stored`,
      ),
    async [Symbol.asyncDispose]() {
      await Promise.all([...sessions.values()].map((t) => t.close()));
      await Promise.all(servers.map(({ server }) => server.shutdown()));
      await owners.close();
      await cancellations.close();
    },
  }));
}

async function waitUntil(predicate: () => boolean, what: string, timeoutMs = 5_000) {
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Opens a raw session as `token`'s holder (protocol 2025-11-25); returns its id. */
export async function openRawSession(url: URL, token: string): Promise<string> {
  const init = await postRpc(url, token, null, initializeRequest());
  await init.body?.cancel();
  assert.equal(init.status, 200, `initialize as ${token}`);
  const sid = init.headers.get("mcp-session-id");
  assert.ok(sid !== null);
  const ready = await postRpc(url, token, sid, {
    jsonrpc: "2.0",
    method: "notifications/initialized",
  });
  await ready.body?.cancel();
  assert.equal(ready.status, 202);
  return sid;
}

/** A raw `tools/call` POST. */
export function callTool(
  url: URL,
  token: string,
  sid: string,
  id: number,
  name: string,
  args: Record<string, unknown>,
): Promise<Response> {
  return postRpc(url, token, sid, {
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name, arguments: args },
  });
}

/** A raw GET (listening stream, or a resumption with `lastEventId`). */
export function getStream(
  url: URL,
  token: string,
  sid: string,
  lastEventId?: string,
): Promise<Response> {
  return fetch(url, {
    method: "GET",
    headers: {
      accept: "text/event-stream",
      "mcp-session-id": sid,
      "mcp-protocol-version": "2025-11-25",
      ...bearer(token),
      ...(lastEventId === undefined ? {} : { "last-event-id": lastEventId }),
    },
  });
}

/**
 * The data texts of events (log message data, tool result text, or the raw
 * data), without priming events (empty data, or `{}` when a store replays
 * one: the SDK stores a priming event as the message `{}`).
 */
export function texts(events: ClientEvent[]): string[] {
  return events.flatMap((event) => {
    if (event.data === "" || event.data === "{}") return [];
    const message = JSON.parse(event.data);
    if (typeof message.params?.data === "string") return [message.params.data];
    const text = message.result?.content?.[0]?.text;
    return typeof text === "string" ? [text] : [event.data];
  });
}
