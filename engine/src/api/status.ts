/** Schemas of the engine's control/status API: the only engine module the operator imports. */
// zod's v3 API, for the engine's start-up time: see the note in ../core/scb.ts.
import { z } from 'zod/v3';
import { memberStates, type MemberState } from '../core/scb.js';
import { bitmapStatusSchema, minicopyPolicySchema } from './control.js';

// The member states are declared once, with the metadata that records them; the API and the operator use these.
export { memberStates, type MemberState };
export const memberStateSchema = z.enum(memberStates);
export type MemberStateApi = MemberState;

/** The states in which a member takes the set's writes (full members and copy targets); the others have left the set. */
export const writableMemberStates = ['InSync', 'FullCopy', 'Minicopy', 'Merging'] as const satisfies readonly MemberState[];
export const isWritableState = (s: MemberState): boolean => (writableMemberStates as readonly MemberState[]).includes(s);

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
  /** Copy progress while the member is a copy target. */
  progress: z.object({ bytesDone: z.number(), bytesTotal: z.number() }).nullable(),
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
  /** The newest generation recorded on a full member (\`generation\` may be ahead while a change is recorded). */
  recordedGeneration: z.number().optional(),
  state: z.enum(['Steady', 'Transient', 'Stopping']),
  memberTimeoutSeconds: z.number(),
  members: z.array(memberStatusSchema),
  recovery: recoverySchema,
  bitmaps: z.array(z.lazy(() => bitmapStatusSchema)),
  intentLog: z.object({
    dirtyChunks: z.number(),
    enabled: z.boolean(),
    /** Writes noted by the log (whether or not they marked anything new). */
    writes: z.number().optional(),
    /** Metadata writes made to mark chunks (each forced to media), pages written, time spent, bits cleared. */
    persists: z.number().default(0),
    pages: z.number().default(0),
    persistMs: z.number().default(0),
    cleared: z.number().default(0),
    /** The cap on marked chunks (0: none), and how often and how many bits were cleared to keep it. */
    capChunks: z.number().default(0),
    evictions: z.number().default(0),
    evicted: z.number().default(0),
  }),
  settings: z.object({
    copySource: z.string().nullable(),
    copyBytesPerSecond: z.number(),
    mergeBytesPerSecond: z.number(),
    maxCopies: z.number(),
    /** Whether a failing member gets a write bitmap. */
    minicopyPolicy: minicopyPolicySchema.default('Optional'),
  }),
  export: z.object({ name: z.string(), socket: z.string().nullable(), tcp: z.string().nullable() }),
  nbd: z.object({
    connections: z.number(),
    connectionsTotal: z.number(),
    requests: z.record(z.string(), z.number()),
    errors: z.number(),
    rejected: z.number(),
    /** Bytes the NBD connections hold (requests received, in flight, replies not yet sent). */
    heldBytes: z.number().optional(),
    /** Connections not taking requests until their client reads replies (backpressure). */
    stalled: z.number().optional(),
    /** Large WRITE payloads and the reusable buffers they were received into (core/payload-pool.ts). */
    payloadBuffers: z.object({ taken: z.number(), reused: z.number(), poisoned: z.number(), idleBytes: z.number() }).optional(),
  }),
});
export type EngineStatus = z.infer<typeof statusSchema>;

export const errorBodySchema = z.object({ code: z.string(), message: z.string() });
