/**
 * ShadowSet: the single source of its CRD (crds/ and the chart's copy are generated from this file).
 * Input shapes carry defaults; CEL rules check what can be checked without looking at the cluster.
 */
import { SECTOR, INTENT_LOG_CAP_DEFAULT_MIB, INTENT_LOG_CAP_MAX_MIB, MEMBER_TIMEOUT_MAX_S, MEMBER_TIMEOUT_MIN_S, MIN_THROTTLE_BYTES_PER_SECOND, memberStates, minicopyPolicySchema } from '@shadowset/engine/api';
import { z } from 'zod';

const dnsLabel = z.string().min(1).max(63).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a DNS label (a-z, 0-9, -)');
/** A label value (like a zone name): also what the engine's `--member PATH#site=NAME` syntax can carry. */
const labelValue = z.string().max(63).regex(/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/, 'must be a label value (A-Z, a-z, 0-9, -, _, ., at most 63)');

/**
 * The most a spec may ask for (1 PiB). The engine's own limit is lower for most sets: its chunk size is
 * fixed when the set is made, and the log and each bitmap hold 8 Mi chunks (512 GiB at 64 KiB chunks).
 */
export const MAX_UNIT_BYTES = 2 ** 50;

/** The engine pod's HTTP API port, and the member servers' NBD port: the export may use neither. */
export const RESERVED_PORTS = { http: 8080, member: 10810 } as const;

/** A throttle: 0 (unlimited) or at least one 64 KiB chunk a second (the engine refuses less). */
const throttleRate = z.number().int().min(0)
  .refine((v) => v === 0 || v >= MIN_THROTTLE_BYTES_PER_SECOND, `must be 0 (unlimited) or at least ${MIN_THROTTLE_BYTES_PER_SECOND}`)
  .meta({ 'x-kubernetes-validations': [{ rule: `self == 0 || self >= ${MIN_THROTTLE_BYTES_PER_SECOND}`, message: `must be 0 (unlimited) or at least ${MIN_THROTTLE_BYTES_PER_SECOND}` }] })
  .default(0);

export const memberSpecSchema = z
  .object({
    name: dnsLabel.describe('Name of the member within the set (stable; used in status and events).'),
    claimName: z.string().min(1).max(253).optional().describe('A block-mode PersistentVolumeClaim in the same namespace.'),
    // No '#': the engine's --member argument puts per-member options after one.
    nbd: z.string().max(1024).regex(/^nbd(\+unix)?:\/\/[^#\s]*$/, 'must be an nbd:// or nbd+unix:// URI without # or spaces').optional()
      .describe('A member served elsewhere over NBD (instead of claimName).'),
    site: labelValue.optional()
      .describe('Site of the member: a zone name (the topology.kubernetes.io/zone label of its node). Reads prefer full members in the engine\'s zone.'),
    readCost: z.number().int().min(0).max(1000).default(1).describe('Read cost; reads go to the lowest cost + queue depth.'),
    state: z.enum(['Active', 'Detached']).default('Active')
      .describe('Detached splits the member off for backup (with a write bitmap per minicopyPolicy); Active returns it.'),
    confirmOverwrite: z.boolean().default(false).describe('Allow overwriting this member\'s device if it holds foreign data or another set\'s metadata.'),
    noCopy: z.boolean().default(false).describe('Add without copying: asserts the device is identical to the set (dangerous).'),
  })
  .meta({
    'x-kubernetes-validations': [
      { rule: 'has(self.claimName) != has(self.nbd)', message: 'a member has exactly one of claimName or nbd' },
    ],
  });
export type MemberSpec = z.infer<typeof memberSpecSchema>;

const hookSchema = z.object({
  pod: z.string().min(1).describe('Pod to exec into (same namespace); it must carry the annotation shadowset.dev/consumer-of naming this set.'),
  container: z.string().optional(),
  command: z.array(z.string()).min(1),
  timeoutSeconds: z.number().int().min(1).max(3600).default(60),
});

export const shadowSetSpecSchema = z
  .object({
    members: z.array(memberSpecSchema).min(1).max(6)
      .meta({
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        'x-kubernetes-validations': [
          { rule: 'self.all(m, !has(m.claimName) || self.exists_one(n, has(n.claimName) && n.claimName == m.claimName))', message: 'a claim may back only one member' },
          { rule: 'self.exists(m, m.state == "Active")', message: 'at least one member must be Active' },
        ],
      })
      .describe('1 to 6 members.'),
    size: z.number().int().multipleOf(SECTOR).min(SECTOR).max(MAX_UNIT_BYTES).optional()
      .meta({
        'x-kubernetes-validations': [
          { rule: 'self >= oldSelf', message: 'size may only grow (a set cannot shrink)' },
        ],
      })
      .describe('Desired size of the virtual unit in bytes (like a PVC\'s request). A new set is made at this size (its members may be bigger); unset, at its smallest member\'s usable size. Later the set grows to it once every member is big enough. Never smaller than the set.'),
    copySource: z.string().default('Alternate').describe('Alternate (between full members), Master (the first full member) or a member name.'),
    minicopyPolicy: z.enum(minicopyPolicySchema.options).default('Optional')
      .describe('Whether a removed or detached member gets a write bitmap (Required: fail without one).'),
    memberTimeoutSeconds: z.number().int().min(MEMBER_TIMEOUT_MIN_S).max(MEMBER_TIMEOUT_MAX_S).optional()
      .describe('How long a failing member is retried before removal (SHADOW_MBR_TMO). Unset: the operator\'s default, 120 s unless configured.'),
    throttle: z.object({
      copyBytesPerSecond: throttleRate.describe(`0 = unlimited, else at least ${MIN_THROTTLE_BYTES_PER_SECOND} (one chunk a second).`),
      mergeBytesPerSecond: throttleRate.describe(`0 = unlimited, else at least ${MIN_THROTTLE_BYTES_PER_SECOND} (one chunk a second).`),
      maxCopies: z.number().int().min(1).max(64).optional().describe('Copies running at once (SHADOW_MAX_COPY). Unset: the operator\'s default, 4 unless configured.'),
    }).prefault({}),
    export: z.object({
      port: z.number().int().min(1).max(65535).default(10809)
        .refine((p) => p !== RESERVED_PORTS.http && p !== RESERVED_PORTS.member, { message: `must not be ${RESERVED_PORTS.http} (the engine's HTTP API) or ${RESERVED_PORTS.member} (the member servers' port)` }),
      serviceType: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer']).default('ClusterIP'),
      tlsSecretName: z.string().min(1).max(253).optional()
        .describe('Serve the export with this Secret\'s certificate (tls.crt, tls.key) and require client certificates signed by its ca.crt, instead of the set\'s PSK.'),
    }).prefault({})
      .meta({
        'x-kubernetes-validations': [
          { rule: `!has(self.port) || (self.port != ${RESERVED_PORTS.http} && self.port != ${RESERVED_PORTS.member})`, message: `export.port must not be ${RESERVED_PORTS.http} (the engine's HTTP API) or ${RESERVED_PORTS.member} (the member servers' port)` },
        ],
      })
      .describe('How the virtual unit is exported. Changing it restarts the engine (a clean stop).'),
    // The engine's image is the operator's to choose (--engine-image), never a spec's: the pod runs with
    // access to the members' devices.
    engine: z.object({
      nodeName: z.string().optional().describe('Pin the engine to a node (default: the node of the first claim-backed member).'),
      nodeSelector: z.record(z.string(), z.string()).optional(),
      resources: z.object({
        requests: z.record(z.string(), z.string()).optional(),
        limits: z.record(z.string(), z.string()).optional(),
      }).optional(),
      intentLogCapMiB: z.number().int().min(0).max(INTENT_LOG_CAP_MAX_MIB).optional()
        .describe(`Most MiB of chunks the write-intent log marks at once, which bounds the merge after a crash (0: no cap). Unset: ${INTENT_LOG_CAP_DEFAULT_MIB || 'no cap'}. Experimental: it costs IOPS under writes spread over the set, and rare simulation failures with it are open (engine README, Recovery).`),
    }).prefault({}).describe('Where and with what resources the engine runs. Changing it restarts the engine (a clean stop).'),
    hooks: z.object({ freeze: hookSchema.optional(), thaw: hookSchema.optional() }).optional()
      .describe('Run before (freeze) and after (thaw) a member is detached for backup.'),
  })
  .meta({
    'x-kubernetes-validations': [
      { rule: 'self.copySource in ["Alternate", "Master"] || self.members.exists(m, m.name == self.copySource)', message: 'copySource must be Alternate, Master or a member name' },
    ],
  });
export type ShadowSetSpec = z.output<typeof shadowSetSpecSchema>;

export const conditionSchema = z.object({
  type: z.string(),
  status: z.enum(['True', 'False', 'Unknown']),
  reason: z.string(),
  message: z.string(),
  lastTransitionTime: z.string(),
  observedGeneration: z.number().int().optional(),
});
export type Condition = z.infer<typeof conditionSchema>;

/** A member's state in status: the engine's, or Detached (split off on purpose) or Pending (the engine does not have it yet). */
export const setMemberStates = [...memberStates, 'Detached', 'Pending'] as const;

export const memberStatusSchema = z.object({
  name: z.string(),
  id: z.string().optional(),
  state: z.string().describe(`${setMemberStates.slice(0, -1).join(', ')} or ${setMemberStates.at(-1)}.`),
  reason: z.string().optional(),
  node: z.string().optional(),
  progress: z.string().optional().describe('Copy progress as a percentage.'),
  bytesDone: z.number().int().optional(),
  bytesTotal: z.number().int().optional(),
});

export const shadowSetStatusSchema = z.object({
  observedGeneration: z.number().int().optional(),
  conditions: z.array(conditionSchema).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'] }),
  state: z.string().optional().describe('Steady, Transient, Degraded, Failed or Pending.'),
  shadowGeneration: z.number().int().optional(),
  recordedGeneration: z.number().int().optional()
    .describe('The newest generation the engine recorded on its members; a new engine pod refuses to start from older records.'),
  size: z.number().int().optional(),
  membersInSync: z.string().optional().describe('Full members / members, for printer columns.'),
  progress: z.string().optional(),
  members: z.array(memberStatusSchema).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
  recovery: z.object({
    mode: z.string().optional(),
    source: z.string().optional(),
    targets: z.array(z.string()).optional(),
    bytesDone: z.number().int().optional(),
    bytesTotal: z.number().int().optional(),
    bytesPerSecond: z.number().int().optional(),
    etaSeconds: z.number().int().optional(),
  }).optional(),
  endpoint: z.string().optional().describe('NBD URI of the virtual unit (nbds://: TLS is required).'),
  exportSecret: z.string().optional().describe('Secret with the export\'s PSK (key psk, identity:hexkey) for clients.'),
  engineNode: z.string().optional().describe('The node the engine pod runs on.'),
  placement: z.object({
    node: z.string().optional().describe('The node the engine should run on.'),
    source: z.string().describe('Why: Pinned (spec.engine.nodeName), VolumeAttachment (beside the consumer), Running (stays where it runs), Claim (beside the first node-bound member) or Unplaced.'),
    attachment: z.string().optional().describe('The VolumeAttachment followed.'),
    conflict: z.string().optional().describe('Live VolumeAttachments on different nodes: which are not followed.'),
  }).optional().describe('Where the engine runs and why; it follows the consumer of the volume (CSI), never a spec field written by the product.'),
  secrets: z.array(z.object({ name: z.string(), uid: z.string() })).optional()
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] })
    .describe('Secrets the operator created for this set; deleted (by uid) when the set is.'),
});
export type ShadowSetStatus = z.infer<typeof shadowSetStatusSchema>;
