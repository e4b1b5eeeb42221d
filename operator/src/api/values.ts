/**
 * The Helm chart's values: the single source of charts/shadowset/values.schema.json (written by `npm run gen`).
 * Every default here equals charts/shadowset/values.yaml (a test parses values.yaml and compares), and our own
 * objects are strict so a misspelt key fails `helm install` instead of being ignored.
 */
import { MEMBER_TIMEOUT_MAX_S, MEMBER_TIMEOUT_MIN_S } from '@shadowset/engine/api';
import { z } from 'zod';
import { csiValuesSchema } from './values-csi.js';

const pullPolicy = z.enum(['Always', 'IfNotPresent', 'Never']);
/** Kubernetes objects the chart copies verbatim into the pod spec; the API server validates their insides. */
const anyObject = z.record(z.string(), z.unknown());
const stringMap = z.record(z.string(), z.string());

const imageSchema = z.strictObject({
  repository: z.string().min(1).default('ghcr.io/shadowset/shadowset').describe('Image repository of the operator.'),
  tag: z.string().default('').describe('Image tag; empty means the chart\'s appVersion.'),
  pullPolicy: pullPolicy.default('IfNotPresent').describe('Image pull policy of the operator container.'),
});

const engineSchema = z.strictObject({
  image: z.strictObject({
    repository: z.string().default('').describe('Engine image repository; empty means image.repository (one image holds both programs).'),
    tag: z.string().default('').describe('Engine image tag; empty means image.tag, then the chart\'s appVersion.'),
  }).prefault({}).describe('Image of the engine and member-server pods the operator creates (operator flag --engine-image).'),
  memberTimeoutSeconds: z.number().int().min(MEMBER_TIMEOUT_MIN_S).max(MEMBER_TIMEOUT_MAX_S).default(120)
    .describe('Default member timeout (SHADOW_MBR_TMO) for ShadowSets that do not set one (operator flag --default-member-timeout).'),
  maxCopies: z.number().int().min(1).max(64).default(4)
    .describe('Default number of copies run at once (SHADOW_MAX_COPY) for ShadowSets that do not set one (operator flag --default-max-copies).'),
});

const serviceAccountSchema = z.strictObject({
  create: z.boolean().default(true).describe('Create the operator\'s ServiceAccount.'),
  name: z.string().default('').describe('ServiceAccount name; empty means the release\'s full name.'),
  annotations: stringMap.default({}).describe('Annotations on the ServiceAccount.'),
});

const metricsSchema = z.strictObject({
  service: z.strictObject({
    enabled: z.boolean().default(true)
      .describe('Create a Service for the metrics port (8081, named metrics). /metrics wants a bearer token allowed to get /metrics: bind ClusterRole <fullname>-metrics-reader to the scraper.'),
    type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer']).default('ClusterIP').describe('Type of the metrics Service.'),
    annotations: stringMap.default({}).describe('Annotations on the metrics Service (e.g. for a scraper).'),
  }).prefault({}),
});

const podSecurityContextSchema = z.looseObject({
  runAsNonRoot: z.boolean().default(true),
  runAsUser: z.number().int().min(0).default(65532),
  runAsGroup: z.number().int().min(0).default(65532),
  // Secret volumes are root's: the kubelet gives their files this group (and group read), which is how the
  // non-root operator reads its key.
  fsGroup: z.number().int().min(0).default(65532),
  seccompProfile: z.looseObject({
    type: z.string().default('RuntimeDefault'),
  }).prefault({}),
}).describe('Pod securityContext of the operator: non-root (UID 65532), fsGroup 65532 (to read its key), RuntimeDefault seccomp.');

const securityContextSchema = z.looseObject({
  allowPrivilegeEscalation: z.boolean().default(false),
  readOnlyRootFilesystem: z.boolean().default(true),
  capabilities: z.looseObject({
    drop: z.array(z.string()).default(['ALL']),
  }).prefault({}),
}).describe('Container securityContext of the operator: read-only root filesystem, no privilege escalation, all capabilities dropped.');

const resourcesSchema = z.strictObject({
  requests: stringMap.default({ cpu: '50m', memory: '64Mi' }),
  limits: stringMap.default({ memory: '256Mi' }),
}).describe('Resources of the operator container.');

export const chartValuesSchema = z.strictObject({
  nameOverride: z.string().default('').describe('Replaces the chart name in object names.'),
  fullnameOverride: z.string().default('').describe('Replaces the release-and-chart full name of objects.'),
  replicas: z.number().int().min(0).max(10).default(1)
    .describe('Operator replicas; one leads at a time (leader election is always on, so a rolling update never runs two).'),
  image: imageSchema.prefault({}).describe('Image of the operator.'),
  imagePullSecrets: z.array(z.strictObject({ name: z.string().min(1) })).default([])
    .describe('Pull secrets for the operator pod.'),
  engine: engineSchema.prefault({}).describe('What the operator gives the engines it runs.'),
  watchNamespace: z.string().max(63).regex(/^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$/, 'must be empty or a namespace name').default('')
    .describe('Namespace whose ShadowSets are reconciled; empty means every namespace. When set, namespaced permissions are a Role there.'),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info').describe('Operator log level.'),
  serviceAccount: serviceAccountSchema.prefault({}).describe('The operator\'s ServiceAccount.'),
  rbac: z.strictObject({
    create: z.boolean().default(true).describe('Create the ClusterRoles, Roles and bindings the operator needs.'),
  }).prefault({}),
  metrics: metricsSchema.prefault({}).describe('Prometheus metrics of the operator.'),
  podAnnotations: stringMap.default({}).describe('Annotations on the operator pod.'),
  podLabels: stringMap.default({}).describe('Extra labels on the operator pod.'),
  priorityClassName: z.string().default('').describe('Priority class of the operator pod.'),
  podSecurityContext: podSecurityContextSchema.prefault({}),
  securityContext: securityContextSchema.prefault({}),
  resources: resourcesSchema.prefault({}),
  nodeSelector: stringMap.default({}).describe('Node selector of the operator pod.'),
  tolerations: z.array(anyObject).default([]).describe('Tolerations of the operator pod.'),
  affinity: anyObject.default({}).describe('Affinity of the operator pod.'),
  csi: csiValuesSchema.prefault({}).describe('The CSI driver (csi/README.md); off by default.'),
  // Helm itself may add `global` (umbrella charts); accept it rather than fail.
  global: anyObject.optional().describe('Helm global values (unused by this chart).'),
});
export type ChartValues = z.output<typeof chartValuesSchema>;
