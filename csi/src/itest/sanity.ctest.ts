// csi-sanity (the CSI conformance suite, built here from github.com/kubernetes-csi/csi-test/v5) against the
// driver: Identity, Controller on a real kube-apiserver (the local control plane, with the CRDs and a member
// StorageClass), and Node for real on this machine. No operator runs here, so a stand-in plays its part: a
// real engine on two file members for every ShadowSet the driver creates, serving on the node-local socket
// the node plugin attaches, and the set's status saying it serves on the node (what ControllerPublish
// waits for). Needs root, loop devices, FUSE, Go.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { HEADER_BYTES } from '@shadowset/engine/api';
import { startControlPlane, waitFor, repoRoot } from '@shadowset/e2e';
import { buildCrds } from '@shadowset/operator/crds';
import { Kube, type Obj } from '@shadowset/operator/kube';
import { pino } from 'pino';
import { controllerService } from '../controller/controller.js';
import { RES } from '../controller/kube-port.js';
import { CAPACITY_ANNOTATION } from '../controller/objects.js';
import { identityService } from '../identity.js';
import { nodeService } from '../node/node.js';
import { startServer } from '../server.js';
import { loadCsi } from '../spec.js';
import { undoAll } from '@shadowset/testkit/cluster/node-cleanup';

const ENGINE_BIN = join(repoRoot, 'engine', 'bin', 'shadow-engine.js');
const NS = 'csi-sanity';
const NODE = 'sanity-node';
const VOLUME_BYTES = 64 * 1024 * 1024;

/** For every ShadowSet in NS, a real engine on two sparse files, at the node plugin's socket path. */
class StandInEngines {
  private readonly engines = new Map<string, ChildProcess>();
  private stopInformer: (() => void) | null = null;
  constructor(private readonly kube: Kube, private readonly dir: string, private readonly units: string) {}

  start(): void {
    const { stop } = this.kube.inform(RES.shadowsets, NS, (type, set: Obj) => {
      if (type === 'ADDED' && !this.engines.has(set.metadata.name)) void this.run(set).catch((e: Error) => process.stderr.write(`stand-in engine ${set.metadata.name}: ${e.message}\n`));
      if (type === 'DELETED') this.engines.get(set.metadata.name)?.kill('SIGTERM');
    }, () => undefined);
    this.stopInformer = stop;
  }

  private async run(set: Obj): Promise<void> {
    const name = set.metadata.name;
    const bytes = Number(set.metadata.annotations?.[CAPACITY_ANNOTATION] ?? VOLUME_BYTES) + HEADER_BYTES;
    const members = [1, 2].map((i) => join(this.dir, `${name}-m${i}.img`));
    for (const m of members) spawnSync('truncate', ['-s', String(bytes), m]);
    const socket = join(this.units, NS, name, 'nbd.sock');
    await mkdir(join(socket, '..'), { recursive: true });
    const proc = spawn(process.execPath, [ENGINE_BIN, 'serve', ...members.flatMap((m) => ['--member', m]), '--socket', socket], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.engines.set(name, proc);
    proc.once('exit', () => {
      this.engines.delete(name);
      for (const m of members) void rm(m, { force: true });
    });
    // Ready: say so in the set's status as the operator would (engine on the node, Ready).
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (!line.includes('"EngineReady"')) return;
      const status = {
        engineNode: NODE, placement: { node: NODE, source: 'VolumeAttachment' },
        conditions: [{ type: 'Ready', status: 'True', reason: 'EngineRunning', message: 'stand-in engine', lastTransitionTime: new Date().toISOString() }],
      };
      void this.kube.mergePatch(RES.shadowsets, NS, name, { status }, 'status').catch((e: Error) => process.stderr.write(`stand-in status ${name}: ${e.message}\n`));
    });
  }

  async stop(): Promise<void> {
    this.stopInformer?.();
    await Promise.all([...this.engines.values()].map((p) => new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGTERM');
    })));
  }
}

interface Case { name: string; outcome: 'passed' | 'failed' | 'skipped'; message: string }

function junitCases(xml: string): Case[] {
  const out: Case[] = [];
  for (const m of xml.matchAll(/<testcase name="([^"]*)"[^>]*?(?:\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = m[2] ?? '';
    const name = m[1]!.replace(/&#34;/g, '"').replace(/&#39;/g, '\'').replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>');
    if (/^\[(BeforeSuite|AfterSuite)\]/.test(name) && !/<failure/.test(body)) continue;
    const outcome = /<failure|<error/.test(body) ? 'failed' : /<skipped/.test(body) ? 'skipped' : 'passed';
    out.push({ name, outcome, message: /message="([^"]*)"/.exec(body)?.[1] ?? '' });
  }
  return out;
}

test('csi-sanity passes against the driver (controller on the local control plane, node for real)', { timeout: 30 * 60_000 }, async (t) => {
  const built = spawnSync(process.execPath, [join(repoRoot, 'csi', 'scripts', 'build-sanity.mjs')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  assert.equal(built.status, 0, 'csi-sanity builds from its Go module');
  const sanity = built.stdout.trim();

  const dir = await mkdtemp(join(tmpdir(), 'csi-sanity-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const cp = await startControlPlane();
  t.after(() => cp.stop());
  const kube = new Kube(cp.kubeConfig);
  for (const { object } of buildCrds()) await kube.create({ group: 'apiextensions.k8s.io', version: 'v1', plural: 'customresourcedefinitions', namespaced: false }, undefined, object);
  await waitFor('the ShadowSet CRD', async () => (await kube.list(RES.shadowsets, 'default').then(() => true, () => false)));
  await kube.create({ group: '', version: 'v1', plural: 'namespaces', namespaced: false }, undefined, { metadata: { name: NS } });
  // The node the node service names (ControllerPublish looks it up).
  await kube.create(RES.nodes, undefined, { metadata: { name: NODE } });
  await kube.create(RES.storageclasses, undefined, { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name: 'sanity-members' }, provisioner: 'members.example', volumeBindingMode: 'Immediate', allowVolumeExpansion: true });

  const kubelet = join(dir, 'kubelet');
  const units = join(dir, 'units');
  await mkdir(kubelet, { recursive: true });
  const engines = new StandInEngines(kube, dir, units);
  engines.start();
  t.after(() => engines.stop());
  // No PV provisioner runs here either: the member claims are bound, and grown when their request grows,
  // by a stand-in for the member class's provisioner and resizer (Kubernetes lets a bound claim grow only).
  const binder = kube.inform(RES.pvcs, NS, (type, c: Obj) => {
    const spec = c.spec as { resources?: { requests?: { storage?: string } } } | undefined;
    const status = c.status as { phase?: string; capacity?: { storage?: string } } | undefined;
    const want = spec?.resources?.requests?.storage;
    if (type === 'DELETED' || !want || (status?.phase === 'Bound' && status.capacity?.storage === want)) return;
    void kube.mergePatch(RES.pvcs, NS, c.metadata.name, { status: { phase: 'Bound', capacity: { storage: want } } }, 'status').catch(() => undefined);
  }, () => undefined);
  t.after(() => binder.stop());
  const log = pino({ level: process.env.CSI_LOG ?? 'silent' });
  const server = await startServer({
    endpoint: `unix://${join(dir, 'csi.sock')}`, csi: loadCsi(), log,
    identity: identityService({ controller: true }),
    // Publish waits for the stand-in engine to start and say so; on a loaded machine that takes more than
    // the driver's default 5 s, and csi-sanity does not retry.
    controller: controllerService({ kube, namespace: NS, log, publishWaitMs: 30_000 }),
    node: nodeService({ nodeId: NODE, kubeletDir: kubelet, unitSocketDir: units, stateDir: join(dir, 'state'), exportName: 'shadow', reconnectDelaySeconds: 10, socketWaitSeconds: 15 }),
  });
  t.after(() => server.close());
  t.after(() => undoAll(dir)); // runs before the engines stop: after hooks run last-registered first

  const params = join(dir, 'params.yaml');
  await writeFile(params, 'memberClass: sanity-members\nmembers: "2"\n');
  const report = join(dir, 'junit.xml');
  const args = [
    `--csi.endpoint=unix://${server.path}`, `--csi.stagingdir=${join(kubelet, 'staging')}`, `--csi.mountdir=${join(kubelet, 'mount')}`,
    `--csi.testvolumeparameters=${params}`, `--csi.testvolumesize=${VOLUME_BYTES}`, `--ginkgo.junit-report=${report}`, '--ginkgo.timeout=25m',
  ];
  const run = spawn(sanity, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  run.stdout.on('data', (c: Buffer) => (out += c.toString()));
  run.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => run.once('exit', resolve));
  const cases = junitCases(await readFile(report, 'utf8'));
  const by = (o: Case['outcome']) => cases.filter((c) => c.outcome === o);
  const summary = `csi-sanity: ${by('passed').length} passed, ${by('failed').length} failed, ${by('skipped').length} skipped`;
  t.diagnostic(summary);
  for (const c of by('failed')) t.diagnostic(`FAILED ${c.name}: ${c.message.slice(0, 300)}`);
  if (process.env.CSI_SANITY_LIST) for (const c of cases) t.diagnostic(`${c.outcome} ${c.name}${c.outcome === 'skipped' ? `: ${c.message}` : ''}`);
  assert.ok(by('passed').length > 0, `${summary}\n${out.slice(-3000)}`);
  assert.deepEqual(by('failed').map((c) => c.name), [], `${summary}\n${out.slice(-3000)}`);
  assert.equal(code, 0, out.slice(-3000));
});
