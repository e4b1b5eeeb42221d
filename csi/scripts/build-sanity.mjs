#!/usr/bin/env node
// Builds csi-sanity (the CSI conformance suite, cmd/csi-sanity of the Go module
// github.com/kubernetes-csi/csi-test/v5) with `go install` and caches it under .cache/csi-sanity/<version>/.
// A no-op when the cache is current. Prints the binary's path.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CSI_TEST_MODULE = 'github.com/kubernetes-csi/csi-test/v5';
export const CSI_TEST_VERSION = process.env.SHADOWSET_CSI_TEST_VERSION ?? 'v5.6.0';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dir = join(repoRoot, '.cache', 'csi-sanity', CSI_TEST_VERSION);
const bin = join(dir, 'bin', 'csi-sanity');

export function ensureCsiSanity() {
  const goVersion = spawnSync('go', ['env', 'GOVERSION'], { encoding: 'utf8' });
  if (goVersion.error || goVersion.status !== 0) throw new Error('the Go toolchain is needed to build csi-sanity');
  const key = JSON.stringify({ version: CSI_TEST_VERSION, go: goVersion.stdout.trim() });
  const stamp = join(dir, 'build.json');
  if (existsSync(bin) && existsSync(stamp) && readFileSync(stamp, 'utf8') === key) return bin;
  mkdirSync(join(dir, 'bin'), { recursive: true });
  process.stderr.write(`csi-sanity: building ${CSI_TEST_MODULE}/cmd/csi-sanity@${CSI_TEST_VERSION} (once; cached in .cache/)\n`);
  const r = spawnSync('go', ['install', `${CSI_TEST_MODULE}/cmd/csi-sanity@${CSI_TEST_VERSION}`], {
    cwd: dir, stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, GOBIN: join(dir, 'bin'), CGO_ENABLED: '0', GOTOOLCHAIN: 'local', GOMAXPROCS: process.env.GOMAXPROCS ?? '2', GOFLAGS: '-mod=mod' },
  });
  if (r.status !== 0) throw new Error(`go install csi-sanity failed (exit ${r.status})`);
  writeFileSync(stamp, key);
  return bin;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${ensureCsiSanity()}\n`);
  } catch (e) {
    process.stderr.write(`csi-sanity: ${e.message}\n`);
    process.exit(1);
  }
}
