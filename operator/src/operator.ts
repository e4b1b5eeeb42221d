/**
 * The operator: informers feed keyed work queues; the ShadowSet and WriteBitmap reconcilers run only
 * while this replica holds the lease; /metrics (authenticated) and /healthz on small HTTP listeners.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { SET_LABEL } from './api/group.js';
import { ShadowSetController } from './controller/shadowset-controller.js';
import { WriteBitmapController } from './controller/writebitmap-controller.js';
import { ExecHooks, type Hooks } from './controller/hooks.js';
import { EngineClient } from './engine-client.js';
import { Kube, R, type KubeConfig, type Obj } from './kube/client.js';
import { KubeReviews, type ReviewClient } from './kube/reviews.js';
import { HttpListeners } from './runtime/http-listeners.js';
import type { MetricsAuthMode } from './runtime/metrics-auth.js';
import { LeaderElector } from './runtime/leader.js';
import { Metrics } from './runtime/metrics.js';
import { WorkQueue } from './runtime/work-queue.js';
import { attachedHandle } from './controller/attachments.js';
import { DEFAULTS, type EngineDefaults } from './reconcile/types.js';
import type { OperatorPods } from './reconcile/set-objects.js';
import { MIN_KEY_BYTES } from './security/keys.js';

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  log: Logger;
  engineImage: string;
  /** Empty: every namespace. */
  watchNamespace?: string;
  leaderElection?: { namespace: string; name?: string; identity?: string } | false;
  /**
   * `[HOST]:PORT` of /metrics. `auth` 'kubernetes' (the default) admits a request only with a bearer token the
   * API server authenticates (TokenReview) and authorizes for get /metrics (SubjectAccessReview); 'none' is
   * refused unless HOST is a loopback address.
   */
  metrics?: { address: string; auth?: MetricsAuthMode };
  /** `[HOST]:PORT` of /healthz, open to anyone (probes send no token; it tells only that the process runs). */
  healthAddress?: string;
  /** Answers the metrics listener's reviews; by default the API server of `kubeConfig`. */
  reviews?: ReviewClient;
  hooks?: Hooks;
  /** Defaults for what ShadowSet specs leave unset. */
  defaults?: EngineDefaults;
  /** The operator's secret (≥ 32 bytes): every set's control token and PSKs are derived from it. */
  key: Buffer;
  /** The operator's own pods (namespace and labels): the only peers the engines' HTTP API admits. */
  operatorPods: OperatorPods;
  /**
   * Host directory where engines of sets consumed through CSI serve their virtual unit for the node plugin
   * (`<dir>/<namespace>/<set>/nbd.sock`); unset: none do.
   */
  unitSocketDir?: string | null;
}

export class Operator {
  readonly metrics = new Metrics();
  private readonly kube: Kube;
  private readonly stops: (() => void)[] = [];
  readonly http: HttpListeners;
  private leader: LeaderElector | null = null;
  ssQueue!: WorkQueue;
  wbQueue!: WorkQueue;

  constructor(private readonly o: OperatorOptions) {
    if (o.key.length < MIN_KEY_BYTES) throw new Error(`the operator key has ${o.key.length} bytes; at least ${MIN_KEY_BYTES} are required`);
    this.kube = new Kube(o.kubeConfig);
    // Checked here, before anything starts: a metrics listener that is neither local nor authenticated is refused.
    this.http = new HttpListeners({
      metrics: o.metrics ? { address: o.metrics.address, auth: o.metrics.auth ?? 'kubernetes' } : undefined,
      healthAddress: o.healthAddress, reviews: o.reviews ?? new KubeReviews(o.kubeConfig),
      renderMetrics: () => this.metrics.render(this.leading), log: o.log,
    });
  }

  get leading(): boolean {
    return this.leader ? this.leader.leading : true;
  }

  async start(): Promise<void> {
    const { log } = this.o;
    await this.http.start();
    if (this.o.leaderElection) {
      const le = this.o.leaderElection;
      this.leader = new LeaderElector(this.kube, { namespace: le.namespace, name: le.name ?? 'shadowset-operator', identity: le.identity ?? `${hostname()}-${process.pid}` }, log);
      await this.leader.acquire(() => {
        log.fatal({ event: 'LeaderLost' }, 'stopping: another replica leads now');
        void this.stop();
      });
    }
    const engine = new EngineClient();
    const ss = new ShadowSetController({
      kube: this.kube, engine, log, engineImage: this.o.engineImage, hooks: this.o.hooks ?? new ExecHooks(this.o.kubeConfig), metrics: this.metrics,
      defaults: this.o.defaults ?? DEFAULTS, key: this.o.key, operatorPods: this.o.operatorPods, unitSocketDir: this.o.unitSocketDir ?? null,
    });
    const wb = new WriteBitmapController(this.kube, engine, log, (obj, type, reason, message) => ss.event(obj, type, reason, message), this.o.key);
    const onError = (kind: string) => (key: string, err: unknown, attempt: number) => {
      this.metrics.errors++;
      log.warn({ event: 'ReconcileFailed', kind, key, attempt, err: (err as Error).message }, 'reconcile failed; backing off');
    };
    this.ssQueue = new WorkQueue(async (key) => {
      this.metrics.reconciles++;
      return ss.reconcile(key);
    }, { onError: onError('ShadowSet') });
    this.wbQueue = new WorkQueue((key) => wb.reconcile(key), { onError: onError('WriteBitmap') });

    const ns = this.o.watchNamespace || undefined;
    const keyOf = (x: Obj) => `${x.metadata.namespace}/${x.metadata.name}`;
    const informErr = (what: string) => (e: unknown) => log.warn({ event: 'WatchError', resource: what, err: (e as Error).message }, 'watch failed; relisting');
    this.stops.push(this.kube.inform(R.shadowsets, ns, (_t, x) => this.ssQueue.add(keyOf(x)), informErr('shadowsets')).stop);
    this.stops.push(this.kube.inform(R.writebitmaps, ns, (_t, x) => {
      this.wbQueue.add(keyOf(x));
      const set = (x.spec as { shadowSet?: string } | undefined)?.shadowSet;
      if (set) this.ssQueue.add(`${x.metadata.namespace}/${set}`);
    }, informErr('writebitmaps')).stop);
    this.stops.push(this.kube.inform(R.pods, ns, (_t, x) => {
      const set = x.metadata.labels?.[SET_LABEL];
      if (set) this.ssQueue.add(`${x.metadata.namespace}/${set}`);
    }, informErr('pods')).stop);
    this.stops.push(this.kube.inform(R.pvcs, ns, (_t, x) => {
      // A claim appearing or changing may unblock any set of its namespace.
      void this.kube.list(R.shadowsets, x.metadata.namespace).then(
        (l) => l.items.filter((s) => ((s.spec as { members?: { claimName?: string }[] })?.members ?? []).some((m) => m.claimName === x.metadata.name)).forEach((s) => this.ssQueue.add(keyOf(s))),
        () => undefined,
      );
    }, informErr('pvcs')).stop);
    // A VolumeAttachment of the CSI driver says where a set's consumer is (cluster-scoped: watched whole).
    this.stops.push(this.kube.inform(R.volumeattachments, undefined, (_t, x) => {
      void attachedHandle(this.kube, x).then((handle) => {
        const [setNs, set] = handle?.split('/') ?? [];
        if (setNs && set && (!ns || setNs === ns)) this.ssQueue.add(`${setNs}/${set}`);
      }, () => undefined);
    }, informErr('volumeattachments')).stop);
    log.info({ event: 'OperatorStarted', watchNamespace: ns ?? '*', engineImage: this.o.engineImage }, 'operator started');
  }

  async stop(): Promise<void> {
    for (const s of this.stops) s();
    this.ssQueue?.stop();
    this.wbQueue?.stop();
    this.leader?.stop();
    await this.http.stop();
  }
}
