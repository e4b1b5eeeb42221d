/** What is mounted where, from /proc/self/mountinfo (the kernel's word, not a file that can go stale). */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';

export interface MountEntry {
  /** major:minor of the mounted filesystem's device. */
  device: string;
  /** The mounted path within that filesystem (a bound device node shows as /loop3 of devtmpfs). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

// mountinfo escapes space, tab, newline and backslash as octal.
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    const f = (left ?? '').split(' ');
    const r = (right ?? '').split(' ');
    if (f.length < 5 || r.length < 2) continue;
    out.push({ device: f[2]!, root: unescape(f[3]!), mountPoint: unescape(f[4]!), fsType: r[0]!, source: unescape(r[1]!) });
  }
  return out;
}

export async function mountsAt(path: string): Promise<MountEntry[]> {
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  return all.filter((m) => m.mountPoint === path);
}

/** major:minor of a block device node. */
export async function deviceNumber(dev: string): Promise<string> {
  const s = await stat(dev);
  if (!s.isBlockDevice()) throw new Error(`${dev} is not a block device`);
  return `${Math.floor(s.rdev / 256) & 0xfff}:${(s.rdev & 0xff) | ((s.rdev >> 12) & 0xfff00)}`;
}

/**
 * Where block device `dev` is in use by a mount: a filesystem on it, or its device node bound onto a file
 * (a Block volume published to a pod; findmnt does not see those as the device's).
 */
export async function mountsOf(dev: string): Promise<string[]> {
  const want = await deviceNumber(dev);
  const all = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const out: string[] = [];
  for (const m of all) {
    if (m.device === want) out.push(m.mountPoint);
    else if (basename(m.root) === basename(dev) && (await deviceNumber(m.mountPoint).catch(() => null)) === want) out.push(m.mountPoint);
  }
  return out;
}
