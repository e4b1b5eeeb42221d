#!/usr/bin/env node
// The README's first command. On a fresh clone it installs and builds what is missing, then brings up
// the embedded default: the local control plane, the operator, a simulated node running the engine on
// two file-backed members, and an example two-member ShadowSet. Ctrl-C tears it all down.
//   --kind   the same on kind with the Helm chart (needs Docker and kind; not available on every machine)
import { spawnSync } from 'node:child_process';
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
console.log('demo: building (tsc -b)…');
run('npx', ['tsc', '-b']);
if (process.argv.includes('--kind')) {
  run('bash', [join(root, 'scripts', 'demo-kind.sh')]);
  process.exit(0);
}
const { runDemo } = await import('../testkit/dist/cluster/demo.js');
await runDemo({ memberMiB: Number(process.env.DEMO_MEMBER_MIB ?? 256) });
