/**
 * The chart's `csi` values: the CSI driver (csi/README.md). Off by default; when on, the chart renders the
 * controller Deployment (driver + external-provisioner + external-attacher, and external-resizer when asked),
 * the node DaemonSet (the driver, which registers itself with the kubelet), the CSIDriver object, their RBAC
 * and an example StorageClass. The sidecars' images default to the tags `npm run cluster:build -- --kind`
 * gives the images it builds from their Go modules (e2e/scripts/lib/csi-sidecars.mjs).
 */
import { MEMBER_TIMEOUT_MAX_S, MEMBER_TIMEOUT_MIN_S, minicopyPolicySchema } from '@shadowset/engine/api';
import { z } from 'zod';

const pullPolicy = z.enum(['Always', 'IfNotPresent', 'Never']);
const sidecar = (what: string, image: string) => z.strictObject({
  image: z.string().min(1).default(image).describe(`Image of ${what}; the default is the tag the kind toolchain's build gives it.`),
  pullPolicy: pullPolicy.default('IfNotPresent'),
}).prefault({});

export const csiValuesSchema = z.strictObject({
  enabled: z.boolean().default(false).describe('Deploy the CSI driver (controller Deployment, node DaemonSet, CSIDriver, RBAC, StorageClass).'),
  kubeletDir: z.string().regex(/^\/[^\s]*[^/\s]$/, 'must be an absolute path without a trailing slash').default('/var/lib/kubelet')
    .describe('The kubelet\'s root directory on the nodes (staging and target paths must be under it).'),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info').describe('Log level of the driver.'),
  reconnectDelaySeconds: z.number().int().min(0).max(3600).default(120)
    .describe('How long the node\'s NBD client holds I/O while the engine restarts, before failing it.'),
  provisioner: sidecar('external-provisioner (github.com/kubernetes-csi/external-provisioner/v6)', 'shadowset.local/csi-provisioner:v6.4.0'),
  attacher: sidecar('external-attacher (github.com/kubernetes-csi/external-attacher/v4)', 'shadowset.local/csi-attacher:v4.13.0'),
  resizer: z.strictObject({
    // The driver offers expansion (offline): a PVC resize grows the member claims, then the set, then the
    // filesystem at the next stage (csi/README.md, Expansion).
    enabled: z.boolean().default(true).describe('Run external-resizer: PVC expansion (offline: while no pod uses the volume).'),
    image: z.string().min(1).default('shadowset.local/csi-resizer:v2.3.0')
      .describe('Image of external-resizer (github.com/kubernetes-csi/external-resizer/v2); the default is the tag the kind toolchain\'s build gives it.'),
    pullPolicy: pullPolicy.default('IfNotPresent'),
  }).prefault({}),
  storageClass: z.strictObject({
    create: z.boolean().default(true).describe('Create an example StorageClass for the driver (needs memberClass).'),
    name: z.string().regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'must be a StorageClass name').default('shadowset'),
    memberClass: z.string().default('').describe('StorageClass of the members\' block volumes (parameter memberClass); required when create.'),
    members: z.number().int().min(1).max(6).default(2).describe('Members per volume (1–6).'),
    minicopyPolicy: z.enum(['', ...minicopyPolicySchema.options]).default('').describe('Empty: the ShadowSet default (Optional).'),
    memberTimeoutSeconds: z.number().int().min(0).max(MEMBER_TIMEOUT_MAX_S).default(0)
      .describe(`0: the operator's default; else ${MEMBER_TIMEOUT_MIN_S} to ${MEMBER_TIMEOUT_MAX_S}.`),
    reclaimPolicy: z.enum(['Delete', 'Retain']).default('Delete'),
    volumeBindingMode: z.enum(['Immediate', 'WaitForFirstConsumer']).default('WaitForFirstConsumer'),
  }).prefault({}),
});
