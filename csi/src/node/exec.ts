/** Running the node's tools (losetup, mount, mkfs, qemu-storage-daemon): arguments as a list, never a shell. */
import { execFile } from 'node:child_process';
import { CsiError } from '../errors.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export type Runner = (cmd: string, args: string[], o?: { allowFail?: boolean; timeoutMs?: number }) => Promise<RunResult>;

export const run: Runner = (cmd, args, o = {}) => new Promise((resolve, reject) => {
  execFile(cmd, args, { timeout: o.timeoutMs ?? 120_000, maxBuffer: 4 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
    const code = err ? (typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : -1) : 0;
    if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
      reject(new CsiError('FailedPrecondition', `${cmd} is not installed on this node`));
      return;
    }
    if (code !== 0 && !o.allowFail) {
      reject(new CsiError('Internal', `${cmd} ${args.join(' ')} failed (exit ${code}): ${(stderr || stdout || String(err)).trim()}`));
      return;
    }
    resolve({ code, stdout, stderr });
  });
});
