/** WriteBitmap: one per write bitmap the engine holds (created by the operator; deleting one deletes the bitmap). */
import { z } from 'zod';

export const writeBitmapSpecSchema = z.object({
  shadowSet: z.string().min(1).describe('The ShadowSet this bitmap belongs to.'),
  bitmapId: z.string().min(1).describe('The engine\'s bitmap id.'),
  member: z.string().min(1).describe('The member the bitmap records writes for.'),
}).meta({ 'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'a WriteBitmap spec is immutable' }] });
export type WriteBitmapSpec = z.infer<typeof writeBitmapSpecSchema>;

export const writeBitmapStatusSchema = z.object({
  id: z.string().optional(),
  member: z.string().optional(),
  chunkSize: z.number().int().optional(),
  coveredBytes: z.number().int().optional(),
  dirtyBytes: z.number().int().optional(),
  percentPopulated: z.string().optional(),
  masterNode: z.string().optional(),
  created: z.string().optional(),
});
export type WriteBitmapStatus = z.infer<typeof writeBitmapStatusSchema>;
