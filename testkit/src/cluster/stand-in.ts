/**
 * What every stand-in of the PVC path shares (csi-controllers.ts, csi-resizer.ts, csi-kubelet.ts): a
 * level-triggered pass loop, and events posted as the real components post them.
 */
import type { Logger } from 'pino';
import { R, type Kube, type Obj, type Resource } from '@shadowset/operator/kube';

/** One pass at a time; kicked by informers, and again a second later while a pass leaves work. */
export class Loop {
  private running = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly informers: { stop: () => void }[] = [];
  idle: Promise<void> = Promise.resolve();

  constructor(private readonly pass: () => Promise<boolean>, private readonly log: Logger, private readonly name: string) {}

  watch(kube: Kube, resources: Resource[]): void {
    for (const r of resources) this.informers.push(kube.inform(r, undefined, () => this.kick(), () => undefined));
  }

  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.idle = (async () => {
      do {
        this.again = false;
        let more = false;
        try {
          more = await this.pass();
        } catch (e) {
          this.log.debug({ standIn: this.name, err: (e as Error).message }, 'pass failed; retrying');
          more = true;
        }
        if (more && !this.stopped) {
          clearTimeout(this.timer);
          this.timer = setTimeout(() => this.kick(), 1000);
        }
      } while (this.again && !this.stopped);
      this.running = false;
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const i of this.informers) i.stop();
    await this.idle;
  }
}

/** An Event on an object, once per distinct message (what the real components post). */
export class Events {
  private readonly sent = new Map<string, string>();
  constructor(private readonly kube: () => Kube, private readonly component: string) {}
  async post(o: Obj, kind: string, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const key = `${o.metadata.uid}/${reason}`;
    if (this.sent.get(key) === message) return;
    this.sent.set(key, message);
    const now = new Date().toISOString();
    await this.kube().create(R.events, o.metadata.namespace ?? 'default', {
      metadata: { generateName: `${o.metadata.name}.` },
      involvedObject: { apiVersion: kind === 'Pod' || kind === 'PersistentVolumeClaim' ? 'v1' : undefined, kind, namespace: o.metadata.namespace, name: o.metadata.name, uid: o.metadata.uid },
      reason, message, type, source: { component: this.component }, firstTimestamp: now, lastTimestamp: now, count: 1,
    }).catch(() => undefined);
  }
}
