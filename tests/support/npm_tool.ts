/**
 * npm packages the tests run as programs (not imported through Deno), installed on first use into
 * `.conformance/<name>/<version>/` (git-ignored), the way `tests/conformance/run.ts` installs the
 * conformance suite. A marker written after a successful install makes a half-finished one
 * (killed, offline) install again instead of being used.
 *
 * @module
 */

const ROOT = new URL("../../.conformance/", import.meta.url);

const path = (url: URL) => decodeURIComponent(url.pathname);

/** An installed npm package: its directory and the directory its programs may use as `HOME`. */
export interface NpmTool {
  /** `<prefix>/node_modules/<package>/`. */
  dir: URL;
  /** An empty directory beside the install, for a program that writes under `$HOME`. */
  home: string;
}

/**
 * Installs `pkg@version` (exact) under `.conformance/<dir>/<version>/` unless already there.
 * Throws with npm's own words when the install fails: a missing tool fails its test.
 */
export async function npmTool(pkg: string, version: string, dir: string): Promise<NpmTool> {
  const prefix = new URL(`${dir}/${version}/`, ROOT);
  const installed = new URL(`node_modules/${pkg}/`, prefix);
  const marker = new URL(".installed", prefix);
  const home = new URL("home/", prefix);
  let done = false;
  try {
    done = (await Deno.readTextFile(marker)) === `${pkg}@${version}`;
  } catch {
    // Not installed yet.
  }
  if (!done) {
    await Deno.mkdir(prefix, { recursive: true });
    const { code, stderr } = await new Deno.Command("npm", {
      args: [
        "install",
        "--prefix",
        path(prefix),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        `${pkg}@${version}`,
      ],
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(180_000),
    }).output();
    if (code !== 0) {
      throw new Error(
        `npm install ${pkg}@${version} failed (${code}): ${new TextDecoder().decode(stderr)}`,
      );
    }
    await Deno.writeTextFile(marker, `${pkg}@${version}`);
  }
  await Deno.mkdir(home, { recursive: true });
  return { dir: installed, home: path(home) };
}
