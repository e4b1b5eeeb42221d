/**
 * A shadowset StorageClass's parameters (strings, as Kubernetes passes them), checked before anything is
 * created. Bounds come from the engine's API constants, the same ones the ShadowSet CRD uses. A parameter
 * that is unknown or out of bounds is an InvalidArgument that names it.
 */
import { MAX_MEMBERS, MEMBER_TIMEOUT_MAX_S, MEMBER_TIMEOUT_MIN_S, MIN_THROTTLE_BYTES_PER_SECOND, minicopyPolicySchema } from '@shadowset/engine/api';
import { z } from 'zod';
import { invalid } from '../errors.js';

export const DEFAULT_MEMBERS = 2;
/** What external-provisioner adds with --extra-create-metadata: where the claim lives. */
export const PVC_NAME_KEY = 'csi.storage.k8s.io/pvc/name';
export const PVC_NAMESPACE_KEY = 'csi.storage.k8s.io/pvc/namespace';
export const PV_NAME_KEY = 'csi.storage.k8s.io/pv/name';

const decimal = (name: string, min: number, max: number, extra?: { check: (n: number) => boolean; message: string }) =>
  z.string()
    .regex(/^[0-9]{1,16}$/, `${name} must be a whole number`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, `${name} must be between ${min} and ${max}`)
    .refine((n) => !extra || extra.check(n), extra?.message ?? '');

const throttle = (name: string) => decimal(name, 0, Number.MAX_SAFE_INTEGER, {
  check: (n) => n === 0 || n >= MIN_THROTTLE_BYTES_PER_SECOND,
  message: `${name} must be 0 (unlimited) or at least ${MIN_THROTTLE_BYTES_PER_SECOND} bytes a second`,
});

const dnsSubdomain = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export const parametersSchema = z.strictObject({
  memberClass: z.string({ error: 'memberClass is required: the StorageClass that provides the members\' block volumes' })
    .regex(dnsSubdomain, 'memberClass must be a StorageClass name'),
  members: decimal('members', 1, MAX_MEMBERS).default(DEFAULT_MEMBERS),
  minicopyPolicy: z.enum(minicopyPolicySchema.options, { error: `minicopyPolicy must be one of ${minicopyPolicySchema.options.join(', ')}` }).optional(),
  memberTimeoutSeconds: decimal('memberTimeoutSeconds', MEMBER_TIMEOUT_MIN_S, MEMBER_TIMEOUT_MAX_S).optional(),
  copyBytesPerSecond: throttle('copyBytesPerSecond').optional(),
  mergeBytesPerSecond: throttle('mergeBytesPerSecond').optional(),
  maxCopies: decimal('maxCopies', 1, 64).optional(),
  [PVC_NAME_KEY]: z.string().regex(dnsSubdomain, `${PVC_NAME_KEY} must be a claim name`).optional(),
  [PVC_NAMESPACE_KEY]: z.string().regex(dnsLabel, `${PVC_NAMESPACE_KEY} must be a namespace name`).optional(),
  [PV_NAME_KEY]: z.string().regex(dnsSubdomain, `${PV_NAME_KEY} must be a volume name`).optional(),
});
export type Parameters = z.output<typeof parametersSchema>;

/** Parse the parameters or throw InvalidArgument naming each parameter at fault. */
export function parseParameters(raw: Record<string, string> | undefined): Parameters {
  const r = parametersSchema.safeParse(raw ?? {});
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    if (i.code === 'unrecognized_keys') return `unknown parameter${i.keys.length > 1 ? 's' : ''} ${i.keys.join(', ')}`;
    const key = String(i.path[0] ?? '');
    // zod's own messages (a missing value, a wrong type) do not say which parameter: prefix the name.
    return i.message.startsWith(key) ? i.message : `${key}: ${i.message}`;
  });
  throw invalid(`invalid StorageClass parameters: ${problems.join('; ')}`);
}
