/**
 * Paths the CO hands the node plugin (staging and target paths) are used as mount points and files, as
 * root. Each must be an absolute, normal path under the kubelet's directory, and no symlink on the way may
 * lead out of it.
 */
import { realpath } from 'node:fs/promises';
import { dirname, isAbsolute, normalize } from 'node:path';
import { invalid } from '../errors.js';

async function deepestReal(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    try {
      return await realpath(p);
    } catch {
      if (p === dirname(p)) return p;
    }
  }
}

export async function checkPath(path: string | undefined, name: string, kubeletDir: string): Promise<string> {
  if (!path) throw invalid(`${name} is required`);
  if (path.includes('\0') || !isAbsolute(path) || normalize(path).replace(/\/+$/, '') !== path.replace(/\/+$/, '') || path.length > 4096) {
    throw invalid(`${name} ${JSON.stringify(path)} must be an absolute path without . or .. parts`);
  }
  const root = kubeletDir.replace(/\/+$/, '');
  const clean = path.replace(/\/+$/, '');
  if (!clean.startsWith(`${root}/`)) throw invalid(`${name} ${clean} is not under the kubelet's directory ${root}`);
  const realRoot = await realpath(root).catch(() => root);
  const real = await deepestReal(clean);
  if (real !== realRoot && !real.startsWith(`${realRoot}/`)) throw invalid(`${name} ${clean} leads out of ${root} (to ${real})`);
  return clean;
}
