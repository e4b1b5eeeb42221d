#!/usr/bin/env node
// Puts the protos the driver loads where it loads them (csi/proto/, ignored by git): the CSI spec's csi.proto
// from the Go module github.com/container-storage-interface/spec, and the kubelet's plugin-registration
// api.proto (the service the node plugin serves so the kubelet registers it) from the Go module k8s.io/kubelet,
// into csi/proto/pluginregistration/. Both are fetched with `go mod download` (so the module proxy's checksum
// database vouches for them) and cached under .cache/csi-spec/. A no-op when csi/proto/ already holds these
// versions. Both modules are Apache-2.0: each LICENSE travels beside its copy.
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
/** The kubelet's API module at the Kubernetes version the kind tier runs (1.34); the proto is stable (v1). */
export const KUBELET_MODULE = 'k8s.io/kubelet';
export const KUBELET_VERSION = process.env.SHADOWSET_KUBELET_API_VERSION ?? 'v0.34.12';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const protoDir = join(here, '..', 'proto');
// What is fetched: each source's files (name in the output → path in the module) and where they go.
const SOURCES = [
  {
    module: CSI_SPEC_MODULE, version: CSI_SPEC_VERSION, cacheDir: join(repoRoot, '.cache', 'csi-spec', CSI_SPEC_VERSION), outDir: protoDir,
    files: { 'csi.proto': 'csi.proto', LICENSE: 'LICENSE' },
  },
  {
    module: KUBELET_MODULE, version: KUBELET_VERSION, cacheDir: join(repoRoot, '.cache', 'csi-spec', `kubelet-${KUBELET_VERSION}`),
    outDir: join(protoDir, 'pluginregistration'),
    files: { 'api.proto': 'pkg/apis/pluginregistration/v1/api.proto', LICENSE: 'LICENSE' },
  },
];

function versionIn(dir) {
  try {
    return readFileSync(join(dir, 'VERSION'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function download({ module, version }) {
  // Outside any module, so the project's own go.mod files (if any) play no part.
  const cwd = mkdtempSync(join(tmpdir(), 'csi-spec-'));
  try {
    const r = spawnSync('go', ['mod', 'download', '-json', `${module}@${version}`], {
      cwd, encoding: 'utf8', env: { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' },
    });
    if (r.error) throw new Error(`the Go toolchain is needed to fetch ${module} (${r.error.message})`);
    const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')) || '{}');
    if (r.status !== 0 || info.Error || !info.Dir) {
      throw new Error(`go mod download ${module}@${version} failed: ${info.Error ?? r.stderr}`);
    }
    return info.Dir;
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}

function place(src, from, to, fromModule) {
  mkdirSync(to, { recursive: true });
  for (const [name, path] of Object.entries(src.files)) copyFileSync(join(from, fromModule ? path : name), join(to, name));
  writeFileSync(join(to, 'VERSION'), `${src.version}\n`);
}

function ensureSource(src) {
  if (versionIn(src.outDir) === src.version && Object.keys(src.files).every((f) => existsSync(join(src.outDir, f)))) return;
  if (versionIn(src.cacheDir) !== src.version) {
    place(src, download(src), src.cacheDir, true);
    process.stderr.write(`csi-spec: fetched ${src.module}@${src.version}\n`);
  }
  place(src, src.cacheDir, src.outDir, false);
}

export function ensureCsiSpec() {
  for (const src of SOURCES) ensureSource(src);
  return protoDir;
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
