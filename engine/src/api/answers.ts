/**
 * Response bodies of the control API's POST routes: what the engine answers and what a client (the
 * operator) validates. Objects are not strict: a newer engine may add fields without breaking an older client.
 */
// zod's v3 API, for the engine's start-up time: see the note in ../core/scb.ts.
import { z } from 'zod/v3';
import { memberStateSchema, statusSchema } from './status.js';

/** POST /v1/members/add and /v1/members/return: the member and the state it entered (FullCopy, Minicopy, InSync...). */
export const memberAnswerSchema = z.object({ id: z.string(), state: memberStateSchema });
export type MemberAnswer = z.infer<typeof memberAnswerSchema>;

/** POST /v1/members/remove: the member, the write bitmap that records writes for its return (or null), its state. */
export const removeAnswerSchema = z.object({ id: z.string(), bitmap: z.string().nullable(), state: memberStateSchema });
export type RemoveAnswer = z.infer<typeof removeAnswerSchema>;

/** POST /v1/bitmaps/delete: false when no such bitmap existed (deleting twice is not an error). */
export const deleteBitmapAnswerSchema = z.object({ deleted: z.boolean() });
export type DeleteBitmapAnswer = z.infer<typeof deleteBitmapAnswerSchema>;

/** POST /v1/merge: whether a merge started now (false: one was running) and the chunks it covers. */
export const mergeAnswerSchema = z.object({ started: z.boolean(), chunks: z.number() });
export type MergeAnswer = z.infer<typeof mergeAnswerSchema>;

/** POST /v1/resize: the size before and after (equal when the set already had that size). */
export const resizeAnswerSchema = z.object({ from: z.number(), size: z.number(), grown: z.boolean() });
export type ResizeAnswer = z.infer<typeof resizeAnswerSchema>;

/** POST /v1/settings: the settings in force afterwards (as in GET /v1/status). */
export const settingsAnswerSchema = statusSchema.shape.settings;
export type SettingsAnswer = z.infer<typeof settingsAnswerSchema>;
