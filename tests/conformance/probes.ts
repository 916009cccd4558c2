/**
 * Answers the conformance suite does not ask for, compared unguarded vs guarded (issue 18):
 * GET and DELETE without `Mcp-Session-Id`, and requests with odd JSON-RPC ids (strings,
 * numbers, large, fractional, unicode, long; and ids JSON-RPC does not allow), on 2025-era
 * sessions (initialize, ping, a tool call answered over SSE, DELETE) and on 2026-07-28
 * requests. Run by `tests/conformance/run.ts`; a difference fails the task.
 *
 * Each probe is a scripted sequence of raw HTTP requests (bodies written as text, so ids like
 * `12345678901234567890` reach the server as sent); each answer is reduced to what a client
 * sees (status, media type, the `Allow` header, whether a session id was issued, the body),
 * with what differs on every run by design replaced by placeholders: the issued session id
 * and SSE event ids (the guard tags event ids for their session).
 *
 * @module
 */

/** One answer, as compared. */
export interface ProbeAnswer {
  request: string;
  status: number;
  contentType: string | null;
  allow: string | null;
  sessionIssued: boolean;
  /** The body, with a JSON-RPC error's `message` replaced by `<message>`. */
  body: string;
  /** That message: shown, not compared (the code, status and id are what a client acts on). */
  errorMessage?: string;
}

/** One probe's answers. */
export interface ProbeResult {
  name: string;
  answers: ProbeAnswer[];
}

/** One probe whose answers differ between unguarded and guarded. */
export interface ProbeDifference {
  probe: string;
  request: string;
  unguarded: ProbeAnswer | undefined;
  guarded: ProbeAnswer | undefined;
}

const LEGACY_VERSION = "2025-11-25";
const MODERN_VERSION = "2026-07-28";
const ACCEPT = "application/json, text/event-stream";

/**
 * Odd ids, as JSON text. Valid JSON-RPC ids first (strings and numbers), then ids JSON-RPC
 * does not allow for a request (null, boolean, object, array).
 */
export const ODD_IDS: readonly string[] = [
  `0`,
  `-1`,
  `1.5`,
  `1e3`,
  `9007199254740993`,
  `12345678901234567890`,
  `1e999`,
  `""`,
  `"1"`,
  `"id with spaces and \\"quotes\\" and \\\\ backslash"`,
  `"ünïcödé-日本語-🙂"`,
  `"\\ud83d\\ude00 escaped"`,
  `"\\ud800"`,
  `"${"x".repeat(1_000)}"`,
  `"${"y".repeat(2_000)}"`,
  `null`,
  `true`,
  `{"a":1}`,
  `[1]`,
];

interface Step {
  label: string;
  method: "GET" | "POST" | "DELETE";
  headers?: Record<string, string>;
  body?: string;
  /** Send the session id this probe was issued (if any). */
  session?: boolean;
}

const initialize = (id: string) =>
  `{"jsonrpc":"2.0","id":${id},"method":"initialize","params":{"protocolVersion":"${LEGACY_VERSION}","capabilities":{},"clientInfo":{"name":"probe","version":"1.0.0"}}}`;
const initialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}`;

function modernCall(id: string, method: string, params: string): string {
  const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"${MODERN_VERSION}",` +
    `"io.modelcontextprotocol/clientInfo":{"name":"probe","version":"1.0.0"},` +
    `"io.modelcontextprotocol/clientCapabilities":{}}`;
  return `{"jsonrpc":"2.0","id":${id},"method":"${method}","params":{${params}${
    params ? "," : ""
  }${meta}}}`;
}

const legacyHeaders = { "mcp-protocol-version": LEGACY_VERSION };

/** The probes: name -> steps. */
export function probes(): { name: string; steps: Step[] }[] {
  const list: { name: string; steps: Step[] }[] = [
    {
      name: "GET without Mcp-Session-Id",
      steps: [{ label: "GET", method: "GET", headers: { accept: "text/event-stream" } }],
    },
    {
      name: "DELETE without Mcp-Session-Id",
      steps: [{ label: "DELETE", method: "DELETE", headers: legacyHeaders }],
    },
    {
      name: "GET and DELETE without Mcp-Session-Id, 2026-07-28 header",
      steps: [
        {
          label: "GET",
          method: "GET",
          headers: { accept: "text/event-stream", "mcp-protocol-version": MODERN_VERSION },
        },
        {
          label: "DELETE",
          method: "DELETE",
          headers: { "mcp-protocol-version": MODERN_VERSION },
        },
      ],
    },
  ];
  for (const id of ODD_IDS) {
    const shown = id.length > 40 ? `${id.slice(0, 12)}...(${id.length} characters)` : id;
    list.push({
      name: `2025 initialize, id ${shown}`,
      steps: [
        { label: "initialize", method: "POST", body: initialize(id) },
        { label: "DELETE", method: "DELETE", session: true, headers: legacyHeaders },
      ],
    });
    list.push({
      name: `2025 session, id ${shown}`,
      steps: [
        { label: "initialize", method: "POST", body: initialize("1") },
        {
          label: "notifications/initialized",
          method: "POST",
          session: true,
          headers: legacyHeaders,
          body: initialized,
        },
        {
          label: "ping",
          method: "POST",
          session: true,
          headers: legacyHeaders,
          body: `{"jsonrpc":"2.0","id":${id},"method":"ping"}`,
        },
        {
          label: "tools/call test_tool_with_progress (SSE answer)",
          method: "POST",
          session: true,
          headers: legacyHeaders,
          body:
            `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"test_tool_with_progress","arguments":{},"_meta":{"progressToken":${id}}}}`,
        },
        {
          label: "notifications/cancelled",
          method: "POST",
          session: true,
          headers: legacyHeaders,
          body: `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":${id}}}`,
        },
        { label: "DELETE", method: "DELETE", session: true, headers: legacyHeaders },
      ],
    });
    list.push({
      name: `2026-07-28, id ${shown}`,
      steps: [
        {
          label: "tools/call test_simple_text",
          method: "POST",
          headers: {
            "mcp-protocol-version": MODERN_VERSION,
            "mcp-method": "tools/call",
            "mcp-name": "test_simple_text",
          },
          body: modernCall(id, "tools/call", `"name":"test_simple_text","arguments":{}`),
        },
        {
          label: "tasks/get",
          method: "POST",
          headers: {
            "mcp-protocol-version": MODERN_VERSION,
            "mcp-method": "tasks/get",
            "mcp-name": "no-such-task",
          },
          body: modernCall(id, "tasks/get", `"taskId":"no-such-task"`),
        },
      ],
    });
  }
  return list;
}

/** Reads an answer to the end (or for at most `ms`: a stream left open is cut there). */
async function readBody(response: Response, ms: number): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = Date.now() + ms;
  try {
    while (true) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const next = await Promise.race([
        reader.read(),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), left)),
      ]);
      clearTimeout(timer);
      if (next === null || next.done) break;
      text += decoder.decode(next.value, { stream: true });
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text;
}

/** Runs every probe against `url`. */
export async function runProbes(url: string): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  for (const probe of probes()) {
    let session: string | null = null;
    const answers: ProbeAnswer[] = [];
    for (const step of probe.steps) {
      const headers = new Headers({ accept: ACCEPT, ...step.headers });
      if (step.body !== undefined) headers.set("content-type", "application/json");
      if (step.session && session !== null) headers.set("mcp-session-id", session);
      const response = await fetch(url, {
        method: step.method,
        headers,
        body: step.body,
        signal: AbortSignal.timeout(10_000),
      });
      const issued = response.headers.get("mcp-session-id");
      if (issued !== null && session === null) session = issued;
      let body = await readBody(response, 2_000);
      if (session !== null) body = body.replaceAll(session, "<session>");
      const contentType = response.headers.get("content-type")?.split(";")[0].trim() ?? null;
      let errorMessage: string | undefined;
      if (contentType === "application/json") {
        try {
          const json = JSON.parse(body);
          if (typeof json?.error?.message === "string") {
            errorMessage = json.error.message;
            json.error.message = "<message>";
            body = JSON.stringify(json);
          }
        } catch {
          // Not JSON after all: compared as text.
        }
      }
      answers.push({
        request: step.label,
        status: response.status,
        contentType,
        allow: response.headers.get("allow"),
        sessionIssued: issued !== null,
        // Event ids differ on every run (and the guard tags them for their session).
        body: body.replace(/^id:.*$/gm, "id: <event-id>"),
        ...(errorMessage === undefined ? {} : { errorMessage }),
      });
    }
    results.push({ name: probe.name, answers });
  }
  return results;
}

/** Answers alike but for a JSON-RPC error's message text: `[probe, request, unguarded, guarded]`. */
export function messageNotes(
  unguarded: ProbeResult[],
  guarded: ProbeResult[],
): [string, string, string, string][] {
  const notes: [string, string, string, string][] = [];
  for (const u of unguarded) {
    const g = guarded.find((result) => result.name === u.name);
    u.answers.forEach((a, i) => {
      const b = g?.answers[i];
      if (b !== undefined && a.errorMessage !== b.errorMessage) {
        notes.push([u.name, a.request, a.errorMessage ?? "(none)", b.errorMessage ?? "(none)"]);
      }
    });
  }
  return notes;
}

/** The answers that differ. */
export function compareProbes(
  unguarded: ProbeResult[],
  guarded: ProbeResult[],
): ProbeDifference[] {
  const differences: ProbeDifference[] = [];
  for (const u of unguarded) {
    const g = guarded.find((result) => result.name === u.name);
    const steps = Math.max(u.answers.length, g?.answers.length ?? 0);
    for (let i = 0; i < steps; i++) {
      const a = u.answers[i];
      const b = g?.answers[i];
      const compared = (answer: ProbeAnswer | undefined) =>
        answer === undefined ? undefined : JSON.stringify({ ...answer, errorMessage: undefined });
      if (compared(a) !== compared(b)) {
        differences.push({
          probe: u.name,
          request: a?.request ?? b?.request ?? "?",
          unguarded: a,
          guarded: b,
        });
      }
    }
  }
  return differences;
}
