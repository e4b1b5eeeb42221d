#!/usr/bin/env node
// Puts the CSI spec's csi.proto where the driver loads it (csi/proto/, ignored by git). The file comes from
// the Go module github.com/container-storage-interface/spec, fetched with `go mod download` (so the module
// proxy's checksum database vouches for it) and cached under .cache/csi-spec/<version>/. A no-op when
// csi/proto/ already holds this version. The spec is Apache-2.0: its LICENSE travels beside the copy.
//
// Usage: node csi/scripts/csi-spec.mjs [--print-version]
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The newest 1.x release the module proxy serves; the Dockerfile names the same version (a unit test checks). */
export const CSI_SPEC_MODULE = 'github.com/container-storage-interface/spec';
export const CSI_SPEC_VERSION = process.env.SHADOWSET_CSI_SPEC_VERSION ?? 'v1.13.0';
const FILES = ['csi.proto', 'LICENSE'];

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const cacheDir = join(repoRoot, '.cache', 'csi-spec', CSI_SPEC_VERSION);
const outDir = join(here, '..', 'proto');

function versionIn(dir) {
  try {
    return readFileSync(join(dir, 'VERSION'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function download() {
  // Outside any module, so the project's own go.mod files (if any) play no part.
  const cwd = mkdtempSync(join(tmpdir(), 'csi-spec-'));
  try {
    const r = spawnSync('go', ['mod', 'download', '-json', `${CSI_SPEC_MODULE}@${CSI_SPEC_VERSION}`], {
      cwd, encoding: 'utf8', env: { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' },
    });
    if (r.error) throw new Error(`the Go toolchain is needed to fetch the CSI spec (${r.error.message})`);
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')) || '{}');
    if (r.status !== 0 || info.Error || !info.Dir) {
      throw new Error(`go mod download ${CSI_SPEC_MODULE}@${CSI_SPEC_VERSION} failed: ${info.Error ?? r.stderr}`);
    }
    return info.Dir;
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}

function place(from, to) {
  mkdirSync(to, { recursive: true });
  for (const f of FILES) copyFileSync(join(from, f), join(to, f));
  writeFileSync(join(to, 'VERSION'), `${CSI_SPEC_VERSION}\n`);
}

export function ensureCsiSpec() {
  if (versionIn(outDir) === CSI_SPEC_VERSION && FILES.every((f) => existsSync(join(outDir, f)))) return outDir;
  if (versionIn(cacheDir) !== CSI_SPEC_VERSION) {
    const dir = download();
    place(dir, cacheDir);
    process.stderr.write(`csi-spec: fetched ${CSI_SPEC_MODULE}@${CSI_SPEC_VERSION}\n`);
  }
  place(cacheDir, outDir);
  return outDir;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--print-version')) {
    process.stdout.write(`${CSI_SPEC_VERSION}\n`);
  } else {
    try {
      ensureCsiSpec();
    } catch (e) {
      process.stderr.write(`csi-spec: ${e.message}\n`);
      process.exit(1);
    }
  }
}
