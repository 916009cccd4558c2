/**
 * Run by `deno task test` before the suite: makes sure the tools the tests
 * start for real are there. `redis-server` (the Redis tests start their own
 * on a free loopback port) and `redis-cli` (the Redis Cluster test joins its
 * three masters with `redis-cli --cluster create`; Debian's `redis-server`
 * depends on `redis-tools`, which has it) are installed from Debian's apt
 * when missing, as root or with passwordless sudo; otherwise the task stops
 * with the command to run.
 *
 * @module
 */

async function has(command: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("sh", {
      args: ["-c", `command -v ${command}`],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

async function run(args: string[]): Promise<boolean> {
  console.error(`preflight: ${args.join(" ")}`);
  const { success } = await new Deno.Command(args[0], {
    args: args.slice(1),
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return success;
}

if (!(await has("redis-server")) || !(await has("redis-cli"))) {
  const root = Deno.uid() === 0;
  const sudo = root ? [] : (await has("sudo")) ? ["sudo", "-n"] : null;
  const installed = sudo !== null && (await has("apt-get")) &&
    (await run([...sudo, "apt-get", "update", "-qq"])) &&
    (await run([...sudo, "apt-get", "install", "-y", "-qq", "redis-server", "redis-tools"]));
  if (!installed || !(await has("redis-server")) || !(await has("redis-cli"))) {
    console.error(
      "preflight: the Redis tests need redis-server and redis-cli on PATH; install them with\n" +
        "  sudo apt-get install -y redis-server redis-tools",
    );
    Deno.exit(1);
  }
}
