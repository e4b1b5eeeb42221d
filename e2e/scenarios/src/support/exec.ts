// Running a command to completion: its output as text (or bytes), its exit code, and a clear error with
// the output when it fails (unless allowFail).
import { spawn } from 'node:child_process';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  allowFail?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

function collect(cmd: string, args: string[], o: RunOptions): Promise<{ code: number | null; out: Buffer; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: o.env ?? process.env });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.stdin.on('error', () => undefined);
    const timer = o.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), o.timeoutMs) : undefined;
    child.once('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : null), out: Buffer.concat(out), err });
    });
    child.stdin.end(o.input ?? '');
  });
}

/** Run a command; rejects with its output when it exits non-zero (unless allowFail). */
export async function run(cmd: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  const r = await collect(cmd, args, { timeoutMs: 120_000, ...o });
  const res = { code: r.code, stdout: r.out.toString('utf8'), stderr: r.err };
  if (r.code !== 0 && !o.allowFail) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${res.stdout}${res.stderr}`.slice(0, 4000));
  }
  return res;
}

/** Run a command and return its standard output as bytes (e.g. a device read through `docker exec dd`). */
export async function runBytes(cmd: string, args: string[], o: RunOptions = {}): Promise<Buffer> {
  const r = await collect(cmd, args, { timeoutMs: 120_000, ...o });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.err}`.slice(0, 4000));
  return r.out;
}

/** Whether a program can be started at all (on PATH and executable). */
export async function available(cmd: string, args: string[] = ['--version']): Promise<boolean> {
  try {
    await collect(cmd, args, { timeoutMs: 20_000 });
    return true;
  } catch {
    return false;
  }
}
