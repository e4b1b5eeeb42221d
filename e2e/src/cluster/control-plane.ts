// A throw-away Kubernetes control plane: real etcd and kube-apiserver on free loopback ports, with
// generated certificates and an admin kubeconfig. No kubelet (see ../sim/node-simulator.ts), no
// controller-manager, no scheduler.
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { ensureBinaries } from './binaries.js';
import type { ClusterBinaries } from './binaries.js';
import { generatePki, writeKubeconfig } from './certs.js';
import type { Pki } from './certs.js';
import { freePort } from './ports.js';
import { ManagedProcess, forgetTempDir, registerTempDir } from './processes.js';

export interface ControlPlaneOptions {
  /** Where data, certificates and logs go; a fresh temporary directory by default. */
  workDir?: string;
  /** Keep workDir after stop() (also when SHADOWSET_KEEP_CLUSTER=1). */
  keep?: boolean;
  /** Progress lines (start-up time, build progress); stderr by default. */
  log?: (line: string) => void;
  /** Added to kube-apiserver's command line. */
  extraApiServerArgs?: string[];
  /** How long to wait for health; 120 s by default. */
  timeoutMs?: number;
}

const SERVICE_CIDR = '10.96.0.0/24';
const SERVICE_IP = '10.96.0.1';

export class ControlPlane {
  private stopped = false;

  constructor(
    readonly workDir: string,
    readonly server: string,
    readonly kubeconfigPath: string,
    readonly kubeConfig: KubeConfig,
    readonly pki: Pki,
    readonly binaries: ClusterBinaries,
    readonly startupMs: number,
    private readonly etcd: ManagedProcess,
    private readonly apiserver: ManagedProcess,
    private readonly keep: boolean,
  ) {}

  /** A new KubeConfig for the admin user (each client may want its own). */
  newKubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(this.kubeconfigPath);
    return kc;
  }

  get running(): boolean {
    return this.etcd.running && this.apiserver.running;
  }

  /** Process ids of etcd and kube-apiserver (each leads its own process group). */
  get pids(): { etcd: number; apiserver: number } {
    return { etcd: this.etcd.pid, apiserver: this.apiserver.pid };
  }

  /** Stops kube-apiserver, then etcd, and removes the work directory. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.apiserver.stop(3000);
    await this.etcd.stop(3000);
    if (!this.keep) {
      await rm(this.workDir, { recursive: true, force: true });
      forgetTempDir(this.workDir);
    }
  }
}

async function tail(file: string, lines = 40): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function get(url: string, tls?: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (tls ? request : httpRequest)(url, { ...(tls ?? {}), timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Polls check() until it returns true; fails early if the process exits, or at the deadline. */
async function waitHealthy(what: string, proc: ManagedProcess, logFile: string, deadline: number,
  check: () => Promise<boolean>): Promise<void> {
  let exited = false;
  void proc.exited.then(() => (exited = true));
  let last = '';
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${what} exited during start-up:\n${await tail(logFile)}`);
    try {
      if (await check()) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await delay(200);
  }
  throw new Error(`${what} not healthy in time (last error: ${last}):\n${await tail(logFile)}`);
}

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const binaries = await ensureBinaries(log);
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts, log, binaries);
    } catch (err) {
      // a port found free can be taken by someone else before our process binds it
      if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
      log(`control plane start-up lost a port race; retrying (${String(err).split('\n')[0]})`);
    }
  }
}

async function startOnce(opts: ControlPlaneOptions, log: (line: string) => void, binaries: ClusterBinaries):
  Promise<ControlPlane> {
  const t0 = Date.now();
  const deadline = t0 + (opts.timeoutMs ?? 120_000);
  const workDir = opts.workDir ?? (await mkdtemp(join(tmpdir(), 'shadowset-cp-')));
  const keep = opts.keep ?? process.env.SHADOWSET_KEEP_CLUSTER === '1';
  if (!keep && !opts.workDir) registerTempDir(workDir);
  const started: ManagedProcess[] = [];
  try {
    const pki = await generatePki(workDir, SERVICE_IP);
    const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];

    const etcdLog = join(workDir, 'etcd.log');
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    const etcd = await ManagedProcess.start({
      command: binaries.etcd,
      args: [
        '--name=default',
        `--data-dir=${join(workDir, 'etcd')}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        // a test cluster's data is thrown away: durability only costs time
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      output: { file: etcdLog },
    });
    started.push(etcd);
    await waitHealthy('etcd', etcd, etcdLog, deadline, async () => {
      const r = await get(`${etcdUrl}/health`);
      return r.status === 200 && (JSON.parse(r.body) as { health?: string }).health === 'true';
    });
    const etcdMs = Date.now() - t0;

    const apiLog = join(workDir, 'kube-apiserver.log');
    const apiserver = await ManagedProcess.start({
      command: binaries.kubeApiserver,
      args: [
        `--etcd-servers=${etcdUrl}`,
        '--bind-address=127.0.0.1',
        // without a default route kube-apiserver cannot pick an address to advertise
        '--advertise-address=127.0.0.1',
        `--secure-port=${apiPort}`,
        `--cert-dir=${join(workDir, 'apiserver-certs')}`,
        `--tls-cert-file=${pki.servingCert}`,
        `--tls-private-key-file=${pki.servingKey}`,
        `--client-ca-file=${pki.caCert}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${pki.saPub}`,
        `--service-account-signing-key-file=${pki.saKey}`,
        '--authorization-mode=RBAC',
        '--allow-privileged=true',
        // no controller-manager creates the default ServiceAccount of new namespaces
        '--disable-admission-plugins=ServiceAccount',
        '--profiling=false',
        ...(opts.extraApiServerArgs ?? []),
      ],
      output: { file: apiLog },
    });
    started.push(apiserver);
    const tls = {
      ca: await readFile(pki.caCert),
      cert: await readFile(pki.adminCert),
      key: await readFile(pki.adminKey),
    };
    const server = `https://127.0.0.1:${apiPort}`;
    await waitHealthy('kube-apiserver', apiserver, apiLog, deadline, async () => {
      const r = await get(`${server}/readyz`, tls);
      return r.status === 200;
    });
    const kubeconfigPath = await writeKubeconfig(join(workDir, 'kubeconfig'), server, pki);
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    const startupMs = Date.now() - t0;
    log(
      `control plane up in ${(startupMs / 1000).toFixed(1)} s (etcd ${etcdMs} ms): kube-apiserver ` +
        `${binaries.kubernetesVersion} at ${server}, etcd ${binaries.etcdVersion}; KUBECONFIG=${kubeconfigPath}`,
    );
    return new ControlPlane(workDir, server, kubeconfigPath, kc, pki, binaries, startupMs, etcd, apiserver, keep);
  } catch (err) {
    for (const p of started.reverse()) await p.stop(1000);
    if (!keep) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}
