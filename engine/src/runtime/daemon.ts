/** The running engine: shadow set + NBD listeners + HTTP API, stopped as one. */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { HttpApi } from '../adapters/http/http-server.js';
import { NbdServer } from '../adapters/nbd/server.js';
import type { EngineStatus } from '../api/status.js';
import * as C from '../api/control.js';
import { EngineError } from '../core/errors.js';
import { startShadowSet, type StartOptions } from './engine.js';
import { renderMetrics } from './metrics.js';
import type { ShadowSet } from './shadow-set.js';
import type { Control } from './control.js';

/** What the engine process is started with: the set's own options plus its listeners. */
export interface DaemonOptions extends StartOptions {
  socket: string;
  listen: { host: string; port: number } | null;
  http: { host: string; port: number } | null;
  exportName: string;
  /** PEM files for NBD over TLS on the TCP listener; required unless `required` is false. */
  tls?: { cert: string; key: string; required: boolean } | null;
}

export interface RunningEngine {
  set: ShadowSet;
  nbd: NbdServer;
  tcp: string | null;
  http: string | null;
  status(): EngineStatus;
  stop(): Promise<void>;
}

export async function runEngine(o: DaemonOptions): Promise<RunningEngine> {
  // Certificates are read before any member is touched: a bad path must change nothing.
  let tlsContext: tls.SecureContext | null = null;
  if (o.tls) {
    try {
      tlsContext = tls.createSecureContext({ cert: readFileSync(o.tls.cert), key: readFileSync(o.tls.key) });
    } catch (e) {
      throw new EngineError('ENG_INVALID_ARGUMENT', `TLS certificate or key unusable: ${(e as Error).message}`);
    }
  }
  // Bind the HTTP listener before touching any member: a bad address must change nothing.
  let api: HttpApi | null = null;
  let http: string | null = null;
  if (o.http) {
    api = new HttpApi(o.log);
    const a = await api.listen(o.http.host, o.http.port);
    http = `${a.address}:${a.port}`;
  }
  let started: Awaited<ReturnType<typeof startShadowSet>>;
  try {
    started = await startShadowSet({ ...o, holdRecovery: true });
  } catch (e) {
    await api?.close();
    throw e;
  }
  const { set, control } = started;
  try {
    return await serve(o, set, control, api, http, tlsContext);
  } catch (e) {
    // A listener could not be had: stop the set cleanly so its record stays clean.
    await set.stop().catch(() => undefined);
    await api?.close();
    throw e;
  }
}

async function serve(o: DaemonOptions, set: ShadowSet, control: Control, api: HttpApi | null, http: string | null, tlsContext: tls.SecureContext | null): Promise<RunningEngine> {
  const nbd = new NbdServer({
    exportName: o.exportName,
    description: `shadow set ${set.setId}`,
    handler: {
      size: () => set.size,
      read: (off, len) => set.read(off, len),
      write: (off, data, fua) => set.write(off, data, fua),
      flush: () => set.flush(),
      trim: (off, len, fua) => set.trim(off, len, fua),
      writeZeroes: (off, len, fua) => set.writeZeroes(off, len, fua),
    },
    log: o.log,
    // FLUSH reaches every member's device, so it covers writes completed on any connection.
    multiConn: true,
    ...(tlsContext && o.tls ? { tls: { context: tlsContext, required: o.tls.required } } : {}),
  });
  await nbd.listenUnix(o.socket);
  let tcp: string | null = null;
  if (o.listen) {
    const a = await nbd.listenTcp(o.listen.host, o.listen.port);
    tcp = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
  }
  const status = (): EngineStatus => ({
    setId: set.setId,
    size: set.size,
    chunkSize: set.chunkSize,
    generation: set.generation,
    state: set.resync.jobs.length > 0 || set.members.some((m) => m.isWritable && m.state !== 'InSync') ? 'Transient' : 'Steady',
    memberTimeoutSeconds: set.memberTimeout / 1000,
    members: set.members.map((m) => ({
      id: m.id, path: m.location, state: m.state, reason: m.reason, readCost: m.readCost, site: m.site,
      queueDepth: m.queueDepth, counters: { ...m.counters },
      progress: ((j) => (j ? { bytesDone: j.bytesDone, bytesTotal: j.bytesTotal } : null))(set.resync.jobFor(m)),
    })),
    recovery: set.resync.recovery(),
    bitmaps: control.bitmaps(),
    intentLog: { dirtyChunks: set.tracker.wil.count, enabled: set.tracker.intentEnabled, ...set.tracker.stats },
    settings: { ...set.resync.settings, minicopyPolicy: set.faultPolicy },
    export: { name: o.exportName, socket: o.socket, tcp },
    nbd: { ...nbd.stats, requests: { ...nbd.stats.requests } },
  });
  if (api) {
    api.route('GET', '/v1/status', async () => ({ json: status() }));
    api.route('GET', '/metrics', async () => ({ text: renderMetrics(status()), contentType: 'text/plain; version=0.0.4' }));
    api.route('GET', '/healthz', async () => ({ json: { ok: true } }));
    const body = <T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } } }, v: unknown): T => {
      const r = schema.safeParse(v ?? {});
      if (!r.success) {
        const msg = r.error.issues.map((i) => `${i.path.map(String).join('.') || 'body'}: ${i.message}`).join('; ');
        throw new EngineError('ENG_INVALID_ARGUMENT', msg);
      }
      return r.data;
    };
    api.route('POST', '/v1/members/add', async (b) => ({ json: await control.addMember(body(C.addMemberSchema, b)) }));
    api.route('POST', '/v1/members/remove', async (b) => ({ json: await control.removeMember(body(C.removeMemberSchema, b)) }));
    api.route('POST', '/v1/members/return', async (b) => ({ json: await control.returnMember(body(C.returnMemberSchema, b)) }));
    api.route('GET', '/v1/bitmaps', async () => ({ json: control.bitmaps() }));
    api.route('POST', '/v1/bitmaps/delete', async (b) => ({ json: await control.deleteBitmap(body(C.deleteBitmapSchema, b).id) }));
    api.route('POST', '/v1/merge', async (b) => ({ json: await control.demandMerge(body(C.mergeSchema, b).full) }));
    api.route('POST', '/v1/settings', async (b) => {
      control.settings(body(C.settingsSchema, b));
      return { json: status().settings };
    });
  }
  o.log.info(
    { event: 'EngineReady', setId: set.setId, generation: set.generation, size: set.size, socket: o.socket, tcp, http, exportName: o.exportName },
    'engine ready',
  );
  set.startRecovery();
  let stopping: Promise<void> | null = null;
  return {
    set, nbd, tcp, http, status,
    stop: () => {
      stopping ??= (async () => {
        await nbd.close();
        await set.stop();
        await api?.close();
      })();
      return stopping;
    },
  };
}
