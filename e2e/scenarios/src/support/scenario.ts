// Scenarios of one file share a cluster and build on each other: a failed scenario prints what the
// cluster looked like, and the ones after it are skipped rather than failing for the same reason.
import { test, type TestContext } from 'node:test';
import type { ClusterEnv } from '../env/cluster-env.js';

export class ScenarioChain {
  private failed: string | null = null;

  constructor(private readonly env: () => ClusterEnv | undefined, private readonly ns: string) {}

  scenario(name: string, fn: (note: (msg: string) => void, t: TestContext) => Promise<void>, timeoutMs = 180_000): void {
    test(name, { timeout: timeoutMs }, async (t) => {
      if (this.failed) {
        t.skip(`scenario "${this.failed}" failed before it`);
        return;
      }
      const t0 = Date.now();
      try {
        await fn((msg) => t.diagnostic(msg), t);
        t.diagnostic(`${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (e) {
        this.failed = name;
        const env = this.env();
        if (env) process.stderr.write(`\n==== ${name} failed; the cluster:\n${await env.diagnostics(this.ns).catch((x: Error) => x.message)}\n`);
        throw e;
      }
    });
  }
}
