import { parseArgs } from 'node:util';
import { EngineError } from '../core/errors.js';
import type { MemberSpec } from '../runtime/engine.js';
import type { ResyncSettings } from '../runtime/resync-job.js';
import { INTENT_LOG_CAP_DEFAULT_MIB, INTENT_LOG_CAP_MAX_MIB, MEMBER_TIMEOUT_MAX_S, MEMBER_TIMEOUT_MIN_S, MIN_THROTTLE_BYTES_PER_SECOND } from '../api/control.js';
import { isLoopbackHost, parseSecurityArgs, SECURITY_OPTIONS, type HostPort, type SecurityArgs } from './security-args.js';

export interface ServeArgs extends SecurityArgs {
  members: MemberSpec[];
  socket: string;
  listen: { host: string; port: number } | null;
  http: { host: string; port: number } | null;
  exportName: string;
  memberTimeoutMs: number;
  overwrite: boolean;
  logLevel: string;
  /** Hidden (benchmarks only): writes do not mark the write-intent log, so a crash needs a full merge. */
  intentLog: boolean;
  include: boolean;
  holdOnFailure: boolean;
  intentIdlePasses: number;
  /** Most bytes of chunks the write-intent log marks at once (0: no cap). */
  intentLogCapBytes: number;
  faultPolicy: 'Required' | 'Optional' | 'Never';
  /** Throttles in force from the start (a merge after a crash runs before anyone can ask by API). */
  resync: Partial<ResyncSettings>;
  site?: string;
  keepRemoved: boolean;
  minGeneration?: number;
  stateFile?: string;
  /** The size of a set this start makes (less if a member has less room); ignored when the members hold one. */
  newSetSize?: number;
}

export const USAGE = `usage: shadow-engine serve --member <file|device|nbd-uri> [--member ...] --socket <path>
                           [--listen <host:port>] [--http <host:port>] [--export-name <name>]
                           [--member-timeout <seconds>] [--overwrite] [--include] [--hold-on-failure]
                           [--minicopy-policy Required|Optional|Never] [--intent-idle-seconds 5] [--intent-log-cap-mib 256]
                           [--log-level <level>] [--site <zone>] [--keep-removed] [--state-file <path>]
                           [--min-generation <n>] [--new-set-size <bytes>]
                           [--copy-bytes-per-second <n>] [--merge-bytes-per-second <n>] [--max-copies <n>]
                           [--control-token-file <path>] [--allow-location <prefix> ...]
                           [--member-psk-file <path>] [--export-psk-file <path>]
                           [--tls-cert <pem> --tls-key <pem> [--tls-ca <pem>] [--tls-optional]]
       shadow-engine serve-device --device <file|block-device> --listen <host:port> [--psk-file <path>]

A member may carry options after a '#': --member /dev/loop3#readCost=2,site=east,overwrite
TCP listeners bind to loopback unless a host is given. A listener on any other address must be
authenticated: --http needs --control-token-file; --listen needs --export-psk-file, or --tls-cert and
--tls-key with --tls-ca; serve-device --listen needs --psk-file. PSK files hold identity:hexkey lines.
The control API may name only the --member locations and those under an --allow-location prefix.`;

export function parseHostPort(v: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(v) ?? /^()()(\d+)$/.exec(v);
  if (!m) throw new EngineError('ENG_INVALID_ARGUMENT', `${what} must be host:port or port, got '${v}'`);
  const port = Number(m[3]);
  if (port > 65535) throw new EngineError('ENG_INVALID_ARGUMENT', `${what} port ${port} is out of range`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

/** A site names a zone: a Kubernetes label value (letters, digits, '-', '_', '.'), at most 63 characters. */
const SITE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export function parseSite(v: string, what: string): string {
  if (!SITE.test(v)) throw new EngineError('ENG_INVALID_ARGUMENT', `${what} must be a label value (letters, digits, '-', '_', '.'; at most 63), got '${v}'`);
  return v;
}

/** `location[#option,...]`: options `readCost=N` (0..1000), `site=NAME`, `overwrite`. */
export function parseMember(v: string): MemberSpec {
  const hash = v.lastIndexOf('#');
  if (hash < 0) return { location: v };
  const location = v.slice(0, hash);
  if (location === '') throw new EngineError('ENG_INVALID_ARGUMENT', `member '${v}' has no location before its options`);
  const spec: MemberSpec = { location };
  for (const kv of v.slice(hash + 1).split(',').filter(Boolean)) {
    const eq = kv.indexOf('=');
    const k = eq < 0 ? kv : kv.slice(0, eq);
    const val = eq < 0 ? undefined : kv.slice(eq + 1);
    if (k === 'readCost' && val !== undefined && /^\d{1,4}$/.test(val) && Number(val) <= 1000) spec.readCost = Number(val);
    else if (k === 'site' && val !== undefined) spec.site = parseSite(val, `the site of member ${location}`);
    else if (k === 'overwrite' && val === undefined) spec.overwrite = true;
    else throw new EngineError('ENG_INVALID_ARGUMENT', `unknown or invalid member option '${kv}' in '${v}' (readCost=0..1000, site=NAME, overwrite)`);
  }
  return spec;
}

export function parseServeArgs(argv: string[]): ServeArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      member: { type: 'string', multiple: true },
      socket: { type: 'string' },
      listen: { type: 'string' },
      http: { type: 'string' },
      'export-name': { type: 'string', default: 'shadow' },
      'member-timeout': { type: 'string', default: '120' },
      overwrite: { type: 'boolean', default: false },
      site: { type: 'string' },
      'keep-removed': { type: 'boolean', default: false },
      'state-file': { type: 'string' },
      'min-generation': { type: 'string' },
      'new-set-size': { type: 'string' },
      include: { type: 'boolean', default: false },
      'hold-on-failure': { type: 'boolean', default: false },
      'intent-idle-seconds': { type: 'string', default: '5' },
      'intent-log-cap-mib': { type: 'string', default: String(INTENT_LOG_CAP_DEFAULT_MIB) },
      ...SECURITY_OPTIONS,
      'minicopy-policy': { type: 'string', default: 'Optional' },
      'log-level': { type: 'string', default: 'info' },
      'copy-bytes-per-second': { type: 'string' },
      'merge-bytes-per-second': { type: 'string' },
      'max-copies': { type: 'string' },
      // Hidden, not in USAGE: for bench/resync-bench.mjs, which measures what the intent log costs.
      'no-intent-log': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const members = (values.member ?? []).map(parseMember);
  if (members.length === 0) throw new EngineError('ENG_INVALID_ARGUMENT', 'at least one --member is required');
  if (!values.socket) throw new EngineError('ENG_INVALID_ARGUMENT', '--socket is required');
  const policy = values['minicopy-policy'];
  if (policy !== 'Required' && policy !== 'Optional' && policy !== 'Never') {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--minicopy-policy must be Required, Optional or Never, got '${policy}'`);
  }
  const idle = Number(values['intent-idle-seconds']);
  if (!Number.isInteger(idle) || idle < 1 || idle > 3600) {
    throw new EngineError('ENG_INVALID_ARGUMENT', '--intent-idle-seconds must be a whole number of seconds, 1..3600');
  }
  const cap = values['intent-log-cap-mib']!;
  if (!/^\d+$/.test(cap) || Number(cap) > INTENT_LOG_CAP_MAX_MIB) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--intent-log-cap-mib must be a whole number of MiB, 0 (no cap) to ${INTENT_LOG_CAP_MAX_MIB}, got '${cap}'`);
  }
  const tmo = Number(values['member-timeout']);
  if (!Number.isFinite(tmo) || tmo < MEMBER_TIMEOUT_MIN_S || tmo > MEMBER_TIMEOUT_MAX_S) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--member-timeout must be ${MEMBER_TIMEOUT_MIN_S} to ${MEMBER_TIMEOUT_MAX_S} seconds, got '${values['member-timeout']}'`);
  }
  const count = (name: 'copy-bytes-per-second' | 'merge-bytes-per-second' | 'max-copies' | 'min-generation' | 'new-set-size', min: number, max: number): number | undefined => {
    const v = values[name];
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new EngineError('ENG_INVALID_ARGUMENT', `--${name} must be an integer from ${min} to ${max}, got '${v}'`);
    return Number(v);
  };
  const resync: Partial<ResyncSettings> = {};
  const rate = (name: 'copy-bytes-per-second' | 'merge-bytes-per-second') => {
    const v = count(name, 0, Number.MAX_SAFE_INTEGER);
    if (v !== undefined && v > 0 && v < MIN_THROTTLE_BYTES_PER_SECOND) {
      throw new EngineError('ENG_INVALID_ARGUMENT', `--${name} must be 0 (unlimited) or at least ${MIN_THROTTLE_BYTES_PER_SECOND}, got '${v}'`);
    }
    return v;
  };
  const copyRate = rate('copy-bytes-per-second');
  const mergeRate = rate('merge-bytes-per-second');
  const maxCopies = count('max-copies', 1, 64);
  if (copyRate !== undefined) resync.copyBytesPerSecond = copyRate;
  if (mergeRate !== undefined) resync.mergeBytesPerSecond = mergeRate;
  if (maxCopies !== undefined) resync.maxCopies = maxCopies;
  const newSetSize = count('new-set-size', 512, Number.MAX_SAFE_INTEGER);
  if (newSetSize !== undefined && newSetSize % 512 !== 0) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--new-set-size must be a multiple of 512 bytes, got '${newSetSize}'`);
  }
  const listen = values.listen ? parseHostPort(values.listen, '--listen') : null;
  const http = values.http ? parseHostPort(values.http, '--http') : null;
  return {
    ...parseSecurityArgs(values, listen, http),
    members,
    socket: values.socket,
    listen,
    http,
    exportName: values['export-name']!,
    memberTimeoutMs: Math.round(tmo * 1000),
    overwrite: values.overwrite!,
    logLevel: values['log-level']!,
    intentLog: !values['no-intent-log'],
    include: values.include!,
    holdOnFailure: values['hold-on-failure']!,
    intentIdlePasses: idle,
    intentLogCapBytes: Number(cap) * 1024 * 1024,
    faultPolicy: policy,
    resync,
    ...(values.site !== undefined ? { site: parseSite(values.site, '--site') } : {}),
    keepRemoved: values['keep-removed']!,
    ...(values['state-file'] ? { stateFile: values['state-file'] } : {}),
    ...(values['min-generation'] !== undefined ? { minGeneration: count('min-generation', 0, Number.MAX_SAFE_INTEGER)! } : {}),
    ...(newSetSize !== undefined ? { newSetSize } : {}),
  };
}

export interface ServeDeviceArgs {
  device: string;
  listen: HostPort;
  exportName: string;
  /** identity:hexkey file: TLS-PSK is then required of every client. */
  pskFile: string | null;
}

/** `serve-device` arguments. Pure: nothing is read or opened, so a bad argument changes nothing. */
export function parseServeDeviceArgs(argv: string[]): ServeDeviceArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      device: { type: 'string' }, listen: { type: 'string' }, 'export-name': { type: 'string', default: 'member' }, 'log-level': { type: 'string' },
      'psk-file': { type: 'string' },
    },
    strict: true,
  });
  if (!values.device || !values.listen) throw new EngineError('ENG_INVALID_ARGUMENT', '--device and --listen are required');
  const listen = parseHostPort(values.listen, '--listen');
  if (!values['psk-file'] && !isLoopbackHost(listen.host)) {
    throw new EngineError('ENG_INVALID_ARGUMENT', `--listen ${listen.host}:${listen.port} is not a loopback address: serving a device there needs --psk-file`);
  }
  return { device: values.device, listen, exportName: values['export-name']!, pskFile: values['psk-file'] ?? null };
}
