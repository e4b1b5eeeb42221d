#!/usr/bin/env node
// The README's first command. On a fresh clone it installs and builds what is missing, then brings up
// the embedded default: the local control plane, the operator, simulated nodes and the CSI driver; as root
// a shadowset PVC provisioned by the driver and a pod writing to it, else (saying why) an example two-member
// ShadowSet. Ctrl-C tears it all down.
//   --kind   the same on a kind cluster built here, with the Helm chart (root; e2e/scenarios/src/cli/kind-demo.ts)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (!existsSync(join(root, 'node_modules'))) {
  console.log('demo: installing npm dependencies (npm ci)…');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
console.log('demo: building (npm run build: the CSI spec fetched once, then tsc -b)…');
run('npm', ['run', 'build', '--silent']);
if (process.argv.includes('--kind')) {
  const child = spawn(process.execPath, [join(root, 'e2e', 'scenarios', 'dist', 'cli', 'kind-demo.js')], { cwd: root, stdio: 'inherit' });
  // A terminal's Ctrl-C reaches the demo itself, which then tears down; this process waits for that.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => child.kill('SIGTERM'));
  child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  const { runDemo } = await import('../testkit/dist/cluster/demo.js');
  // The PVC's size (its members are as large plus the engine's 8 MiB header), or each member's without root.
  await runDemo({ memberMiB: Number(process.env.DEMO_MEMBER_MIB ?? 256) });
}
