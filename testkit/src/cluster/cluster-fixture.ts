/**
 * A local cluster for the operator's control-plane tests (LocalCluster: control plane, CRDs, simulated
 * nodes, local block PVs, the operator in this process), with what those tests ask of it: the set's keys
 * and engine, its export as a consumer opens it, status waits, events, and hooks that are only recorded.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '@shadowset/e2e';
import { API_VERSION, deriveSetKeys, EXPORT_PSK_IDENTITY, R, type Hooks, type Obj, type SetKeys } from '@shadowset/operator';
import { LocalCluster } from './local-cluster.js';

export const run = promisify(execFile);

export class RecordingHooks implements Hooks {
  calls: string[] = [];
  async run(namespace: string, hook: { pod: string; command: string[] }, what: 'freeze' | 'thaw'): Promise<void> {
    this.calls.push(`${what}:${namespace}/${hook.pod}:${hook.command.join(' ')}`);
  }
}

export class Cluster extends LocalCluster {
  readonly hooks: RecordingHooks;
  private readonly pskDirs: string[] = [];

  constructor(o: { unitSocketDir?: string } = {}) {
    const hooks = new RecordingHooks();
    super({ name: 'test', hooks, ...o });
    this.hooks = hooks;
  }

  override async stop(): Promise<void> {
    try {
      await super.stop();
    } finally {
      for (const d of this.pskDirs) await rm(d, { recursive: true, force: true });
    }
  }

  /** The set's keys, derived as the operator derives them (from its key and the set's uid). */
  async keys(ns: string, name: string): Promise<SetKeys> {
    const ss = await this.get(ns, name);
    if (!ss?.metadata.uid) throw new Error(`no ShadowSet ${ns}/${name}`);
    return deriveSetKeys(this.key, { namespace: ns, name, uid: ss.metadata.uid });
  }

  /** GET /v1/status of the set's engine, with the set's token. */
  async engineStatus(ns: string, name: string): Promise<{ members?: { path: string; state: string }[] }> {
    const res = await fetch(`http://${await this.enginePodIP(ns, name)}:8080/v1/status`, { headers: { authorization: `Bearer ${(await this.keys(ns, name)).controlToken}` } });
    if (!res.ok) throw new Error(`engine status: ${res.status}`);
    return (await res.json()) as { members?: { path: string; state: string }[] };
  }

  /**
   * A qemu PSK credentials directory (keys.psk) holding what the set's export Secret holds, as a consumer
   * would mount it.
   */
  async exportPskDir(ns: string, name: string): Promise<string> {
    const sec = await this.kube.get(R.secrets, ns, `${name}-shadowset-export`);
    const psk = (sec as { data?: { psk?: string } } | null)?.data?.psk;
    if (!psk) throw new Error(`Secret ${name}-shadowset-export has no psk`);
    const dir = await mkdtemp(join(tmpdir(), 'shadowset-psk-'));
    this.pskDirs.push(dir);
    await writeFile(join(dir, 'keys.psk'), Buffer.from(psk, 'base64'), { mode: 0o600 });
    return dir;
  }

  async apply(ns: string, name: string, spec: unknown): Promise<void> {
    await this.kube.apply(R.shadowsets, ns, name, { apiVersion: API_VERSION, kind: 'ShadowSet', metadata: { name, namespace: ns }, spec }, 'test-user');
  }

  get(ns: string, name: string): Promise<Obj | null> {
    return this.kube.get(R.shadowsets, ns, name);
  }

  /** Wait until the set's status satisfies `ok` (returns it). */
  async until(ns: string, name: string, what: string, ok: (s: Status) => boolean, timeoutMs = 60_000): Promise<Status> {
    let last: Status = {};
    try {
      return await waitFor(what, async () => {
        const o = await this.get(ns, name);
        last = (o?.status ?? {}) as Status;
        return ok(last) ? last : undefined;
      }, { timeoutMs, intervalMs: 200 });
    } catch (e) {
      throw new Error(`${(e as Error).message}; last status: ${JSON.stringify(last)}`);
    }
  }

  async events(ns: string, name: string): Promise<{ reason: string; message: string; type: string }[]> {
    const l = await this.kube.list(R.events, ns);
    return l.items
      .filter((e) => (e.involvedObject as { name?: string })?.name === name)
      .map((e) => ({ reason: String(e.reason), message: String(e.message), type: String(e.type) }));
  }

  async enginePodIP(ns: string, name: string): Promise<string> {
    const p = await this.kube.get(R.pods, ns, `${name}-engine`);
    const ip = (p?.status as { podIP?: string } | undefined)?.podIP;
    if (!ip) throw new Error('engine pod has no IP');
    return ip;
  }

  /**
   * A pod that declares itself a consumer of the given sets (so their hooks may exec in it). It names a node
   * the simulator does not run, so it is an API object only: hooks are recorded here, not exec'd.
   */
  async consumerPod(ns: string, name: string, sets: string): Promise<void> {
    await this.kube.create(R.pods, ns, {
      metadata: { name, annotations: { 'shadowset.dev/consumer-of': sets } },
      spec: { nodeName: 'not-simulated', containers: [{ name: 'app', image: 'app:1' }] },
    });
  }

  /** qemu-io against the set's export, over TLS with the PSK of its export Secret. */
  async qemuIo(ns: string, name: string, cmds: string[], port = 10809): Promise<string> {
    const ip = await this.enginePodIP(ns, name);
    const dir = await this.exportPskDir(ns, name);
    const args = [
      '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${dir},username=${EXPORT_PSK_IDENTITY}`,
      ...cmds.flatMap((c) => ['-c', c]),
      '--image-opts', `driver=nbd,host=${ip},port=${port},export=shadow,tls-creds=tls0`,
    ];
    const r = await run('qemu-io', args);
    const out = r.stdout + r.stderr;
    if (/verification failed|failed:/i.test(out)) throw new Error(`qemu-io failed: ${out}`);
    return out;
  }
}

export interface Status {
  state?: string;
  membersInSync?: string;
  shadowGeneration?: number;
  conditions?: { type: string; status: string; reason: string; message: string }[];
  members?: { name: string; id?: string; state: string; reason?: string }[];
  recovery?: { mode?: string; bytesDone?: number; bytesTotal?: number };
  endpoint?: string;
}

export const cond = (s: Status, type: string) => s.conditions?.find((c) => c.type === type);
export const memberState = (s: Status, name: string) => s.members?.find((m) => m.name === name)?.state;
