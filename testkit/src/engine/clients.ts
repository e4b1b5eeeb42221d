/** Real NBD clients driving the virtual unit: nbdinfo, nbdcopy, qemu-io, qemu-img and fio (nbd engine). */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, type RunResult } from './support.js';

/** nbdinfo --json for one export. */
export async function nbdinfo(uri: string): Promise<{ size: number; canFlush: boolean; canFua: boolean; readOnly: boolean; description: string }> {
  const j = JSON.parse((await run('nbdinfo', ['--json', uri])).stdout) as {
    exports: { 'export-size': number; can_flush: boolean; can_fua: boolean; is_read_only: boolean; description?: string }[];
  };
  const e = j.exports[0]!;
  return { size: e['export-size'], canFlush: e.can_flush, canFua: e.can_fua, readOnly: e.is_read_only, description: e.description ?? '' };
}

/** Copy between files, devices and NBD URIs, flushing the destination. */
export function nbdcopy(src: string, dst: string): Promise<RunResult> {
  return run('nbdcopy', ['--flush', src, dst]);
}

/**
 * Run qemu-io commands (e.g. `write -P 0xab 0 1M`, `read -P 0xab 0 1M`) against a raw image or NBD URI.
 * Rejects when any command fails, including a pattern mismatch.
 */
export async function qemuIo(target: string, cmds: string[], o: { timeoutMs?: number } = {}): Promise<RunResult> {
  const args = ['-f', 'raw'];
  for (const c of cmds) args.push('-c', c);
  const r = await run('qemu-io', [...args, target], { allowFail: true, ...o });
  const out = r.stdout + r.stderr;
  if (r.code !== 0 || /verification failed|\bfailed:|^qemu-io:/im.test(out)) {
    throw new Error(`qemu-io ${cmds.join('; ')} on ${target} failed (exit ${r.code}):\n${out.slice(-3000)}`);
  }
  return r;
}

/** qemu-img compare of two raw images / URIs; true when their contents are identical. */
export async function qemuImgSame(a: string, b: string): Promise<boolean> {
  const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b], { allowFail: true });
  if (r.code !== 0 && r.code !== 1) throw new Error(`qemu-img compare failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.code === 0;
}

export interface FioJob {
  uri: string;
  rw: 'write' | 'randwrite' | 'randrw' | 'read' | 'randread';
  size: string;
  bs?: string;
  iodepth?: number;
  offset?: string;
  /** Verify with this checksum (writes carry headers; a verify phase reads everything back). */
  verify?: 'crc32c' | 'md5' | 'sha256';
  /** Limit bandwidth (e.g. '16m') so a job lasts long enough to inject a fault while it runs. */
  rate?: string;
  extra?: string[];
}

export interface FioResult {
  error: number;
  writeBytes: number;
  readBytes: number;
  raw: RunResult;
}

/** fio through its nbd engine (libnbd), JSON output in `dir`. Rejects when fio reports an error. */
export async function fio(dir: string, name: string, j: FioJob, o: { allowFail?: boolean; signal?: AbortSignal } = {}): Promise<FioResult> {
  const out = join(dir, `${name}.fio.json`);
  const args = [
    `--name=${name}`, '--ioengine=nbd', `--uri=${j.uri}`, `--rw=${j.rw}`, `--size=${j.size}`,
    `--bs=${j.bs ?? '4k'}`, `--iodepth=${j.iodepth ?? 16}`, '--output-format=json', `--output=${out}`,
  ];
  if (j.offset) args.push(`--offset=${j.offset}`);
  if (j.verify) args.push(`--verify=${j.verify}`, '--do_verify=1', '--verify_fatal=1', '--verify_dump=0', '--verify_state_save=0');
  if (j.rate) args.push(`--rate=${j.rate}`);
  args.push(...(j.extra ?? []));
  const raw = await run('fio', args, { allowFail: true, timeoutMs: 120_000, signal: o.signal, cwd: dir });
  type FioJson = { jobs: { error: number; read: { io_bytes: number }; write: { io_bytes: number } }[] };
  const parsed = await readFile(out, 'utf8')
    .then((text) => JSON.parse(text.slice(text.indexOf('{'))) as FioJson)
    .catch(() => null);
  const job = parsed?.jobs[0];
  if (o.allowFail) return { error: job?.error ?? -1, writeBytes: job?.write.io_bytes ?? 0, readBytes: job?.read.io_bytes ?? 0, raw };
  if (raw.code !== 0 || !job || job.error !== 0) {
    throw new Error(`fio ${name} failed (exit ${raw.code}, error ${job?.error}):\n${raw.stderr}${raw.stdout}`);
  }
  return { error: job.error, writeBytes: job.write.io_bytes, readBytes: job.read.io_bytes, raw };
}
