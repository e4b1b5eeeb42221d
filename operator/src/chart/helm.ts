/** Runs the real helm binary (see tools.ts) on the chart, for tests. */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { ensureTools, repoRoot } from './tools.js';

export const chartDir = join(repoRoot, 'charts', 'shadowset');

export interface HelmResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A rendered Kubernetes object, loosely typed: tests look into it. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** helm with its cache, config and data kept in .cache/helm, not in the user's home. */
export function helm(args: string[], input?: string): HelmResult {
  const home = join(repoRoot, '.cache', 'helm');
  mkdirSync(home, { recursive: true });
  const env = {
    ...process.env,
    HELM_CACHE_HOME: join(home, 'cache'),
    HELM_CONFIG_HOME: join(home, 'config'),
    HELM_DATA_HOME: join(home, 'data'),
  };
  const res = spawnSync(ensureTools().helm, args, { input, encoding: 'utf8', env, timeout: 60_000 });
  if (res.error) throw res.error;
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

/** `helm template` with the given values (passed as JSON on stdin); throws with helm's message if it fails. */
export function template(values: object = {}, namespace = 'shadowset-system', release = 'shadowset'): KubeObject[] {
  const res = helm(['template', release, chartDir, '--namespace', namespace, '--values', '-'], JSON.stringify(values));
  if (res.status !== 0) throw new Error(`helm template failed (${res.status}): ${res.stderr}`);
  return yaml.loadAll(res.stdout).filter((d): d is KubeObject => !!d && typeof d === 'object');
}
