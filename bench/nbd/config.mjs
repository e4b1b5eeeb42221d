/** nbd-bench's vocabulary (jobs, servers, targets), its command line and the tools it needs. */
import os from 'node:os';

import { readFlags } from '../lib/flags.mjs';
import { UsageError } from '../lib/run.mjs';

export const JOBS = {
  randwrite: { title: '4k randwrite QD16', rw: 'randwrite', bs: '4k', iodepth: 16, metric: 'iops' },
  randread: { title: '4k randread QD16', rw: 'randread', bs: '4k', iodepth: 16, metric: 'iops' },
  seqwrite: { title: '1M sequential write QD4', rw: 'write', bs: '1M', iodepth: 4, metric: 'mibps' },
};

export const SERVERS = {
  engine: { label: 'engine (2-member mirror)', short: 'engine' },
  qemu: { label: 'qemu-nbd quorum (2 children)', short: 'qemu-quorum' },
  nbdkit: { label: 'nbdkit file (1 file)', short: 'nbdkit' },
};

/** Engine vs. the others: minimum ratio engine/other on the job's primary metric (issue 16's data-path targets). */
export const TARGETS = {
  randwrite: { qemu: 2, nbdkit: 0.8 },
  randread: { qemu: 2, nbdkit: 0.8 },
  seqwrite: { qemu: 1, nbdkit: 0.5 },
};

/** The engine's peak RSS under any of the loads, at most (MiB): a node runs one engine per attached volume. */
export const MEMORY_TARGET_MIB = 128;

export const HELP = `usage: node bench/nbd-bench.mjs [options]        (or: npm run bench -- [options])

  --rounds N      rounds per (server, job); medians are reported     [BENCH_ROUNDS, 3]
  --runtime S     measured seconds per fio run                       [BENCH_RUNTIME, 8]
  --ramp S        fio ramp_time per run (run but not measured)       [BENCH_RAMP, 1]
  --warmup S      4k random I/O per server before round 1, discarded [BENCH_WARMUP, 3]
  --file-mib N    size of each member file in MiB                    [BENCH_FILE_MIB, 1024]
  --dir DIR       where the temporary member files go                [BENCH_DIR, os.tmpdir()]
  --jobs LIST     subset of randwrite,randread,seqwrite              [BENCH_JOBS, all]
  --servers LIST  subset of engine,qemu,nbdkit                       [BENCH_SERVERS, all]
                  (the engine is always started: it lays out the files and does the prefill)
  --json PATH     also write all results as JSON to PATH             [BENCH_JSON]
  BENCH_ENGINE_NODE_DEFAULTS=1: the engine without its memory flag (node's own heap sizes)
  -h, --help      this text`;

/** The configuration from the command line and the BENCH_* variables; null for --help. */
export function parseConfig(argv) {
  const flags = readFlags(argv, ['rounds', 'runtime', 'ramp', 'warmup', 'file-mib', 'dir', 'jobs', 'servers', 'json'], 'BENCH_');
  if (!flags) return null;
  const { raw, num, list } = flags;
  const cfg = {
    rounds: Math.floor(num('rounds', 3, 1)),
    runtime: num('runtime', 8, 1),
    ramp: num('ramp', 1, 0),
    warmup: num('warmup', 3, 0),
    fileMiB: Math.floor(num('file-mib', 1024, 64)),
    dir: raw('dir') ?? os.tmpdir(),
    jobs: list('jobs', Object.keys(JOBS)),
    servers: list('servers', Object.keys(SERVERS)),
    json: raw('json') ?? null,
  };
  if (cfg.jobs.length === 0) throw new UsageError('no jobs selected');
  if (cfg.servers.length === 0) throw new UsageError('no servers selected');
  return cfg;
}

/** Versions shown under `tools:` and kept in the JSON. */
export const TOOL_VERSIONS = {
  fio: ['fio', ['--version']],
  qemuNbd: ['qemu-nbd', ['--version']],
  nbdkit: ['nbdkit', ['--version']],
  libnbd: ['nbdinfo', ['--version'], (s) => s.split('\n').find((l) => l.startsWith('libnbd')) ?? s.split('\n')[0]],
};

/** The commands this configuration runs. */
export function neededTools(cfg) {
  const need = ['fio', 'nbdinfo', 'fallocate'];
  if (cfg.servers.includes('qemu')) need.push('qemu-nbd');
  if (cfg.servers.includes('nbdkit')) need.push('nbdkit');
  return need;
}
