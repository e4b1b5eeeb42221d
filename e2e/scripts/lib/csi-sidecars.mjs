// The CSI driver's sidecars (external-provisioner, -attacher, -resizer), built from their Go modules for the
// kind toolchain, and an image for each. node-driver-registrar is not served by the module proxy: the driver
// registers itself with the kubelet (csi/README.md, *Kubelet plugin registration*).
//
// Each module is built as its own main module, in a writable copy of what `go mod download` fetched (Go's
// checksum database vouches for it): its go.mod, replace directives and go.sum are exactly what upstream
// released, so the dependencies are the ones upstream tested. `go install pkg@version` cannot do this: it
// refuses modules with replace directives, and external-provisioner and external-attacher have them.
import { cpSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cacheRoot, downloadModule, isCurrent, log, runGo, writeStamp } from './build-util.mjs';

// Bumped when the way the sidecars are built changes.
const RECIPE = 1;
const PKG_LINE = /^[\w.~-]+(\/[\w.~+-]+)*$/;

/** The sidecars: the image name is shadowset.local/<name>:<version>, the default of the chart's csi values. */
export const SIDECARS = [
  { name: 'csi-provisioner', module: 'github.com/kubernetes-csi/external-provisioner/v6', version: 'v6.4.0' },
  { name: 'csi-attacher', module: 'github.com/kubernetes-csi/external-attacher/v4', version: 'v4.13.0' },
  { name: 'csi-resizer', module: 'github.com/kubernetes-csi/external-resizer/v2', version: 'v2.3.0' },
];

/** One sidecar's static binary in .cache/cluster/<name>-<version>/bin/<name>; a no-op when current. */
async function buildSidecar(gover, { name, module, version }) {
  const dir = join(cacheRoot, `${name}-${version}`);
  const key = { recipe: RECIPE, module, version, go: gover };
  if (isCurrent(dir, key, [name])) {
    log(`${name} ${version}: cached`);
    return dir;
  }
  mkdirSync(join(dir, 'bin'), { recursive: true });
  const info = await downloadModule(module, version, dir);
  const src = join(dir, 'src');
  rmSync(src, { recursive: true, force: true });
  // the module cache is read-only; go needs a directory it may treat as its main module
  cpSync(info.Dir, src, { recursive: true });
  const tmp = join(dir, 'bin', `${name}.tmp`);
  log(`${name} ${version}: building ./cmd/${name} in ${module}`);
  // -mod=readonly: upstream's go.sum must cover everything, or the build fails instead of resolving anew
  await runGo(
    ['build', '-v', '-p', '2', '-mod=readonly', '-trimpath', '-buildvcs=false', `-ldflags=-s -w -X main.version=${version}`, '-o', tmp, `./cmd/${name}`],
    { cwd: src, what: `go build ${name} ${version} (packages compiled)`, count: PKG_LINE },
  );
  renameSync(tmp, join(dir, 'bin', name));
  rmSync(src, { recursive: true, force: true });
  writeStamp(dir, key, {});
  return dir;
}

/** Builds every sidecar's binary; returns [{ name, version, path, key }] (key: the build stamp's). */
export async function buildSidecarBinaries(gover) {
  const out = [];
  for (const s of SIDECARS) {
    const dir = await buildSidecar(gover, s);
    out.push({ ...s, path: join(dir, 'bin', s.name), key: JSON.stringify({ recipe: RECIPE, module: s.module, version: s.version, go: gover }) });
  }
  return out;
}

/**
 * An image per sidecar: FROM scratch plus the one static binary (CGO_ENABLED=0), run as the chart's
 * non-root user. Tagged shadowset.local/<name>:<version> (the chart's default) and with the inputs' hash.
 */
export async function buildSidecarImages(work, buildImage, binaries) {
  const images = [];
  for (const b of binaries) {
    const dockerfile = [
      'FROM scratch',
      `COPY ${b.name} /usr/local/bin/${b.name}`,
      // nobody's uid in distroless images; the chart sets its own securityContext as well
      'USER 65532:65532',
      `ENTRYPOINT ["/usr/local/bin/${b.name}"]`,
      '',
    ].join('\n');
    const ref = `shadowset.local/${b.name}:${b.version}`;
    await buildImage(work, { name: b.name, dockerfile, files: { [b.name]: b.path }, inputs: [b.key], tags: [ref] });
    images.push(ref);
  }
  return images;
}
