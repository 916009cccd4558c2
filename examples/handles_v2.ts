/**
 * State handles on MCP 2026-07-28 (no protocol sessions), with the official
 * SDK v2: a shopping-cart server whose carts are named by handles the server
 * mints, each bound to the user it was minted for by a {@linkcode HandleRegistry}.
 *
 * Tools (the user is `ctx.http.authInfo.clientId`, set from the verified
 * bearer token, never from anything in the tool arguments):
 * - `cart_create`: mints a `cart_…` handle for the caller and returns it.
 * - `cart_add` `{ cart, item }`: adds an item to one of the caller's carts.
 * - `cart_show` `{ cart }`: the items of one of the caller's carts (JSON).
 *
 * A handle presented by anyone but its owner, and a handle that does not
 * exist, get the same tool error: `Unknown or foreign handle: "cart_…"`.
 *
 * Run it: `deno run -A examples/handles_v2.ts` (plays Alice and Mallory
 * against a server on a free port, then exits), or
 * `deno run -A examples/handles_v2.ts --serve 8787` to keep serving.
 *
 * @module
 */

import { createMcpHandler, McpServer, type ServerContext } from "@modelcontextprotocol/server";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { z } from "zod4";
import {
  fingerprint,
  HandleNotOwnedError,
  HandleRegistry,
  type HandleRegistryOptions,
} from "../mod.ts";

/** The demo's bearer tokens and the user each one stands for (a real server verifies a JWT). */
export const USERS: Readonly<Record<string, string>> = {
  "alice-token": "alice",
  "mallory-token": "mallory",
};

/** Options of {@linkcode startCartServer}. */
export interface CartServerOptions {
  /** TCP port on 127.0.0.1; `0` (the default) picks a free one. */
  port?: number;
  /** Options of the server's {@linkcode HandleRegistry} (bounds, store). */
  handles?: HandleRegistryOptions;
}

/** A running cart server. */
export interface CartServer extends AsyncDisposable {
  /** The MCP endpoint, `http://127.0.0.1:<port>/mcp`. */
  readonly url: string;
  /** The server's handle registry (for tests and metrics). */
  readonly handles: HandleRegistry;
  /** Each cart's items, by handle (for tests). */
  readonly carts: ReadonlyMap<string, readonly string[]>;
  /** Stops serving and closes the handle registry. */
  close(): Promise<void>;
}

type ToolResult = { content: { type: "text"; text: string }[]; isError?: boolean };

const text = (value: string, isError = false): ToolResult => ({
  content: [{ type: "text", text: value }],
  ...(isError ? { isError: true } : {}),
});

/** Starts the cart server; `await using` (or `close()`) stops it. */
export async function startCartServer(options: CartServerOptions = {}): Promise<CartServer> {
  const handles = new HandleRegistry(options.handles);
  try {
    await handles.size(); // start the registry's worker now: a store that is down fails here
  } catch (err) {
    await handles.close();
    throw err;
  }
  // Application state, keyed by handle. The registry decides who may use a
  // handle; a cart whose handle was evicted is unreachable (prune it, or give
  // carts the same bounds, in a real server).
  const carts = new Map<string, string[]>();

  /** The caller's fingerprint, from the identity the HTTP layer verified. */
  const caller = (ctx: ServerContext): Promise<string> => {
    const user = ctx.http?.authInfo?.clientId;
    if (!user) throw new Error("unauthenticated");
    return fingerprint(user);
  };

  /** `null` when the caller owns `cart`, else the tool error to return. */
  const denied = async (cart: string, ctx: ServerContext): Promise<ToolResult | null> => {
    try {
      await handles.require(cart, await caller(ctx));
      return null;
    } catch (err) {
      if (err instanceof HandleNotOwnedError) return text(err.message, true);
      throw err; // the registry is unavailable: fail closed with a protocol error
    }
  };

  const factory = () => {
    const server = new McpServer({ name: "cart-server", version: "1.0.0" });
    server.registerTool("cart_create", {
      description: "Creates an empty cart and returns its handle.",
      inputSchema: z.object({}),
    }, async (_args, ctx) => {
      const cart = await handles.mint(await caller(ctx), { prefix: "cart_" });
      carts.set(cart, []);
      return text(cart);
    });
    server.registerTool("cart_add", {
      description: "Adds an item to a cart.",
      inputSchema: z.object({ cart: z.string(), item: z.string() }),
    }, async ({ cart, item }, ctx) => {
      const error = await denied(cart, ctx);
      if (error) return error;
      carts.get(cart)?.push(item);
      return text(`added ${item}`);
    });
    server.registerTool("cart_show", {
      description: "Lists the items of a cart (JSON array).",
      inputSchema: z.object({ cart: z.string() }),
    }, async ({ cart }, ctx) => {
      return await denied(cart, ctx) ?? text(JSON.stringify(carts.get(cart) ?? []));
    });
    return server;
  };

  const handler = createMcpHandler(factory, { legacy: "reject" });
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} },
    (req) => {
      if (new URL(req.url).pathname !== "/mcp") return new Response("Not found", { status: 404 });
      const auth = req.headers.get("authorization") ?? "";
      const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
      const user = Object.hasOwn(USERS, token) ? USERS[token] : undefined;
      if (user === undefined) return new Response("Unauthorized", { status: 401 });
      return handler.fetch(req, { authInfo: { token, clientId: user, scopes: [] } });
    },
  );

  let closing: Promise<void> | null = null;
  const close = () =>
    closing ??= (async () => {
      await handler.close();
      await http.shutdown();
      await handles.close();
    })();
  return {
    url: `http://127.0.0.1:${http.addr.port}/mcp`,
    handles,
    carts,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** An MCP client speaking 2026-07-28 to `url` with `token`; `await using` closes it. */
export async function connectCartClient(
  url: string,
  token: string,
): Promise<Client & AsyncDisposable> {
  const client = new Client({ name: "cart-client", version: "1.0.0" }, {
    versionNegotiation: { mode: { pin: "2026-07-28" } },
  });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return Object.assign(client, { [Symbol.asyncDispose]: () => client.close() });
}

/** Calls a cart tool; its text and whether it is a tool error. */
export async function callCart(
  client: Client,
  name: "cart_create" | "cart_add" | "cart_show",
  args: Record<string, string> = {},
): Promise<{ text: string; isError: boolean }> {
  const result = await client.callTool({ name, arguments: args });
  const first = result.content[0];
  return { text: first?.type === "text" ? first.text : "", isError: result.isError === true };
}

if (import.meta.main) {
  const serve = Deno.args[0] === "--serve";
  const server = await startCartServer({ port: serve ? Number(Deno.args[1] ?? 8787) : 0 });
  if (serve) {
    console.log(`cart server on ${server.url} (tokens: ${Object.keys(USERS).join(", ")})`);
  } else {
    try {
      await using alice = await connectCartClient(server.url, "alice-token");
      await using mallory = await connectCartClient(server.url, "mallory-token");
      const cart = (await callCart(alice, "cart_create")).text;
      console.log("alice creates", cart);
      await callCart(alice, "cart_add", { cart, item: "tea" });
      console.log("alice shows", (await callCart(alice, "cart_show", { cart })).text);
      console.log("mallory adds to it:", await callCart(mallory, "cart_add", { cart, item: "x" }));
      // A handle that was never minted, with the same first characters: the same answer.
      const unknown = cart.slice(0, -1) + (cart.endsWith("A") ? "B" : "A");
      console.log(
        "mallory, unknown cart:",
        await callCart(mallory, "cart_add", { cart: unknown, item: "x" }),
      );
      console.log("alice shows", (await callCart(alice, "cart_show", { cart })).text);
    } finally {
      await server.close();
    }
  }
}
