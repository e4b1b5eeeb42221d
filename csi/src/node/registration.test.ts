import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { parseCsiArgs } from '../args.js';
import { DRIVER_NAME } from '../spec.js';
import { loadRegistration, registrationSocketPath, startRegistration } from './registration.js';

type Client = grpc.Client & Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void>;
const call = (c: Client, method: string, req: unknown) =>
  new Promise<Record<string, unknown>>((resolve, reject) => c[method]!(req, (err, res) => (err ? reject(err) : resolve(res))));

/** A kubelet's side of the registration: a client of the socket it found in plugins_registry. */
function kubeletClient(path: string): Client {
  const Registration = loadRegistration();
  return new Registration(`unix://${path}`, grpc.credentials.createInsecure()) as unknown as Client;
}

test('registration: the kubelet gets the CSI plugin info over gRPC on a 0660 socket in plugins_registry, a stale socket is replaced, a clean stop removes it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'csi-reg-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kubeletDir = join(dir, 'kubelet');
  const path = registrationSocketPath(kubeletDir);
  assert.equal(path, join(kubeletDir, 'plugins_registry', 'csi.shadowset.dev-reg.sock'));
  // What a SIGKILLed plugin leaves behind: a file where the socket goes (bind would fail on it).
  await mkdir(join(kubeletDir, 'plugins_registry'), { recursive: true });
  await writeFile(path, 'stale');
  const rejections: string[] = [];
  const reg = await startRegistration({
    kubeletDir,
    csiSocketOnHost: '/var/lib/kubelet/plugins/csi.shadowset.dev/csi.sock',
    log: pino({ level: 'silent' }),
    onRejected: (e) => rejections.push(e),
  });
  const st = await stat(path);
  assert.ok(st.isSocket(), 'the stale file was replaced by the socket');
  assert.equal(st.mode & 0o777, 0o660);
  const client = kubeletClient(path);
  t.after(() => client.close());
  assert.deepEqual(await call(client, 'GetInfo', {}), {
    type: 'CSIPlugin',
    name: DRIVER_NAME,
    endpoint: '/var/lib/kubelet/plugins/csi.shadowset.dev/csi.sock',
    supported_versions: ['1.0.0'],
  });
  assert.deepEqual(await call(client, 'NotifyRegistrationStatus', { plugin_registered: true, error: '' }), {});
  assert.deepEqual(rejections, [], 'a successful registration is only logged');
  await call(client, 'NotifyRegistrationStatus', { plugin_registered: false, error: 'driver name csi.shadowset.dev already registered' });
  assert.deepEqual(rejections, ['driver name csi.shadowset.dev already registered']);
  client.close();
  await reg.close();
  assert.equal(existsSync(path), false, 'the socket is removed on a clean stop');
});

test('registration: refused for a relative CSI socket path; the flag is node-only and must name an absolute socket', async () => {
  await assert.rejects(
    startRegistration({ kubeletDir: '/nonexistent', csiSocketOnHost: 'csi.sock', log: pino({ level: 'silent' }), onRejected: () => undefined }),
    /must be absolute/,
  );
  const base = ['--endpoint', 'unix:///csi/csi.sock', '--node-id', 'n1'];
  assert.equal(parseCsiArgs([...base, '--mode', 'node']).kubeletRegistrationPath, undefined);
  assert.equal(parseCsiArgs([...base, '--mode', 'node', '--kubelet-registration-path', '/var/lib/kubelet/plugins/x/csi.sock']).kubeletRegistrationPath,
    '/var/lib/kubelet/plugins/x/csi.sock');
  assert.throws(() => parseCsiArgs([...base, '--mode', 'controller', '--kubelet-registration-path', '/k/csi.sock']), /for the node service/);
  assert.throws(() => parseCsiArgs([...base, '--mode', 'node', '--kubelet-registration-path', 'plugins/csi.sock']), /absolute path/);
});

test('registration: the driver exits non-zero when the kubelet reports it was not registered, and leaves neither socket', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'csi-reg-bin-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kubeletDir = join(dir, 'kubelet');
  const csiSock = join(kubeletDir, 'plugins', DRIVER_NAME, 'csi.sock');
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'shadowset-csi.js');
  const child = spawn(process.execPath, [bin, '--mode', 'node', '--endpoint', `unix://${csiSock}`, '--node-id', 'node-a',
    '--kubelet-dir', kubeletDir, '--unit-socket-dir', join(dir, 'units'), '--state-dir', join(dir, 'state'),
    '--kubelet-registration-path', csiSock, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  t.after(() => { clearTimeout(killer); child.kill('SIGKILL'); });
  let out = '';
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  // The registration socket listens once the driver logs so (an event, not a sleep).
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('"RegistrationListening"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before listening: ${out}`)));
  });
  const path = registrationSocketPath(kubeletDir);
  assert.ok((await lstat(path)).isSocket());
  const client = kubeletClient(path);
  assert.equal((await call(client, 'GetInfo', {})).endpoint, csiSock);
  const exited = once(child, 'exit');
  await call(client, 'NotifyRegistrationStatus', { plugin_registered: false, error: 'no such node' });
  client.close();
  const [code] = (await exited) as [number | null];
  assert.equal(code, 1, `exit code (output: ${out})`);
  assert.match(out, /KubeletRegistrationFailed[^\n]*no such node/);
  assert.equal(existsSync(path), false, 'registration socket removed');
  assert.equal(existsSync(csiSock), false, 'CSI socket removed');
});
