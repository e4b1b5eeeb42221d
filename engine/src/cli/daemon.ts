/** The running engine: shadow set + NBD listeners + HTTP API, stopped as one. */
import { HttpApi } from '../adapters/http/http-server.js';
import { NbdServer } from '../adapters/nbd/server.js';
import type { NbdServerTls } from '../adapters/nbd/tls.js';
import type { EngineStatus } from '../api/status.js';
import * as C from '../api/control.js';
import { EngineError } from '../core/errors.js';
import { payloadPool } from '../core/payload-pool.js';
import { startShadowSet, type StartOptions } from '../runtime/engine.js';
import { LocationPolicy } from '../runtime/location-policy.js';
import { renderMetrics } from '../runtime/metrics.js';
import type { ShadowSet } from '../runtime/shadow-set.js';
import type { Control } from '../runtime/control.js';

/** What the engine process is started with: the set's own options plus its listeners. */
export interface DaemonOptions extends StartOptions {
  socket: string;
  listen: { host: string; port: number } | null;
  http: { host: string; port: number } | null;
  exportName: string;
  /** TLS on the export's TCP listener, made from files read before any member is touched. */
  exportTls?: NbdServerTls | null;
  /** Bearer token every HTTP route but GET /healthz requires. */
  controlToken?: string | null;
  /** Prefixes of the locations the control API and reconstruct may open, besides `members`. */
  allowLocations?: string[];
}

export interface RunningEngine {
  set: ShadowSet;
  nbd: NbdServer;
  tcp: string | null;
  http: string | null;
  status(): EngineStatus;
  stop(): Promise<void>;
}

interface Listeners {
  api: HttpApi | null;
  nbd: NbdServer;
  http: string | null;
  tcp: string | null;
  policy: LocationPolicy;
  close(): Promise<void>;
}

export async function runEngine(o: DaemonOptions): Promise<RunningEngine> {
  const policy = new LocationPolicy(o.members.map((m) => m.location), o.allowLocations ?? []);
  let set: ShadowSet | null = null;
  // Every listener is bound before any member is opened: an address in use, or any other bad listener,
  // must change nothing on the members. Clients that come meanwhile wait until the set serves.
  const l = await bindListeners(o, policy, () => set);
  let started: Awaited<ReturnType<typeof startShadowSet>>;
  try {
    // Reconstruct (--include) and the control API open members through the same check.
    started = await startShadowSet({ ...o, open: async (loc) => o.open(policy.check(loc)), holdRecovery: true });
  } catch (e) {
    await l.close();
    throw e;
  }
  set = started.set;
  try {
    return serve(o, started.set, started.control, l);
  } catch (e) {
    await started.set.stop().catch(() => undefined);
    await l.close();
    throw e;
  }
}

async function bindListeners(o: DaemonOptions, policy: LocationPolicy, current: () => ShadowSet | null): Promise<Listeners> {
  const unit = (): ShadowSet => {
    const s = current();
    if (!s) throw new EngineError('ENG_SHUTTING_DOWN', 'the shadow set is not started');
    return s;
  };
  const nbd = new NbdServer({
    exportName: o.exportName,
    get description() {
      return `shadow set ${current()?.setId ?? ''}`;
    },
    handler: {
      size: () => unit().size,
      read: (off, len) => unit().read(off, len),
      write: (off, data, fua) => unit().write(off, data, fua),
      flush: () => unit().flush(),
      trim: (off, len, fua) => unit().trim(off, len, fua),
      writeZeroes: (off, len, fua) => unit().writeZeroes(off, len, fua),
    },
    log: o.log,
    // FLUSH reaches every member's device, so it covers writes completed on any connection.
    multiConn: true,
    held: true,
    // Every write reaches the devices through Member.write, which holds pooled buffers until the device returns.
    payloadPool,
    ...(o.exportTls ? { tls: o.exportTls } : {}),
  });
  const api = o.http ? new HttpApi(o.log, { token: o.controlToken ?? null }) : null;
  // Idle payload buffers go back to the system once large writes stop.
  const trim = setInterval(() => payloadPool.trim(), 5_000).unref();
  const close = async () => {
    clearInterval(trim);
    await nbd.close();
    await api?.close();
  };
  try {
    let http: string | null = null;
    if (api && o.http) {
      const a = await api.listen(o.http.host, o.http.port);
      http = `${a.address}:${a.port}`;
    }
    await nbd.listenUnix(o.socket);
    let tcp: string | null = null;
    if (o.listen) {
      const a = await nbd.listenTcp(o.listen.host, o.listen.port);
      tcp = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
    }
    return { api, nbd, http, tcp, policy, close };
  } catch (e) {
    await close();
    throw new EngineError('ENG_INVALID_ARGUMENT', `cannot listen: ${(e as Error).message}`, { cause: e });
  }
}

function serve(o: DaemonOptions, set: ShadowSet, control: Control, l: Listeners): RunningEngine {
  const { api, nbd, http, tcp, policy } = l;
  const status = (): EngineStatus => ({
    setId: set.setId,
    size: set.size,
    chunkSize: set.chunkSize,
    generation: set.generation,
    recordedGeneration: set.recordedGeneration,
    state: set.resync.jobs.length > 0 || set.members.some((m) => m.isWritable && m.state !== 'InSync') ? 'Transient' : 'Steady',
    memberTimeoutSeconds: set.memberTimeout / 1000,
    members: set.members.map((m) => ({
      id: m.id, path: m.location, state: m.state, reason: m.reason, readCost: m.readCost, site: m.site,
      queueDepth: m.queueDepth, counters: { ...m.counters },
      progress: ((j) => (j ? { bytesDone: j.bytesDone, bytesTotal: j.bytesTotal } : null))(set.resync.jobFor(m)),
    })).concat(set.formerMembers().map((a) => ({
      // Former members the record lists but that are not attached since the start (missing, or kept out).
      id: a.id, path: a.path, state: a.state, reason: a.reason ?? 'not attached since the engine started', readCost: 0, site: '',
      queueDepth: 0, counters: { reads: 0, writes: 0, readBytes: 0, writeBytes: 0, flushes: 0, errors: 0, repairs: 0, timeouts: 0 }, progress: null,
    }))),
    recovery: set.resync.recovery(),
    bitmaps: control.bitmaps(),
    intentLog: { dirtyChunks: set.tracker.wil.count, enabled: set.tracker.intentEnabled, capChunks: set.tracker.capChunks, ...set.tracker.stats },
    settings: { ...set.resync.settings, minicopyPolicy: set.faultPolicy },
    export: { name: o.exportName, socket: o.socket, tcp },
    nbd: { ...nbd.stats, requests: { ...nbd.stats.requests }, payloadBuffers: { ...payloadPool.stats } },
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
    // A location is checked (and normalized) before the control operation sees it, so a refused one is
    // never opened; the open the operations use checks once more.
    api.route('POST', '/v1/members/add', async (b) => {
      const req = body(C.addMemberSchema, b);
      return { json: await control.addMember({ ...req, location: policy.check(req.location) }) };
    });
    api.route('POST', '/v1/members/remove', async (b) => ({ json: await control.removeMember(body(C.removeMemberSchema, b)) }));
    api.route('POST', '/v1/members/return', async (b) => {
      const req = body(C.returnMemberSchema, b);
      return { json: await control.returnMember(req.location === undefined ? req : { ...req, location: policy.check(req.location) }) };
    });
    api.route('GET', '/v1/bitmaps', async () => ({ json: control.bitmaps() }));
    api.route('POST', '/v1/bitmaps/delete', async (b) => ({ json: await control.deleteBitmap(body(C.deleteBitmapSchema, b).id) }));
    api.route('POST', '/v1/merge', async (b) => ({ json: await control.demandMerge(body(C.mergeSchema, b).full) }));
    api.route('POST', '/v1/resize', async (b) => ({ json: await control.resize(body(C.resizeSchema, b)) }));
    api.route('POST', '/v1/settings', async (b) => {
      control.settings(body(C.settingsSchema, b));
      return { json: status().settings };
    });
  }
  nbd.release();
  o.log.info(
    {
      event: 'EngineReady', setId: set.setId, generation: set.generation, size: set.size, socket: o.socket, tcp, http, exportName: o.exportName,
      exportTls: o.exportTls?.mode ?? null, controlToken: !!o.controlToken, allowLocations: o.allowLocations ?? [],
    },
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
