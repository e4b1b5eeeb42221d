/**
 * The benches' command lines: string flags, each with an environment variable `PREFIX_FLAG_NAME`
 * (flags win), checked before anything runs.
 */
import { parseArgs } from 'node:util';

import { UsageError } from './run.mjs';

/**
 * Parses `argv` for the string flags `names` (strict: unknown flags throw) and returns readers of
 * their values, or null for -h/--help. Every flag `--some-flag` also reads `${envPrefix}SOME_FLAG`.
 */
export function readFlags(argv, names, envPrefix) {
  const options = Object.fromEntries(names.map((n) => [n, { type: 'string' }]));
  options.help = { type: 'boolean', short: 'h' };
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  if (values.help) return null;
  const envName = (flag) => `${envPrefix}${flag.toUpperCase().replaceAll('-', '_')}`;
  /** The flag's value, else its environment variable's, else undefined. */
  const raw = (flag) => values[flag] ?? process.env[envName(flag)];
  /** A number in [min, max]; `dflt` when neither the flag nor the variable is set. */
  const num = (flag, dflt, min, max = Infinity) => {
    const r = raw(flag) ?? String(dflt);
    const n = Number(r);
    if (!Number.isFinite(n) || n < min || n > max) {
      const range = max === Infinity ? `>= ${min}` : `in [${min}, ${max}]`;
      throw new UsageError(`--${flag} (${envName(flag)}) must be a number ${range}, got '${r}'`);
    }
    return n;
  };
  /** A comma-separated subset of `known` (all when unset), in the order of `known`, so tables always read the same way. */
  const list = (flag, known) => {
    const r = raw(flag);
    if (!r) return [...known];
    const items = r.split(',').map((s) => s.trim()).filter(Boolean);
    for (const i of items) if (!known.includes(i)) throw new UsageError(`--${flag}: unknown '${i}' (known: ${known.join(', ')})`);
    return known.filter((k) => items.includes(k));
  };
  return { values, raw, num, list };
}
