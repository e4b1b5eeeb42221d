/**
 * `npm run demo` as root: the PVC path (pvc-path.ts). A StorageClass of the driver and a claim of it,
 * provisioned by the real CSI driver into a ShadowSet with two members on two simulated nodes; a pod writing
 * to it as a block device; what to try. Ctrl-C deletes the pod and the claim through the API (unpublish,
 * unstage, detach; the set dissolved), stops everything, and checks that nothing is left on the host.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { ownSignalHandling } from '@shadowset/e2e';
import { R } from '@shadowset/operator/kube';
import { undoAll } from './node-cleanup.js';
import { PVC_DEMO, PvcPath } from './pvc-path.js';
import { ensureTools } from './tools.js';

const say = (s: string) => process.stdout.write(`demo: ${s}\n`);

export async function runPvcDemo(o: { volumeMiB: number }): Promise<void> {
  // The teardown needs the API server and the driver alive: no kill-all on the first Ctrl-C.
  ownSignalHandling();
  say('starting the local control plane (built from Go modules on first use, a few minutes), the operator, two simulated nodes and the CSI driver…');
  let env: PvcPath | undefined;
  let stopping = false;
  const stop = async (code: number) => {
    if (stopping) {
      // A second Ctrl-C: undo what is on the host now; the exit hook kills every process left.
      say('stopping now');
      if (env) await undoAll(env.dir).catch(() => undefined);
      process.exit(130);
    }
    stopping = true;
    if (env) {
      say('stopping: the pod deleted (unpublish, unstage, detach), the claim deleted (the set dissolved, its members deleted)… (Ctrl-C again to stop at once)');
      await env.tearDownVolumes(90_000).catch((e: Error) => say(`teardown through the API did not finish (${e.message}); stopping anyway`));
      await env.stop().catch((e: Error) => say(`stop: ${e.message}`));
      const left = await env.leftovers();
      say(left.length ? `left behind:\n  ${left.join('\n  ')}` : 'nothing left: no loop device, FUSE mount, qemu-storage-daemon or engine');
    }
    process.exit(code);
  };
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  try {
    env = await PvcPath.start({ log: pino({ level: 'warn', base: { component: 'demo' } }) });
    say(`work directory ${env.dir}`);
    say(`PVC ${PVC_DEMO.ns}/${PVC_DEMO.claim} (StorageClass ${PVC_DEMO.shadowClass}, ${o.volumeMiB} MiB, Block) applied; the driver provisions it…`);
    const { pvName, setName } = await env.provision(o.volumeMiB);
    say(`Bound to ${pvName}; ShadowSet ${PVC_DEMO.ns}/${setName} Steady with two members; starting pod ${PVC_DEMO.ns}/${PVC_DEMO.pod}…`);
    const { pod, line } = await env.runWriter();
    const node = String((pod.spec as { nodeName: string }).nodeName);
    const other = PVC_DEMO.nodes.find((n) => n !== node)!;
    const files = await env.writeManifests(o.volumeMiB, other);
    const set = await env.cluster.kube.get(R.shadowsets, PVC_DEMO.ns, setName);
    const engineNode = String((set?.status as { engineNode?: string } | undefined)?.engineNode);
    let kubectl = 'kubectl';
    try {
      kubectl = ensureTools().kubectl;
    } catch {
      // a kubectl on PATH then
    }
    const podDir = (uid: string) => join(env!.simDir, 'pods', `${PVC_DEMO.ns}_${PVC_DEMO.pod}_${uid.slice(0, 8)}`);
    const dev = join(podDir(pod.metadata.uid!), 'root', 'dev', 'xvda');
    const k = `${kubectl}`;
    process.stdout.write(`
The PVC path is up. Pod ${PVC_DEMO.pod} on simulated node ${node} wrote record ${line.record.count} to its block device
/dev/xvda (the PVC) and read it back; the set's engine runs beside it on ${engineNode}.

What is real: the control plane, the operator, the engine and member servers, the CSI driver (shadowset-csi:
a controller, a node plugin per node doing NodeStage/NodePublish for real — qemu-storage-daemon, FUSE, a loop
device, bind mounts). What is simulated: the nodes, and stand-ins calling the driver's gRPC API as
external-provisioner, external-attacher, the attach/detach controller and the kubelet would (testkit/README.md).

  export KUBECONFIG=${env.cluster.cp.kubeconfigPath}
  ${k} get pvc,shadowsets,volumeattachments -n ${PVC_DEMO.ns}
  ${k} describe shadowset ${setName} -n ${PVC_DEMO.ns}
  ${k} describe pvc ${PVC_DEMO.claim} -n ${PVC_DEMO.ns}         # Provisioning, ProvisioningSucceeded
  ${k} get events -n ${PVC_DEMO.ns}

The pod's output (no kubectl logs: a simulated node has no kubelet API):
  cat ${join(podDir(pod.metadata.uid!), 'logs', 'writer.log')}

Write through the pod's device (the pod's /dev/xvda is ${dev},
a link to the loop device the node plugin published for it; the record is in the first 4 KiB):
  dd if=/dev/urandom of=${dev} bs=1M seek=1 count=16 oflag=direct conv=fsync
  dd if=${dev} bs=4096 count=1 iflag=direct status=none | head -c 160; echo

Delete the pod (NodeUnpublish, NodeUnstage, then the VolumeAttachment and ControllerUnpublish) and make
another; it finds the record and writes the next one:
  ${k} delete pod ${PVC_DEMO.pod} -n ${PVC_DEMO.ns}
  ${k} get volumeattachments
  ${k} apply -f ${files.pod}
  cat ${join(env.simDir, 'pods')}/${PVC_DEMO.ns}_${PVC_DEMO.pod}_*/logs/writer.log
or on the other node: the engine follows it (an EngineMoved event; no copy, no merge):
  ${k} delete pod ${PVC_DEMO.pod} -n ${PVC_DEMO.ns} && ${k} apply -f ${files.podOn}
  ${k} get shadowsets -n ${PVC_DEMO.ns}; ${k} get events -n ${PVC_DEMO.ns} --field-selector reason=EngineMoved

One writer: a second pod on the other node while the first runs waits; its events say why (FailedAttachVolume:
the volume is attached to the first pod's node). Delete the first and the second starts, the engine beside it:
  ${k} apply -f ${files.second}
  ${k} describe pod ${PVC_DEMO.pod}-2 -n ${PVC_DEMO.ns}      # after ~20 s
  ${k} delete pod ${PVC_DEMO.pod} -n ${PVC_DEMO.ns}; ${k} get pods,volumeattachments -n ${PVC_DEMO.ns}

Grow the volume (offline: refused while a pod uses it, retried; then the member claims, the set, the PV and
the claim grow; the next pod's device has the new size):
  ${k} patch pvc ${PVC_DEMO.claim} -n ${PVC_DEMO.ns} -p '{"spec":{"resources":{"requests":{"storage":"${o.volumeMiB * 2}Mi"}}}}'
  ${k} describe pvc ${PVC_DEMO.claim} -n ${PVC_DEMO.ns}         # VolumeResizeFailed: attached to node …
  ${k} delete pod ${PVC_DEMO.pod} -n ${PVC_DEMO.ns}; ${k} get pvc,shadowsets -n ${PVC_DEMO.ns} -w
  ${k} apply -f ${files.pod}

Delete the claim (DeleteVolume: the set dissolved, its member claims and their volumes deleted), and make it again:
  ${k} delete pod ${PVC_DEMO.pod} ${PVC_DEMO.pod}-2 -n ${PVC_DEMO.ns} --ignore-not-found && ${k} delete pvc ${PVC_DEMO.claim} -n ${PVC_DEMO.ns}
  ${k} get pvc,pv,shadowsets -n ${PVC_DEMO.ns}
  ${k} apply -f ${files.claim} && ${k} apply -f ${files.pod}

Ctrl-C tears everything down.
`);
  } catch (e) {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    await stop(1);
  }
}
