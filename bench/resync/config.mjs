/** resync-bench's command line, what it is compared against (the manual's table 7-1, the targets) and its tools. */
import os from 'node:os';

import { readFlags } from '../lib/flags.mjs';
import { UsageError } from '../lib/run.mjs';

/** The manual's table 7-1: minicopy time as % of the full-copy time, by % of bitmap bits set. */
export const MANUAL = [
  { pct: 1, ratio: 6.5 },
  { pct: 10, ratio: 33 },
  { pct: 50, ratio: 72 },
];

export const TARGETS = {
  minicopy: { label: 'minicopy at 1 % of chunks <= 2 % of full-copy time', max: 2 },
  minimerge: { label: 'minimerge <= 2 % of full-merge time', max: 2 },
  intentLog: { label: 'write-intent log as shipped (no cap) costs <= 10 % of 4k randwrite IOPS', max: 10 },
  intentCap: { label: 'the log\'s cap costs <= 10 % of 4k randwrite IOPS (vs. the log uncapped)', max: 10 },
  capMerge: { label: 'merge after kill -9 under whole-set 4k randwrite <= the cap + the groups a QD16 load has in flight (MiB)' },
  copyRate: { label: 'full copy >= 80 % of this machine\'s copy rate (dd)', min: 80 },
  bareRatio: { max: 1.25 },
};

export const PHASES = ['copy', 'merge', 'intent', 'scale', 'zero'];
/** The phases that run on the 1 GiB set A+B (the others make sets of their own). */
export const RIG_PHASES = ['copy', 'merge', 'intent'];

/** The 4k random-write job, as in nbd-bench.mjs. */
export const RANDWRITE = { rw: 'randwrite', bs: '4k', iodepth: 16 };

/** Versions shown under `tools:` and kept in the JSON. */
export const TOOL_VERSIONS = { fio: ['fio', ['--version']], dd: ['dd', ['--version']] };

export const HELP = `usage: node bench/resync-bench.mjs [options]        (or: npm run bench:resync -- [options])

  --rounds N        rounds of full copy, dd, minicopies and merges; medians   [RESYNC_BENCH_ROUNDS, 3]
  --set-mib N       size of the virtual unit in MiB (members: + 8 MiB header) [RESYNC_BENCH_SET_MIB, 1024]
  --percents LIST   % of chunks written while the member is away              [RESYNC_BENCH_PERCENTS, 1,2,5,10,25,50,100]
  --crash-after S   seconds of 4k randwrite load before kill -9                [RESYNC_BENCH_CRASH_AFTER, 4]
  --hot-pct P       the crash load's working set, % of the set                 [RESYNC_BENCH_HOT_PCT, 1]
  --iops-rounds N   rounds of 4k randwrite with / without the intent log       [RESYNC_BENCH_IOPS_ROUNDS, 5]
  --runtime S       measured seconds per 4k randwrite run                      [RESYNC_BENCH_RUNTIME, 10]
  --ramp S          fio ramp_time per 4k randwrite run                         [RESYNC_BENCH_RAMP, 2]
  --seed N          seed for the choice of chunks written                      [RESYNC_BENCH_SEED, 1]
  --dir DIR         where the temporary member files go                        [RESYNC_BENCH_DIR, os.tmpdir()]
  --phases LIST     subset of copy,merge,intent,scale,zero                     [RESYNC_BENCH_PHASES, all]
  --scale-gib LIST  scale phase: sizes of the sparse sets, GiB                 [RESYNC_BENCH_SCALE_GIB, 1,8,64]
  --scale-mib N     scale phase: MiB of scattered whole-chunk writes per size  [RESYNC_BENCH_SCALE_MIB, 16]
  --json PATH       also write all results as JSON to PATH                     [RESYNC_BENCH_JSON]
  --docs DIR        also write DIR/resync-bench.md and DIR/resync-bench.svg    [RESYNC_BENCH_DOCS]
  --render PATH     measure nothing: print the report (and --docs) from a JSON file written by --json
  -h, --help        this text`;

/** The configuration from the command line and the RESYNC_BENCH_* variables; null for --help. */
export function parseConfig(argv) {
  const flags = readFlags(argv, [
    'rounds', 'set-mib', 'percents', 'crash-after', 'hot-pct', 'iops-rounds', 'runtime',
    'ramp', 'seed', 'dir', 'phases', 'json', 'docs', 'render', 'scale-gib', 'scale-mib',
  ], 'RESYNC_BENCH_');
  if (!flags) return null;
  const { values, raw, num, list } = flags;
  const percents = (raw('percents') ?? '1,2,5,10,25,50,100').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (percents.length === 0 || percents.some((p) => !Number.isFinite(p) || p <= 0 || p > 100)) {
    throw new UsageError('--percents must be a list of numbers in (0, 100]');
  }
  const scaleGiB = (raw('scale-gib') ?? '1,8,64').split(',').map((x) => x.trim()).filter(Boolean).map(Number);
  if (scaleGiB.length === 0 || scaleGiB.some((g) => !Number.isInteger(g) || g < 1 || g > 512)) {
    throw new UsageError('--scale-gib must be a list of whole numbers of GiB in [1, 512]');
  }
  const cfg = {
    rounds: Math.floor(num('rounds', 3, 1)),
    setMiB: Math.floor(num('set-mib', 1024, 64)),
    percents: [...new Set(percents)].sort((a, b) => a - b),
    crashAfter: num('crash-after', 4, 1),
    hotPct: num('hot-pct', 1, 0.01, 100),
    iopsRounds: Math.floor(num('iops-rounds', 5, 1)),
    runtime: num('runtime', 10, 1),
    ramp: num('ramp', 2, 0),
    seed: Math.floor(num('seed', 1, 0)),
    dir: raw('dir') ?? os.tmpdir(),
    phases: list('phases', PHASES),
    scaleGiB: [...new Set(scaleGiB)].sort((a, b) => a - b),
    scaleMiB: Math.floor(num('scale-mib', 16, 1, 1024)),
    json: raw('json') ?? null,
    docs: raw('docs') ?? null,
    render: values.render ?? null, // no variable: a render is asked for on the command line
  };
  if (cfg.phases.length === 0) throw new UsageError('no phases selected');
  return cfg;
}
