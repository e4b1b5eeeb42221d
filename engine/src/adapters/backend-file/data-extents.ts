/**
 * Where a regular file holds data, from the file system's own answer to lseek(SEEK_DATA / SEEK_HOLE).
 *
 * Node has no lseek, so the question is put through `xfs_io -r -c "seek -a -r 0"` (xfsprogs; it works on
 * any Linux file system that implements the two whences, not only XFS), run on /proc/<engine>/fd/<fd> so
 * it looks at the very file the engine has open, whatever has happened to its path since. The answer is
 * advisory: anything that goes wrong (no xfs_io, a block device, a timeout, output not understood) gives
 * `null`, "unknown", and the caller reads everything as before. Holes include unwritten (fallocated)
 * extents with no dirty page over them: the kernel reports what reads as zero.
 */
import { execFile } from 'node:child_process';

/** Sorted, disjoint byte ranges [start, end) that may hold data; everything else reads as zero. */
export type DataExtents = Array<[number, number]>;

const SEEK_TIMEOUT_MS = 10_000;
/** A file fragmented into ~500,000 pieces still fits; beyond that, reading is cheaper than the map. */
const MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * Parse `seek -a -r` output: a `Whence Result` header, then `DATA <offset>` / `HOLE <offset>` lines in
 * increasing order, each starting a region that lasts until the next line (the last HOLE is the end of
 * the file). Returns null for anything else, an `ERR` line included.
 */
export function parseSeekOutput(text: string, size: number): DataExtents | null {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines.length === 0 || !/^Whence\s+Result$/.test(lines[0]!)) return null;
  const marks: Array<{ data: boolean; at: number }> = [];
  for (const line of lines.slice(1)) {
    const m = /^(DATA|HOLE)\s+(\d+)$/.exec(line);
    if (!m) return null;
    const at = Number(m[2]);
    if (!Number.isSafeInteger(at) || (marks.length > 0 && at <= marks[marks.length - 1]!.at)) return null;
    marks.push({ data: m[1] === 'DATA', at });
  }
  if (marks.length === 0) return null;
  const out: DataExtents = [];
  for (let i = 0; i < marks.length; i++) {
    if (!marks[i]!.data) continue;
    const start = Math.min(marks[i]!.at, size);
    // A DATA with no HOLE after it runs to the end of the file.
    const end = Math.min(i + 1 < marks.length ? marks[i + 1]!.at : size, size);
    if (end > start) out.push([start, end]);
  }
  // Before the first mark the file is whatever the first mark is not: data if it begins with a hole later.
  if (marks[0]!.at > 0) out.unshift([0, Math.min(marks[0]!.at, size)]);
  return out;
}

/** The data extents of the regular file open as `fd` in this process, or null when they cannot be learnt. */
export function probeDataExtents(fd: number, size: number): Promise<DataExtents | null> {
  return new Promise((resolve) => {
    // execFile's timeout signals the child, but a child stuck in the kernel (a hung file system) does not
    // exit, and its callback would never come: the answer is "unknown" at the deadline either way.
    const deadline = setTimeout(() => resolve(null), SEEK_TIMEOUT_MS + 2000);
    deadline.unref();
    execFile(
      'xfs_io',
      ['-r', '-c', 'seek -a -r 0', `/proc/${process.pid}/fd/${fd}`],
      { timeout: SEEK_TIMEOUT_MS, maxBuffer: MAX_OUTPUT, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } },
      (err, stdout) => {
        clearTimeout(deadline);
        resolve(err ? null : parseSeekOutput(stdout, size));
      },
    );
  });
}
