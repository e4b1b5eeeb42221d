// One container of a simulated pod: a local process for the project's image, a stand-in that is simply
// "running" for any other image. Restarts follow the pod's restartPolicy with exponential back-off.
import type { V1Container, V1ContainerStatus, V1ContainerState } from '@kubernetes/client-node';
import { appendFileSync } from 'node:fs';
import { ManagedProcess } from '../cluster/processes.js';
import type { ExitInfo } from '../cluster/processes.js';
import { probeOnce } from './probes.js';

export interface Backoff {
  /** first restart delay (kubelet: 10 s) */
  initialMs: number;
  /** cap (kubelet: 300 s) */
  maxMs: number;
  /** a container that ran this long starts again from initialMs (kubelet: 10 min) */
  resetAfterMs: number;
}

/** What the pod gives a container to start a process with; built fresh for every (re)start. */
export interface LaunchSpec {
  file: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
}

export interface ContainerHost {
  readonly restartPolicy: 'Always' | 'OnFailure' | 'Never';
  readonly podIP: string;
  readonly logFile: (container: string) => string;
  /** resolves the command, volumes and env; throws ContainerConfigError when it cannot (yet) */
  prepare(c: V1Container): Promise<LaunchSpec>;
  changed(): void;
  output(container: string, chunk: Buffer): void;
}

function signalNumber(sig: NodeJS.Signals): number {
  const map: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9,
    SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };
  return map[sig] ?? 0;
}

export class ContainerRunner {
  restartCount = 0;
  private state: V1ContainerState = { waiting: { reason: 'ContainerCreating' } };
  private lastState: V1ContainerState = {};
  private ready = false;
  private startedOnce = false;
  private proc: ManagedProcess | undefined;
  private startedAt: Date | undefined;
  private backoffMs: number;
  private timer: NodeJS.Timeout | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  /** set while we are the ones stopping the process: no restart, no crash bookkeeping */
  private halted = false;
  /** last exit of a process we killed for a node failure, applied when the node returns */
  private lostExit: ExitInfo | undefined;
  /** SIGSTOPped with its node (failNode with freeze) */
  private frozen = false;
  private generation = 0;

  constructor(
    private readonly host: ContainerHost,
    readonly spec: V1Container,
    /** true for the project's image: runs a local process */
    readonly real: boolean,
    private readonly backoff: Backoff,
  ) {
    this.backoffMs = backoff.initialMs;
  }

  get pid(): number | undefined {
    return this.proc?.running ? this.proc.pid : undefined;
  }
  get hasStarted(): boolean {
    return this.startedOnce;
  }
  get isRunning(): boolean {
    return this.state.running !== undefined;
  }
  get isReady(): boolean {
    return this.ready;
  }
  /** terminated for good: will not be restarted */
  get isDone(): boolean {
    return this.state.terminated !== undefined && this.timer === undefined && !this.willRestart(this.state.terminated.exitCode);
  }
  get exitCode(): number | undefined {
    return this.state.terminated?.exitCode;
  }

  private willRestart(exitCode: number): boolean {
    const p = this.host.restartPolicy;
    return p === 'Always' || (p === 'OnFailure' && exitCode !== 0);
  }

  async start(): Promise<void> {
    this.halted = false;
    const gen = ++this.generation;
    if (!this.real) {
      this.startedOnce = true;
      this.startedAt = new Date();
      this.state = { running: { startedAt: this.startedAt } };
      this.ready = true;
      this.host.changed();
      return;
    }
    let launch: LaunchSpec;
    try {
      launch = await this.host.prepare(this.spec);
    } catch (err) {
      const e = err as Error & { reason?: string };
      this.state = { waiting: { reason: e.reason ?? 'CreateContainerError', message: e.message } };
      this.host.changed();
      // kubelet retries a container it could not create; so do we
      this.schedule(gen, () => void this.start());
      return;
    }
    if (this.halted || gen !== this.generation) return;
    const name = this.spec.name;
    appendFileSync(this.host.logFile(name), `--- start ${this.restartCount} ${launch.argv.join(' ')}\n`);
    let proc: ManagedProcess;
    try {
      proc = await ManagedProcess.start({
        command: launch.file,
        args: launch.argv,
        env: launch.env,
        cwd: launch.cwd,
        output: (chunk) => this.host.output(name, chunk),
      });
    } catch (err) {
      this.state = { waiting: { reason: 'RunContainerError', message: (err as Error).message } };
      this.host.changed();
      this.schedule(gen, () => void this.start());
      return;
    }
    this.proc = proc;
    this.startedOnce = true;
    this.startedAt = new Date();
    this.state = { running: { startedAt: this.startedAt } };
    this.ready = this.spec.readinessProbe === undefined;
    if (this.spec.readinessProbe) this.startProbing(gen);
    this.host.changed();
    void proc.exited.then((info) => this.onExit(gen, info));
  }

  private schedule(gen: number, fn: () => void): void {
    const ms = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.backoff.maxMs);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.halted && gen === this.generation) fn();
    }, ms);
  }

  private startProbing(gen: number): void {
    const probe = this.spec.readinessProbe;
    if (!probe) return;
    let ok = 0;
    let bad = 0;
    const tick = async (): Promise<void> => {
      if (this.halted || this.frozen || gen !== this.generation || !this.proc?.running) return;
      const pass = await probeOnce(probe, this.spec, this.host.podIP);
      if (this.halted || this.frozen || gen !== this.generation || !this.proc?.running) return;
      if (pass) {
        ok++;
        bad = 0;
        if (!this.ready && ok >= (probe.successThreshold ?? 1)) {
          this.ready = true;
          this.host.changed();
        }
      } else {
        bad++;
        ok = 0;
        if (this.ready && bad >= (probe.failureThreshold ?? 3)) {
          this.ready = false;
          this.host.changed();
        }
      }
      this.probeTimer = setTimeout(() => void tick(), (probe.periodSeconds ?? 10) * 1000);
    };
    this.probeTimer = setTimeout(() => void tick(), (probe.initialDelaySeconds ?? 0) * 1000);
  }

  private terminatedState(info: ExitInfo): V1ContainerState {
    const exitCode = info.code ?? (info.signal ? 128 + signalNumber(info.signal) : 1);
    const t: NonNullable<V1ContainerState['terminated']> = {
      exitCode,
      reason: exitCode === 0 ? 'Completed' : 'Error',
      startedAt: this.startedAt ?? new Date(),
      finishedAt: new Date(),
    };
    if (info.signal) t.signal = signalNumber(info.signal);
    return { terminated: t };
  }

  private onExit(gen: number, info: ExitInfo): void {
    if (gen !== this.generation) return;
    this.proc = undefined;
    this.ready = false;
    clearTimeout(this.probeTimer);
    if (this.halted) return;
    const ranMs = Date.now() - (this.startedAt?.getTime() ?? Date.now());
    if (ranMs >= this.backoff.resetAfterMs) this.backoffMs = this.backoff.initialMs;
    const term = this.terminatedState(info);
    const exitCode = term.terminated?.exitCode ?? 1;
    if (this.willRestart(exitCode)) {
      this.lastState = term;
      this.state = { waiting: { reason: 'CrashLoopBackOff',
        message: `back-off ${Math.round(this.backoffMs / 1000)}s restarting failed container=${this.spec.name}` } };
      this.schedule(gen, () => {
        this.restartCount++;
        void this.start();
      });
    } else {
      this.state = term;
    }
    this.host.changed();
  }

  /** Stops the container for pod deletion: SIGTERM, SIGKILL after graceMs. */
  async stop(graceMs: number): Promise<void> {
    this.halted = true;
    this.generation++;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.probeTimer);
    this.ready = false;
    const p = this.proc;
    if (p) {
      const info = await p.stop(graceMs);
      this.state = this.terminatedState(info);
    }
    this.proc = undefined;
  }

  /** The node died: SIGKILL now, remember the exit for when the node returns. */
  async kill(): Promise<void> {
    this.halted = true;
    this.generation++;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(this.probeTimer);
    const p = this.proc;
    if (p) {
      p.killGroup('SIGKILL');
      this.lostExit = await p.exited;
    }
    this.proc = undefined;
  }

  /** The node stops answering but does not die (a partition, a hung kernel): SIGSTOP; peers see silence. */
  freeze(): void {
    if (this.frozen) return;
    this.frozen = true;
    clearTimeout(this.probeTimer);
    this.proc?.killGroup('SIGSTOP');
  }

  get isFrozen(): boolean {
    return this.frozen;
  }

  /** The node answers again: the process goes on where it stopped, and is probed again. */
  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.proc?.killGroup('SIGCONT');
    if (this.spec.readinessProbe && this.proc?.running) this.startProbing(this.generation);
  }

  /** The node is back: a container that was killed with it is restarted per restartPolicy, counted as a restart. */
  async revive(): Promise<void> {
    if (!this.real) return;
    const lost = this.lostExit;
    this.lostExit = undefined;
    this.ready = false;
    if (lost === undefined) {
      // it was not running (waiting or backing off): start it again
      if (this.state.terminated === undefined) await this.start();
      return;
    }
    const term = this.terminatedState(lost);
    if (this.willRestart(term.terminated?.exitCode ?? 1)) {
      this.lastState = term;
      this.restartCount++;
      this.backoffMs = this.backoff.initialMs;
      await this.start();
    } else {
      this.halted = false;
      this.state = term;
      this.host.changed();
    }
  }

  status(): V1ContainerStatus {
    const s: V1ContainerStatus = {
      name: this.spec.name,
      image: this.spec.image ?? '',
      imageID: '',
      ready: this.ready,
      started: this.state.running !== undefined,
      restartCount: this.restartCount,
      state: this.state,
      lastState: this.lastState,
    };
    if (this.real && this.proc?.running) s.containerID = `simulator://${this.proc.pid}`;
    return s;
  }
}
