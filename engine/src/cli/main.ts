import { pino } from 'pino';
import { errorMessage, isEngineError } from '../core/errors.js';
import { systemClock } from '../ports/clock.js';
import { openBackend } from './open-backend.js';
import { runEngine } from './daemon.js';
import { parseServeArgs, USAGE, type ServeArgs } from './args.js';
import { readControlToken } from './security-args.js';
import { serveDevice, SERVE_DEVICE_USAGE } from './serve-device.js';
import { HttpApi } from '../adapters/http/http-server.js';
import { pskServerTls, readPskFile, x509ServerTls, type NbdServerTls, type PskKey } from '../adapters/nbd/tls.js';
import { EngineError, type EngineErrorCode } from '../core/errors.js';
import type { Logger } from 'pino';

async function holdFailure(http: { host: string; port: number }, token: string | null, code: string, message: string, log: Logger): Promise<void> {
  const api = new HttpApi(log, { token });
  const fail = async () => {
    throw new EngineError(code as EngineErrorCode, message);
  };
  api.route('GET', '/v1/status', fail);
  // /healthz answers anyone (probes carry no token): with a token, it says that, not why.
  api.route('GET', '/healthz', token ? async () => {
    throw new EngineError(code as EngineErrorCode, 'the engine did not start; GET /v1/status says why');
  } : fail);
  const a = await api.listen(http.host, http.port);
  log.info({ event: 'HoldingFailure', http: `${a.address}:${a.port}`, code }, 'start failed; answering /v1/status with the reason');
  const bye = () => void api.close().then(() => process.exit(1));
  process.once('SIGTERM', bye);
  process.once('SIGINT', bye);
}

export async function main(argv: string[]): Promise<number | void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === 'serve-device') {
    const log = pino({ level: 'info', base: { component: 'member-server' } });
    try {
      const stop = await serveDevice(rest, log);
      const onSignal = () => void stop().then(() => process.exit(0), () => process.exit(1));
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      return;
    } catch (e) {
      process.stderr.write(`shadow-engine: ${errorMessage(e)}\n${SERVE_DEVICE_USAGE}\n`);
      return 1;
    }
  }
  if (cmd !== 'serve') {
    process.stderr.write(`shadow-engine: unknown command '${cmd}'\n${USAGE}\n`);
    return 2;
  }
  let args;
  try {
    args = parseServeArgs(rest);
  } catch (e) {
    process.stderr.write(`shadow-engine: ${errorMessage(e)}\n${USAGE}\n`);
    return 2;
  }
  const log = pino({ level: args.logLevel, base: { component: 'engine' } });
  let token: string | null = null;
  try {
    // Before anything else: without its token the engine may not even hold a failure listener.
    token = args.controlTokenFile ? readControlToken(args.controlTokenFile) : null;
  } catch (e) {
    log.fatal({ event: 'StartFailed', code: 'ENG_INVALID_ARGUMENT', err: errorMessage(e) }, errorMessage(e));
    process.stderr.write(`shadow-engine: ${errorMessage(e)} (ENG_INVALID_ARGUMENT)\n`);
    return 1;
  }
  try {
    const { exportTls, memberPsk } = readServeKeys(args);
    const open = (location: string) => openBackend(location, memberPsk ? { psk: memberPsk } : {});
    const engine = await runEngine({ ...args, exportTls, controlToken: token, log, clock: systemClock, open });
    const stop = (sig: string) => {
      log.info({ event: 'SignalReceived', signal: sig }, 'stopping');
      engine.stop().then(
        () => process.exit(0),
        (e: unknown) => {
          log.error({ event: 'StopFailed', err: errorMessage(e) }, 'stop failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  } catch (e) {
    const code = isEngineError(e) ? e.code : 'ENG_INTERNAL';
    log.fatal({ event: 'StartFailed', code, err: errorMessage(e) }, errorMessage(e));
    process.stderr.write(`shadow-engine: ${errorMessage(e)} (${code})\n`);
    if (args.holdOnFailure && args.http) {
      // Keep answering, so an operator can read why the set did not start instead of a crash loop.
      await holdFailure(args.http, token, code, errorMessage(e), log);
      return;
    }
    return 1;
  }
}

/** Keys and certificates, read before any member is touched: a bad file must change nothing. */
function readServeKeys(args: ServeArgs): { exportTls: NbdServerTls | null; memberPsk: PskKey | null } {
  let exportTls: NbdServerTls | null = null;
  if (args.exportPskFile) exportTls = pskServerTls(readPskFile(args.exportPskFile, '--export-psk-file'), !args.tlsOptional);
  else if (args.tls) exportTls = x509ServerTls({ cert: args.tls.cert, key: args.tls.key, ...(args.tls.ca ? { ca: args.tls.ca } : {}) }, args.tls.required);
  // The engine is one client: it presents the first identity of its file.
  const memberPsk = args.memberPskFile ? readPskFile(args.memberPskFile, '--member-psk-file')[0]! : null;
  return { exportTls, memberPsk };
}
