/**
 * The operator's own HTTP listeners. /metrics wants a bearer token the cluster authenticates and authorizes
 * (metrics-auth.ts) unless it is served on loopback only. /healthz stays open: the kubelet's probes cannot
 * send a token, and it answers nothing but `{"ok":true}`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { ReviewClient } from '../kube/reviews.js';
import { checkMetricsListener, MetricsAuthenticator, METRICS_PATH, parseListenAddress, type MetricsAuthMode } from './metrics-auth.js';

export interface ListenerOptions {
  /** `[HOST]:PORT` of /metrics and how it is guarded; unset or empty address: no metrics listener. */
  metrics?: { address: string; auth: MetricsAuthMode };
  /** `[HOST]:PORT` of /healthz; unset or empty: none. The same address as metrics (not port 0) serves both there. */
  healthAddress?: string;
  /** Asked for TokenReviews and SubjectAccessReviews when metrics auth is `kubernetes`. */
  reviews?: ReviewClient;
  renderMetrics: () => string;
  log: Logger;
  /** Passed to the authenticator (tests shorten the cache's lifetime). */
  authCacheTtlMs?: number;
}

export class HttpListeners {
  private readonly servers: http.Server[] = [];
  /** Bound addresses (`host:port`), once started. */
  metricsAddress: string | null = null;
  healthAddress: string | null = null;
  readonly auth: MetricsAuthenticator | null;

  constructor(private readonly o: ListenerOptions) {
    const m = o.metrics?.address ? o.metrics : null;
    if (m) checkMetricsListener(m.address, m.auth);
    if (o.healthAddress) parseListenAddress('--health-bind-address', o.healthAddress);
    if (m?.auth === 'kubernetes' && !o.reviews) throw new Error('metrics auth kubernetes needs a review client');
    this.auth = m?.auth === 'kubernetes' ? new MetricsAuthenticator({ reviews: o.reviews!, ttlMs: o.authCacheTtlMs }) : null;
  }

  async start(): Promise<void> {
    const metrics = this.o.metrics?.address || '';
    const health = this.o.healthAddress || '';
    if (metrics && metrics === health && parseListenAddress('--metrics-bind-address', metrics).port !== 0) {
      const a = await this.listen(metrics, { metrics: true, health: true });
      this.metricsAddress = this.healthAddress = a;
      return;
    }
    if (metrics) this.metricsAddress = await this.listen(metrics, { metrics: true, health: false });
    if (health) this.healthAddress = await this.listen(health, { metrics: false, health: true });
  }

  private async listen(addr: string, serves: { metrics: boolean; health: boolean }): Promise<string> {
    const { host, port } = parseListenAddress(serves.metrics ? '--metrics-bind-address' : '--health-bind-address', addr);
    const server = http.createServer((req, res) => {
      void this.handle(req, res, serves).catch((e: unknown) => {
        this.o.log.warn({ event: 'HttpError', err: (e as Error).message }, 'request failed');
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push(server);
    const a = server.address() as AddressInfo;
    const bound = a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
    this.o.log.info({
      event: 'Listening', address: bound, paths: [...(serves.metrics ? [METRICS_PATH] : []), ...(serves.health ? ['/healthz'] : [])],
      ...(serves.metrics ? { metricsAuth: this.o.metrics!.auth } : {}),
    }, `listening on ${bound}`);
    return bound;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, serves: { metrics: boolean; health: boolean }): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (serves.health && path === '/healthz') {
      if (!read) return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true }));
    }
    if (!serves.metrics || path !== METRICS_PATH) return void res.writeHead(404).end();
    // Only reads: no review is asked for a request that could not be served anyway.
    if (!read) return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    if (this.auth) {
      const verdict = await this.auth.check(req.headers.authorization);
      if (!verdict.allowed) {
        this.o.log[verdict.status === 503 ? 'warn' : 'debug']({ event: 'MetricsRefused', status: verdict.status, reason: verdict.reason }, 'metrics request refused');
        const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain; charset=utf-8' };
        if (verdict.status === 401) headers['www-authenticate'] = 'Bearer realm="shadowset-operator"';
        if (verdict.status === 503) headers['retry-after'] = '1';
        const text = { 401: 'Unauthorized', 403: 'Forbidden', 503: 'Service Unavailable' }[verdict.status];
        return void res.writeHead(verdict.status, headers).end(`${text}\n`);
      }
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.o.renderMetrics());
  }

  async stop(): Promise<void> {
    for (const s of this.servers) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    this.servers.length = 0;
  }
}
