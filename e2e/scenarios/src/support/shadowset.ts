// ShadowSet helpers for scenarios: manifests, a status watch with history, member data comparison and the
// engine's own status. Everything goes through a ClusterEnv, so it works in both modes.
import assert from 'node:assert/strict';
import yaml from 'js-yaml';
import type { BlockVolume, ClusterEnv, EngineEndpoint } from '../env/cluster-env.js';

/** The metadata header in front of the data on every member: unit byte X is member byte 8 MiB + X. */
export const HEADER_BYTES = 8 * 1024 * 1024;
export const MiB = 1024 * 1024;

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export interface SetStatus {
  state?: string;
  membersInSync?: string;
  shadowGeneration?: number;
  size?: number;
  conditions?: Condition[];
  members?: { name: string; id?: string; state: string; reason?: string; bytesDone?: number; bytesTotal?: number }[];
  recovery?: { mode?: string; bytesDone?: number; bytesTotal?: number; targets?: string[] };
}

export const cond = (s: SetStatus, type: string): Condition | undefined => s.conditions?.find((c) => c.type === type);
export const memberState = (s: SetStatus, name: string): string | undefined => s.members?.find((m) => m.name === name)?.state;
export const member = (s: SetStatus, name: string) => s.members?.find((m) => m.name === name);
export const steady = (n: number) => (s: SetStatus) =>
  s.membersInSync === `${n}/${n}` && s.state === 'Steady' && cond(s, 'Ready')?.status === 'True';

export interface MemberDef {
  name: string;
  claimName: string;
  state?: 'Active' | 'Detached';
}

export function shadowSetYaml(ns: string, name: string, spec: Record<string, unknown>): string {
  return yaml.dump({ apiVersion: 'shadowset.dev/v1alpha1', kind: 'ShadowSet', metadata: { name, namespace: ns }, spec }, { lineWidth: 120 });
}

/** Every status of one ShadowSet as the API server shows it, from a watch. */
export class StatusWatch {
  readonly history: { at: number; status: SetStatus }[] = [];
  private readonly stopWatch: () => void;
  private waiters: (() => void)[] = [];

  constructor(private readonly env: ClusterEnv, readonly ns: string, readonly name: string) {
    this.stopWatch = env.watchStatus(ns, name, (st) => {
      this.history.push({ at: Date.now(), status: st as SetStatus });
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  get current(): SetStatus {
    return this.history.at(-1)?.status ?? {};
  }

  /** Statuses seen since `since` (ms since the epoch). */
  since(since: number): SetStatus[] {
    return this.history.filter((h) => h.at >= since).map((h) => h.status);
  }

  /** Wait until a status satisfies `ok` (checked on every change, and against the API once a second). */
  async until(what: string, ok: (s: SetStatus) => boolean, timeoutMs = 60_000): Promise<SetStatus> {
    const deadline = Date.now() + timeoutMs;
    let polled = 0;
    for (;;) {
      if (ok(this.current)) return this.current;
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${this.name}: ${what}; last status: ${JSON.stringify(this.current)}`);
      }
      // A watch can lag or be re-established: look at the object itself now and then.
      if (Date.now() - polled > 1000) {
        polled = Date.now();
        const obj = await this.env.get(this.ns, 'shadowsets', this.name);
        const st = (obj?.status ?? {}) as SetStatus;
        if (ok(st)) return st;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 250);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  stop(): void {
    this.stopWatch();
  }
}

/** The engine's own status (GET /v1/status). */
export async function engineStatus(ep: EngineEndpoint): Promise<{
  size: number; chunkSize: number; generation: number; state: string;
  members: { id: string; path: string; state: string; reason: string; counters: { writes: number; writeBytes: number; reads: number } }[];
  recovery: { mode: string | null; bytesTotal: number; bytesDone: number };
  bitmaps: { id: string; member: string; dirtyBytes: number }[];
  intentLog: { dirtyChunks: number };
}> {
  const res = await fetch(`${ep.http}/v1/status`, { headers: { authorization: `Bearer ${ep.token}` }, signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`engine status: HTTP ${res.status}: ${await res.text()}`);
  return res.json() as never;
}

/**
 * Compare the data areas of members byte for byte (call when the set is quiescent or stopped). Returns null
 * when identical, else where they first differ.
 */
export async function memberDifference(env: ClusterEnv, vols: BlockVolume[], unitBytes: number): Promise<string | null> {
  const step = 8 * MiB;
  for (let off = 0; off < unitBytes; off += step) {
    const n = Math.min(step, unitBytes - off);
    const bufs = await Promise.all(vols.map((v) => env.readVolume(v, HEADER_BYTES + off, n)));
    for (let i = 1; i < bufs.length; i++) {
      if (!bufs[i]!.equals(bufs[0]!)) {
        let at = 0;
        while (bufs[i]![at] === bufs[0]![at]) at++;
        return `${vols[0]!.claim} and ${vols[i]!.claim} differ at unit offset ${off + at}`;
      }
    }
  }
  return null;
}

/** A member's whole data area (the unit's bytes as that member holds them). */
export async function memberData(env: ClusterEnv, v: BlockVolume, unitBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < unitBytes; off += 16 * MiB) parts.push(await env.readVolume(v, HEADER_BYTES + off, Math.min(16 * MiB, unitBytes - off)));
  return Buffer.concat(parts);
}

/** Event reasons in order, for messages. */
export const reasons = (ev: { reason: string }[]) => ev.map((e) => e.reason).join(', ');

/** Run kubectl and hand its command line and output to `note` (the README's walkthrough is such output). */
export async function show(env: ClusterEnv, note: (msg: string) => void, args: string[]): Promise<string> {
  const out = (await env.kubectl(args)).stdout;
  note(`$ kubectl ${args.map((a) => (/[\s{}"]/.test(a) ? `'${a}'` : a)).join(' ')}\n${out.trimEnd()}`);
  return out;
}

/** kubectl arguments printing a set's conditions, one a line. */
export const conditionsOf = (ns: string, name: string) => [
  'get', 'shadowset', name, '-n', ns, '-o', 'jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\\n"}{end}',
];

/**
 * When (ms since the epoch) the engine logged `event` for member `id`, first since `since`; the engine's
 * clock is this machine's in both modes. The status shows a removal only at the operator's next look, so
 * the member timeout itself is measured here.
 */
export async function engineLogTime(env: ClusterEnv, ns: string, set: string, event: string, id: string, since: number): Promise<number> {
  const times = (await env.logs(ns, `${set}-engine`, 'engine')).split('\n')
    .filter((l) => l.includes(`"event":"${event}"`) && l.includes(id))
    .map((l) => Number(/"time":(\d+)/.exec(l)?.[1] ?? NaN))
    .filter((t) => t >= since);
  assert.ok(times.length > 0, `the engine log shows ${event} of member ${id}`);
  return Math.min(...times);
}

/**
 * That member `name` (engine id `id`) came back with a minicopy, no full copy, since `since` (ms since the
 * epoch): the engine's own log says so (`MemberReturned … "mode":"Minicopy"`, no `CopyStarted` of it), and
 * the set's events announce the return (`MemberReturned`) with no `CopyStarted`. Returns the minicopy's size
 * in bytes.
 */
export async function returnedWithMinicopy(env: ClusterEnv, ns: string, set: string, name: string, id: string, since: number): Promise<number> {
  const log = (await env.logs(ns, `${set}-engine`, 'engine')).split('\n').filter((l) => {
    const t = /"time":(\d+)/.exec(l)?.[1];
    return t !== undefined && Number(t) >= since - 1000 && l.includes(id);
  });
  const returned = log.find((l) => l.includes('"event":"MemberReturned"'));
  assert.ok(returned, `the engine log shows ${name} (${id}) returned`);
  assert.match(returned, /"mode":"Minicopy"/, `${name} returned with a minicopy: ${returned}`);
  assert.ok(!log.some((l) => l.includes('"event":"CopyStarted"')), `no full copy of ${name} in the engine log`);
  const ev = (await env.events(ns, set)).filter((e) => Date.parse(e.at) >= since - 1000);
  assert.ok(ev.some((e) => e.reason === 'MemberReturned' && e.message.includes(`member ${name} returned`)), `MemberReturned for ${name}: ${reasons(ev)}`);
  assert.ok(!ev.some((e) => e.reason === 'CopyStarted'), `no CopyStarted event: ${reasons(ev)}`);
  return Number(/"bytes":(\d+)/.exec(returned)?.[1] ?? 0);
}

/**
 * The events a member's fault and return leave. The operator announces a return when the engine answers
 * its call (MemberReturned, MinicopyStarted, later MinicopyCompleted). On kind that call can outlive the
 * operator's 5 s timeout (it was made while the member's node was frozen or off, its pod still shown
 * Ready), and the engine completes the return once the node answers; the operator then announces it from
 * the states it sees next, and a minicopy that ended between two looks has no start or end event of its
 * own. The engine's log has the mode (returnedWithMinicopy). The simulator's nodes never hold a call that long.
 */
export const returnEvents = (mode: 'local' | 'kind') =>
  mode === 'kind' ? ['MemberFaulted', 'MemberReturned'] : ['MemberFaulted', 'MemberReturned', 'MinicopyStarted', 'MinicopyCompleted'];
