/**
 * The operator's client of an engine's control/status API. Request bodies are typed by the engine's own
 * schemas, and every answer is validated by them: a body the engine did not promise is an error here, not
 * a value passed on.
 */
import {
  deleteBitmapAnswerSchema, errorBodySchema, memberAnswerSchema, removeAnswerSchema, resizeAnswerSchema, settingsAnswerSchema, statusSchema,
  type AddMemberBody, type DeleteBitmapAnswer, type DeleteBitmapBody, type EngineStatus, type MemberAnswer, type RemoveAnswer,
  type RemoveMemberBody, type ResizeAnswer, type ResizeBody, type ReturnMemberBody, type SettingsAnswer, type SettingsBody,
} from '@shadowset/engine/api';
import { OperatorError } from './kube/errors.js';

/** An engine's HTTP API and the set's bearer token for it. */
export interface EngineTarget {
  base: string;
  token: string;
}

export type EngineAnswer = { ok: true; status: EngineStatus } | { ok: false; code: string; message: string; unreachable: boolean };

/** A schema of the engine's API (zod v3 there; only safeParse is used here). */
interface AnswerSchema<T> {
  safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
}

/** An engine error answer as the engine sends it: a stable code (ENG_…) and a message for people. */
export type EngineErrorBody = { code: string; message: string };

/** A call that did not succeed: unreachable, an error answer (`answer` holds it, if it was one), or an answer off its schema. */
export class EngineCallError extends OperatorError {
  constructor(code: 'OP_TRANSIENT' | 'OP_ENGINE' | 'OP_REFUSED', message: string, status: number, readonly answer: EngineErrorBody | null, options?: { cause?: unknown }) {
    super(code, message, status, options);
    this.name = 'EngineCallError';
  }
}

const issues = (e: { issues: { path: PropertyKey[]; message: string }[] }) =>
  e.issues.slice(0, 3).map((i) => `${i.path.map(String).join('.') || 'body'}: ${i.message}`).join('; ');

export class EngineClient {
  constructor(private readonly timeoutMs = 5000) {}

  private async call<T>(t: EngineTarget, method: 'GET' | 'POST', path: string, answer: AnswerSchema<T>, body?: unknown): Promise<T> {
    const base = t.base;
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${t.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new EngineCallError('OP_TRANSIENT', `engine at ${base} unreachable: ${(e as Error).message}`, 0, null, { cause: e });
    }
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = { code: 'ENG_INTERNAL', message: text };
    }
    if (!res.ok) {
      const e = errorBodySchema.safeParse(json);
      const b = e.success ? e.data : null;
      throw new EngineCallError(res.status >= 500 ? 'OP_ENGINE' : 'OP_REFUSED', `${b?.code ?? res.status}: ${b?.message ?? text}`, res.status, b);
    }
    const a = answer.safeParse(json);
    if (!a.success) throw new EngineCallError('OP_ENGINE', `engine at ${base} answered ${method} ${path} off its schema: ${issues(a.error)}`, res.status, null);
    return a.data;
  }

  async status(t: EngineTarget): Promise<EngineAnswer> {
    try {
      return { ok: true, status: await this.call(t, 'GET', '/v1/status', statusSchema) };
    } catch (e) {
      // Only an engine error code is the engine's answer. The engine listens before its routes exist (a
      // bad address must change nothing), so a start-up answers 503 STARTING (404 NOT_FOUND before this
      // version) for a moment: not a refusal.
      const answer = e instanceof EngineCallError && e.status > 0 ? e.answer : null;
      if (answer && answer.code.startsWith('ENG_') && answer.code !== 'ENG_SHUTTING_DOWN') {
        return { ok: false, code: answer.code, message: answer.message, unreachable: false };
      }
      return { ok: false, code: 'UNREACHABLE', message: (e as Error).message, unreachable: true };
    }
  }

  add(t: EngineTarget, body: AddMemberBody): Promise<MemberAnswer> {
    return this.call(t, 'POST', '/v1/members/add', memberAnswerSchema, body);
  }
  remove(t: EngineTarget, body: RemoveMemberBody): Promise<RemoveAnswer> {
    return this.call(t, 'POST', '/v1/members/remove', removeAnswerSchema, body);
  }
  return(t: EngineTarget, body: ReturnMemberBody): Promise<MemberAnswer> {
    return this.call(t, 'POST', '/v1/members/return', memberAnswerSchema, body);
  }
  deleteBitmap(t: EngineTarget, id: string): Promise<DeleteBitmapAnswer> {
    const body: DeleteBitmapBody = { id };
    return this.call(t, 'POST', '/v1/bitmaps/delete', deleteBitmapAnswerSchema, body);
  }
  settings(t: EngineTarget, body: SettingsBody): Promise<SettingsAnswer> {
    return this.call(t, 'POST', '/v1/settings', settingsAnswerSchema, body);
  }
  resize(t: EngineTarget, body: ResizeBody): Promise<ResizeAnswer> {
    return this.call(t, 'POST', '/v1/resize', resizeAnswerSchema, body);
  }
}

/**
 * Whether an engine call failed without an answer (the engine, or a member it was reaching for, silent past
 * the call's timeout; the connection refused): nothing is known to have changed, and the call may be tried again.
 */
export function unanswered(e: unknown): boolean {
  return e instanceof EngineCallError && e.code === 'OP_TRANSIENT';
}

/** The code of an engine refusal (e.g. ENG_FOREIGN_DATA), if the error is one. */
export function refusalCode(e: unknown): string | null {
  if (!(e instanceof EngineCallError) || e.code !== 'OP_REFUSED') return null;
  return e.answer?.code ?? null;
}
