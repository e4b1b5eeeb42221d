// The cluster a scenario file runs on, by E2E_CLUSTER (local, the default, or kind). Apart from the
// interface (cluster-env.ts) that both implementations import, so no module imports its own importer.
import type { ClusterEnv } from './cluster-env.js';

export async function startClusterEnv(name: string): Promise<ClusterEnv> {
  const mode = process.env.E2E_CLUSTER ?? 'local';
  if (mode === 'local') return (await import('./local-env.js')).LocalEnv.start(name);
  if (mode === 'kind') return (await import('./kind-env.js')).KindEnv.start(name);
  throw new Error(`E2E_CLUSTER=${mode}: unknown mode (local or kind)`);
}
