// The node plugin for real on this machine: a real engine on two file members serves a virtual unit on a
// node-local Unix socket; NodeStage attaches it (qemu-storage-daemon → FUSE → loop), NodePublish gives it
// to a "pod" as a device node or a filesystem, and the data is checked by content through the device and on
// both members. Needs root, loop devices, FUSE and qemu-storage-daemon (Debian: qemu-system-common fuse3).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { pino } from 'pino';
import { undoAll } from '@shadowset/testkit/cluster/node-cleanup';
import { identityService } from '../identity.js';
import { nodeService } from '../node/node.js';
import { startServer } from '../server.js';
import { loadCsi } from '../spec.js';

const ENGINE_BIN = join(import.meta.dirname, '..', '..', '..', 'engine', 'bin', 'shadow-engine.js');
const UNIT = 64 * 1024 * 1024;
const MiB = 1024 * 1024;
const hasXfs = spawnSync('sh', ['-c', 'command -v mkfs.xfs']).status === 0;

type Client = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void>;
const call = (c: Client, method: string, req: unknown) =>
  new Promise<Record<string, unknown>>((resolve, reject) => c[method]!(req, (err, res) => (err ? reject(err) : resolve(res))));
const fails = (p: Promise<unknown>, code: grpc.status, pattern: RegExp) =>
  assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, `${grpc.status[e.code]}: ${e.details}`);
    assert.match(e.details, pattern);
    return true;
  });

/** The HTTP API address of each engine started here (loopback, a port of its own). */
const engineHttp = new WeakMap<ChildProcess, string>();

/** A real engine on two sparse file members, serving on `socket`; resolves once it logged EngineReady. */
async function startEngine(members: string[], socket: string): Promise<ChildProcess> {
  await mkdir(join(socket, '..'), { recursive: true });
  const proc = spawn(process.execPath, [ENGINE_BIN, 'serve', ...members.flatMap((m) => ['--member', m]), '--socket', socket, '--member-timeout', '5', '--http', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    const timer = setTimeout(() => reject(new Error(`engine not ready in 30 s: ${err}`)), 30_000);
    lines.on('line', (l) => {
      if (l.includes('"event":"EngineReady"')) {
        engineHttp.set(proc, (JSON.parse(l) as { http: string }).http);
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => reject(new Error(`engine exited (${code}): ${err}`)));
  });
  return proc;
}

const stopped = (p: ChildProcess, signal: NodeJS.Signals) => new Promise<void>((resolve) => {
  if (p.exitCode !== null || p.signalCode !== null) return resolve();
  p.once('exit', () => resolve());
  p.kill(signal);
});

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync(); // a flush through loop → FUSE → NBD → the engine → both members
  } finally {
    await fh.close();
  }
}

interface Rig {
  dir: string;
  kubelet: string;
  node: Client;
  members: string[];
  engine: ChildProcess;
  restartEngine(): Promise<void>;
}

async function rig(t: TestContext, volume: string, unitBytes = UNIT): Promise<Rig> {
  const dir = await mkdtemp(join(tmpdir(), 'csi-node-'));
  const kubelet = join(dir, 'kubelet');
  await mkdir(kubelet);
  const members = [join(dir, 'm1.img'), join(dir, 'm2.img')];
  for (const m of members) await writeFile(m, '').then(() => spawnSync('truncate', ['-s', String(unitBytes + HEADER_BYTES), m]));
  const units = join(dir, 'units');
  const [ns, name] = volume.split('/') as [string, string];
  const socket = join(units, ns, name, 'nbd.sock');
  const r: Rig = { dir, kubelet, members, node: undefined as unknown as Client, engine: await startEngine(members, socket), restartEngine: async () => undefined };
  r.restartEngine = async () => {
    await stopped(r.engine, 'SIGKILL');
    r.engine = await startEngine(members, socket);
  };
  const csi = loadCsi();
  const node = nodeService({ nodeId: 'node-a', kubeletDir: kubelet, unitSocketDir: units, stateDir: join(dir, 'state'), exportName: 'shadow', reconnectDelaySeconds: 30, socketWaitSeconds: 1 });
  const server = await startServer({ endpoint: `unix://${join(dir, 'csi.sock')}`, csi, identity: identityService({ controller: false }), node, log: pino({ level: 'silent' }) });
  r.node = new csi.Node(`unix://${server.path}`, grpc.credentials.createInsecure()) as unknown as Client;
  t.after(async () => {
    r.node.close();
    await server.close();
    await undoAll(dir);
    await stopped(r.engine, 'SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });
  return r;
}

const block = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const mount = (fs = '') => ({ mount: { fs_type: fs, mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } });
const loopOf = (staging: string) => spawnSync('findmnt', ['-rn', '-o', 'SOURCE', staging], { encoding: 'utf8' }).stdout.trim();
const qsdRunning = (dir: string) => spawnSync('pgrep', ['-f', `mountpoint=${dir}`]).status === 0;

test('Block: stage attaches the unit as a loop device, publish binds it, data reaches both members; an engine restart is reconnected; unpublish and unstage undo everything, twice', async (t) => {
  const r = await rig(t, 'itest/blk');
  const staging = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging/pv-blk');
  const target = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish/pv-blk/pod-1');
  const req = { volume_id: 'itest/blk', staging_target_path: staging, volume_capability: block };
  await fails(call(r.node, 'NodePublishVolume', { ...req, target_path: target }), grpc.status.FAILED_PRECONDITION, /not staged/);
  await call(r.node, 'NodeStageVolume', req);
  await call(r.node, 'NodeStageVolume', req); // a repeat: the same device, nothing new
  assert.equal(spawnSync('sh', ['-c', `losetup -j ${r.dir}/state/itest_blk/unit | wc -l`], { encoding: 'utf8' }).stdout.trim(), '1', 'one loop device');
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target });
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target });

  // Stats: a raw device says only its size; a path it is not published at, or one outside the kubelet's, is refused.
  const stats = await call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/blk', volume_path: target }) as { usage: { unit: string; total: string }[] };
  assert.deepEqual(stats.usage.map((u) => [u.unit, u.total]), [['BYTES', String(UNIT)]]);
  await fails(call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/blk', volume_path: join(r.kubelet, 'pods/other') }), grpc.status.NOT_FOUND, /not published at/);
  await fails(call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/other', volume_path: target }), grpc.status.NOT_FOUND, /not staged on this node/);
  await fails(call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/blk', volume_path: '/etc' }), grpc.status.NOT_FOUND, /not published at \/etc: .*not under the kubelet's directory/);
  await fails(call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/blk' }), grpc.status.INVALID_ARGUMENT, /volume_path is required/);

  const a = randomBytes(MiB);
  await writeAt(target, 5 * MiB, a);
  assert.deepEqual(await readAt(target, 5 * MiB, MiB), a, 'read back through the device');
  for (const m of r.members) assert.deepEqual(await readAt(m, HEADER_BYTES + 5 * MiB, MiB), a, `${m} holds the data at the unit's offset`);

  // The engine dies (SIGKILL) and comes back on the same socket: the NBD client reconnects, the device stays.
  await r.restartEngine();
  const b = randomBytes(MiB);
  await writeAt(target, 9 * MiB, b);
  assert.deepEqual(await readAt(target, 5 * MiB, MiB), a, 'the earlier write survives the restart');
  for (const m of r.members) assert.deepEqual(await readAt(m, HEADER_BYTES + 9 * MiB, MiB), b, `${m} holds the write made after the restart`);

  await fails(call(r.node, 'NodeUnstageVolume', req), grpc.status.FAILED_PRECONDITION, /still mounted at .*pod-1/);
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/blk', target_path: target });
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/blk', target_path: target });
  assert.ok(!existsSync(target), 'the target file is removed');
  await call(r.node, 'NodeUnstageVolume', req);
  await call(r.node, 'NodeUnstageVolume', req);
  assert.ok(!existsSync(join(r.dir, 'state', 'itest_blk')), 'the volume\'s state is gone');
  assert.ok(!qsdRunning(join(r.dir, 'state')), 'qemu-storage-daemon stopped');
  assert.equal(spawnSync('losetup', ['-j', join(r.dir, 'state/itest_blk/unit')], { encoding: 'utf8' }).stdout.trim(), '', 'the loop device is freed');
});

test('Filesystem: ext4 is made on first stage only; data persists across unstage and stage; read-only publish; a wrong path or no engine is refused', async (t) => {
  const r = await rig(t, 'itest/fs');
  const staging = join(r.kubelet, 'plugins/kubernetes.io/csi/csi.shadowset.dev/abc/globalmount');
  const target = join(r.kubelet, 'pods/pod-2/volumes/kubernetes.io~csi/pv-fs/mount');
  const req = { volume_id: 'itest/fs', staging_target_path: staging, volume_capability: mount() };
  await fails(call(r.node, 'NodeStageVolume', { ...req, volume_id: 'itest/nothing-here' }), grpc.status.UNAVAILABLE, /not served on this node/);
  await fails(call(r.node, 'NodePublishVolume', { ...req, target_path: '/tmp/escape' }), grpc.status.INVALID_ARGUMENT, /not under the kubelet's directory/);

  await call(r.node, 'NodeStageVolume', req);
  const dev = loopOf(staging);
  assert.match(dev, /^\/dev\/loop[0-9]+$/);
  assert.equal(spawnSync('blkid', ['-p', '-s', 'TYPE', '-o', 'value', dev], { encoding: 'utf8' }).stdout.trim(), 'ext4');
  await call(r.node, 'NodeStageVolume', req);
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target });
  const data = randomBytes(3 * MiB + 17);
  await writeFile(join(target, 'data.bin'), data);
  // Stats of a filesystem: bytes (the file counted in what is used) and inodes, as statfs gives them.
  const before = (await call(r.node, 'NodeGetVolumeStats', { volume_id: 'itest/fs', volume_path: target }) as { usage: { unit: string; total: string; used: string; available: string }[] }).usage;
  assert.deepEqual(before.map((u) => u.unit), ['BYTES', 'INODES']);
  const bytes = before[0]!;
  assert.ok(Number(bytes.total) > UNIT / 2 && Number(bytes.total) <= UNIT, `filesystem size ${bytes.total} of a ${UNIT}-byte unit`);
  assert.ok(Number(bytes.used) >= 3 * MiB, `used ${bytes.used} counts the 3 MiB file`);
  assert.ok(Number(bytes.available) < Number(bytes.total) - 3 * MiB);
  assert.ok(Number(before[1]!.used) >= 12, `inodes used ${before[1]!.used}`);
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/fs', target_path: target });
  await call(r.node, 'NodeUnstageVolume', req);
  assert.ok(!existsSync(target));

  // Stage again: the filesystem is there, so no mkfs; the file is read back by content, read-only.
  await fails(call(r.node, 'NodeStageVolume', { ...req, volume_capability: mount('xfs') }), grpc.status.FAILED_PRECONDITION, /holds a ext4 filesystem, not the xfs asked for/);
  await call(r.node, 'NodeUnstageVolume', req);
  await call(r.node, 'NodeStageVolume', { ...req, volume_capability: mount('ext4') });
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target, readonly: true });
  assert.deepEqual(await readFile(join(target, 'data.bin')), data);
  await assert.rejects(writeFile(join(target, 'other'), 'x'), /EROFS/);
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/fs', target_path: target });
  await call(r.node, 'NodeUnstageVolume', req);
  assert.ok(!qsdRunning(join(r.dir, 'state')));
});

test('Filesystem: a device holding something else (a partition table) is never formatted', async (t) => {
  const r = await rig(t, 'itest/pt');
  const staging = join(r.kubelet, 'plugins/kubernetes.io/csi/csi.shadowset.dev/pt/globalmount');
  const blockStaging = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging/pv-pt');
  const target = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish/pv-pt/pod-3');
  await call(r.node, 'NodeStageVolume', { volume_id: 'itest/pt', staging_target_path: blockStaging, volume_capability: block });
  await call(r.node, 'NodePublishVolume', { volume_id: 'itest/pt', staging_target_path: blockStaging, target_path: target, volume_capability: block });
  // An MBR with one Linux partition (sectors 2048..34815): blkid calls it a dos partition table.
  const mbr = Buffer.alloc(512);
  mbr.writeUInt8(0x83, 446 + 4);
  mbr.writeUInt32LE(2048, 446 + 8);
  mbr.writeUInt32LE(32768, 446 + 12);
  mbr.writeUInt16LE(0xaa55, 510);
  await writeAt(target, 0, mbr);
  const before = await readAt(target, 0, 64 * 1024);
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/pt', target_path: target });
  await call(r.node, 'NodeUnstageVolume', { volume_id: 'itest/pt', staging_target_path: blockStaging });

  await fails(call(r.node, 'NodeStageVolume', { volume_id: 'itest/pt', staging_target_path: staging, volume_capability: mount() }),
    grpc.status.FAILED_PRECONDITION, /holds dos \(partition table\); refusing to make a filesystem/);
  assert.deepEqual(await readAt(r.members[0]!, HEADER_BYTES, 64 * 1024), before, 'the partition table is untouched');
  await call(r.node, 'NodeUnstageVolume', { volume_id: 'itest/pt', staging_target_path: staging });
});

test('Filesystem: xfs on request', { skip: hasXfs ? false : 'mkfs.xfs is not installed (Debian: xfsprogs)' }, async (t) => {
  const r = await rig(t, 'itest/xfs', 320 * MiB); // mkfs.xfs wants at least 300 MB
  const staging = join(r.kubelet, 'plugins/kubernetes.io/csi/csi.shadowset.dev/xfs/globalmount');
  const req = { volume_id: 'itest/xfs', staging_target_path: staging, volume_capability: mount('xfs') };
  await call(r.node, 'NodeStageVolume', req);
  assert.equal(spawnSync('findmnt', ['-rn', '-o', 'FSTYPE', staging], { encoding: 'utf8' }).stdout.trim(), 'xfs');
  await call(r.node, 'NodeUnstageVolume', req);
});

/** CAP_SYS_RESOURCE (bit 24 of CapEff): the kernel allows growing a mounted ext4 only with it (the node plugin runs privileged). */
const canGrowExt4 = (BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(spawnSync('cat', ['/proc/self/status'], { encoding: 'utf8' }).stdout)?.[1] ?? '0'}`) >> 24n) & 1n;

for (const [fs, unit, skip] of [
  ['ext4', UNIT, canGrowExt4 ? false : 'this process lacks CAP_SYS_RESOURCE, which growing a mounted ext4 needs'],
  ['xfs', 320 * MiB, hasXfs ? false : 'mkfs.xfs is not installed (Debian: xfsprogs)'],
] as const) {
test(`Expansion (offline, ${fs}): the unit grows while unstaged; staged again, NodeExpandVolume grows the filesystem (df shows it, data intact) and a block volume's device has the new size`, { skip }, async (t) => {
  const r = await rig(t, 'itest/grow', unit);
  const staging = join(r.kubelet, 'plugins/kubernetes.io/csi/csi.shadowset.dev/grow/globalmount');
  const target = join(r.kubelet, 'pods/pod-4/volumes/kubernetes.io~csi/pv-grow/mount');
  const req = { volume_id: 'itest/grow', staging_target_path: staging, volume_capability: mount(fs) };
  const df = () => Number(spawnSync('df', ['-B1', '--output=size', target], { encoding: 'utf8' }).stdout.trim().split('\n').pop());
  await call(r.node, 'NodeStageVolume', req);
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target });
  const data = randomBytes(5 * MiB + 3);
  await writeFile(join(target, 'data.bin'), data);
  const before = df();
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/grow', target_path: target });
  await call(r.node, 'NodeUnstageVolume', req);

  // What ControllerExpandVolume and the operator bring about: bigger members, then a bigger set.
  const grown = unit + 128 * MiB;
  for (const m of r.members) spawnSync('truncate', ['-s', String(grown + HEADER_BYTES), m]);
  const res = await fetch(`http://${engineHttp.get(r.engine)!}/v1/resize`, { method: 'POST', body: JSON.stringify({ size: grown }) });
  assert.equal(res.status, 200, await res.clone().text());

  await call(r.node, 'NodeStageVolume', req);
  await call(r.node, 'NodePublishVolume', { ...req, target_path: target });
  await fails(call(r.node, 'NodeExpandVolume', { volume_id: 'itest/grow', volume_path: '/tmp/elsewhere', capacity_range: { required_bytes: String(grown) } }), grpc.status.INVALID_ARGUMENT, /not under the kubelet's directory/);
  await fails(call(r.node, 'NodeExpandVolume', { volume_id: 'itest/other', volume_path: target, capacity_range: { required_bytes: String(grown) } }), grpc.status.NOT_FOUND, /not staged on this node/);
  const out = await call(r.node, 'NodeExpandVolume', { volume_id: 'itest/grow', volume_path: target, staging_target_path: staging, capacity_range: { required_bytes: String(grown) }, volume_capability: mount(fs) });
  assert.equal(out.capacity_bytes, String(grown));
  const after = df();
  assert.ok(after > before + 100 * MiB, `df: ${before} bytes before, ${after} after`);
  assert.deepEqual(await readFile(join(target, 'data.bin')), data, 'the data is intact');
  // A repeat changes nothing and answers the same.
  assert.equal((await call(r.node, 'NodeExpandVolume', { volume_id: 'itest/grow', volume_path: target, capacity_range: { required_bytes: String(grown) }, volume_capability: mount(fs) })).capacity_bytes, String(grown));
  assert.equal(df(), after);
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/grow', target_path: target });
  await call(r.node, 'NodeUnstageVolume', req);

  // The same volume as a block device: nothing to grow but the device, which has the new size.
  const blockStaging = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging/pv-grow');
  const blockTarget = join(r.kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish/pv-grow/pod-5');
  await call(r.node, 'NodeStageVolume', { volume_id: 'itest/grow', staging_target_path: blockStaging, volume_capability: block });
  await call(r.node, 'NodePublishVolume', { volume_id: 'itest/grow', staging_target_path: blockStaging, target_path: blockTarget, volume_capability: block });
  const b = await call(r.node, 'NodeExpandVolume', { volume_id: 'itest/grow', volume_path: blockTarget, capacity_range: { required_bytes: String(grown) }, volume_capability: block });
  assert.equal(b.capacity_bytes, String(grown));
  assert.equal(spawnSync('blockdev', ['--getsize64', blockTarget], { encoding: 'utf8' }).stdout.trim(), String(grown));
  await call(r.node, 'NodeUnpublishVolume', { volume_id: 'itest/grow', target_path: blockTarget });
  await call(r.node, 'NodeUnstageVolume', { volume_id: 'itest/grow', staging_target_path: blockStaging });
});
}
