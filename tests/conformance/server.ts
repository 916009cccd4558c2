/**
 * The server the official MCP conformance suite (`@modelcontextprotocol/conformance`) tests:
 * every tool, resource, prompt, completion and logging behaviour its server scenarios
 * exercise, on the MCP SDK's low-level `Server`, one `WebStandardStreamableHTTPServerTransport`
 * per session (as `examples/mcp_app.ts`), served by `Deno.serve` on 127.0.0.1.
 *
 * It follows the suite's reference "everything" server: server-initiated requests
 * (`test_sampling`, `test_elicitation*`) go out on the session's listening GET stream, not on
 * the tool call's response stream, so the suite also exercises that stream; `test_reconnection`
 * closes its response stream mid-call (SEP-1699, replayed from an in-memory event store); Host
 * and Origin must name localhost (DNS-rebinding protection).
 *
 * With `guarded`, the handler is wrapped by {@linkcode guardSessions} (strict mode), every
 * request naming the same principal (the suite sends no credentials).
 *
 * ```sh
 * deno run -A tests/conformance/server.ts                      # prints http://127.0.0.1:<port>/mcp
 * deno run -A tests/conformance/server.ts --guarded --port=3001
 * ```
 *
 * @module
 */

// @ts-types="@modelcontextprotocol/sdk/server/index"
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
// @ts-types="@modelcontextprotocol/sdk/server/webStandardStreamableHttp"
import {
  type EventStore,
  WebStandardStreamableHTTPServerTransport,
} from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
// @ts-types="@modelcontextprotocol/sdk/types"
import {
  type CallToolRequest,
  CallToolRequestSchema,
  type CallToolResult,
  type CompleteRequest,
  CompleteRequestSchema,
  ErrorCode,
  type GetPromptRequest,
  GetPromptRequestSchema,
  type GetPromptResult,
  type JSONRPCMessage,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  type ReadResourceRequest,
  ReadResourceRequestSchema,
  type ReadResourceResult,
  type SubscribeRequest,
  SubscribeRequestSchema,
  type UnsubscribeRequest,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import {
  CancellationRegistry,
  type GuardedHandler,
  guardSessions,
  SessionOwnerRegistry,
} from "../../mod.ts";

/** Options of {@linkcode startConformanceServer}. */
export interface ConformanceServerOptions {
  /** Wrap the handler with `guardSessions` (strict mode). */
  guarded: boolean;
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
}

/** A running conformance server. */
export interface ConformanceServer {
  /** The MCP endpoint, `http://127.0.0.1:<port>/mcp`. */
  url: string;
  /** Ends every session, stops listening and closes the guard's registries. */
  close(): Promise<void>;
}

/** What tools see of the SDK's request-handler `extra` (its types reach us partly as `any`). */
interface Extra {
  sessionId?: string;
  requestId: string | number;
  signal: AbortSignal;
  _meta?: { progressToken?: string | number };
  sendNotification(
    notification: { method: string; params: Record<string, unknown> },
  ): Promise<void>;
  closeSSEStream?: () => void;
}

type Args = Record<string, unknown>;

interface Tool {
  description: string;
  inputSchema: Record<string, unknown>;
  run(args: Args, extra: Extra): Promise<CallToolResult> | CallToolResult;
}

/** A 1x1 red PNG. */
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/** A minimal WAV file. */
const WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
/** How long a request to the client (sampling, elicitation) may take. */
const CLIENT_REQUEST_TIMEOUT_MS = 5_000;
const NO_ARGS = { type: "object", properties: {} };

/** SEP-1613 / SEP-2106: JSON Schema 2020-12 keywords that must reach `tools/list` unchanged. */
const JSON_SCHEMA_2020_12 = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  $defs: {
    address: {
      $anchor: "addressDef",
      type: "object",
      properties: { street: { type: "string" }, city: { type: "string" } },
    },
  },
  properties: {
    name: { type: "string" },
    address: { $ref: "#/$defs/address" },
    contactMethod: { type: "string", enum: ["phone", "email"] },
    phone: { type: "string" },
    email: { type: "string" },
  },
  allOf: [{ anyOf: [{ required: ["phone"] }, { required: ["email"] }] }],
  if: { properties: { contactMethod: { const: "phone" } }, required: ["contactMethod"] },
  then: { required: ["phone"] },
  else: { required: ["email"] },
  additionalProperties: false,
};

/** SEP-1034: a default for every primitive type. */
const DEFAULTS_SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", description: "User name", default: "John Doe" },
    age: { type: "integer", description: "User age", default: 30 },
    score: { type: "number", description: "User score", default: 95.5 },
    status: {
      type: "string",
      description: "User status",
      enum: ["active", "inactive", "pending"],
      default: "active",
    },
    verified: { type: "boolean", description: "Verification status", default: true },
  },
  required: [],
};

/** SEP-1330: the five enum shapes. */
const ENUMS_SCHEMA = {
  type: "object",
  properties: {
    untitledSingle: { type: "string", enum: ["option1", "option2", "option3"] },
    titledSingle: {
      type: "string",
      oneOf: [
        { const: "value1", title: "First Option" },
        { const: "value2", title: "Second Option" },
        { const: "value3", title: "Third Option" },
      ],
    },
    legacyEnum: {
      type: "string",
      enum: ["opt1", "opt2", "opt3"],
      enumNames: ["Option One", "Option Two", "Option Three"],
    },
    untitledMulti: {
      type: "array",
      minItems: 1,
      maxItems: 3,
      items: { type: "string", enum: ["option1", "option2", "option3"] },
    },
    titledMulti: {
      type: "array",
      minItems: 1,
      maxItems: 3,
      items: {
        anyOf: [
          { const: "value1", title: "First Choice" },
          { const: "value2", title: "Second Choice" },
          { const: "value3", title: "Third Choice" },
        ],
      },
    },
  },
  required: [],
};

const text = (value: string): CallToolResult => ({ content: [{ type: "text", text: value }] });

function stringArg(args: Args, name: string): string {
  const value = args[name];
  if (typeof value !== "string") {
    throw new Error(`argument ${name} must be a string`);
  }
  return value;
}

/** Waits `ms`, or rejects as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Per-session SSE event log, so a client can resume a closed stream with `Last-Event-ID`. */
class MemoryEventStore implements EventStore {
  readonly #events: { id: string; streamId: string; message: JSONRPCMessage }[] = [];
  #next = 0;

  storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const id = `${streamId}::${++this.#next}`;
    this.#events.push({ id, streamId, message });
    if (this.#events.length > 1_000) this.#events.shift();
    return Promise.resolve(id);
  }

  getStreamIdForEventId(eventId: string): Promise<string | undefined> {
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
      // The transport stores an empty priming event first: nothing to replay there.
      if (event.streamId === streamId && Object.keys(event.message).length > 0) {
        await send(event.id, event.message);
      }
    }
    return streamId;
  }
}

/** One session's MCP server. `signalFor` is the signal a tool honours. */
function createSessionServer(signalFor: (extra: Extra) => AbortSignal): Server {
  const server = new Server(
    { name: "mcp-session-guard-conformance", version: "0.1.0" },
    {
      capabilities: {
        tools: {},
        resources: { subscribe: true },
        prompts: {},
        logging: {},
        completions: {},
      },
    },
  );
  const subscriptions = new Set<string>();
  /** Requests to the client go on the session's listening stream, as the reference server's. */
  const toClient = (extra: Extra) => ({
    timeout: CLIENT_REQUEST_TIMEOUT_MS,
    signal: signalFor(extra),
  });
  const elicit = async (message: string, requestedSchema: Args, extra: Extra) => {
    const result = await server.elicitInput(
      // deno-lint-ignore no-explicit-any
      { mode: "form", message, requestedSchema: requestedSchema as any },
      toClient(extra),
    );
    return text(
      `Elicitation completed: action=${result.action}, content=${
        JSON.stringify(result.content ?? {})
      }`,
    );
  };

  const tools: Record<string, Tool> = {
    test_simple_text: {
      description: "Returns simple text content",
      inputSchema: NO_ARGS,
      run: () => text("This is a simple text response for testing."),
    },
    test_image_content: {
      description: "Returns image content",
      inputSchema: NO_ARGS,
      run: () => ({ content: [{ type: "image", data: PNG, mimeType: "image/png" }] }),
    },
    test_audio_content: {
      description: "Returns audio content",
      inputSchema: NO_ARGS,
      run: () => ({ content: [{ type: "audio", data: WAV, mimeType: "audio/wav" }] }),
    },
    test_embedded_resource: {
      description: "Returns an embedded resource",
      inputSchema: NO_ARGS,
      run: () => ({
        content: [{
          type: "resource",
          resource: {
            uri: "test://embedded-resource",
            mimeType: "text/plain",
            text: "This is an embedded resource content.",
          },
        }],
      }),
    },
    test_multiple_content_types: {
      description: "Returns text, image and resource content",
      inputSchema: NO_ARGS,
      run: () => ({
        content: [
          { type: "text", text: "Multiple content types test:" },
          { type: "image", data: PNG, mimeType: "image/png" },
          {
            type: "resource",
            resource: {
              uri: "test://mixed-content-resource",
              mimeType: "application/json",
              text: JSON.stringify({ test: "data", value: 123 }),
            },
          },
        ],
      }),
    },
    test_tool_with_logging: {
      description: "Sends three log messages while it runs",
      inputSchema: NO_ARGS,
      run: async (_args, extra) => {
        const steps = [
          "Tool execution started",
          "Tool processing data",
          "Tool execution completed",
        ];
        for (const [i, data] of steps.entries()) {
          if (i > 0) await sleep(50, signalFor(extra));
          await extra.sendNotification({
            method: "notifications/message",
            params: { level: "info", data },
          });
        }
        return text("Tool with logging executed successfully");
      },
    },
    test_tool_with_progress: {
      description: "Reports progress 0, 50 and 100 of 100",
      inputSchema: NO_ARGS,
      run: async (_args, extra) => {
        const progressToken = extra._meta?.progressToken;
        for (const progress of [0, 50, 100]) {
          if (progress > 0) await sleep(50, signalFor(extra));
          if (progressToken === undefined) continue;
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken, progress, total: 100, message: `${progress} of 100` },
          });
        }
        return text(`Progress reported with token ${String(progressToken)}`);
      },
    },
    test_error_handling: {
      description: "Always fails",
      inputSchema: NO_ARGS,
      run: () => ({
        isError: true,
        content: [{ type: "text", text: "This tool intentionally returns an error for testing" }],
      }),
    },
    test_reconnection: {
      description: "Closes its response stream mid-call; the client resumes it (SEP-1699)",
      inputSchema: NO_ARGS,
      run: async (_args, extra) => {
        extra.closeSSEStream?.();
        await sleep(100, signalFor(extra));
        return text("Reconnection test completed successfully.");
      },
    },
    test_sampling: {
      description: "Asks the client's LLM (sampling/createMessage)",
      inputSchema: {
        type: "object",
        properties: { prompt: { type: "string", description: "The prompt to send to the LLM" } },
        required: ["prompt"],
      },
      run: async (args, extra) => {
        const result = await server.createMessage({
          messages: [{ role: "user", content: { type: "text", text: stringArg(args, "prompt") } }],
          maxTokens: 100,
        }, toClient(extra));
        const content = result.content as { type: string; text?: string };
        return text(`LLM response: ${content.type === "text" ? content.text : content.type}`);
      },
    },
    test_elicitation: {
      description: "Asks the user for input (elicitation/create)",
      inputSchema: {
        type: "object",
        properties: { message: { type: "string", description: "The message to show the user" } },
        required: ["message"],
      },
      run: (args, extra) =>
        elicit(stringArg(args, "message"), {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        }, extra),
    },
    test_elicitation_sep1034_defaults: {
      description: "Elicitation with a default for every primitive type (SEP-1034)",
      inputSchema: NO_ARGS,
      run: (_args, extra) =>
        elicit("Please review and update the form fields with defaults", DEFAULTS_SCHEMA, extra),
    },
    test_elicitation_sep1330_enums: {
      description: "Elicitation with every enum schema variant (SEP-1330)",
      inputSchema: NO_ARGS,
      run: (_args, extra) =>
        elicit("Please select options from the enum fields", ENUMS_SCHEMA, extra),
    },
    json_schema_2020_12_tool: {
      description: "Tool with JSON Schema 2020-12 features",
      inputSchema: JSON_SCHEMA_2020_12,
      run: (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`),
    },
  };

  server.setRequestHandler(ListToolsRequestSchema, () => ({
    tools: Object.entries(tools).map(([name, { description, inputSchema }]) => ({
      name,
      description,
      inputSchema,
    })),
  }));
  server.setRequestHandler(
    CallToolRequestSchema,
    async (request: CallToolRequest, extra: unknown) => {
      const { name, arguments: args = {} } = request.params;
      const tool = Object.hasOwn(tools, name) ? tools[name] : undefined;
      if (tool === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${name}`);
      try {
        return await tool.run(args, extra as unknown as Extra);
      } catch (err) {
        // Input errors too are tool errors (SEP-1303), so the model can see and fix them.
        return {
          isError: true,
          content: [{ type: "text", text: `${name} failed: ${describe(err)}` }],
        };
      }
    },
  );

  const resources = [
    {
      uri: "test://static-text",
      name: "static-text",
      description: "A static text resource",
      mimeType: "text/plain",
      text: "This is the content of the static text resource.",
    },
    {
      uri: "test://static-binary",
      name: "static-binary",
      description: "A static binary resource (a PNG)",
      mimeType: "image/png",
      blob: PNG,
    },
    {
      uri: "test://watched-resource",
      name: "watched-resource",
      description: "A resource clients may subscribe to",
      mimeType: "text/plain",
      text: "Watched resource content",
    },
  ];
  server.setRequestHandler(ListResourcesRequestSchema, () => ({
    resources: resources.map(({ uri, name, description, mimeType }) => ({
      uri,
      name,
      description,
      mimeType,
    })),
  }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, () => ({
    resourceTemplates: [{
      uriTemplate: "test://template/{id}/data",
      name: "template",
      description: "A resource template with parameter substitution",
      mimeType: "application/json",
    }],
  }));
  server.setRequestHandler(
    ReadResourceRequestSchema,
    (request: ReadResourceRequest): ReadResourceResult => {
      const { uri } = request.params;
      const resource = resources.find((r) => r.uri === uri);
      if (resource !== undefined) {
        const { name: _, description: __, ...content } = resource;
        return { contents: [content] };
      }
      const id = /^test:\/\/template\/([^/]+)\/data$/.exec(uri)?.[1];
      if (id !== undefined) {
        const data = { id, templateTest: true, data: `Data for ID: ${id}` };
        return { contents: [{ uri, mimeType: "application/json", text: JSON.stringify(data) }] };
      }
      throw new McpError(-32002, `Resource not found: ${uri}`, { uri });
    },
  );
  server.setRequestHandler(SubscribeRequestSchema, (request: SubscribeRequest) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, (request: UnsubscribeRequest) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  const prompts: Record<
    string,
    {
      description: string;
      arguments?: { name: string; description: string; required: boolean }[];
      get(args: Record<string, string>): GetPromptResult;
    }
  > = {
    test_simple_prompt: {
      description: "A simple prompt without arguments",
      get: () => ({
        messages: [{
          role: "user",
          content: { type: "text", text: "This is a simple prompt for testing." },
        }],
      }),
    },
    test_prompt_with_arguments: {
      description: "A prompt with required arguments",
      arguments: [
        { name: "arg1", description: "First test argument", required: true },
        { name: "arg2", description: "Second test argument", required: true },
      ],
      get: ({ arg1, arg2 }) => ({
        messages: [{
          role: "user",
          content: { type: "text", text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` },
        }],
      }),
    },
    test_prompt_with_embedded_resource: {
      description: "A prompt that embeds a resource",
      arguments: [{
        name: "resourceUri",
        description: "URI of the resource to embed",
        required: true,
      }],
      get: ({ resourceUri }) => ({
        messages: [
          {
            role: "user",
            content: {
              type: "resource",
              resource: {
                uri: resourceUri,
                mimeType: "text/plain",
                text: "Embedded resource content for testing.",
              },
            },
          },
          {
            role: "user",
            content: { type: "text", text: "Please process the embedded resource above." },
          },
        ],
      }),
    },
    test_prompt_with_image: {
      description: "A prompt with image content",
      get: () => ({
        messages: [
          { role: "user", content: { type: "image", data: PNG, mimeType: "image/png" } },
          { role: "user", content: { type: "text", text: "Please analyze the image above." } },
        ],
      }),
    },
  };
  server.setRequestHandler(ListPromptsRequestSchema, () => ({
    prompts: Object.entries(prompts).map(([name, { description, arguments: args }]) => ({
      name,
      description,
      arguments: args,
    })),
  }));
  server.setRequestHandler(GetPromptRequestSchema, (request: GetPromptRequest) => {
    const { name, arguments: args = {} } = request.params;
    const prompt = Object.hasOwn(prompts, name) ? prompts[name] : undefined;
    if (prompt === undefined) {
      throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${name}`);
    }
    for (const arg of prompt.arguments ?? []) {
      if (arg.required && typeof args[arg.name] !== "string") {
        throw new McpError(ErrorCode.InvalidParams, `Missing required argument: ${arg.name}`);
      }
    }
    return prompt.get(args);
  });
  server.setRequestHandler(CompleteRequestSchema, (request: CompleteRequest) => {
    const words = ["paris", "park", "party", "test", "testValue"];
    const prefix = request.params.argument.value;
    const values = words.filter((word) => word.startsWith(prefix));
    return { completion: { values, total: values.length, hasMore: false } };
  });
  return server;
}

function jsonError(status: number, code: number, message: string): Response {
  return Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status });
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Starts a conformance server on 127.0.0.1, guarded or not. */
export function startConformanceServer(
  options: ConformanceServerOptions,
): Promise<ConformanceServer> {
  const sessions = new Map<string, WebStandardStreamableHTTPServerTransport>();
  const registries = options.guarded
    ? { owners: new SessionOwnerRegistry(), cancellations: new CancellationRegistry() }
    : undefined;
  let guard: GuardedHandler | undefined;
  const signalFor = (extra: Extra) => guard?.signalFor(extra) ?? extra.signal;
  let port = 0;

  async function handler(request: Request): Promise<Response> {
    const sessionId = request.headers.get("mcp-session-id");
    if (sessionId !== null) {
      const transport = sessions.get(sessionId);
      if (transport === undefined) return jsonError(404, -32001, "Session not found");
      return await transport.handleRequest(request);
    }
    if (request.method !== "POST") {
      return jsonError(400, -32000, "Bad Request: Mcp-Session-Id header is required");
    }
    const local = ["127.0.0.1", "localhost", "[::1]"].map((host) => `${host}:${port}`);
    const transport: WebStandardStreamableHTTPServerTransport =
      new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        eventStore: new MemoryEventStore(),
        retryInterval: 1_000,
        enableDnsRebindingProtection: true,
        allowedHosts: local,
        allowedOrigins: local.map((host) => `http://${host}`),
        onsessioninitialized: (id: string) => {
          sessions.set(id, transport);
        },
      });
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && sessions.get(id) === transport) sessions.delete(id);
    };
    const server = createSessionServer(signalFor);
    await server.connect(transport);
    const response = await transport.handleRequest(request);
    if (transport.sessionId === undefined) await server.close();
    return response;
  }

  const endpoint = registries === undefined ? handler : (guard = guardSessions(handler, {
    ...registries,
    principal: () => "conformance-client",
  }));
  const http = Deno.serve({ hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} }, (
    request,
  ) =>
    new URL(request.url).pathname === "/mcp"
      ? endpoint(request)
      : jsonError(404, -32000, "Not Found"));
  port = http.addr.port;
  return Promise.resolve({
    url: `http://127.0.0.1:${port}/mcp`,
    async close() {
      await Promise.all([...sessions.values()].map((transport) => transport.close()));
      sessions.clear();
      await http.shutdown();
      await registries?.owners.close();
      await registries?.cancellations.close();
    },
  });
}

if (import.meta.main) {
  const guarded = Deno.args.includes("--guarded");
  const portArg = Deno.args.find((arg) => arg.startsWith("--port="));
  const server = await startConformanceServer({
    guarded,
    port: portArg === undefined ? 0 : Number(portArg.slice("--port=".length)),
  });
  console.log(server.url);
  const stop = () => server.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
