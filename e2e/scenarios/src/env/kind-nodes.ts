// Node failures on kind, done to the node's container:
//   freeze    `docker pause`: every process of the node stops where it is; peers see silence.
//   poweroff  the node is cut from its Docker network first, then stopped at once (`docker stop -t 0`), so no
//             FIN or RST of its dying processes reaches a peer: they see silence, as when a machine loses
//             power. On recovery it is reconnected and started: systemd, containerd and kubelet boot again,
//             and kubelet starts the pods bound to it in new sandboxes (kind's entrypoint rewrites the node's
//             address if Docker gave it another one).
import { waitFor, DOCKER } from '@shadowset/e2e';
import { run, type RunResult } from '../support/exec.js';
import type { NodeFailure } from './cluster-env.js';
import { detachSame, ensureLoopNodes, kubeletLoops, type LoopRef } from './kind-loops.js';

type Kubectl = (args: string[], o?: { allowFail?: boolean }) => Promise<RunResult>;

interface Failed {
  how: NodeFailure;
  networks: string[];
  kubeletLoops: LoopRef[];
}

export class KindNodes {
  private readonly failed = new Map<string, Failed>();

  constructor(private readonly kubectl: Kubectl) {}

  async fail(node: string, how: NodeFailure): Promise<void> {
    if (this.failed.has(node)) throw new Error(`node ${node} has already failed`);
    if (how === 'freeze') {
      await run(DOCKER, ['pause', node]);
      this.failed.set(node, { how, networks: [], kubeletLoops: [] });
      return;
    }
    const inspect = JSON.parse((await run(DOCKER, ['inspect', '--format', '{{json .NetworkSettings.Networks}}', node])).stdout) as Record<string, unknown>;
    const networks = Object.keys(inspect);
    // The kubelet's loop devices die with a real machine; here they outlive the container (kind-loops.ts).
    this.failed.set(node, { how, networks, kubeletLoops: kubeletLoops(node) });
    for (const net of networks) await run(DOCKER, ['network', 'disconnect', '--force', net, node]);
    await run(DOCKER, ['stop', '--time', '0', node], { timeoutMs: 120_000 });
  }

  async recover(node: string): Promise<void> {
    const f = this.failed.get(node);
    if (!f) throw new Error(`node ${node} has not failed`);
    if (f.how === 'freeze') {
      await run(DOCKER, ['unpause', node]);
      this.failed.delete(node);
      return;
    }
    for (const net of f.networks) await run(DOCKER, ['network', 'connect', net, node]);
    // As a reboot would: the loop devices the old kubelet attached are gone before the new one starts.
    detachSame(f.kubeletLoops);
    const booted = new Date();
    await run(DOCKER, ['start', node], { timeoutMs: 120_000 });
    this.failed.delete(node);
    ensureLoopNodes(node);
    // Ready from a heartbeat of the booted kubelet, not the stale condition from before the failure.
    await waitFor(`node ${node} to boot and report Ready`, async () => {
      const r = await this.kubectl(['get', 'node', node, '-o', 'json'], { allowFail: true });
      if (r.code !== 0) return false;
      const n = JSON.parse(r.stdout) as { status?: { conditions?: { type: string; status: string; lastHeartbeatTime?: string }[] } };
      const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
      return ready?.status === 'True' && new Date(ready.lastHeartbeatTime ?? 0).getTime() >= booted.getTime() - 1000;
    }, { timeoutMs: 240_000, intervalMs: 1000 });
  }

  /** Bring back every node still failed (the end of a run, even after a failed scenario). */
  async recoverAll(): Promise<void> {
    for (const node of [...this.failed.keys()]) await this.recover(node).catch(() => undefined);
  }
}
