// Locates the control-plane binaries by running the build script, which is a no-op when its cache is
// current. The script is the single source of truth for versions and paths, so tests never skip for
// want of binaries: on a cold machine they wait for the build instead.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { e2eRoot, repoRoot } from '../paths.js';

export interface ClusterBinaries {
  kubernetesVersion: string;
  etcdVersion: string;
  kubeApiserver: string;
  etcd: string;
}

let cached: Promise<ClusterBinaries> | undefined;

export function ensureBinaries(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<ClusterBinaries> {
  cached ??= new Promise<ClusterBinaries>((resolve, reject) => {
    const script = join(e2eRoot, 'scripts', 'build-cluster.mjs');
    const child = spawn(process.execPath, [script, '--json'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => {
      const text = c.toString('utf8');
      stderr += text;
      for (const line of text.split('\n')) if (line.trim()) log(line);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`cluster build failed (exit ${code}):\n${stderr.slice(-4000)}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as ClusterBinaries);
      } catch (err) {
        reject(new Error(`cluster build printed no paths: ${String(err)}\n${stdout}`));
      }
    });
  });
  cached.catch(() => (cached = undefined));
  return cached;
}
