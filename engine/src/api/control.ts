/** Request bodies of the engine's control API (HTTP + JSON). */
// zod's v3 API, for the engine's start-up time: see the note in ../core/scb.ts.
import { z } from 'zod/v3';

export const minicopyPolicySchema = z.enum(['Required', 'Optional', 'Never']);
export type MinicopyPolicy = z.infer<typeof minicopyPolicySchema>;

export const addMemberSchema = z.strictObject({
  /** File, block device or NBD URI. */
  location: z.string().min(1),
  /** Add without copying: the caller asserts the member is identical (dangerous). */
  noCopy: z.boolean().default(false),
  /** Overwrite a member holding foreign data or another set's metadata. */
  confirmOverwrite: z.boolean().default(false),
  readCost: z.number().int().nonnegative().optional(),
  site: z.string().optional(),
});
export type AddMemberRequest = z.infer<typeof addMemberSchema>;

export const removeMemberSchema = z.strictObject({
  /** Member id or location. */
  member: z.string().min(1),
  minicopy: minicopyPolicySchema.default('Optional'),
  /** Remove even while a merge runs (no bitmap can be created then). */
  force: z.boolean().default(false),
  /** Leave the member Removed for backup (default) or mark it Faulted. */
  reason: z.string().max(200).optional(),
});
export type RemoveMemberRequest = z.infer<typeof removeMemberSchema>;

export const returnMemberSchema = z.strictObject({
  member: z.string().min(1),
  /** Where the member is now, if it moved. */
  location: z.string().min(1).optional(),
  /** Required: fail unless a usable bitmap exists. Optional: fall back to a full copy. */
  minicopy: minicopyPolicySchema.default('Optional'),
});
export type ReturnMemberRequest = z.infer<typeof returnMemberSchema>;

export const deleteBitmapSchema = z.strictObject({ id: z.string().min(1) });

export const mergeSchema = z.strictObject({ full: z.boolean().default(false) });

export const settingsSchema = z.strictObject({
  /** null: alternate between full members; "master": the first full member; else a member id. */
  copySource: z.string().min(1).nullable().optional(),
  copyBytesPerSecond: z.number().int().nonnegative().optional(),
  mergeBytesPerSecond: z.number().int().nonnegative().optional(),
  maxCopies: z.number().int().min(1).max(64).optional(),
  memberTimeoutSeconds: z.number().positive().max(86400).optional(),
  /** Whether a member that fails gets a write bitmap. */
  minicopyPolicy: minicopyPolicySchema.optional(),
});
export type SettingsRequest = z.infer<typeof settingsSchema>;

export const bitmapStatusSchema = z.object({
  id: z.string(),
  member: z.string(),
  chunkSize: z.number(),
  coveredBytes: z.number(),
  dirtyBytes: z.number(),
  percentPopulated: z.number(),
  createdAt: z.string(),
  masterNode: z.string(),
  generation: z.number(),
});
export type BitmapStatus = z.infer<typeof bitmapStatusSchema>;
