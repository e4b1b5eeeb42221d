/**
 * Plain JSON requests to the API server with the kubeconfig's credentials. Used where the generated
 * client's model would rename or drop fields (CRD schemas) and for server-side apply.
 */
import https from 'node:https';
import http from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import { fromStatus } from './errors.js';

export interface RawOptions {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  body?: unknown;
  contentType?: string;
  query?: Record<string, string>;
  /** Give up (a transient error) when the API server has not answered within this many ms; unset: no limit. */
  timeoutMs?: number;
}

export async function rawRequest<T = unknown>(kc: KubeConfig, o: RawOptions): Promise<T> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const url = new URL(cluster.server.replace(/\/$/, '') + o.path);
  for (const [k, v] of Object.entries(o.query ?? {})) url.searchParams.set(k, v);
  const opts: https.RequestOptions = { method: o.method, headers: { accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const payload = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
  if (payload !== undefined) {
    opts.headers = { ...opts.headers, 'content-type': o.contentType ?? 'application/json', 'content-length': Buffer.byteLength(payload) };
  }
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<T>((resolve, reject) => {
    const req = mod.request(url, opts, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          resolve((text ? JSON.parse(text) : undefined) as T);
          return;
        }
        let msg = text;
        try {
          msg = (JSON.parse(text) as { message?: string }).message ?? text;
        } catch {
          // not JSON: keep the text
        }
        reject(fromStatus(status, `${o.method} ${o.path}: ${status} ${msg}`));
      });
    });
    req.on('error', (e) => reject(fromStatus(0, `${o.method} ${o.path}: ${e.message}`)));
    if (o.timeoutMs !== undefined) req.setTimeout(o.timeoutMs, () => req.destroy(new Error(`no answer in ${o.timeoutMs} ms`)));
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Server-side apply of a whole object with the operator's field manager. */
export function serverSideApply<T = unknown>(kc: KubeConfig, path: string, object: unknown, fieldManager: string, subresource = ''): Promise<T> {
  return rawRequest<T>(kc, {
    method: 'PATCH', path: path + (subresource ? `/${subresource}` : ''), body: object,
    contentType: 'application/apply-patch+yaml', query: { fieldManager, force: 'true' },
  });
}
