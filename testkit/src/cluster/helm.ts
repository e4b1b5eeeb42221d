/** Runs the real helm (and kubectl) binaries of tools.ts, for the chart's tests. */
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { repoRoot } from '@shadowset/e2e';
import { ensureTools, type Tools } from './tools.js';

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

/** helm's cache, config and data go to .cache/helm, not to the user's home. */
function helmEnv(): NodeJS.ProcessEnv {
  const home = join(repoRoot, '.cache', 'helm');
  mkdirSync(home, { recursive: true });
  return { ...process.env, HELM_CACHE_HOME: join(home, 'cache'), HELM_CONFIG_HOME: join(home, 'config'), HELM_DATA_HOME: join(home, 'data') };
}

export function helm(args: string[], input?: string): HelmResult {
  const res = spawnSync(ensureTools().helm, args, { input, encoding: 'utf8', env: helmEnv(), timeout: 60_000 });
  if (res.error) throw res.error;
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

/** Runs a tool (helm or kubectl) without blocking the event loop; rejects with its output if it fails. */
export function runTool(tool: keyof Tools, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(ensureTools()[tool], args, { env: helmEnv(), timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** `helm template` with the given values (passed as JSON on stdin); throws with helm's message if it fails. */
export function template(values: object = {}, namespace = 'shadowset-system', release = 'shadowset'): KubeObject[] {
  const res = helm(['template', release, chartDir, '--namespace', namespace, '--values', '-'], JSON.stringify(values));
  if (res.status !== 0) throw new Error(`helm template failed (${res.status}): ${res.stderr}`);
  return yaml.loadAll(res.stdout).filter((d): d is KubeObject => !!d && typeof d === 'object');
}
