/**
 * The SDK v2 "everything" server the official MCP conformance suite tests, guarded or not:
 * a port to `Deno.serve` of the TypeScript SDK's own v2 conformance fixture
 * (`test/conformance/src/everythingServer.ts`), on `@modelcontextprotocol/server`.
 *
 * As the fixture: 2026-07-28 traffic (a request that claims the per-request `_meta` envelope,
 * classified by the SDK's `classifyInboundRequest`) goes to one `createMcpHandler`; 2025-era
 * traffic goes to stateful sessions, one `WebStandardStreamableHTTPServerTransport` and
 * `McpServer` per session, with one in-memory event store shared by every session (SEP-1699
 * resumption). Host and Origin must name localhost (DNS-rebinding protection). Same tools,
 * resources and prompts as the fixture, including its multi-round-trip (SEP-2322) and
 * `subscriptions/listen` (SEP-2575) fixtures. Like the fixture, it does not implement the
 * tasks extension (SEP-2663).
 *
 * With `guard`, the handler is wrapped by {@linkcode guardSessions} (strict mode, every request
 * naming the same principal: the suite sends no credentials), in one of the configurations
 * users run: `forwardBody: "parsed"` (the handler gets the body the guard parsed, as
 * `examples/server_v2.ts`), `"copy"` (the default: the handler reads its own copy), each with
 * tasks bound (the default) or `tasks: false`.
 *
 * ```sh
 * deno run -A tests/conformance/server_v2.ts                        # prints http://127.0.0.1:<port>/mcp
 * deno run -A tests/conformance/server_v2.ts --guard=parsed --port=3001
 * deno run -A tests/conformance/server_v2.ts --guard=copy --tasks=false
 * ```
 *
 * @module
 */

import {
  acceptedContent,
  type CallToolResult,
  classifyInboundRequest,
  CLIENT_CAPABILITIES_META_KEY,
  createMcpHandler,
  createRequestStateCodec,
  type EventStore,
  fromJsonSchema,
  type GetPromptResult,
  hostHeaderValidationResponse,
  type InputRequests,
  inputRequired,
  type InputRequiredResult,
  isInitializeRequest,
  localhostAllowedHostnames,
  localhostAllowedOrigins,
  McpServer,
  originValidationResponse,
  ProtocolError,
  ProtocolErrorCode,
  type ReadResourceResult,
  ResourceTemplate,
  type ServerContext,
  WebStandardStreamableHTTPServerTransport,
} from "@modelcontextprotocol/server";
import * as z from "zod4";
import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../../mod.ts";

/** How the guard is configured (`undefined`: unguarded). */
export interface V2GuardConfig {
  /** How the guard hands the body on. */
  forwardBody: "parsed" | "copy";
  /** `false` opts out of task binding (on by default). @default {true} */
  tasks?: boolean;
}

/** Options of {@linkcode startConformanceServerV2}. */
export interface ConformanceServerV2Options {
  /** Wrap the handler with `guardSessions` (strict mode), configured so; omit for unguarded. */
  guard?: V2GuardConfig;
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
}

/** A running v2 conformance server. */
export interface ConformanceServerV2 {
  /** The MCP endpoint, `http://127.0.0.1:<port>/mcp`. */
  url: string;
  /** Ends every session, stops listening and closes the guard's registries. */
  close(): Promise<void>;
}

/** A 1x1 red PNG. */
const TEST_IMAGE_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/** A minimal WAV file. */
const TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
const WATCHED_RESOURCE_CONTENT = "Watched resource content";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (value: string): CallToolResult => ({ content: [{ type: "text", text: value }] });
const describe = (err: unknown) => err instanceof Error ? err.message : String(err);

/** The fixture's event store: one for every session, ids sortable by time. */
function createEventStore(
  data: Map<string, { eventId: string; message: unknown; streamId: string }>,
): EventStore {
  return {
    storeEvent(streamId, message) {
      const eventId = `${streamId}::${String(Date.now()).padStart(15, "0")}_${crypto.randomUUID()}`;
      data.set(eventId, { eventId, message, streamId });
      return Promise.resolve(eventId);
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.split("::")[0] || lastEventId;
      const replay = [...data.entries()]
        .filter(([eventId, event]) => event.streamId === streamId && eventId > lastEventId)
        .sort(([a], [b]) => a.localeCompare(b));
      for (const [eventId, { message }] of replay) {
        if (message && typeof message === "object" && Object.keys(message).length > 0) {
          // deno-lint-ignore no-explicit-any
          await send(eventId, message as any);
        }
      }
      return streamId;
    },
  };
}

/** What the tools reach outside their server: the sessions and the modern handler's bus. */
interface Fixture {
  transports: Map<string, WebStandardStreamableHTTPServerTransport>;
  notify(): { toolsChanged(): void; promptsChanged(): void };
  requestStateCodec: ReturnType<typeof createRequestStateCodec<Record<string, unknown>>>;
}

const NAME_SCHEMA = () => ({
  type: "object" as const,
  properties: { name: { type: "string" as const } },
  required: ["name"],
});
const CONFIRM_SCHEMA = () => ({
  type: "object" as const,
  properties: { ok: { type: "boolean" as const } },
  required: ["ok"],
});

/** One server instance (one per 2025 session, one per 2026-07-28 request), as the fixture's. */
function createMcpServer(fixture: Fixture): McpServer {
  const { requestStateCodec } = fixture;
  const resourceSubscriptions = new Set<string>();
  const mcpServer = new McpServer(
    { name: "mcp-conformance-test-server", version: "1.0.0" },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
      requestState: { verify: requestStateCodec.verify },
    },
  );

  const sendLog = (level: "info", data: unknown) =>
    mcpServer.server
      .notification({
        method: "notifications/message",
        params: { level, logger: "conformance-test-server", data },
      })
      .catch(() => {});

  // ===== TOOLS =====

  mcpServer.registerTool("test_x_mcp_header", {
    description: "Tests SEP-2243 Mcp-Param-* server-side validation",
    // Hand-written JSON, so the annotation survives serialization unchanged.
    inputSchema: fromJsonSchema<{ region?: string; level?: number }>(
      {
        type: "object",
        properties: {
          region: {
            type: "string",
            description: "mirrored into Mcp-Param-Region",
            "x-mcp-header": "Region",
          },
          level: { type: "integer", description: "non-mirrored argument" },
        },
      } as Parameters<typeof fromJsonSchema>[0],
    ),
  }, (args) => text(`region=${args.region ?? "<none>"}`));

  mcpServer.registerTool("test_missing_capability", {
    description: "SEP-2575: requires the `sampling` client capability",
    inputSchema: z.object({}),
  }, (_args, ctx): CallToolResult | InputRequiredResult => {
    if (ctx.mcpReq.inputResponses?.["llm_answer"] === undefined) {
      return inputRequired({
        inputRequests: {
          llm_answer: inputRequired.createMessage({
            messages: [{
              role: "user",
              content: { type: "text", text: "Reply with the single word: pong" },
            }],
            maxTokens: 16,
          }),
        },
      });
    }
    return text("sampling round-trip complete");
  });

  mcpServer.registerTool("test_streaming_elicitation", {
    description: "SEP-2575: yields a response stream carrying no independent top-level requests",
    inputSchema: z.object({}),
  }, () => text("stream observed: result frames only, no top-level requests"));

  mcpServer.registerTool("test_logging_tool", {
    description: "SEP-2575: logs via ctx.mcpReq.log (delivered only with _meta.logLevel)",
    inputSchema: z.object({}),
  }, async (_args, ctx) => {
    await ctx.mcpReq.log(
      "info",
      "test_logging_tool ran (delivered only when the request set _meta.logLevel)",
    );
    return text("logged through the request-scoped, logLevel-gated channel");
  });

  mcpServer.registerTool(
    "test_simple_text",
    { description: "Tests simple text content response" },
    () => text("This is a simple text response for testing."),
  );
  mcpServer.registerTool(
    "test_image_content",
    { description: "Tests image content response" },
    (): CallToolResult => ({
      content: [{ type: "image", data: TEST_IMAGE_BASE64, mimeType: "image/png" }],
    }),
  );
  mcpServer.registerTool(
    "test_audio_content",
    { description: "Tests audio content response" },
    (): CallToolResult => ({
      content: [{ type: "audio", data: TEST_AUDIO_BASE64, mimeType: "audio/wav" }],
    }),
  );
  mcpServer.registerTool(
    "test_embedded_resource",
    { description: "Tests embedded resource content response" },
    (): CallToolResult => ({
      content: [{
        type: "resource",
        resource: {
          uri: "test://embedded-resource",
          mimeType: "text/plain",
          text: "This is an embedded resource content.",
        },
      }],
    }),
  );
  mcpServer.registerTool(
    "test_multiple_content_types",
    { description: "Tests response with multiple content types (text, image, resource)" },
    (): CallToolResult => ({
      content: [
        { type: "text", text: "Multiple content types test:" },
        { type: "image", data: TEST_IMAGE_BASE64, mimeType: "image/png" },
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
  );

  mcpServer.registerTool("test_tool_with_logging", {
    description: "Tests tool that emits log messages during execution",
    inputSchema: z.object({}),
  }, async (_args, ctx) => {
    const steps = ["Tool execution started", "Tool processing data", "Tool execution completed"];
    for (const [i, data] of steps.entries()) {
      if (i > 0) await sleep(50);
      await ctx.mcpReq.notify({ method: "notifications/message", params: { level: "info", data } });
    }
    return text("Tool with logging executed successfully");
  });

  mcpServer.registerTool("test_tool_with_progress", {
    description: "Tests tool that reports progress notifications",
    inputSchema: z.object({}),
  }, async (_args, ctx) => {
    const progressToken = ctx.mcpReq._meta?.progressToken;
    // Per spec, no notifications/progress without a client-supplied token.
    if (progressToken !== undefined) {
      for (const progress of [0, 50, 100]) {
        await ctx.mcpReq.notify({
          method: "notifications/progress",
          params: {
            progressToken,
            progress,
            total: 100,
            message: `Completed step ${progress} of 100`,
          },
        });
        if (progress < 100) await sleep(50);
      }
    }
    return text(String(progressToken ?? "no-progress-token"));
  });

  mcpServer.registerTool("test_error_handling", {
    description: "Tests error response handling",
  }, (): CallToolResult => {
    throw new Error("This tool intentionally returns an error for testing");
  });

  mcpServer.registerTool("test_reconnection", {
    description: "Closes the SSE stream mid-call; the client reconnects (SEP-1699)",
    inputSchema: z.object({}),
  }, async (_args, ctx) => {
    const transport = ctx.sessionId ? fixture.transports.get(ctx.sessionId) : undefined;
    if (transport && ctx.mcpReq.id) transport.closeSSEStream(ctx.mcpReq.id);
    await sleep(100);
    return text(
      "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
    );
  });

  mcpServer.registerTool("test_sampling", {
    description: "Tests server-initiated sampling (LLM completion request)",
    inputSchema: z.object({ prompt: z.string().describe("The prompt to send to the LLM") }),
  }, async (args, ctx) => {
    try {
      const result = (await ctx.mcpReq.send({
        method: "sampling/createMessage",
        params: {
          messages: [{ role: "user", content: { type: "text", text: args.prompt } }],
          maxTokens: 100,
        },
      })) as { content?: { text?: string }; message?: { content?: { text?: string } } };
      const modelResponse = result.content?.text || result.message?.content?.text ||
        "No response";
      return text(`LLM response: ${modelResponse}`);
    } catch (error) {
      return text(`Sampling not supported or error: ${describe(error)}`);
    }
  });

  const elicit = async (
    ctx: ServerContext,
    message: string,
    requestedSchema: Record<string, unknown>,
    prefix: string,
  ) => {
    try {
      const result = (await ctx.mcpReq.send({
        method: "elicitation/create",
        // deno-lint-ignore no-explicit-any
        params: { message, requestedSchema: requestedSchema as any },
      })) as { action?: string; content?: unknown };
      return text(
        `${prefix}: action=${result.action}, content=${JSON.stringify(result.content || {})}`,
      );
    } catch (error) {
      return text(`Elicitation not supported or error: ${describe(error)}`);
    }
  };

  mcpServer.registerTool("test_elicitation", {
    description: "Tests server-initiated elicitation (user input request)",
    inputSchema: z.object({ message: z.string().describe("The message to show the user") }),
  }, (args, ctx) =>
    elicit(ctx, args.message, {
      type: "object",
      properties: { response: { type: "string", description: "User's response" } },
      required: ["response"],
    }, "User response"));

  mcpServer.registerTool("test_elicitation_sep1034_defaults", {
    description: "Tests elicitation with default values per SEP-1034",
    inputSchema: z.object({}),
  }, (_args, ctx) =>
    elicit(ctx, "Please review and update the form fields with defaults", {
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
    }, "Elicitation completed"));

  mcpServer.registerTool("test_elicitation_sep1330_enums", {
    description: "Tests elicitation with enum schema improvements per SEP-1330",
    inputSchema: z.object({}),
  }, (_args, ctx) =>
    elicit(ctx, "Please select options from the enum fields", {
      type: "object",
      properties: {
        untitledSingle: {
          type: "string",
          description: "Select one option",
          enum: ["option1", "option2", "option3"],
        },
        titledSingle: {
          type: "string",
          description: "Select one option with titles",
          oneOf: [
            { const: "value1", title: "First Option" },
            { const: "value2", title: "Second Option" },
            { const: "value3", title: "Third Option" },
          ],
        },
        legacyEnum: {
          type: "string",
          description: "Select one option (legacy)",
          enum: ["opt1", "opt2", "opt3"],
          enumNames: ["Option One", "Option Two", "Option Three"],
        },
        untitledMulti: {
          type: "array",
          description: "Select multiple options",
          minItems: 1,
          maxItems: 3,
          items: { type: "string", enum: ["option1", "option2", "option3"] },
        },
        titledMulti: {
          type: "array",
          description: "Select multiple options with titles",
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
    }, "Elicitation completed"));

  mcpServer.registerTool("json_schema_2020_12_tool", {
    description: "Tool with JSON Schema 2020-12 features (SEP-1613, SEP-2106)",
    inputSchema: fromJsonSchema({
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
    }),
  }, (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`));

  // ===== MULTI-ROUND-TRIP TOOLS (SEP-2322, 2026-07-28) =====

  mcpServer.registerTool("test_input_required_result_elicitation", {
    description: "MRTR (SEP-2322): asks for the caller name via an in-band elicitation request",
    inputSchema: z.object({}),
  }, (_args, ctx): CallToolResult | InputRequiredResult => {
    const name = acceptedContent<{ name: string }>(ctx.mcpReq.inputResponses, "user_name")?.name;
    if (typeof name !== "string") {
      return inputRequired({
        inputRequests: {
          user_name: inputRequired.elicit({
            message: "What is your name?",
            requestedSchema: NAME_SCHEMA(),
          }),
        },
      });
    }
    return text(`Hello, ${name}!`);
  });

  mcpServer.registerTool("test_input_required_result_sampling", {
    description: "MRTR (SEP-2322): asks for an LLM completion via an in-band sampling request",
    inputSchema: z.object({}),
  }, (_args, ctx): CallToolResult | InputRequiredResult => {
    const response = ctx.mcpReq.inputResponses?.["capital_question"] as
      | { content?: { type?: string; text?: string } }
      | undefined;
    if (response === undefined) {
      return inputRequired({
        inputRequests: {
          capital_question: inputRequired.createMessage({
            messages: [{
              role: "user",
              content: { type: "text", text: "What is the capital of France?" },
            }],
            maxTokens: 100,
          }),
        },
      });
    }
    const answer = typeof response.content?.text === "string"
      ? response.content.text
      : JSON.stringify(response);
    return text(`Sampling response: ${answer}`);
  });

  mcpServer.registerTool("test_input_required_result_list_roots", {
    description: "MRTR (SEP-2322): asks for the client roots via an in-band roots/list request",
    inputSchema: z.object({}),
  }, (_args, ctx): CallToolResult | InputRequiredResult => {
    const response = ctx.mcpReq.inputResponses?.["client_roots"] as
      | { roots?: Array<{ uri?: string; name?: string }> }
      | undefined;
    if (!Array.isArray(response?.roots)) {
      return inputRequired({ inputRequests: { client_roots: inputRequired.listRoots() } });
    }
    const uris = response.roots.map((root) => root.uri).join(", ");
    return text(`Client exposed ${response.roots.length} root(s): ${uris}`);
  });

  mcpServer.registerTool("test_input_required_result_request_state", {
    description: "MRTR (SEP-2322): round-trips integrity-protected requestState",
    inputSchema: z.object({}),
  }, async (_args, ctx): Promise<CallToolResult | InputRequiredResult> => {
    const confirmation = acceptedContent<{ ok: boolean }>(ctx.mcpReq.inputResponses, "confirm");
    if (confirmation === undefined) {
      return inputRequired({
        inputRequests: {
          confirm: inputRequired.elicit({
            message: "Please confirm",
            requestedSchema: CONFIRM_SCHEMA(),
          }),
        },
        requestState: await requestStateCodec.mint({
          tool: "request_state",
          nonce: crypto.randomUUID(),
        }),
      });
    }
    if (ctx.mcpReq.requestState<Record<string, unknown>>() === undefined) {
      throw new ProtocolError(
        ProtocolErrorCode.InvalidParams,
        "Invalid requestState: missing or failed integrity verification",
      );
    }
    return text("state-ok: requestState verified and confirmation received");
  });

  mcpServer.registerTool("test_input_required_result_multiple_inputs", {
    description: "MRTR (SEP-2322): asks for elicitation, sampling and roots input in one round",
    inputSchema: z.object({}),
  }, async (_args, ctx): Promise<CallToolResult | InputRequiredResult> => {
    const responses = ctx.mcpReq.inputResponses;
    const name = acceptedContent<{ name: string }>(responses, "user_name")?.name;
    const greeting = (responses?.["greeting"] as { content?: { text?: string } } | undefined)
      ?.content?.text;
    const roots = (responses?.["client_roots"] as { roots?: unknown[] } | undefined)?.roots;
    if (typeof name !== "string" || typeof greeting !== "string" || !Array.isArray(roots)) {
      return inputRequired({
        inputRequests: {
          user_name: inputRequired.elicit({
            message: "What is your name?",
            requestedSchema: NAME_SCHEMA(),
          }),
          greeting: inputRequired.createMessage({
            messages: [{ role: "user", content: { type: "text", text: "Generate a greeting" } }],
            maxTokens: 50,
          }),
          client_roots: inputRequired.listRoots(),
        },
        requestState: await requestStateCodec.mint({
          tool: "multiple_inputs",
          nonce: crypto.randomUUID(),
        }),
      });
    }
    return text(`${greeting} ${name} — ${roots.length} root(s) visible`);
  });

  mcpServer.registerTool("test_input_required_result_multi_round", {
    description: "MRTR (SEP-2322): two elicitation rounds with evolving requestState",
    inputSchema: z.object({}),
  }, async (_args, ctx): Promise<CallToolResult | InputRequiredResult> => {
    const state = ctx.mcpReq.requestState<Record<string, unknown>>();
    const round = state?.tool === "multi_round" && typeof state.round === "number"
      ? state.round
      : 0;
    if (round === 0) {
      return inputRequired({
        inputRequests: {
          step1: inputRequired.elicit({
            message: "Step 1: What is your name?",
            requestedSchema: NAME_SCHEMA(),
          }),
        },
        requestState: await requestStateCodec.mint({
          tool: "multi_round",
          round: 1,
          nonce: crypto.randomUUID(),
        }),
      });
    }
    if (round === 1) {
      const name = acceptedContent<{ name: string }>(ctx.mcpReq.inputResponses, "step1")?.name ??
        "unknown";
      return inputRequired({
        inputRequests: {
          step2: inputRequired.elicit({
            message: "Step 2: What is your favorite color?",
            requestedSchema: {
              type: "object",
              properties: { color: { type: "string" } },
              required: ["color"],
            },
          }),
        },
        requestState: await requestStateCodec.mint({
          tool: "multi_round",
          round: 2,
          name,
          nonce: crypto.randomUUID(),
        }),
      });
    }
    const color = acceptedContent<{ color: string }>(ctx.mcpReq.inputResponses, "step2")?.color ??
      "unknown";
    return text(`Multi-round complete: ${String(state?.name ?? "unknown")} likes ${color}`);
  });

  mcpServer.registerTool("test_input_required_result_tampered_state", {
    description: "MRTR (SEP-2322): rejects retries whose requestState fails verification",
    inputSchema: z.object({}),
  }, async (_args, ctx): Promise<CallToolResult | InputRequiredResult> => {
    if (
      ctx.mcpReq.requestState() !== undefined &&
      acceptedContent(ctx.mcpReq.inputResponses, "confirm") !== undefined
    ) {
      return text("integrity-ok: requestState verified");
    }
    return inputRequired({
      inputRequests: {
        confirm: inputRequired.elicit({
          message: "Please confirm",
          requestedSchema: CONFIRM_SCHEMA(),
        }),
      },
      requestState: await requestStateCodec.mint({
        tool: "tampered_state",
        nonce: crypto.randomUUID(),
      }),
    });
  });

  mcpServer.registerTool("test_input_required_result_capabilities", {
    description: "MRTR (SEP-2322): only requests input kinds the declared capabilities cover",
    inputSchema: z.object({}),
  }, (_args, ctx): CallToolResult | InputRequiredResult => {
    if (ctx.mcpReq.inputResponses !== undefined) {
      return text("Capability-aware input requests fulfilled");
    }
    // 2.4.0 declares the envelope's type as `{}`: read the capabilities the request declared.
    const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
    const declared = envelope?.[CLIENT_CAPABILITIES_META_KEY] as
      | { elicitation?: unknown; sampling?: unknown; roots?: unknown }
      | undefined;
    const inputRequests: InputRequests = {};
    if (declared?.elicitation !== undefined) {
      inputRequests.user_name = inputRequired.elicit({
        message: "What is your name?",
        requestedSchema: NAME_SCHEMA(),
      });
    }
    if (declared?.sampling !== undefined) {
      inputRequests.greeting = inputRequired.createMessage({
        messages: [{ role: "user", content: { type: "text", text: "Generate a short greeting" } }],
        maxTokens: 50,
      });
    }
    if (declared?.roots !== undefined) inputRequests.client_roots = inputRequired.listRoots();
    if (Object.keys(inputRequests).length === 0) {
      return text("No declared client capability supports an in-band input request");
    }
    return inputRequired({ inputRequests });
  });

  // ===== SUBSCRIPTION/LISTEN DIAGNOSTIC TRIGGERS (SEP-2575) =====

  mcpServer.registerTool("test_trigger_tool_change", {
    description: "Listen diagnostic (SEP-2575): publishes a tools/list_changed event",
    inputSchema: z.object({}),
  }, () => {
    fixture.notify().toolsChanged();
    return text("tools_list_changed published");
  });
  mcpServer.registerTool("test_trigger_prompt_change", {
    description: "Listen diagnostic (SEP-2575): publishes a prompts/list_changed event",
    inputSchema: z.object({}),
  }, () => {
    fixture.notify().promptsChanged();
    return text("prompts_list_changed published");
  });

  // ===== RESOURCES =====

  mcpServer.registerResource("static-text", "test://static-text", {
    title: "Static Text Resource",
    description: "A static text resource for testing",
    mimeType: "text/plain",
  }, (): ReadResourceResult => ({
    contents: [{
      uri: "test://static-text",
      mimeType: "text/plain",
      text: "This is the content of the static text resource.",
    }],
  }));
  mcpServer.registerResource("static-binary", "test://static-binary", {
    title: "Static Binary Resource",
    description: "A static binary resource (image) for testing",
    mimeType: "image/png",
  }, (): ReadResourceResult => ({
    contents: [{ uri: "test://static-binary", mimeType: "image/png", blob: TEST_IMAGE_BASE64 }],
  }));
  mcpServer.registerResource(
    "template",
    new ResourceTemplate("test://template/{id}/data", { list: undefined }),
    {
      title: "Resource Template",
      description: "A resource template with parameter substitution",
      mimeType: "application/json",
    },
    (uri, variables): ReadResourceResult => ({
      contents: [{
        uri: uri.toString(),
        mimeType: "application/json",
        text: JSON.stringify({
          id: variables.id,
          templateTest: true,
          data: `Data for ID: ${variables.id}`,
        }),
      }],
    }),
  );
  mcpServer.registerResource("watched-resource", "test://watched-resource", {
    title: "Watched Resource",
    description: "Static resource registered for subscribe/unsubscribe testing",
    mimeType: "text/plain",
  }, (): ReadResourceResult => ({
    contents: [{
      uri: "test://watched-resource",
      mimeType: "text/plain",
      text: WATCHED_RESOURCE_CONTENT,
    }],
  }));
  mcpServer.server.setRequestHandler("resources/subscribe", (request) => {
    resourceSubscriptions.add(request.params.uri);
    sendLog("info", `Subscribed to resource: ${request.params.uri}`);
    return {};
  });
  mcpServer.server.setRequestHandler("resources/unsubscribe", (request) => {
    resourceSubscriptions.delete(request.params.uri);
    sendLog("info", `Unsubscribed from resource: ${request.params.uri}`);
    return {};
  });

  // ===== PROMPTS =====

  mcpServer.registerPrompt("test_simple_prompt", {
    title: "Simple Test Prompt",
    description: "A simple prompt without arguments",
  }, (): GetPromptResult => ({
    messages: [{
      role: "user",
      content: { type: "text", text: "This is a simple prompt for testing." },
    }],
  }));
  mcpServer.registerPrompt("test_prompt_with_arguments", {
    title: "Prompt With Arguments",
    description: "A prompt with required arguments",
    argsSchema: z.object({
      arg1: z.string().describe("First test argument"),
      arg2: z.string().describe("Second test argument"),
    }),
  }, (args): GetPromptResult => ({
    messages: [{
      role: "user",
      content: {
        type: "text",
        text: `Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'`,
      },
    }],
  }));
  mcpServer.registerPrompt("test_prompt_with_embedded_resource", {
    title: "Prompt With Embedded Resource",
    description: "A prompt that includes an embedded resource",
    argsSchema: z.object({ resourceUri: z.string().describe("URI of the resource to embed") }),
  }, (args): GetPromptResult => ({
    messages: [
      {
        role: "user",
        content: {
          type: "resource",
          resource: {
            uri: args.resourceUri,
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
  }));
  mcpServer.registerPrompt("test_input_required_result_prompt", {
    title: "MRTR Prompt",
    description: "MRTR (SEP-2322): prompt that requires elicitation input before rendering",
  }, (ctx): GetPromptResult | InputRequiredResult => {
    const promptCtx = ctx as ServerContext;
    const context = acceptedContent<{ context: string }>(
      promptCtx.mcpReq.inputResponses,
      "user_context",
    )?.context;
    if (typeof context !== "string") {
      return inputRequired({
        inputRequests: {
          user_context: inputRequired.elicit({
            message: "What context should the prompt use?",
            requestedSchema: {
              type: "object",
              properties: { context: { type: "string" } },
              required: ["context"],
            },
          }),
        },
      });
    }
    return {
      messages: [{
        role: "user",
        content: { type: "text", text: `Use the following context: ${context}` },
      }],
    };
  });
  mcpServer.registerPrompt("test_prompt_with_image", {
    title: "Prompt With Image",
    description: "A prompt that includes image content",
  }, (): GetPromptResult => ({
    messages: [
      {
        role: "user",
        content: { type: "image", data: TEST_IMAGE_BASE64, mimeType: "image/png" },
      },
      { role: "user", content: { type: "text", text: "Please analyze the image above." } },
    ],
  }));

  // ===== LOGGING, COMPLETION =====

  mcpServer.server.setRequestHandler("logging/setLevel", (request) => {
    sendLog("info", `Log level set to: ${request.params.level}`);
    return {};
  });
  mcpServer.server.setRequestHandler("completion/complete", () => ({
    completion: { values: [], total: 0, hasMore: false },
  }));

  return mcpServer;
}

const jsonError = (status: number, code: number, message: string) =>
  Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status });

/** Starts the v2 conformance server on 127.0.0.1, guarded or not. */
export function startConformanceServerV2(
  options: ConformanceServerV2Options = {},
): Promise<ConformanceServerV2> {
  const transports = new Map<string, WebStandardStreamableHTTPServerTransport>();
  const servers = new Map<string, McpServer>();
  const events = new Map<string, { eventId: string; message: unknown; streamId: string }>();
  const fixture: Fixture = {
    transports,
    notify: () => modern.notify,
    requestStateCodec: createRequestStateCodec<Record<string, unknown>>({
      key: crypto.getRandomValues(new Uint8Array(32)),
    }),
  };
  // 2026-07-28 traffic, served per request from the same fixture definition.
  const modern = createMcpHandler(() => createMcpServer(fixture));
  const hostnames = localhostAllowedHostnames();
  const origins = localhostAllowedOrigins();

  /** The fixture's routing; `parsed` is the body a guard already parsed (forwardBody "parsed"). */
  async function handler(request: Request, parsed?: unknown): Promise<Response> {
    const rejected = hostHeaderValidationResponse(request, hostnames) ??
      originValidationResponse(request, origins);
    if (rejected !== undefined) return rejected;
    const sessionId = request.headers.get("mcp-session-id");
    if (request.method === "GET" || request.method === "DELETE") {
      if (sessionId === null) return new Response("Missing session ID", { status: 400 });
      const transport = transports.get(sessionId);
      if (transport === undefined) return new Response("Session not found", { status: 404 });
      return await transport.handleRequest(request);
    }
    if (request.method !== "POST") return new Response("Method not allowed", { status: 405 });

    let body = parsed;
    if (body === undefined) {
      // Read a copy, so a body that is not JSON still reaches the transport (its parse error).
      try {
        body = JSON.parse(await request.clone().text());
      } catch {
        body = undefined;
      }
    }
    const forward = body === undefined ? {} : { parsedBody: body };
    const inbound = classifyInboundRequest({
      httpMethod: request.method,
      protocolVersionHeader: request.headers.get("mcp-protocol-version") ?? undefined,
      mcpMethodHeader: request.headers.get("mcp-method") ?? undefined,
      body,
    });
    if (inbound.kind !== "legacy") return await modern.fetch(request, forward);

    if (sessionId !== null) {
      const transport = transports.get(sessionId);
      if (transport === undefined) return jsonError(404, -32001, "Session not found");
      return await transport.handleRequest(request, forward);
    }
    if (!isInitializeRequest(body)) {
      return jsonError(400, -32000, "Bad Request: Session ID required");
    }
    const mcpServer = createMcpServer(fixture);
    const transport: WebStandardStreamableHTTPServerTransport =
      new WebStandardStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        eventStore: createEventStore(events),
        retryInterval: 5_000,
        onsessioninitialized: (id: string) => {
          transports.set(id, transport);
          servers.set(id, mcpServer);
        },
      });
    transport.onclose = () => {
      const id = transport.sessionId;
      if (id !== undefined && transports.get(id) === transport) {
        transports.delete(id);
        servers.get(id)?.close();
        servers.delete(id);
      }
    };
    await mcpServer.connect(transport);
    const response = await transport.handleRequest(request, forward);
    if (transport.sessionId === undefined) await mcpServer.close();
    return response;
  }

  const guard = options.guard;
  const registries = guard === undefined
    ? undefined
    : { owners: new SessionOwnerRegistry(), cancellations: new CancellationRegistry() };
  const endpoint = guard === undefined || registries === undefined
    ? (request: Request) => handler(request)
    : guardSessions(
      (request, context) =>
        handler(request, guard.forwardBody === "parsed" ? context.parsedBody : undefined),
      {
        ...registries,
        principal: () => "conformance-client",
        forwardBody: guard.forwardBody,
        ...(guard.tasks === false ? { tasks: false as const } : {}),
      },
    );
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} },
    (request) =>
      new URL(request.url).pathname === "/mcp"
        ? endpoint(request)
        : jsonError(404, -32000, "Not Found"),
  );
  return Promise.resolve({
    url: `http://127.0.0.1:${http.addr.port}/mcp`,
    async close() {
      await Promise.all([...transports.values()].map((transport) => transport.close()));
      transports.clear();
      await http.shutdown();
      await modern.close();
      await registries?.owners.close();
      await registries?.cancellations.close();
    },
  });
}

if (import.meta.main) {
  const arg = (name: string) =>
    Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const forwardBody = arg("guard");
  if (forwardBody !== undefined && forwardBody !== "parsed" && forwardBody !== "copy") {
    throw new Error(`--guard=parsed or --guard=copy, not ${forwardBody}`);
  }
  const server = await startConformanceServerV2({
    guard: forwardBody === undefined ? undefined : { forwardBody, tasks: arg("tasks") !== "false" },
    port: Number(arg("port") ?? 0),
  });
  console.log(server.url);
  const stop = () => server.close().then(() => Deno.exit(0));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
