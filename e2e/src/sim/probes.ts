// Readiness probes: httpGet and tcpSocket are run against the pod IP; exec and grpc probes are not
// simulated and count as passing.
import type { V1Container, V1Probe } from '@kubernetes/client-node';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';

function portOf(c: V1Container, port: number | string | undefined): number {
  if (typeof port === 'number') return port;
  if (port !== undefined && /^\d+$/.test(port)) return Number(port);
  const named = c.ports?.find((p) => p.name === port);
  if (!named) throw new Error(`no container port named ${String(port)}`);
  return named.containerPort;
}

/** Runs the probe once; resolves true on success. */
export function probeOnce(probe: V1Probe, c: V1Container, podIP: string): Promise<boolean> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  return new Promise<boolean>((resolve) => {
    try {
      if (probe.httpGet) {
        const g = probe.httpGet;
        const port = portOf(c, g.port as number | string);
        const https = (g.scheme ?? 'HTTP').toUpperCase() === 'HTTPS';
        const headers = Object.fromEntries((g.httpHeaders ?? []).map((h) => [h.name, h.value]));
        const req = (https ? httpsRequest : httpRequest)(
          { host: g.host ?? podIP, port, path: g.path ?? '/', method: 'GET', headers, timeout: timeoutMs,
            rejectUnauthorized: false },
          (res) => {
            res.resume();
            const s = res.statusCode ?? 0;
            resolve(s >= 200 && s < 400);
          },
        );
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(false));
        req.end();
      } else if (probe.tcpSocket) {
        const sock = connect({ host: probe.tcpSocket.host ?? podIP, port: portOf(c, probe.tcpSocket.port as number | string) });
        sock.setTimeout(timeoutMs, () => sock.destroy());
        sock.on('connect', () => {
          sock.destroy();
          resolve(true);
        });
        sock.on('error', () => resolve(false));
        sock.on('close', () => resolve(false));
      } else {
        resolve(true);
      }
    } catch {
      resolve(false);
    }
  });
}
