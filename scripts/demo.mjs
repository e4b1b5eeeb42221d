#!/usr/bin/env node
// The README's first command. On a fresh clone it installs and builds what is missing, then brings up
// the embedded default: an engine mirroring two file-backed members, served over NBD, with its status
// API. It prints what to try, and Ctrl-C stops everything (the engine records a clean stop).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, ftruncateSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
if (!existsSync(join(root, 'node_modules'))) {
  console.log('demo: installing npm dependencies (npm ci)…');
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
console.log('demo: building (tsc -b)…');
run('npx', ['tsc', '-b']);

const work = join(root, '.cache', 'demo');
mkdirSync(work, { recursive: true });
const size = Number(process.env.DEMO_MEMBER_MIB ?? 256) * 1024 * 1024;
const members = ['member-a.img', 'member-b.img'].map((n) => join(work, n));
for (const m of members) {
  if (!existsSync(m)) {
    const fd = openSync(m, 'w');
    ftruncateSync(fd, size);
    closeSync(fd);
  }
}
const socket = join(work, 'shadow.sock');
const httpPort = process.env.DEMO_HTTP_PORT ?? '8780';
const engine = spawn(process.execPath, [
  join(root, 'engine', 'bin', 'shadow-engine.js'), 'serve',
  ...members.flatMap((m) => ['--member', m]),
  '--socket', socket, '--http', `127.0.0.1:${httpPort}`, '--member-timeout', '30',
], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });

let ready = false;
engine.stdout.setEncoding('utf8');
let buf = '';
engine.stdout.on('data', (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    let ev;
    try {
      ev = JSON.parse(line);
    } catch {
      console.log(line);
      continue;
    }
    console.log(`engine: ${ev.event ?? ''} ${ev.msg ?? ''}`);
    if (ev.event === 'EngineReady' && !ready) {
      ready = true;
      const uri = `nbd+unix:///shadow?socket=${socket}`;
      console.log(`
Shadow set ${ev.setId} (generation ${ev.generation}) is up: two file-backed members in ${work}
  virtual unit (NBD):  ${uri}
  status:              curl -s http://127.0.0.1:${httpPort}/v1/status
  metrics:             curl -s http://127.0.0.1:${httpPort}/metrics
Try:
  nbdinfo '${uri}'
  qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'read -P 0x5a 0 1M' '${uri}'
  nbdcopy /etc/os-release '${uri}'
Ctrl-C stops the engine cleanly (members keep their data; the next run mounts them with no copy).
`);
    }
  }
});
const stop = () => engine.kill('SIGTERM');
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
engine.on('exit', (code) => {
  console.log(`demo: engine exited (${code ?? 'signal'})`);
  process.exit(code ?? 0);
});
