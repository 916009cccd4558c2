/**
 * A real `redis-server` (from apt) for tests and benchmarks: a free loopback
 * port, no persistence, stopped with SIGTERM and awaited, restartable on the
 * same port.
 *
 * ```ts ignore
 * await using redis = await startRedis();
 * const store = redisStore({ url: redis.url });
 * await redis.stop();   // simulate an outage
 * await redis.start();  // same port, empty data
 * ```
 *
 * @module
 */

/** A running (or stopped) test Redis server. */
export interface RedisServer extends AsyncDisposable {
  /** The TCP port (stays the same across `stop` / `start`). */
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** Whether the server process is running. */
  readonly running: boolean;
  /** Starts the server again on the same port (its data is gone unless `persistent`). */
  start(): Promise<void>;
  /** SIGTERM, then waits for the process to exit. Idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its connections and data but stops answering. */
  pause(): void;
  /** Resumes a paused server. */
  resume(): void;
  /** Sends one command over a raw connection and returns the raw reply text. */
  command(...args: string[]): Promise<string>;
}

const BINARY = "redis-server";

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function encode(args: string[]): Uint8Array {
  let out = `*${args.length}\r\n`;
  for (const a of args) out += `$${new TextEncoder().encode(a).length}\r\n${a}\r\n`;
  return new TextEncoder().encode(out);
}

/** Sends one RESP command and reads until a complete simple reply arrived (tests only). */
async function rawCommand(port: number, args: string[], timeoutMs = 1_000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* already closed */ }
  }, timeoutMs);
  try {
    await conn.write(encode(args));
    const buf = new Uint8Array(64 * 1024);
    let text = "";
    while (!text.endsWith("\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/** Options of {@linkcode startRedis}. */
export interface StartRedisOptions {
  /** Port to listen on; default a free one. */
  port?: number;
  /**
   * Keep data across `stop` / `start` (an append-only file fsynced on every
   * write, in a temp dir). Default `false`: no persistence at all.
   */
  persistent?: boolean;
}

/** Starts `redis-server` on a free loopback port (or `port`) and waits until it answers PING. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  let port = options.port ?? freePort();
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-redis-" });
  let child: Deno.ChildProcess | null = null;

  async function spawn(): Promise<void> {
    for (let attempt = 0;; attempt++) {
      const proc = new Deno.Command(BINARY, {
        args: [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--save",
          "",
          ...(options.persistent
            ? ["--appendonly", "yes", "--appendfsync", "always"]
            : ["--appendonly", "no"]),
          "--dir",
          dir,
          "--daemonize",
          "no",
          "--loglevel",
          "warning",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const deadline = Date.now() + 5_000;
      let exited = false;
      proc.status.then(() => exited = true);
      while (Date.now() < deadline && !exited) {
        try {
          if ((await rawCommand(port, ["PING"], 200)).startsWith("+PONG")) {
            child = proc;
            return;
          }
        } catch {
          // not listening yet
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!exited) {
        proc.kill("SIGKILL");
      }
      await proc.status;
      // The port was taken meanwhile (only possible for a port we picked): try another.
      if (options.port !== undefined || attempt >= 3) {
        throw new Error(`redis-server did not start on port ${port}`);
      }
      port = freePort();
    }
  }

  async function stop(): Promise<void> {
    const proc = child;
    if (proc === null) return;
    child = null;
    try {
      proc.kill("SIGCONT");
      proc.kill("SIGTERM");
    } catch {
      // already gone
    }
    await proc.status;
  }

  await spawn();
  return {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get running() {
      return child !== null;
    },
    async start() {
      if (child === null) await spawn();
    },
    stop,
    pause: () => child?.kill("SIGSTOP"),
    resume: () => child?.kill("SIGCONT"),
    command: (...args: string[]) => rawCommand(port, args),
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
