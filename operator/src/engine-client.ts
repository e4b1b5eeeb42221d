/** The operator's client of an engine's control/status API (schemas owned by the engine). */
import { statusSchema, type EngineStatus } from '@shadowset/engine/api';
import { OperatorError } from './kube/errors.js';

/** An engine's HTTP API and the set's bearer token for it. */
export interface EngineTarget {
  base: string;
  token: string;
}

export type EngineAnswer = { ok: true; status: EngineStatus } | { ok: false; code: string; message: string; unreachable: boolean };

export class EngineClient {
  constructor(private readonly timeoutMs = 5000) {}

  private async call(t: EngineTarget, method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
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
      throw new OperatorError('OP_TRANSIENT', `engine at ${base} unreachable: ${(e as Error).message}`, 0, { cause: e });
    }
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = { code: 'ENG_INTERNAL', message: text };
    }
    if (!res.ok) {
      const b = (json ?? {}) as { code?: string; message?: string };
      throw new OperatorError(res.status >= 500 ? 'OP_ENGINE' : 'OP_REFUSED', `${b.code ?? res.status}: ${b.message ?? text}`, res.status, { cause: b });
    }
    return json;
  }

  async status(t: EngineTarget): Promise<EngineAnswer> {
    try {
      return { ok: true, status: statusSchema.parse(await this.call(t, 'GET', '/v1/status')) };
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      // Only an engine error code is the engine's answer. The engine listens before its routes exist (a
      // bad address must change nothing), so a start-up answers 404 NOT_FOUND for a moment: not a refusal.
      const engineCode = cause?.code?.startsWith('ENG_') && cause.code !== 'ENG_SHUTTING_DOWN';
      if (e instanceof OperatorError && e.status > 0 && engineCode) {
        return { ok: false, code: cause?.code ?? 'ENG_INTERNAL', message: cause?.message ?? e.message, unreachable: false };
      }
      return { ok: false, code: 'UNREACHABLE', message: (e as Error).message, unreachable: true };
    }
  }

  add(t: EngineTarget, body: { location: string; noCopy?: boolean; confirmOverwrite?: boolean; readCost?: number; site?: string }): Promise<unknown> {
    return this.call(t, 'POST', '/v1/members/add', body);
  }
  remove(t: EngineTarget, body: { member: string; minicopy: string; force?: boolean; reason?: string }): Promise<unknown> {
    return this.call(t, 'POST', '/v1/members/remove', body);
  }
  return(t: EngineTarget, body: { member: string; location?: string; minicopy?: string }): Promise<unknown> {
    return this.call(t, 'POST', '/v1/members/return', body);
  }
  deleteBitmap(t: EngineTarget, id: string): Promise<unknown> {
    return this.call(t, 'POST', '/v1/bitmaps/delete', { id });
  }
  settings(t: EngineTarget, body: Record<string, unknown>): Promise<unknown> {
    return this.call(t, 'POST', '/v1/settings', body);
  }
}

/** The code of an engine refusal (e.g. ENG_FOREIGN_DATA), if the error is one. */
export function refusalCode(e: unknown): string | null {
  if (!(e instanceof OperatorError) || e.code !== 'OP_REFUSED') return null;
  return (e.cause as { code?: string } | undefined)?.code ?? null;
}
