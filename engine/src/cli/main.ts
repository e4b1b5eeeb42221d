import { pino } from 'pino';
import { errorMessage, isEngineError } from '../core/errors.js';
import { systemClock } from '../ports/clock.js';
import { openBackend } from '../runtime/open-backend.js';
import { runEngine } from '../runtime/daemon.js';
import { parseServeArgs, USAGE } from './args.js';
import { serveDevice, SERVE_DEVICE_USAGE } from './serve-device.js';
import { HttpApi } from '../adapters/http/http-server.js';
import { EngineError, type EngineErrorCode } from '../core/errors.js';
import type { Logger } from 'pino';

async function holdFailure(http: { host: string; port: number }, code: string, message: string, log: Logger): Promise<void> {
  const api = new HttpApi(log);
  const fail = async () => {
    throw new EngineError(code as EngineErrorCode, message);
  };
  api.route('GET', '/v1/status', fail);
  api.route('GET', '/healthz', fail);
  await api.listen(http.host, http.port);
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
  try {
    const engine = await runEngine({ ...args, log, clock: systemClock, open: openBackend });
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
      await holdFailure(args.http, code, errorMessage(e), log);
      return;
    }
    return 1;
  }
}
