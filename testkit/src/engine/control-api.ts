/**
 * The engine's control API as the resync tests drive it: POST with JSON bodies, every answer (and error
 * body) checked against the API's schema, waiting for a state by polling /v1/status with a deadline, the SCB as it is
 * recorded on a member file (to see a copy checkpoint or a generation without the engine), and the data
 * checks every scenario ends with.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  deleteBitmapAnswerSchema, errorBodySchema, memberAnswerSchema, mergeAnswerSchema, removeAnswerSchema, resizeAnswerSchema, settingsAnswerSchema, type EngineStatus,
} from '@shadowset/engine/api';
import { decodeScb, pickScb, type Scb } from '@shadowset/engine/core/scb';
import { SCB_SLOT_BYTES, SCB_SLOT_OFFSETS } from '@shadowset/engine/core/geometry';
import { nbdcopy } from './clients.js';
import type { EngineProcess } from './engine-process.js';
import { memberDataDifference, randomFile, readAt, until } from './support.js';

export interface ApiAnswer {
  status: number;
  body: unknown;
}

export async function post(e: EngineProcess, path: string, body: unknown): Promise<ApiAnswer> {
  const res = await fetch(`http://${e.httpAddress}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...e.authHeaders },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // left as text: the assertions below show it
  }
  return { status: res.status, body: parsed };
}

/** POST that must succeed (2xx); returns the JSON answer. */
/** The schema of each route's answer: what a client (the operator) validates, so the engine's answers are held to it. */
const answerSchemas: Record<string, { safeParse(v: unknown): { success: boolean; error?: { message: string } } }> = {
  '/v1/members/add': memberAnswerSchema,
  '/v1/members/return': memberAnswerSchema,
  '/v1/members/remove': removeAnswerSchema,
  '/v1/bitmaps/delete': deleteBitmapAnswerSchema,
  '/v1/merge': mergeAnswerSchema,
  '/v1/resize': resizeAnswerSchema,
  '/v1/settings': settingsAnswerSchema,
};

export async function postOk<T = Record<string, unknown>>(e: EngineProcess, path: string, body: unknown): Promise<T> {
  const r = await post(e, path, body);
  assert.ok(r.status >= 200 && r.status < 300, `${path} ${JSON.stringify(body)} answered ${r.status}: ${JSON.stringify(r.body)}`);
  const schema = answerSchemas[path];
  assert.ok(schema, `no answer schema for ${path}`);
  const a = schema.safeParse(r.body);
  assert.ok(a.success, `${path} answered off its schema: ${JSON.stringify(r.body)} (${a.error?.message ?? ''})`);
  return r.body as T;
}

/** POST that must be refused with this HTTP status and error code; returns the message. */
export async function postRefused(e: EngineProcess, path: string, body: unknown, httpStatus: number, code: string): Promise<string> {
  const r = await post(e, path, body);
  const err = errorBodySchema.safeParse(r.body);
  assert.ok(err.success, `${path} answered ${r.status} without an error body: ${JSON.stringify(r.body)}`);
  assert.equal(r.status, httpStatus, `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
  assert.equal(err.data.code, code, `${path} ${JSON.stringify(body)}: ${err.data.message}`);
  return err.data.message;
}

export function member(st: EngineStatus, path: string): EngineStatus['members'][number] {
  const m = st.members.find((x) => x.path === path);
  assert.ok(m, `no member ${path} in ${JSON.stringify(st.members.map((x) => x.path))}`);
  return m;
}

/** Poll the status until `pred` holds; returns that status. */
export function waitStatus(e: EngineProcess, what: string, pred: (s: EngineStatus) => boolean, timeoutMs = 30_000, everyMs = 25): Promise<EngineStatus> {
  return until(what, async () => {
    const s = await e.status();
    return pred(s) ? s : undefined;
  }, timeoutMs, everyMs);
}

/** Steady state: no copy or merge running or queued, every member in the set InSync. */
export function waitSteady(e: EngineProcess, timeoutMs = 30_000, everyMs = 25): Promise<EngineStatus> {
  return waitStatus(e, 'the steady state', (s) => s.state === 'Steady' && s.recovery.mode === null, timeoutMs, everyMs);
}

/** The SCB a member file carries now (the valid slot with the highest sequence). */
export async function readScb(path: string): Promise<Scb> {
  const a = decodeScb(await readAt(path, SCB_SLOT_OFFSETS[0], SCB_SLOT_BYTES));
  const b = decodeScb(await readAt(path, SCB_SLOT_OFFSETS[1], SCB_SLOT_BYTES));
  const d = pickScb(a, b);
  assert.equal(d.kind, 'ok', `${path} holds no valid SCB`);
  return (d as { kind: 'ok'; scb: Scb }).scb;
}

/** SIGTERM; the engine must exit 0 having recorded a clean stop. */
export async function stopCleanly(e: EngineProcess): Promise<void> {
  assert.deepEqual(await e.stop(), { code: 0, signal: null }, e.tail());
  assert.equal(e.events('ShadowSetStopped').length, 1, e.tail());
}

/** Every member's data area is byte-identical to the first one's over `size` bytes. */
export async function assertMembersIdentical(members: string[], size: number): Promise<void> {
  for (const m of members.slice(1)) {
    const d = await memberDataDifference(members[0]!, m, size);
    assert.equal(d, null, `${m} differs from ${members[0]} at unit offset ${d}`);
  }
}

/** Fill the whole unit with random bytes through NBD (nbdcopy); returns what was written. */
export async function fillUnit(e: EngineProcess, dir: string, size: number): Promise<Buffer> {
  const src = join(dir, 'fill.img');
  const data = await randomFile(src, size);
  await nbdcopy(src, e.uri);
  return data;
}
