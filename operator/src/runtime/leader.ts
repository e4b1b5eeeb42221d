/** Leader election through a coordination.k8s.io Lease: only the holder reconciles. */
import type { Logger } from 'pino';
import { R, type Kube, type Obj } from '../kube/client.js';
import { isOperatorError } from '../kube/errors.js';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseSeconds?: number;
  renewMs?: number;
}

export class LeaderElector {
  leading = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly kube: Kube, private readonly o: LeaderOptions, private readonly log: Logger) {}

  /** Resolves once this replica leads; `onLost` runs if it stops leading. */
  async acquire(onLost: () => void): Promise<void> {
    const lease = this.o.leaseSeconds ?? 15;
    for (;;) {
      if (this.stopped) throw new Error('leader election stopped');
      if (await this.tryTake(lease)) break;
      await new Promise((r) => setTimeout(r, Math.min(2000, (lease * 1000) / 3)));
    }
    this.leading = true;
    this.log.info({ event: 'LeaderElected', identity: this.o.identity }, 'leading');
    this.timer = setInterval(() => {
      void this.tryTake(lease).then((ok) => {
        if (!ok && this.leading) {
          this.leading = false;
          this.log.error({ event: 'LeaderLost', identity: this.o.identity }, 'lost the lease');
          onLost();
        }
      });
    }, this.o.renewMs ?? 5000);
    this.timer.unref();
  }

  private async tryTake(leaseSeconds: number): Promise<boolean> {
    const now = new Date();
    const micro = now.toISOString().replace('Z', '000Z');
    try {
      const cur = await this.kube.get<Obj>(R.leases, this.o.namespace, this.o.name);
      const spec = (cur?.spec ?? {}) as { holderIdentity?: string; renewTime?: string; leaseDurationSeconds?: number; leaseTransitions?: number; acquireTime?: string };
      if (!cur) {
        await this.kube.create(R.leases, this.o.namespace, {
          apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace },
          spec: { holderIdentity: this.o.identity, leaseDurationSeconds: leaseSeconds, acquireTime: micro, renewTime: micro, leaseTransitions: 0 },
        });
        return true;
      }
      const mine = spec.holderIdentity === this.o.identity;
      const expired = !spec.renewTime || Date.parse(spec.renewTime) + (spec.leaseDurationSeconds ?? leaseSeconds) * 1000 < now.getTime();
      if (!mine && !expired) return false;
      await this.kube.mergePatch(R.leases, this.o.namespace, this.o.name, {
        metadata: { resourceVersion: cur.metadata.resourceVersion },
        spec: {
          holderIdentity: this.o.identity, leaseDurationSeconds: leaseSeconds, renewTime: micro,
          ...(mine ? {} : { acquireTime: micro, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
        },
      });
      return true;
    } catch (e) {
      if (isOperatorError(e, 'OP_CONFLICT')) return false;
      this.log.warn({ event: 'LeaseError', err: (e as Error).message }, 'lease request failed');
      return false;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }
}
