// The reaper: a tiny detached process that outlives its parent by design. The parent writes
// "add <pgid>" / "del <pgid>" lines on our stdin; when stdin closes — the parent exited, crashed or was
// SIGKILLed — every process group still registered is killed and every registered directory removed
// ("dir <path>" / "undir <path>"). This is what guarantees that a failing or
// killed test run leaves no etcd, kube-apiserver or simulated pod behind.
import { setTimeout as delay } from 'node:timers/promises';
import { rmSync } from 'node:fs';

const groups = new Set<number>();
const dirs = new Set<string>();
let buffered = '';

process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk: string) => {
  buffered += chunk;
  let nl: number;
  while ((nl = buffered.indexOf('\n')) >= 0) {
    const line = buffered.slice(0, nl).trim();
    buffered = buffered.slice(nl + 1);
    const space = line.indexOf(' ');
    const verb = line.slice(0, space);
    const arg = line.slice(space + 1);
    if (verb === 'dir') dirs.add(arg);
    if (verb === 'undir') dirs.delete(arg);
    const pgid = Number(arg);
    if (!Number.isInteger(pgid) || pgid <= 1) continue;
    if (verb === 'add') groups.add(pgid);
    else if (verb === 'del') groups.delete(pgid);
  }
});

function signalAll(signal: NodeJS.Signals): void {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, signal);
    } catch {
      groups.delete(pgid); // already gone
    }
  }
}

process.stdin.on('end', () => {
  void (async () => {
    if (groups.size > 0) {
      signalAll('SIGTERM');
      await delay(1500);
      signalAll('SIGKILL');
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    process.exit(0);
  })();
});
// The parent's terminal may send us its signals too; we only act on stdin's end.
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);
