// One pod bound to a simulated node: its root directory, pod IP, containers and reported status.
import type { CoreV1Api, V1Container, V1Pod, V1PodCondition, V1PodStatus } from '@kubernetes/client-node';
import { mkdir } from 'node:fs/promises';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { isProjectImage, resolveCommand } from './commands.js';
import type { CommandTable } from './commands.js';
import { ContainerRunner } from './container-runner.js';
import type { Backoff, ContainerHost, LaunchSpec } from './container-runner.js';
import { containerEnv, expandVars } from './env.js';
import { ContainerConfigError, prepareVolumes, rewritePaths, type PodVolumePlugin } from './volumes.js';
import type { Labels } from './selectors.js';

export interface PodRuntimeDeps {
  core: CoreV1Api;
  commands: CommandTable;
  backoff: Backoff;
  node: { name: string; labels: Labels; ip: string };
  /** the pod's own directory */
  dir: string;
  /** where its emptyDirs live (a short path: sockets in them must fit in 108 bytes) */
  emptyDirBase?: string;
  podKubeconfig?: string;
  /** CSI volumes: staged and published before containers start, undone when the pod goes */
  volumes?: PodVolumePlugin;
  patchStatus(namespace: string, name: string, status: V1PodStatus): Promise<void>;
  log(line: string): void;
  echoOutput: boolean;
}

const MAX_LOG = 1 << 20;

export class PodRuntime implements ContainerHost {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly restartPolicy: 'Always' | 'OnFailure' | 'Never';
  readonly runners: ContainerRunner[];
  readonly root: string;
  private readonly startTime = new Date();
  private readonly conditionTimes = new Map<string, { status: string; at: Date }>();
  private readonly output_ = new Map<string, string>();
  private lastSent = '';
  private dirty = false;
  private flushing: Promise<void> | undefined;
  /** the node is down: nothing runs and nothing is reported */
  private frozen = false;
  private gone = false;

  constructor(
    private pod: V1Pod,
    readonly podIP: string,
    private readonly deps: PodRuntimeDeps,
  ) {
    this.namespace = pod.metadata?.namespace ?? 'default';
    this.name = pod.metadata?.name ?? '';
    this.uid = pod.metadata?.uid ?? '';
    const rp = pod.spec?.restartPolicy;
    this.restartPolicy = rp === 'Never' || rp === 'OnFailure' ? rp : 'Always';
    this.root = join(deps.dir, 'root');
    this.runners = (pod.spec?.containers ?? []).map(
      (c) => new ContainerRunner(this, c, isProjectImage(c.image), deps.backoff),
    );
  }

  logFile = (container: string): string => join(this.deps.dir, 'logs', `${container}.log`);

  async start(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    await mkdir(join(this.deps.dir, 'logs'), { recursive: true });
    this.changed();
    for (const r of this.runners) await r.start();
  }

  /** What the process of container c is started with. */
  async prepare(c: V1Container): Promise<LaunchSpec> {
    // say so rather than silently skip work the pod relies on
    const init = (this.pod.spec?.initContainers ?? []).filter((ic) => isProjectImage(ic.image)).map((ic) => ic.name);
    if (init.length > 0) {
      throw new ContainerConfigError('CreateContainerError',
        `init containers of the project image are not simulated (${init.join(', ')})`);
    }
    const resolved = resolveCommand(this.deps.commands, c.command, c.args);
    if ('error' in resolved) throw new ContainerConfigError('CreateContainerError', resolved.error);
    const withIP: V1Pod = { ...this.pod, status: { ...this.pod.status, podIP: this.podIP, hostIP: this.deps.node.ip } };
    const pluginPaths = this.deps.volumes ? await this.deps.volumes.setUp(this.pod, this.deps.node.name) : {};
    const mappings = await prepareVolumes(this.deps.core, this.pod, c, this.root, this.deps.node,
      { pluginPaths, ...(this.deps.emptyDirBase ? { emptyDirBase: this.deps.emptyDirBase } : {}) });
    const userEnv = await containerEnv(this.deps.core, withIP, c);
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: this.root,
      HOSTNAME: this.name,
      POD_IP: this.podIP,
      POD_NAME: this.name,
      POD_NAMESPACE: this.namespace,
      NODE_NAME: this.deps.node.name,
      SHADOWSET_SIM_POD_ROOT: this.root,
      ...(this.deps.podKubeconfig ? { KUBECONFIG: this.deps.podKubeconfig } : {}),
    };
    for (const [k, v] of Object.entries(userEnv)) env[k] = rewritePaths(v, mappings);
    const argv = resolved.argv.map((a, i) => (i === 0 ? a : rewritePaths(expandVars(a, userEnv), mappings)));
    const cwd = c.workingDir ? join(this.root, c.workingDir) : this.root;
    await mkdir(cwd, { recursive: true });
    return { file: resolved.file, argv, env, cwd };
  }

  output(container: string, chunk: Buffer): void {
    const text = chunk.toString('utf8');
    const prev = this.output_.get(container) ?? '';
    const next = prev + text;
    this.output_.set(container, next.length > MAX_LOG ? next.slice(next.length - MAX_LOG) : next);
    appendFileSync(this.logFile(container), chunk);
    if (this.deps.echoOutput) {
      for (const line of text.split('\n')) if (line) this.deps.log(`[${this.namespace}/${this.name}/${container}] ${line}`);
    }
  }

  /** Everything the container printed (the last MiB), across restarts. */
  logs(container: string): string {
    return this.output_.get(container) ?? '';
  }

  update(pod: V1Pod): void {
    this.pod = pod;
  }

  changed(): void {
    this.dirty = true;
    this.flushing ??= this.flushLoop().finally(() => (this.flushing = undefined));
  }

  /** Resolves when every status change so far has reached the API server (or failed to). */
  async settled(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flushLoop(): Promise<void> {
    // let a burst of changes (several containers starting) coalesce into one patch
    await new Promise((r) => setImmediate(r));
    while (this.dirty && !this.frozen && !this.gone) {
      this.dirty = false;
      const status = this.status();
      const text = JSON.stringify(status);
      if (text === this.lastSent) continue;
      try {
        await this.deps.patchStatus(this.namespace, this.name, status);
        this.lastSent = text;
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (code === 404) {
          this.gone = true;
          return;
        }
        this.deps.log(`status of ${this.namespace}/${this.name}: ${(err as Error).message}; retrying`);
        this.dirty = true;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private condition(type: string, ok: boolean, reason?: string): V1PodCondition {
    const status = ok ? 'True' : 'False';
    const prev = this.conditionTimes.get(type);
    if (!prev || prev.status !== status) this.conditionTimes.set(type, { status, at: new Date() });
    const c: V1PodCondition = { type, status, lastTransitionTime: this.conditionTimes.get(type)?.at ?? new Date() };
    if (reason && !ok) c.reason = reason;
    return c;
  }

  phase(): 'Pending' | 'Running' | 'Succeeded' | 'Failed' {
    if (this.runners.length > 0 && this.runners.every((r) => r.isDone)) {
      return this.runners.every((r) => r.exitCode === 0) ? 'Succeeded' : 'Failed';
    }
    return this.runners.every((r) => r.hasStarted) ? 'Running' : 'Pending';
  }

  status(nodeLost = false): V1PodStatus {
    const ready = !nodeLost && this.runners.every((r) => r.isReady);
    const phase = this.phase();
    const notReadyReason = nodeLost ? 'NodeNotReady' : phase === 'Succeeded' ? 'PodCompleted' : 'ContainersNotReady';
    return {
      phase,
      conditions: [
        this.condition('PodScheduled', true),
        this.condition('Initialized', true),
        this.condition('ContainersReady', this.runners.every((r) => r.isReady), 'ContainersNotReady'),
        this.condition('Ready', ready, notReadyReason),
      ],
      hostIP: this.deps.node.ip,
      hostIPs: [{ ip: this.deps.node.ip }],
      podIP: this.podIP,
      podIPs: [{ ip: this.podIP }],
      startTime: this.startTime,
      containerStatuses: this.runners.map((r) => r.status()),
    };
  }

  /** Pod deletion: stop every container (SIGTERM, SIGKILL after the grace period), then its CSI volumes. */
  async terminate(graceSeconds: number): Promise<void> {
    this.gone = true;
    await Promise.all(this.runners.map((r) => r.stop(graceSeconds * 1000)));
    if (this.deps.volumes) {
      await this.deps.volumes.tearDown(this.pod, this.deps.node.name)
        .catch((err: unknown) => this.deps.log(`volumes of ${this.namespace}/${this.name}: ${(err as Error).message}`));
    }
  }

  /** The node failed: SIGKILL everything; report the pod not ready, as the node lifecycle controller would. */
  async nodeFailed(freeze = false): Promise<void> {
    this.frozen = true;
    await this.settled();
    if (freeze) for (const r of this.runners) r.freeze();
    else await Promise.all(this.runners.map((r) => r.kill()));
    if (this.gone) return;
    try {
      await this.deps.patchStatus(this.namespace, this.name, { conditions: this.status(true).conditions ?? [] });
    } catch (err) {
      this.deps.log(`marking ${this.namespace}/${this.name} not ready: ${(err as Error).message}`);
    }
  }

  /** The node is back: frozen containers go on, those that died with it start again per restartPolicy. */
  async nodeReturned(): Promise<void> {
    this.frozen = false;
    this.lastSent = '';
    for (const r of this.runners) {
      if (r.isFrozen) r.thaw();
      else await r.revive();
    }
    this.changed();
  }
}
