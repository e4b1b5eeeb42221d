import { pino } from 'pino';
import { errorMessage, isEngineError } from '../core/errors.js';
import { systemClock } from '../ports/clock.js';
import { openBackend } from '../runtime/open-backend.js';
import { runEngine } from '../runtime/daemon.js';
import { parseServeArgs, USAGE } from './args.js';

export async function main(argv: string[]): Promise<number | void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return cmd === undefined ? 2 : 0;
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
    return 1;
  }
}
