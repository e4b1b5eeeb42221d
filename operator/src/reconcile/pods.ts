/**
 * Desired engine and member-server pods (plain objects). Every listener of theirs is authenticated: the
 * engine's HTTP API by the set's control token, the member servers and the export by TLS-PSK (or, for the
 * export, x509 with client certificates). The keys come from the set's Secrets, mounted by the kubelet.
 */
import { engineProcessEnv } from '@shadowset/engine/api';
import { ROLE_LABEL, SET_LABEL } from '../api/group.js';
import { RESERVED_PORTS, type MemberSpec, type ShadowSetSpec } from '../api/shadowset.js';
import { CONFIG_ANNOTATION, CONFIG_HASH_ANNOTATION, allowedNbd, configHash, configText, engineConfig } from './engine-config.js';
import { INTERNAL_KEYS, exportSecretName, internalSecretName, ownerRef, type Owner } from './set-objects.js';

export const DEVICE_DIR = '/dev/shadow';
export const TLS_DIR = '/etc/shadowset/tls';
export const INTERNAL_DIR = '/etc/shadowset/internal';
export const EXPORT_DIR = '/etc/shadowset/export';
export const HTTP_PORT = RESERVED_PORTS.http;
export const MEMBER_PORT = RESERVED_PORTS.member;
/** Where the engine container sees its unit socket's host directory, and the socket in it. */
export const UNIT_DIR = '/run/shadowset/unit';
export const UNIT_SOCKET = 'nbd.sock';
export const ATTACHED_ANNOTATION = 'shadowset.dev/attached';
export const MEMBER_ANNOTATION = 'shadowset.dev/member';

export const engineName = (set: string) => `${set}-engine`;
export const memberServerName = (set: string, member: string) => `${set}-member-${member}`;
/** Member servers speak NBD over TLS-PSK only: the engine reaches them with nbds://. */
export const memberServerUri = (podIP: string) => `nbds://${podIP}:${MEMBER_PORT}/member`;
/** The pod IP in a member-server URI, or null if the location is not one. */
export function memberServerIp(location: string): string | null {
  const m = /^nbds?:\/\/([^/]+):(\d+)\/member$/.exec(location);
  return m && Number(m[2]) === MEMBER_PORT ? m[1]!.replace(/^\[|\]$/g, '') : null;
}
export const engineBase = (podIP: string) => `http://${podIP}:${HTTP_PORT}`;

const podIpEnv = [
  { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
];

/**
 * The engine's memory flag (engine/src/api/process-env.ts). The image's `shadow-engine` passes it
 * itself; NODE_OPTIONS also reaches an engine started as `node <script>`, as the embedded demo's
 * simulated nodes start it.
 */
const engineEnv = [...podIpEnv, ...Object.entries(engineProcessEnv({})).map(([name, value]) => ({ name, value }))];

/**
 * Engine and member-server containers: no privilege, no capability, a read-only root, the runtime's
 * seccomp profile. They run as root only to open the block device node the kubelet makes for a volumeDevice
 * (owned by root, mode 0660); opening a file one owns needs no capability, so all are dropped.
 */
export const LOCKED_DOWN = {
  privileged: false,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
  runAsUser: 0,
  runAsNonRoot: false,
} as const;

/** Secret volumes: files readable by their owner only. */
const secretVolume = (name: string, secretName: string, items: string[]) =>
  ({ name, secret: { secretName, defaultMode: 0o400, items: items.map((key) => ({ key, path: key })) } });

/**
 * A `--member` argument: the location, then the member's options after a '#' (readCost, site, overwrite).
 * `overwrite` is per member: confirmOverwrite on one member lets the engine overwrite that device only.
 */
export function memberArg(location: string, m: MemberSpec): string {
  const opts = [m.readCost !== 1 ? `readCost=${m.readCost}` : '', m.site ? `site=${m.site}` : '', m.confirmOverwrite ? 'overwrite' : ''].filter(Boolean).join(',');
  return opts ? `${location}#${opts}` : location;
}

/** The location part of a `--member` argument. Spec URIs never hold a '#' (the CRD refuses them). */
export const memberLocation = (arg: string): string => (arg.includes('#') ? arg.slice(0, arg.lastIndexOf('#')) : arg);

export interface EnginePodInput {
  owner: Owner;
  spec: ShadowSetSpec;
  image: string;
  /** The engine's node, when it is known before scheduling (pinned, or where a member's volume is). */
  node: string | null;
  /** The zone of that node: reads prefer full members whose site is this zone. */
  site: string | null;
  /** Members whose volumes are attached to the pod as block devices. */
  attached: MemberSpec[];
  /** Members reached over NBD: member servers and spec NBD URIs. */
  remote: { member: MemberSpec; location: string }[];
  memberTimeoutSeconds: number;
  /** The newest generation the operator saw recorded (status): the engine refuses to start from older records. */
  minGeneration?: number | undefined;
  /**
   * The host directory (`<unit-socket-dir>/<namespace>/<set>`) where the virtual unit is served for the CSI
   * node plugin, or null: the socket stays in the pod's own volume.
   */
  unitSocketHostDir?: string | null;
}

export function enginePod(i: EnginePodInput): Record<string, unknown> {
  const { owner: o, spec } = i;
  const args = ['serve'];
  for (const m of i.attached) args.push('--member', memberArg(`${DEVICE_DIR}/${m.name}`, m));
  for (const r of i.remote) args.push('--member', memberArg(r.location, r.member));
  args.push(
    // Plain NBD on a node-local Unix socket (mode 0660): on the host for the CSI node plugin, else in the pod.
    '--socket', i.unitSocketHostDir ? `${UNIT_DIR}/${UNIT_SOCKET}` : '/run/shadow/nbd.sock',
    '--listen', `$(POD_IP):${spec.export.port}`,
    '--http', `$(POD_IP):${HTTP_PORT}`,
    '--member-timeout', String(i.memberTimeoutSeconds),
    '--minicopy-policy', spec.minicopyPolicy,
    '--hold-on-failure',
    // After a restart, members added since the pod was created are found again from the set's own record.
    '--include',
    // ...but a member split off for backup since then stays out (it is still in these arguments).
    '--keep-removed',
    // The last generation recorded survives a restart of the container (the volume is the pod's): a
    // restart that can open only members with older records refuses instead of going back in time.
    '--state-file', '/run/shadow/state.json',
  );
  if (i.minGeneration) args.push('--min-generation', String(i.minGeneration));
  if (i.site) args.push('--site', i.site);
  // The control API needs the set's token; the members the API may name: devices of this pod, member
  // servers (nbds://, which answer only the set's PSK) and the spec's own NBD URIs.
  args.push('--control-token-file', `${INTERNAL_DIR}/${INTERNAL_KEYS.token}`, '--member-psk-file', `${INTERNAL_DIR}/${INTERNAL_KEYS.memberPsk}`);
  args.push('--allow-location', `${DEVICE_DIR}/`, '--allow-location', 'nbds://');
  for (const uri of allowedNbd(spec)) args.push('--allow-location', uri);
  // Throttles hold from the engine's first moment: a merge after a crash starts before the operator can
  // reach the engine's API.
  if (spec.throttle.copyBytesPerSecond > 0) args.push('--copy-bytes-per-second', String(spec.throttle.copyBytesPerSecond));
  if (spec.throttle.mergeBytesPerSecond > 0) args.push('--merge-bytes-per-second', String(spec.throttle.mergeBytesPerSecond));
  if (spec.engine.intentLogCapMiB !== undefined) args.push('--intent-log-cap-mib', String(spec.engine.intentLogCapMiB));
  // A set made by this pod has the spec's size, not its members' (a member class may give more than asked);
  // members that hold the set already keep its recorded size, and spec.size grows it by the engine's API.
  if (spec.size !== undefined) args.push('--new-set-size', String(spec.size));
  // The export: the set's PSK, or the user's certificate with client certificates required (ca.crt).
  if (spec.export.tlsSecretName) args.push('--tls-cert', `${TLS_DIR}/tls.crt`, '--tls-key', `${TLS_DIR}/tls.key`, '--tls-ca', `${TLS_DIR}/ca.crt`);
  else args.push('--export-psk-file', `${EXPORT_DIR}/psk`);
  const resources = spec.engine.resources ? { resources: spec.engine.resources } : {};
  const config = engineConfig(spec, i.image, i.unitSocketHostDir ?? null);
  const unit = i.unitSocketHostDir ? i.unitSocketHostDir : null;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: engineName(o.name),
      namespace: o.namespace,
      labels: { [SET_LABEL]: o.name, [ROLE_LABEL]: 'engine' },
      annotations: {
        [ATTACHED_ANNOTATION]: i.attached.map((m) => m.name).join(','),
        [CONFIG_HASH_ANNOTATION]: configHash(config),
        [CONFIG_ANNOTATION]: configText(config),
      },
      ownerReferences: ownerRef(o),
    },
    spec: {
      restartPolicy: 'Always',
      ...(i.node ? { nodeName: i.node } : {}),
      ...(spec.engine.nodeSelector ? { nodeSelector: spec.engine.nodeSelector } : {}),
      terminationGracePeriodSeconds: 60,
      containers: [
        {
          name: 'engine',
          image: i.image,
          command: ['shadow-engine'],
          args,
          env: engineEnv,
          ports: [{ name: 'nbd', containerPort: spec.export.port }, { name: 'http', containerPort: HTTP_PORT }],
          readinessProbe: { httpGet: { path: '/healthz', port: HTTP_PORT }, periodSeconds: 2, failureThreshold: 3 },
          securityContext: LOCKED_DOWN,
          volumeDevices: i.attached.map((m) => ({ name: `m-${m.name}`, devicePath: `${DEVICE_DIR}/${m.name}` })),
          volumeMounts: [
            { name: 'run', mountPath: '/run/shadow' },
            ...(unit ? [{ name: 'unit', mountPath: UNIT_DIR }] : []),
            { name: 'internal', mountPath: INTERNAL_DIR, readOnly: true },
            spec.export.tlsSecretName ? { name: 'tls', mountPath: TLS_DIR, readOnly: true } : { name: 'export', mountPath: EXPORT_DIR, readOnly: true },
          ],
          ...resources,
        },
      ],
      volumes: [
        ...i.attached.map((m) => ({ name: `m-${m.name}`, persistentVolumeClaim: { claimName: m.claimName } })),
        { name: 'run', emptyDir: {} },
        // Only this set's directory of the host: the node plugin finds the socket there (csi/src/node/unit.ts).
        ...(unit ? [{ name: 'unit', hostPath: { path: unit, type: 'DirectoryOrCreate' } }] : []),
        // The kubelet mounts the Secrets: the operator itself never reads them. A TLS Secret without ca.crt
        // holds the pod in ContainerCreating, which the Ready condition shows.
        secretVolume('internal', internalSecretName(o.name), [INTERNAL_KEYS.token, INTERNAL_KEYS.memberPsk]),
        spec.export.tlsSecretName
          ? secretVolume('tls', spec.export.tlsSecretName, ['tls.crt', 'tls.key', 'ca.crt'])
          : secretVolume('export', exportSecretName(o.name), ['psk']),
      ],
    },
  };
}

export function memberServerPod(o: Owner, m: MemberSpec, image: string, node: string | null): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: memberServerName(o.name, m.name),
      namespace: o.namespace,
      labels: { [SET_LABEL]: o.name, [ROLE_LABEL]: 'member-server' },
      annotations: { [MEMBER_ANNOTATION]: m.name },
      ownerReferences: ownerRef(o),
    },
    spec: {
      restartPolicy: 'Always',
      ...(node ? { nodeName: node } : {}),
      containers: [
        {
          name: 'member',
          image,
          command: ['shadow-engine'],
          args: ['serve-device', '--device', `${DEVICE_DIR}/${m.name}`, '--listen', `$(POD_IP):${MEMBER_PORT}`, '--psk-file', `${INTERNAL_DIR}/${INTERNAL_KEYS.memberPsk}`],
          env: podIpEnv,
          ports: [{ name: 'nbd', containerPort: MEMBER_PORT }],
          readinessProbe: { tcpSocket: { port: MEMBER_PORT }, periodSeconds: 2 },
          securityContext: LOCKED_DOWN,
          volumeDevices: [{ name: 'member', devicePath: `${DEVICE_DIR}/${m.name}` }],
          volumeMounts: [{ name: 'internal', mountPath: INTERNAL_DIR, readOnly: true }],
        },
      ],
      // The member PSK only: a member server has no business with the control token.
      volumes: [{ name: 'member', persistentVolumeClaim: { claimName: m.claimName } }, secretVolume('internal', internalSecretName(o.name), [INTERNAL_KEYS.memberPsk])],
    },
  };
}
