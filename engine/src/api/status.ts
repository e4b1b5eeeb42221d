/** Schemas of the engine's control/status API: the only engine module the operator imports. */
import { z } from 'zod';

export const memberStateSchema = z.enum(['InSync', 'FullCopy', 'Minicopy', 'Merging', 'Removed', 'Faulted']);
export type MemberStateApi = z.infer<typeof memberStateSchema>;

export const memberCountersSchema = z.object({
  reads: z.number(),
  writes: z.number(),
  readBytes: z.number(),
  writeBytes: z.number(),
  flushes: z.number(),
  errors: z.number(),
  repairs: z.number(),
  timeouts: z.number(),
});

export const memberStatusSchema = z.object({
  id: z.string(),
  path: z.string(),
  state: memberStateSchema,
  reason: z.string(),
  readCost: z.number(),
  site: z.string(),
  queueDepth: z.number(),
  counters: memberCountersSchema,
});
export type MemberStatus = z.infer<typeof memberStatusSchema>;

export const recoverySchema = z.object({
  mode: z.enum(['FullCopy', 'Minicopy', 'Merge']).nullable(),
  source: z.string().nullable(),
  targets: z.array(z.string()),
  bytesTotal: z.number(),
  bytesDone: z.number(),
  bytesPerSecond: z.number(),
  etaSeconds: z.number().nullable(),
});
export type Recovery = z.infer<typeof recoverySchema>;

export const statusSchema = z.object({
  setId: z.string(),
  size: z.number(),
  chunkSize: z.number(),
  generation: z.number(),
  state: z.enum(['Steady', 'Transient', 'Stopping']),
  memberTimeoutSeconds: z.number(),
  members: z.array(memberStatusSchema),
  recovery: recoverySchema,
  export: z.object({ name: z.string(), socket: z.string().nullable(), tcp: z.string().nullable() }),
  nbd: z.object({
    connections: z.number(),
    connectionsTotal: z.number(),
    requests: z.record(z.string(), z.number()),
    errors: z.number(),
    rejected: z.number(),
  }),
});
export type EngineStatus = z.infer<typeof statusSchema>;

export const errorBodySchema = z.object({ code: z.string(), message: z.string() });
