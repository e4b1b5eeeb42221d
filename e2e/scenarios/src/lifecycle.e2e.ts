// The life of one shadow set, driven with kubectl and checked by content: created with two members and
// given an ext4 filesystem, a third member added under a write load, the engine killed mid-write, a
// member split off for backup and returned, a write bitmap deleted while its member was away, and the
// set dissolved and re-created from its members. See e2e/README.md ("Scenarios").
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { waitFor } from '@shadowset/e2e';
import type { BlockVolume, ClusterEnv } from './env/cluster-env.js';
import { startClusterEnv } from './env/start-env.js';
import { Cleanup } from './support/cleanup.js';
import { run } from './support/exec.js';
import { attachLoop, differingFiles, fsck, fuseExport, mountOn, writeFiles } from './support/fs.js';
import { NbdClient, readAll } from './support/nbd-client.js';
import { ScenarioChain } from './support/scenario.js';
import {
  HEADER_BYTES, MiB, StatusWatch, cond, conditionsOf, engineStatus, show, member, memberData, memberDifference, memberState, reasons, shadowSetYaml, steady,
  type MemberDef, type SetStatus,
} from './support/shadowset.js';
import { BLOCK, background, VersionedBlocks } from './support/workload.js';

const NS = 'e2e-life';
const SET = 'vol';
const MEMBER_MIB = 72;
const UNIT = MEMBER_MIB * MiB - HEADER_BYTES; // 64 MiB
// The unit's first half holds an ext4 filesystem, the second half a verifying block workload.
const FS_BYTES = 32 * MiB;
const load = new VersionedBlocks(FS_BYTES, UNIT - FS_BYTES, 7);

let env: ClusterEnv | undefined;
let watch: StatusWatch;
const cleanup = new Cleanup();
const vol: Record<string, BlockVolume> = {};
let files = new Map<string, string>();
const chain = new ScenarioChain(() => env, NS);

const m = (name: string, claimName: string, state: 'Active' | 'Detached' = 'Active'): MemberDef => ({ name, claimName, state });
const two = [m('m1', 'a1'), m('m2', 'a2')];
const three = [...two, m('m3', 'a3')];
/** The set's spec: members, a short member timeout, and throttles that keep copies and merges visible. */
const spec = (members: MemberDef[], throttle: Record<string, number> = {}, extra: Record<string, unknown> = {}) => ({
  members, memberTimeoutSeconds: 10, throttle: { copyBytesPerSecond: 16 * MiB, mergeBytesPerSecond: 256 * 1024, ...throttle }, ...extra,
});
const apply = (file: string, s: Record<string, unknown>) => env!.apply(file, shadowSetYaml(NS, SET, s));

async function connect(): Promise<NbdClient> {
  const ep = await env!.engine(NS, SET);
  return NbdClient.connect(ep);
}

/** Mount the filesystem of the virtual unit read-only through a fresh FUSE export; files must match. */
async function checkFilesThroughEngine(): Promise<void> {
  const local = new Cleanup();
  try {
    const ep = await env!.engine(NS, SET);
    local.defer('close endpoint', () => ep.close());
    const fuse = await fuseExport(local, env!.workDir, ep);
    const loop = await attachLoop(local, fuse.file, { sizeLimit: FS_BYTES, readOnly: true });
    const f = await fsck(loop.dev);
    assert.equal(f.code, 0, `e2fsck -n through the engine:\n${f.output}`);
    const mnt = join(env!.workDir, 'mnt-check');
    const mt = await mountOn(local, loop.dev, mnt, ['-o', 'ro,noload']);
    assert.deepEqual(await differingFiles(mnt, files), [], 'files read through the engine');
    await mt.unmount();
  } finally {
    await local.runAll();
  }
}

/** A member's filesystem on its own: its data area copied out, e2fsck -n clean, every file's checksum. */
async function checkFilesOnMember(v: BlockVolume, image?: Buffer): Promise<void> {
  const local = new Cleanup();
  try {
    const data = image ?? (await env!.readVolume(v, HEADER_BYTES, FS_BYTES));
    const file = join(env!.workDir, `${v.claim}-fs.img`);
    await writeFile(file, data.subarray(0, FS_BYTES));
    local.defer(`remove ${file}`, () => run('rm', ['-f', file]));
    const f = await fsck(file);
    assert.equal(f.code, 0, `e2fsck -n of member ${v.claim}'s copy:\n${f.output}`);
    const loop = await attachLoop(local, file, { readOnly: true });
    const mnt = join(env!.workDir, `mnt-${v.claim}`);
    const mt = await mountOn(local, loop.dev, mnt, ['-o', 'ro,noload']);
    assert.deepEqual(await differingFiles(mnt, files), [], `files on member ${v.claim}`);
    await mt.unmount();
  } finally {
    await local.runAll();
  }
}

const noProblems = () => assert.deepEqual(load.problems.slice(0, 10), [], 'the workload saw wrong data');

before(async () => {
  env = await startClusterEnv('life');
  await env.createNamespace(NS);
  for (const c of ['a1', 'a2', 'a3']) vol[c] = await env.createBlockVolume(NS, c, env.nodes[0], MEMBER_MIB);
  watch = new StatusWatch(env, NS, SET);
});

after(async () => {
  watch?.stop();
  await cleanup.runAll().finally(() => env?.stop());
});

chain.scenario('kubectl creates a two-member set; ext4 on the virtual unit (FUSE export, loop device) is clean and its files match', async (note) => {
  await apply('01-two-members.yaml', spec(two));
  const s = await watch.until('two members in sync', steady(2));
  assert.equal(cond(s, 'Resyncing')?.reason, 'Steady');
  const out = await show(env!, note, ['get', 'shadowsets', '-n', NS]);
  assert.match(out, /^NAME\s+MEMBERS\s+STATE\s+RESYNC\s+PROGRESS\s+NODE\s+AGE\s*$/m, out);
  // RESYNC and PROGRESS empty; NODE is where the engine runs, beside its members.
  assert.match(out, new RegExp(`^vol\\s+2/2\\s+Steady\\s+${env!.nodes[0]}\\s+\\S+\\s*$`, 'm'), out);
  const early = await env!.events(NS, SET);
  assert.ok(!early.some((e) => e.type === 'Warning'), `no warning while the engine starts: ${reasons(early)}`);

  const ep = await env!.engine(NS, SET);
  cleanup.defer('close endpoint', () => ep.close());
  // Only the set's own keys open its listeners: the export Secret's PSK, the engine's token.
  const nbdinfo = (uri: string) => run('nbdinfo', ['--size', uri], { allowFail: true, timeoutMs: 20_000 });
  const keyed = (file: string) => `nbds://${ep.psk.identity}@${ep.host}:${ep.port}/${ep.exportName}?tls-psk-file=${file}`;
  assert.equal(Number((await nbdinfo(keyed(ep.pskFile))).stdout.trim()), UNIT, 'the export Secret\'s PSK opens the export');
  const plain = await nbdinfo(`nbd://${ep.host}:${ep.port}/${ep.exportName}`);
  assert.notEqual(plain.code, 0, `a plain NBD client is refused: ${plain.stdout}`);
  const wrongFile = join(env!.workDir, 'wrong.psk');
  await writeFile(wrongFile, `${ep.psk.identity}:${'5a'.repeat(32)}\n`, { mode: 0o600 });
  assert.notEqual((await nbdinfo(keyed(wrongFile))).code, 0, 'a wrong key is refused');
  const noToken = await fetch(`${ep.http}/v1/status`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(noToken.status, 401, 'the engine API refuses a request without the token');
  note(`export: the Secret's PSK opens it; plain NBD (${plain.stderr.trim().split('\n').at(-1) ?? ''}) and a wrong key are refused; the engine API without the token: HTTP ${noToken.status}`);
  const fuse = await fuseExport(cleanup, env!.workDir, ep);
  const loop = await attachLoop(cleanup, fuse.file, { sizeLimit: FS_BYTES });
  await run('mkfs.ext4', ['-q', '-F', loop.dev]);
  const mnt = join(env!.workDir, 'mnt');
  const mt = await mountOn(cleanup, loop.dev, mnt);
  files = await writeFiles(mnt);
  await mt.unmount();
  const f = await fsck(loop.dev);
  assert.equal(f.code, 0, `e2fsck -n after unmount:\n${f.output}`);
  await loop.detach();
  await fuse.stop();
  note(`${files.size} files written; e2fsck -n clean`);

  // Read back through a new export (no cache of the first one), then from each member on its own.
  await checkFilesThroughEngine();
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!], UNIT), null);
  for (const c of ['a1', 'a2']) await checkFilesOnMember(vol[c]!);
});

chain.scenario('a third member gets a full copy under a running write load; then all three are identical', async (note) => {
  const client = await connect();
  try {
    const bg = background(load, client, { queueDepth: 4, readFraction: 0.2 });
    await waitFor('the load to run', () => load.writesAcked > 300, { timeoutMs: 30_000 });
    const t0 = Date.now();
    await apply('02-third-member.yaml', spec(three));
    const copying = await watch.until('m3 in a full copy', (s) => memberState(s, 'm3') === 'FullCopy' && cond(s, 'Resyncing')?.reason === 'FullCopy');
    const ackedAtStart = load.writesAcked;
    await show(env!, note, ['get', 'shadowsets', '-n', NS]);
    assert.equal(copying.membersInSync, '2/3');
    const done = await watch.until('three members in sync', steady(3), 120_000);
    const ackedDuringCopy = load.writesAcked - ackedAtStart;
    const stats = await bg.stop();
    assert.equal(stats.ended, null, 'the load ran throughout');
    assert.ok(ackedDuringCopy > 0, 'writes were acknowledged while the copy ran');
    assert.match(member(done, 'm3')?.reason ?? '', /copy/i);
    const progress = watch.since(t0).map((x) => x.recovery).filter((r) => r?.mode === 'FullCopy').map((r) => r!.bytesDone ?? 0);
    assert.ok(progress.length >= 2 && progress.at(-1)! > progress[0]!, `copy progress seen rising: ${progress.join(', ')}`);
    note(`copy took ${((Date.now() - t0) / 1000).toFixed(1)} s with ${ackedDuringCopy} writes acknowledged meanwhile`);

    await load.verify((o, l) => client.read(o, l), 'read back after the copy');
    noProblems();
  } finally {
    await client.close();
  }
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!, vol.a3!], UNIT), null);
  const ev = await env!.events(NS, SET);
  assert.ok(['MemberAdded', 'CopyStarted', 'CopyCompleted'].every((r) => ev.some((e) => e.reason === r)), reasons(ev));
  assert.ok((await env!.get(NS, 'pods', `${SET}-member-m3`)) !== null, 'm3, added after the engine started, is served by a member server');
});

chain.scenario('the engine killed mid-write comes back with a minimerge; members identical, every acknowledged write present', async (note) => {
  const before = watch.current;
  // Writes to 1 MiB only, after the intent log forgot the earlier load: the log marks few chunks.
  const ep = await env!.engine(NS, SET);
  await waitFor('the write-intent log to empty', async () => (await engineStatus(ep)).intentLog.dirtyChunks === 0, { timeoutMs: 30_000, intervalMs: 500 });
  await ep.close();
  const client = await connect();
  const hot = { first: 0, count: MiB / BLOCK };
  const bg = background(load, client, { queueDepth: 8, readFraction: 0.1, ...hot, mayLoseConnection: true });
  const acked0 = load.writesAcked;
  await waitFor('the load to run', () => load.writesAcked > acked0 + 300, { timeoutMs: 30_000 });
  const t0 = Date.now();
  await env!.killEngine(NS, SET);
  const stats = await bg.done;
  await client.close();
  assert.ok(stats.ended, 'the engine went away under the load');
  note(`killed after ${stats.writesAcked} acknowledged writes; ${stats.writesUnknown} were in flight`);

  const gen = before.shadowGeneration ?? 0;
  const merging = await watch.until('a merge after the restart', (s) => (s.shadowGeneration ?? 0) > gen && cond(s, 'Resyncing')?.reason === 'Merge', 90_000);
  await show(env!, note, conditionsOf(NS, SET));
  const total = merging.recovery?.bytesTotal ?? 0;
  assert.ok(total > 0 && total <= UNIT / 16, `a minimerge: ${total} bytes of ${UNIT}`);
  assert.match(cond(merging, 'Resyncing')?.message ?? '', /^Merge: \d+ of \d+ bytes$/);
  await watch.until('three in sync after the merge', steady(3), 120_000);
  note(`merge of ${total} bytes (unit ${UNIT}); back in sync ${((Date.now() - t0) / 1000).toFixed(1)} s after the kill`);
  const logs = await env!.logs(NS, `${SET}-engine`, 'engine');
  assert.match(logs, /"event":"MergeRequired"[^\n]*"full":false/, 'the restarted engine asked for a minimerge');

  const again = await connect();
  try {
    await load.verify((o, l) => again.read(o, l), 'read back after the merge');
    await load.verify((o, l) => again.read(o, l), 'read back again');
  } finally {
    await again.close();
  }
  noProblems();
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!, vol.a3!], UNIT), null);
  for (const c of ['a1', 'a2', 'a3']) await load.verify((o, l) => env!.readVolume(vol[c]!, HEADER_BYTES + o, l), `member ${c}`);
  noProblems();
  const ev = await env!.events(NS, SET);
  assert.ok(ev.some((e) => e.reason === 'MergeStarted') && ev.some((e) => e.reason === 'MergeCompleted'), reasons(ev));
});

let bitmapDirty = 0;

chain.scenario('a member split for backup (Detached) holds the image of the split; its return is a minicopy of the dirty bytes', async (note) => {
  // The unit as it is before the split (quiescent: nothing writes now).
  const c0 = await connect();
  const image = await readAll(c0, UNIT).finally(() => c0.close());
  // The copy throttle is lowered with the split, so it is in force when the minicopy starts.
  const slow = { copyBytesPerSecond: 2 * MiB };
  await apply('03-split-m2.yaml', spec(three.map((x) => (x.name === 'm2' ? { ...x, state: 'Detached' as const } : x)), slow, { minicopyPolicy: 'Required' }));
  const split = await watch.until('m2 detached', (s) => memberState(s, 'm2') === 'Detached');
  assert.equal(split.membersInSync, '2/2');
  const wbs = await env!.list(NS, 'writebitmaps');
  assert.equal(wbs.length, 1, 'one WriteBitmap');
  const wb = wbs[0]! as { metadata: { name: string }; spec: { member: string; shadowSet: string } };
  assert.deepEqual([wb.spec.shadowSet, wb.spec.member], [SET, 'm2']);

  // Write more while m2 is away: 4 MiB of the workload's region.
  const client = await connect();
  const acked0 = load.writesAcked;
  const bg = background(load, client, { queueDepth: 4, readFraction: 0.1, first: 0, count: (4 * MiB) / BLOCK });
  await waitFor('writes while m2 is away', () => load.writesAcked > acked0 + 2000, { timeoutMs: 60_000 });
  assert.equal((await bg.stop()).ended, null);
  const populated = await waitFor('the WriteBitmap to show dirty bytes', async () => {
    const w = (await env!.get(NS, 'writebitmaps', wb.metadata.name)) as { status?: { dirtyBytes?: number; percentPopulated?: string } } | null;
    return (w?.status?.dirtyBytes ?? 0) > 0 ? w!.status! : undefined;
  }, { timeoutMs: 30_000, intervalMs: 200 });
  bitmapDirty = populated.dirtyBytes!;
  assert.ok(bitmapDirty <= 4 * MiB + 64 * 1024, `dirty bytes ${bitmapDirty} cover at most the 4 MiB written`);
  const table = (await env!.kubectl(['get', 'shadowsets,writebitmaps', '-n', NS])).stdout;
  assert.match(table, /^NAME\s+MEMBERS\s+STATE\s+RESYNC\s+PROGRESS\s+NODE\s+AGE\s*$/m, table);
  // Members counts the Active ones: a member detached on purpose does not make the set Degraded.
  assert.match(table, new RegExp(`^shadowset\\.shadowset\\.dev/vol\\s+2/2\\s+Steady\\s+${env!.nodes[0]}\\s+\\S+\\s*$`, 'm'), table);
  assert.match(table, /^NAME\s+SET\s+MEMBER\s+POPULATED\s+DIRTY\s+COVERED\s+MASTER NODE\s+AGE\s*$/m, table);
  assert.match(table, new RegExp(`^writebitmap\\.shadowset\\.dev/${wb.metadata.name}\\s+vol\\s+m2\\s+\\d+(\\.\\d+)?%\\s+${bitmapDirty}\\s+${UNIT}\\s+`, 'm'), table);
  note(`$ kubectl get shadowsets,writebitmaps -n ${NS}\n${table.trimEnd()}`);

  // The backup: m2's data as of the split, while the set goes on without it.
  const backup = await memberData(env!, vol.a2!, UNIT);
  assert.ok(backup.equals(image), 'the detached member holds the unit as of the split');
  await checkFilesOnMember(vol.a2!, backup);

  const t0 = Date.now();
  await apply('04-return-m2.yaml', spec(three, slow, { minicopyPolicy: 'Required' }));
  const mini = await watch.until('a minicopy of m2', (s) => cond(s, 'Resyncing')?.reason === 'Minicopy');
  assert.ok((mini.recovery?.bytesTotal ?? 0) <= bitmapDirty, `minicopy of ${mini.recovery?.bytesTotal} bytes, bitmap ${bitmapDirty}`);
  await watch.until('three in sync after the minicopy', steady(3), 120_000);
  note(`minicopy of ${mini.recovery?.bytesTotal} bytes took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const st = await engineStatus(await env!.engine(NS, SET));
  const m2 = st.members.find((x) => x.id === member(watch.current, 'm2')?.id);
  assert.ok(m2 && m2.counters.writeBytes <= bitmapDirty, `m2 was written ${m2?.counters.writeBytes} bytes on return; the bitmap had ${bitmapDirty}`);
  await load.verify((o, l) => client.read(o, l), 'read back after the minicopy');
  await client.close();
  noProblems();
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!, vol.a3!], UNIT), null);
  const ev = await env!.events(NS, SET);
  assert.ok(['MemberDetached', 'BitmapCreated', 'MemberReturned', 'MinicopyStarted', 'MinicopyCompleted'].every((r) => ev.some((e) => e.reason === r)), reasons(ev));
  assert.ok(!ev.some((e) => /Detached → Removed/.test(e.message)), 'a returning member is not reported removed');
  // A bitmap is used once.
  await waitFor('the used bitmap to be deleted', async () => (await env!.list(NS, 'writebitmaps')).length === 0, { timeoutMs: 20_000, intervalMs: 200 });
});

chain.scenario('a WriteBitmap deleted while its member is away makes the return a full copy', async (note) => {
  await apply('05-split-m3.yaml', spec(three.map((x) => (x.name === 'm3' ? { ...x, state: 'Detached' as const } : x))));
  await watch.until('m3 detached', (s) => memberState(s, 'm3') === 'Detached');
  const wb = (await env!.list(NS, 'writebitmaps'))[0] as { metadata: { name: string }; spec: { member: string } } | undefined;
  assert.equal(wb?.spec.member, 'm3');
  await env!.kubectl(['delete', 'writebitmap', wb.metadata.name, '-n', NS, '--wait', '--timeout=60s']);
  assert.equal(await env!.get(NS, 'writebitmaps', wb.metadata.name), null);
  assert.ok((await env!.events(NS, SET)).some((e) => e.reason === 'BitmapDeleted'));

  const client = await connect();
  const acked0 = load.writesAcked;
  const bg = background(load, client, { queueDepth: 4, readFraction: 0.1, first: 0, count: (2 * MiB) / BLOCK });
  await waitFor('writes while m3 is away', () => load.writesAcked > acked0 + 500, { timeoutMs: 60_000 });
  assert.equal((await bg.stop()).ended, null);

  const t0 = Date.now();
  await apply('06-return-m3.yaml', spec(three, { copyBytesPerSecond: 32 * MiB }));
  const full = await watch.until('a full copy of m3', (s) => cond(s, 'Resyncing')?.reason === 'FullCopy' && memberState(s, 'm3') === 'FullCopy');
  assert.equal(full.recovery?.bytesTotal, UNIT, 'the whole unit is copied');
  await watch.until('three in sync', steady(3), 120_000);
  note(`full copy of ${UNIT} bytes took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await load.verify((o, l) => client.read(o, l), 'read back after the full copy');
  await client.close();
  noProblems();
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!, vol.a3!], UNIT), null);
});

chain.scenario('deleting the set dissolves it and the members keep their data; re-creating it needs no copy and no merge', async (note) => {
  await env!.kubectl(['delete', 'shadowset', SET, '-n', NS, '--wait', '--timeout=120s']);
  assert.equal(await env!.get(NS, 'shadowsets', SET), null);
  assert.deepEqual((await env!.list(NS, 'pods', `shadowset.dev/shadowset=${SET}`)).map((p) => (p.metadata as { name: string }).name), []);
  assert.ok((await env!.events(NS, SET)).some((e) => e.reason === 'Dissolved'));
  // Stopped: the members compared whole, each holding the filesystem and every acknowledged write.
  assert.equal(await memberDifference(env!, [vol.a1!, vol.a2!, vol.a3!], UNIT), null);
  for (const c of ['a1', 'a2', 'a3']) await load.verify((o, l) => env!.readVolume(vol[c]!, HEADER_BYTES + o, l), `dissolved member ${c}`);
  noProblems();
  await checkFilesOnMember(vol.a3!);

  const t0 = Date.now();
  await apply('07-recreate.yaml', spec(three));
  // Until the re-created object's first event arrives, the watch still holds the deleted set's last
  // status (three in sync): wait for the new engine's mount before asking the status.
  const mountedClean = /"event":"ShadowSetMounted"[^\n]*"unclean":false/;
  await waitFor('the re-created set\'s engine to mount it', async () => mountedClean.test(await env!.logs(NS, `${SET}-engine`, 'engine').catch(() => '')), {
    timeoutMs: 120_000, intervalMs: 200,
  });
  await watch.until('three in sync again', steady(3), 120_000);
  const seen = watch.since(t0);
  const resync = seen.filter((s: SetStatus) => cond(s, 'Resyncing')?.status === 'True' || ['FullCopy', 'Minicopy', 'Merging'].some((x) => s.members?.some((y) => y.state === x)));
  assert.deepEqual(resync, [], 'no copy and no merge was ever shown');
  const logs = await env!.logs(NS, `${SET}-engine`, 'engine');
  assert.match(logs, mountedClean);
  assert.doesNotMatch(logs, /"event":"(CopyStarted|MinicopyStarted|MergeRequired|MergeStarted)"/);
  note(`re-created and in sync in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await show(env!, note, ['get', 'events', '-n', NS, '--field-selector', `involvedObject.name=${SET}`, '--sort-by=.metadata.creationTimestamp']);
  const client = await connect();
  await load.verify((o, l) => client.read(o, l), 'read back after re-creation').finally(() => client.close());
  noProblems();
  await checkFilesThroughEngine();
});
