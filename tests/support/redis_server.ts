/**
 * A real `redis-server` (from apt) for tests and benchmarks: a free loopback
 * port, no persistence, stopped with SIGTERM and awaited, restartable on the
 * same port. {@linkcode startRedisCluster} starts a Redis Cluster of several
 * masters the same way (joined with `redis-cli --cluster create`).
 *
 * ```ts ignore
 * await using redis = await startRedis();
 * const store = redisStore({ url: redis.url });
 * await redis.stop();   // simulate an outage
 * await redis.start();  // same port, empty data
 *
 * await using cluster = await startRedisCluster(); // three masters
 * const clustered = redisStore({ cluster: { rootNodes: cluster.urls } });
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

/** A running Redis Cluster of loopback masters (see {@linkcode startRedisCluster}). */
export interface RedisCluster extends AsyncDisposable {
  /** Each master's client port. */
  readonly ports: readonly number[];
  /** `redis://127.0.0.1:<port>` of each master. */
  readonly urls: readonly string[];
  /** Sends one command to the master on `port` over a raw connection; the raw reply text. */
  command(port: number, ...args: string[]): Promise<string>;
  /**
   * Stops the master on `port` (SIGTERM, awaited): its slots go down, the
   * others keep serving theirs (`cluster-require-full-coverage no`).
   */
  stopNode(port: number): Promise<void>;
  /** Starts a stopped master again: same ports and `nodes.conf` (its slots), empty data. */
  startNode(port: number): Promise<void>;
  /** Stops every node (SIGTERM, awaited) and removes their `nodes.conf` files. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@linkcode startRedisCluster}. */
export interface StartRedisClusterOptions {
  /** How many masters (no replicas); at least 3, as `redis-cli --cluster create` requires. */
  masters?: number;
}

/** Runs `redis-cli` with `args`; its exit status and output (both streams). */
async function redisCli(args: string[]): Promise<{ success: boolean; output: string }> {
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command("redis-cli", { args, stdin: "null" }).output();
  } catch (err) {
    throw new Error(
      `redis-cli could not be run (${err}): the Redis Cluster test needs it on PATH ` +
        "(Debian: apt-get install redis-tools, which redis-server depends on)",
    );
  }
  const text = new TextDecoder();
  return {
    success: result.success,
    output: text.decode(result.stdout) + text.decode(result.stderr),
  };
}

/**
 * Starts a Redis Cluster: `masters` (default 3) `redis-server --cluster-enabled
 * yes` processes on free loopback ports (client and cluster-bus ports), each
 * with its `nodes.conf` in one temp dir, joined with `redis-cli --cluster
 * create --cluster-replicas 0 --cluster-yes`; resolves once every node
 * reports `cluster_state:ok`. Throws (after stopping whatever it started)
 * with the tool's output when the cluster cannot form: a test that needs it
 * fails, it never skips.
 */
export async function startRedisCluster(
  options: StartRedisClusterOptions = {},
): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  if (masters < 3) throw new Error("a Redis Cluster needs at least 3 masters");
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-redis-cluster-" });
  const nodes: { node: ClusterNode; proc: Deno.ChildProcess | null }[] = [];
  const ports: number[] = [];
  let stopped = false;

  async function stopOne(entry: (typeof nodes)[number]): Promise<void> {
    const proc = entry.proc;
    if (proc === null) return;
    entry.proc = null;
    try {
      proc.kill("SIGTERM");
    } catch {
      // already gone
    }
    await proc.status;
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    await Promise.all(nodes.map(stopOne));
    // Every node's nodes.conf (and anything else it wrote) lives here.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }

  const entryOf = (port: number) => {
    const entry = nodes.find((n) => n.node.port === port);
    if (entry === undefined) throw new Error(`no cluster node on port ${port}`);
    return entry;
  };

  try {
    for (let i = 0; i < masters; i++) {
      const started = await startNode(dir, i);
      nodes.push(started);
      ports.push(started.node.port);
    }
    const created = await redisCli([
      "--cluster",
      "create",
      ...ports.map((p) => `127.0.0.1:${p}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    if (!created.success) {
      throw new Error(`redis-cli --cluster create failed:\n${created.output}`);
    }
    // Every node must see every slot covered before a client may rely on any of them.
    const deadline = Date.now() + 15_000;
    for (const port of ports) {
      let info = "";
      while (!info.includes("cluster_state:ok")) {
        if (Date.now() > deadline) {
          throw new Error(`the cluster did not reach cluster_state:ok on ${port}:\n${info}`);
        }
        info = await rawCommand(port, ["CLUSTER", "INFO"]).catch((err) => String(err));
        if (!info.includes("cluster_state:ok")) await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    ports,
    urls: ports.map((p) => `redis://127.0.0.1:${p}`),
    command: (port: number, ...args: string[]) => rawCommand(port, args),
    stopNode: (port: number) => stopOne(entryOf(port)),
    async startNode(port: number) {
      const entry = entryOf(port);
      if (entry.proc !== null) return;
      const proc = spawnNode(dir, entry.node);
      if (!(await answersPing(entry.node.port, proc))) {
        throw new Error(`cluster node on ${port} did not start again`);
      }
      entry.proc = proc;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** One node of a test cluster: its client and bus ports, and its `nodes.conf` name. */
interface ClusterNode {
  index: number;
  port: number;
  busPort: number;
}

/** Spawns the cluster-enabled `redis-server` of `node`, its files in `dir`. */
function spawnNode(dir: string, node: ClusterNode): Deno.ChildProcess {
  return new Deno.Command(BINARY, {
    args: [
      "--port",
      String(node.port),
      "--bind",
      "127.0.0.1",
      "--cluster-enabled",
      "yes",
      "--cluster-port",
      String(node.busPort),
      "--cluster-config-file",
      `nodes-${node.index}.conf`,
      "--cluster-node-timeout",
      "5000",
      // A master that is down takes only its own slots down.
      "--cluster-require-full-coverage",
      "no",
      "--save",
      "",
      "--appendonly",
      "no",
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
}

/** Waits (at most 5 s) until `proc` answers PING on `port`; false if it exited or never did. */
async function answersPing(port: number, proc: Deno.ChildProcess): Promise<boolean> {
  let exited = false;
  proc.status.then(() => exited = true);
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline && !exited) {
    try {
      if ((await rawCommand(port, ["PING"], 200)).startsWith("+PONG")) return true;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  if (!exited) proc.kill("SIGKILL");
  await proc.status;
  return false;
}

/** Starts node `index` in `dir` on free ports; retries with new ones if they were taken. */
async function startNode(
  dir: string,
  index: number,
): Promise<{ node: ClusterNode; proc: Deno.ChildProcess | null }> {
  for (let attempt = 0;; attempt++) {
    const node = { index, port: freePort(), busPort: freePort() };
    const proc = spawnNode(dir, node);
    if (await answersPing(node.port, proc)) return { node, proc };
    await Deno.remove(`${dir}/nodes-${index}.conf`).catch(() => {});
    if (attempt >= 3) throw new Error(`cluster node ${index} did not start (port ${node.port})`);
  }
}
