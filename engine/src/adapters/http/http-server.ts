/**
 * The engine's HTTP listener: status, metrics and control routes, JSON in and out. With a control token,
 * every route but GET /healthz needs `Authorization: Bearer <token>`; without one, nothing else is read.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { isEngineError, type EngineErrorCode } from '../../core/errors.js';

export type Route = (body: unknown, url: URL) => Promise<{ status?: number; json?: unknown; text?: string; contentType?: string }>;

const statusFor: Partial<Record<EngineErrorCode, number>> = {
  ENG_INVALID_ARGUMENT: 400,
  ENG_OUT_OF_RANGE: 400,
  ENG_TOO_LARGE: 413,
  ENG_NOT_FOUND: 404,
  ENG_CONFLICT: 409,
  ENG_LAST_FULL_MEMBER: 409,
  ENG_MERGE_ACTIVE: 409,
  ENG_BITMAP_REQUIRED: 409,
  ENG_FOREIGN_DATA: 409,
  ENG_OTHER_SET: 409,
  ENG_SET_MISMATCH: 409,
  ENG_STALE_RECORD: 409,
  // A member that cannot be opened or reached: the device's failure, not the request's.
  ENG_IO: 502,
  ENG_MEMBER_TOO_SMALL: 409,
  ENG_SHUTTING_DOWN: 503,
  ENG_NO_FULL_MEMBER: 503,
  ENG_UNSUPPORTED: 501,
  ENG_UNAUTHORIZED: 401,
  ENG_LOCATION_NOT_ALLOWED: 403,
};

/** SHA-256 of a token: equal-length digests let timingSafeEqual compare tokens of any length. */
function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export class HttpApi {
  private readonly routes = new Map<string, Route>();
  private server: http.Server | null = null;
  private readonly token: Buffer | null;

  /** `o.token`: the bearer token every route but GET /healthz requires (none: the listener is loopback). */
  constructor(private readonly log: Logger, o: { token?: string | null } = {}) {
    this.token = o.token ? digest(o.token) : null;
  }

  private authorized(req: http.IncomingMessage, path: string): boolean {
    if (!this.token || (req.method === 'GET' && path === '/healthz')) return true;
    const m = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization ?? '');
    // Compared in constant time, so the answer's timing says nothing about how much of a guess was right.
    return m !== null && timingSafeEqual(digest(m[1]!), this.token);
  }

  route(method: string, path: string, handler: Route): void {
    this.routes.set(`${method} ${path}`, handler);
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    const srv = http.createServer((req, res) => void this.handle(req, res));
    this.server = srv;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => resolve());
    });
    return srv.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://engine');
    const route = this.routes.get(`${req.method} ${url.pathname}`);
    const send = (status: number, body: string, type: string, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers });
      res.end(body);
    };
    if (!this.authorized(req, url.pathname)) {
      // Before the route is looked up or the body read: an unauthenticated caller learns nothing and runs nothing.
      this.log.warn({ event: 'ApiUnauthorized', method: req.method, path: url.pathname.slice(0, 100), peer: req.socket.remoteAddress }, 'control API request without a valid token');
      const body = JSON.stringify({ code: 'ENG_UNAUTHORIZED', message: 'a valid bearer token is required (Authorization: Bearer <token>)' });
      send(401, body, 'application/json', { 'www-authenticate': 'Bearer', connection: 'close' });
      return;
    }
    if (this.routes.size === 0) {
      // Bound before the set is assembled (a bad address fails the start early), routed once it is: until
      // then every path, /healthz too, says "starting" rather than "no such route". Not an ENG_ code: callers
      // (the operator) take ENG_ codes on /v1/status as the engine's refusal to start.
      send(503, JSON.stringify({ code: 'STARTING', message: 'the engine is starting' }), 'application/json', { 'retry-after': '1' });
      return;
    }
    if (!route) {
      const known = [...this.routes.keys()].some((k) => k.endsWith(` ${url.pathname}`));
      send(known ? 405 : 404, JSON.stringify({ code: known ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND', message: `${req.method} ${url.pathname}` }), 'application/json');
      return;
    }
    try {
      let body: unknown = undefined;
      if (req.method === 'POST' || req.method === 'PUT' || req.method === 'DELETE') {
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const c of req) {
          n += (c as Buffer).length;
          if (n > 1024 * 1024) throw Object.assign(new Error('request body too large'), { httpStatus: 413 });
          chunks.push(c as Buffer);
        }
        const text = Buffer.concat(chunks).toString('utf8');
        if (text.trim() !== '') {
          try {
            body = JSON.parse(text);
          } catch {
            send(400, JSON.stringify({ code: 'ENG_INVALID_ARGUMENT', message: 'body is not valid JSON' }), 'application/json');
            return;
          }
        }
      }
      const out = await route(body, url);
      if (out.text !== undefined) send(out.status ?? 200, out.text, out.contentType ?? 'text/plain; charset=utf-8');
      else send(out.status ?? 200, JSON.stringify(out.json ?? {}), 'application/json');
    } catch (e) {
      const code = isEngineError(e) ? e.code : 'ENG_INTERNAL';
      const status = isEngineError(e) ? (statusFor[e.code] ?? 500) : ((e as { httpStatus?: number }).httpStatus ?? 500);
      if (status >= 500) this.log.error({ event: 'ApiError', path: url.pathname, err: (e as Error).message }, 'API request failed');
      send(status, JSON.stringify({ code, message: (e as Error).message }), 'application/json');
    }
  }
}
