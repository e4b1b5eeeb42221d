/**
 * How the engine's Node process is started so that it stays small under load (engine/README.md,
 * *Memory*). V8 sizes its heap when the process starts, so the engine cannot set this on itself;
 * whoever starts it does: the command's first line (`shadow-engine`, the image's entrypoint), the
 * operator's engine pod (its env, which is also what the embedded demo's simulated nodes pass on when
 * they start the engine as `node <script>`), and the benchmarks.
 *
 * `--max-semi-space-size=2`: under a request load V8's young generation grows to 32 MiB and keeps it;
 * with 2 MiB semi-spaces it stays at 4 MiB (scavenges come more often and each is shorter). Side by
 * side this took 20–35 MiB off the peak RSS; the collector's time stayed about the same, and no
 * throughput cost stood out of the machine's noise. glibc's MALLOC_ARENA_MAX=2 was measured too and
 * gave nothing beyond it, so it is not set.
 */
export const ENGINE_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** `env` with the engine's flags after any NODE_OPTIONS already there (for the same flag, the last wins). */
export function engineProcessEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  out.NODE_OPTIONS = [env.NODE_OPTIONS ?? '', ...ENGINE_NODE_FLAGS].join(' ').trim();
  return out;
}
