/**
 * What the HTTP load benchmarks (`http_load.ts`, `fleet.ts`) share: starting
 * `http_server.ts` in a child process, opening a session on it as an SDK
 * client does, the request they load it with, and a process's CPU time.
 *
 * @module
 */

import { headers } from "./mcp_headers.ts";

/** A benchmark server in a child process. */
export interface BenchServer {
  /** Its MCP endpoint. */
  url: string;
  child: Deno.ChildProcess;
}

/** Starts `http_server.ts` with `flags` and waits until it listens. */
export async function startBenchServer(flags: string[], name = "a"): Promise<BenchServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-env",
      new URL("./http_server.ts", import.meta.url).pathname,
      ...flags,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening \d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${name} server exited before listening`);
    text += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return { url: `http://127.0.0.1:${text.match(/listening (\d+)/)![1]}/mcp`, child };
}

/** Initializes a session the way an SDK client does; returns its id. */
export async function openSession(url: string, token: string, client = "bench"): Promise<string> {
  const init = await fetch(url, {
    method: "POST",
    headers: headers(token),
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: client, version: "1" },
      },
    }),
  });
  await init.body?.cancel();
  const sid = init.headers.get("mcp-session-id");
  if (!init.ok || sid === null) throw new Error(`initialize failed: HTTP ${init.status}`);
  const ready = await fetch(url, {
    method: "POST",
    headers: headers(token, sid),
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  await ready.body?.cancel();
  if (ready.status !== 202) throw new Error(`initialized got HTTP ${ready.status}`);
  return sid;
}

let nextId = 1;

/** A `tools/call` of `echo`, with a fresh request id each time. */
export function echoCall(): string {
  return JSON.stringify({
    jsonrpc: "2.0",
    id: nextId++,
    method: "tools/call",
    params: { name: "echo", arguments: { text: "hello" } },
  });
}

/** CPU time (µs) process `pid` has used so far, all its threads (Linux `/proc`, 100 ticks/s). */
export async function processCpuMicros(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000; // utime + stime
}
