#!/usr/bin/env node
// Runs node's test runner over the compiled tests of one tier (or all of them) in one process tree,
// so CI reads a single summary. Tiers are told apart by file name:
//   *.test.js        unit tests (pure, fast)
//   *.itest.js       integration tests (real engine, real NBD clients, loop devices)
//   *.ctest.js       control-plane tests (real etcd + kube-apiserver built from Go modules)
//   *.torture.js     crash and power-loss tortures (kill -9, or members losing unflushed writes, under a verifying workload)
//   *.e2e.js         end-to-end scenarios on a local cluster (or kind: E2E_CLUSTER=kind), e2e/scenarios
//   *.ktest.js       kind clusters from the node image built here (root, Docker); not part of "all"
// The kind tier also runs the scenarios on one kind cluster (E2E_CLUSTER=kind): every *.e2e.js and the
// stories only real nodes tell (*.kind.js), through e2e/scenarios/dist/cli/kind-run.js.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const tiers = {
  unit: /\.test\.js$/,
  integration: /\.itest\.js$/,
  cluster: /\.ctest\.js$/,
  torture: /\.torture\.js$/,
  e2e: /\.e2e\.js$/,
  kind: /\.ktest\.js$/,
};
// kind clusters need Docker and minutes of CPU: run on purpose (test:kind), not with every tier.
const inAll = Object.entries(tiers).filter(([name]) => name !== 'kind').map(([, p]) => p);
const wanted = process.argv[2] ?? 'all';
const patterns = wanted === 'all' ? inAll : [tiers[wanted]];
if (patterns.some((p) => !p)) {
  console.error(`unknown tier ${wanted}; one of: all, ${Object.keys(tiers).join(', ')}`);
  process.exit(2);
}

function walk(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}
const files = [];
// Every compiled tree that holds tests: the workspaces' dist/ (unit tests beside the code), the engine's
// program tests (engine/itest), the testkit's own tests, the scenarios and the CSI driver.
for (const ws of ['engine', 'engine/itest', 'operator', 'e2e', 'e2e/scenarios', 'testkit', 'csi']) {
  try {
    files.push(...walk(join(ws, 'dist'), []).filter((f) => patterns.some((p) => p.test(f))));
  } catch {
    // a workspace with nothing built yet has no tests
  }
}
files.sort();
if (files.length === 0) {
  console.error(`no test files for tier ${wanted}; did the build run?`);
  process.exit(1);
}
const extra = process.env.TEST_ARGS ? process.env.TEST_ARGS.split(' ') : [];
let interrupted = false;
if (wanted === 'kind') {
  // Ctrl-C reaches the children too: outlive it so the scenario runner can delete its cluster and report.
  process.on('SIGINT', () => (interrupted = true));
  process.on('SIGTERM', () => (interrupted = true));
}
const res = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...extra, ...files], { stdio: 'inherit' });
let status = res.status ?? 1;
await new Promise((r) => setImmediate(r)); // let a signal that came meanwhile be seen
if (wanted === 'kind' && !interrupted) {
  const scenarios = walk(join('e2e', 'scenarios', 'dist'), []).filter((f) => /\.(e2e|kind)\.js$/.test(f)).sort();
  const k = spawnSync(process.execPath, [join('e2e', 'scenarios', 'dist', 'cli', 'kind-run.js'), ...extra, ...scenarios], { stdio: 'inherit' });
  status = status || (k.status ?? 1);
}
process.exit(status);
