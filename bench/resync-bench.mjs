#!/usr/bin/env node
/**
 * Resync benchmark: how long the engine takes to bring members back in step, on a 1 GiB set.
 *
 *   1. Full copy vs. minicopy — our version of table 7-1 of the OpenVMS shadowing manual: a full copy onto
 *      a new blank member, then minicopies after 1, 2, 5, 10, 25, 50 and 100 % of the chunks were written
 *      while a member was away (one 4 KiB block in each of that many distinct, randomly chosen 64 KiB chunks).
 *   2. The full copy against this machine's own copy rate for the same bytes (dd, with a final fdatasync),
 *      and each minicopy against a bare copy of the same chunks (no engine: pread/pwrite, one fdatasync).
 *   3. Minimerge after kill -9 under a 4k random-write load against a full merge of the same set.
 *   4. 4k randwrite IOPS through the engine with and without the write-intent log (--no-intent-log).
 *
 * Targets: minicopy at 1 % <= 2 % of the full-copy time; minimerge <= 2 % of the full merge; the intent
 * log costs <= 10 % of 4k randwrite IOPS; the full copy >= 80 % of this machine's copy rate.
 * bench/README.md ("Resync benchmark") explains every choice; docs/resync-bench.md holds a run.
 *
 * Usage: node bench/resync-bench.mjs [--rounds N] [--set-mib N] [--percents LIST] [--crash-after S]
 *          [--hot-pct P] [--iops-rounds N] [--runtime S] [--ramp S] [--seed N] [--dir DIR]
 *          [--phases copy,merge,intent] [--json PATH] [--docs DIR]
 * Every flag also has an environment variable (RESYNC_BENCH_ROUNDS, ...); flags win.
 * Exit status: 0 when the benchmark ran (whether or not the targets were met), 1 on errors (including a
 * member that does not match its source after a copy or merge), 2 on usage errors, 130/143 when interrupted.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import {
  ENGINE_BIN, KiB, MiB, ROOT, UsageError, checkTools, cpuSeconds, exec, fallocateFile, fioArgs, fmtNum,
  importEngine, installSignalCleanup, killChild, loadavg, machineInfo, makeTempDir, median, parseFlags,
  printMachine, readClockTicks, runBench, runFio, settle, sleep, spreadPct, table, track, warnIfBusy,
} from './lib.mjs';

// ---------------------------------------------------------------------------------------------
// Configuration

/** The manual's table 7-1: minicopy time as % of the full-copy time, by % of bitmap bits set. */
const MANUAL = [
  { pct: 1, ratio: 6.5 },
  { pct: 10, ratio: 33 },
  { pct: 50, ratio: 72 },
];

const TARGETS = {
  minicopy: { label: 'minicopy at 1 % of chunks <= 2 % of full-copy time', max: 2 },
  minimerge: { label: 'minimerge <= 2 % of full-merge time', max: 2 },
  intentLog: { label: 'write-intent log costs <= 10 % of 4k randwrite IOPS', max: 10 },
  copyRate: { label: 'full copy >= 80 % of this machine\'s copy rate (dd)', min: 80 },
};

const PHASES = ['copy', 'merge', 'intent'];

/** The 4k random-write job, as in nbd-bench.mjs. */
const RANDWRITE = { rw: 'randwrite', bs: '4k', iodepth: 16 };

const HELP = `usage: node bench/resync-bench.mjs [options]        (or: npm run bench:resync -- [options])

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
  --phases LIST     subset of copy,merge,intent                                [RESYNC_BENCH_PHASES, all]
  --json PATH       also write all results as JSON to PATH                     [RESYNC_BENCH_JSON]
  --docs DIR        also write DIR/resync-bench.md and DIR/resync-bench.svg    [RESYNC_BENCH_DOCS]
  --render PATH     measure nothing: print the report (and --docs) from a JSON file written by --json
  -h, --help        this text`;

/** argv without --name VALUE / --name=VALUE. */
function dropFlag(argv, name) {
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}`) i++;
    else if (!argv[i].startsWith(`--${name}=`)) out.push(argv[i]);
  }
  return out;
}

function parseConfig(argv) {
  const values = parseFlags(argv, [
    'rounds', 'set-mib', 'percents', 'crash-after', 'hot-pct', 'iops-rounds', 'runtime',
    'ramp', 'seed', 'dir', 'phases', 'json', 'docs', 'render',
  ]);
  if (!values) return null;
  const env = process.env;
  const envName = (flag) => `RESYNC_BENCH_${flag.toUpperCase().replaceAll('-', '_')}`;
  const raw = (flag) => values[flag] ?? env[envName(flag)];
  const num = (flag, dflt, min, max = Infinity) => {
    const r = raw(flag) ?? String(dflt);
    const n = Number(r);
    if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${flag} (${envName(flag)}) must be a number in [${min}, ${max}], got '${r}'`);
    return n;
  };
  const percents = (raw('percents') ?? '1,2,5,10,25,50,100').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (percents.length === 0 || percents.some((p) => !Number.isFinite(p) || p <= 0 || p > 100)) {
    throw new UsageError('--percents must be a list of numbers in (0, 100]');
  }
  const phases = raw('phases') ? raw('phases').split(',').map((s) => s.trim()).filter(Boolean) : PHASES;
  for (const p of phases) if (!PHASES.includes(p)) throw new UsageError(`--phases: unknown '${p}' (known: ${PHASES.join(', ')})`);
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
    phases: PHASES.filter((p) => phases.includes(p)),
    json: raw('json') ?? null,
    docs: raw('docs') ?? null,
    render: values.render ?? null,
  };
  if (cfg.phases.length === 0) throw new UsageError('no phases selected');
  return cfg;
}

installSignalCleanup('stopping the engine and fio, removing temporary files');

const now = () => performance.now();

// ---------------------------------------------------------------------------------------------
// The engine as a child process: JSON log lines collected (with their arrival time), HTTP API.

class Engine {
  constructor(files, socket, { intentLog = true } = {}) {
    this.files = files;
    this.socket = socket;
    this.intentLog = intentLog;
    this.uri = `nbd+unix:///?socket=${socket}`;
    this.lines = [];
    this.output = '';
    this.exit = null;
    this.waiters = new Set();
    this.http = null;
    this.child = null;
  }

  async start() {
    // The full-copy phase adds a member by API: the engine may open only members under this prefix.
    const args = [ENGINE_BIN, 'serve', ...this.files.flatMap((f) => ['--member', f]), '--socket', this.socket,
      '--http', '127.0.0.1:0', '--allow-location', `${path.dirname(this.socket)}/`, '--log-level', 'info',
      ...(this.intentLog ? [] : ['--no-intent-log'])];
    const child = track(spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
    this.child = child;
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (s) => {
      const at = now();
      this.output = (this.output + s).slice(-16 * 1024);
      partial += s;
      const parts = partial.split('\n');
      partial = parts.pop();
      for (const l of parts) {
        if (!l.trim()) continue;
        try { this.lines.push({ ...JSON.parse(l), at }); } catch { this.lines.push({ msg: l, at }); }
      }
      this.wake();
    });
    child.stderr.setEncoding('utf8').on('data', (s) => { this.output = (this.output + s).slice(-16 * 1024); });
    child.once('close', (code, signal) => { this.exit = { code, signal }; this.wake(); });
    child.once('error', (e) => { this.exit = { code: null, signal: null, error: e.message }; this.wake(); });
    const ready = await this.waitFor((l) => l.event === 'EngineReady' || l.event === 'StartFailed', { what: 'EngineReady', timeoutMs: 120_000 });
    if (ready.event !== 'EngineReady') throw new Error(`engine did not start: ${ready.msg}\n${this.tail()}`);
    this.http = ready.http;
    return this;
  }

  get pid() { return this.child?.pid; }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  /** Index of the next log line: wait for events logged after this point with waitFor({ from }). */
  mark() { return this.lines.length; }

  waitFor(pred, { from = 0, timeoutMs = 900_000, what = 'a log line' } = {}) {
    return new Promise((resolve, reject) => {
      let i = from;
      const finish = (f) => { clearTimeout(timer); this.waiters.delete(check); f(); };
      const check = () => {
        for (; i < this.lines.length; i++) {
          const l = this.lines[i];
          if (pred(l)) return finish(() => resolve(l));
        }
        if (this.exit) finish(() => reject(new Error(`engine exited (${JSON.stringify(this.exit)}) while waiting for ${what}\n${this.tail()}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`no ${what} within ${timeoutMs / 1000} s\n${this.tail()}`))), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for `done` (for `target` if given); a `failed` event instead is an error. */
  async waitJob(done, failed, { from, target = undefined } = {}) {
    const l = await this.waitFor((x) => (x.event === done || x.event === failed) && (target === undefined || x.target === target),
      { from, what: done });
    if (l.event !== done) throw new Error(`engine: ${failed} (${l.reason ?? l.msg})\n${this.tail()}`);
    return l;
  }

  tail() { return this.output.trim().split('\n').slice(-12).join('\n'); }

  async api(method, route, body) {
    const res = await fetch(`http://${this.http}${route}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let doc;
    try { doc = JSON.parse(text); } catch { doc = text; }
    if (!res.ok) throw new Error(`${method} ${route} ${body ? JSON.stringify(body) : ''} -> ${res.status} ${typeof doc === 'object' ? `${doc.code}: ${doc.message}` : doc}`);
    return doc;
  }

  status() { return this.api('GET', '/v1/status'); }

  memberId(file) {
    return this.status().then((s) => {
      const m = s.members.find((x) => x.path === file);
      if (!m) throw new Error(`no member at ${file}`);
      return m.id;
    });
  }

  async waitState(id, state, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      const m = s.members.find((x) => x.id === id);
      if (m?.state === state) return s;
      if (Date.now() > deadline) throw new Error(`member ${id} is ${m?.state ?? 'absent'}, not ${state}, after ${timeoutMs / 1000} s`);
      await sleep(20);
    }
  }

  /** Until the lazily cleared write-intent log is empty (nothing written for a second or two). */
  async waitIntentIdle(timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status();
      if (s.intentLog.dirtyChunks === 0 && s.recovery.mode === null) return 0;
      if (Date.now() > deadline) return s.intentLog.dirtyChunks;
      await sleep(100);
    }
  }

  assertAlive() {
    if (this.exit) throw new Error(`engine exited (${JSON.stringify(this.exit)}); last output:\n${this.tail()}`);
  }

  async kill9() {
    await killChild(this.child, 5000, 'SIGKILL');
  }

  async stop() {
    await killChild(this.child, 30_000, 'SIGTERM');
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

const fmtS = (s) => (s === null || s === undefined ? '-' : s < 1 ? s.toFixed(3) : s.toFixed(2));
const fmtPct = (p) => (p === null || p === undefined ? '-' : `${p < 10 ? p.toFixed(2) : p.toFixed(1)} %`);

function mdTable(header, rows, right) {
  const esc = (c) => String(c).replaceAll('|', '\\|');
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `| ${header.map((_, i) => (right[i] ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

/** Versions shown under `tools:` and kept in the JSON. */
const TOOL_VERSIONS = { fio: ['fio', ['--version']], dd: ['dd', ['--version']] };

/** fallocateFile, replacing whatever is at `file`. */
async function fallocateAfresh(file, bytes) {
  await rm(file, { force: true });
  await fallocateFile(file, bytes);
}

/** k consecutive chunk numbers from a random start. */
function pickRegion(n, k, rand) {
  const first = Math.floor(rand() * (n - k + 1));
  return Array.from({ length: k }, (_, i) => first + i);
}

/** k distinct chunk numbers out of n, uniformly at random (partial Fisher-Yates), ascending. */
function pickChunks(n, k, rand) {
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (n - i));
    const t = idx[i]; idx[i] = idx[j]; idx[j] = t;
  }
  return Array.from(idx.subarray(0, k)).sort((a, b) => a - b);
}

/**
 * The least this machine needs to copy `chunks` (ascending chunk numbers) from one file's data area to
 * another's and have them on disk: synchronous pread/pwrite of each chunk through one reused buffer,
 * then one fdatasync — what a minicopy does minus everything the engine adds (API, metadata, locks,
 * threads). Returns { seconds, syncSeconds }, the latter the final fdatasync's share.
 */
function bareCopy(src, dst, chunks, chunkSize, header) {
  const buf = Buffer.allocUnsafe(chunkSize);
  const t0 = now();
  let t1 = t0;
  const s = fs.openSync(src, 'r');
  const d = fs.openSync(dst, 'r+');
  try {
    for (const c of chunks) {
      const off = header + c * chunkSize;
      let n = 0;
      while (n < chunkSize) {
        const got = fs.readSync(s, buf, n, chunkSize - n, off + n);
        if (got === 0) throw new Error(`bare copy: ${src} ends before chunk ${c}`);
        n += got;
      }
      for (let w = 0; w < chunkSize;) w += fs.writeSync(d, buf, w, chunkSize - w, off + w);
    }
    t1 = now();
    fs.fdatasyncSync(d);
  } finally {
    fs.closeSync(s);
    fs.closeSync(d);
  }
  const t2 = now();
  return { seconds: (t2 - t0) / 1000, syncSeconds: (t2 - t1) / 1000 };
}

/** Data area of two member files identical? (cmp skips the 8 MiB headers, which differ by design.) */
async function sameData(a, b, header, bytes) {
  const r = await exec('cmp', ['-n', String(bytes), '-i', `${header}:${header}`, a, b], { timeoutMs: 300_000 });
  if (r.ok) return { same: true };
  if (r.code === 1) return { same: false, detail: r.stdout.trim() };
  throw new Error(`cmp ${a} ${b} failed: ${r.stderr.trim()}`);
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(cfg) {
  if (cfg.render) {
    const saved = JSON.parse(fs.readFileSync(path.resolve(cfg.render), 'utf8'));
    saved.summary = summarize(saved, saved.config);
    console.log(report(saved, saved.config));
    await writeDocs(saved, saved.config, cfg.docs);
    return 0;
  }
  const started = Date.now();
  await checkTools(['fio', 'fallocate', 'dd', 'cmp'], 'fio coreutils diffutils util-linux', 'bench:resync');
  await readClockTicks();
  const { HEADER_BYTES } = await importEngine('core/geometry.js');
  const { NbdClientBackend } = await importEngine('adapters/backend-nbd/nbd-client.js');
  // The tests' seeded PRNG (mulberry32), so a seed names the chunks written.
  const { prng } = await import('@shadowset/testkit/prng');

  const machine = await machineInfo(TOOL_VERSIONS);
  const setBytes = cfg.setMiB * MiB;
  const memberBytes = setBytes + HEADER_BYTES;
  const has = (p) => cfg.phases.includes(p);
  console.log('resync-bench: full copy vs. minicopy, minimerge vs. full merge, cost of the write-intent log');
  printMachine(machine, `${machine.fio}, ${machine.dd}`);
  console.log(`plan:    ${cfg.setMiB} MiB set (members ${cfg.setMiB + HEADER_BYTES / MiB} MiB, fallocated); phases ${cfg.phases.join(', ')}; ` +
    `${cfg.rounds} rounds of copies/merges, ${cfg.iopsRounds} rounds of 4k randwrite with/without the intent log`);
  warnIfBusy(machine);

  const tmpDir = await makeTempDir(cfg.dir, 'resync-bench-');
  const A = path.join(tmpDir, 'member-a.img');
  const B = path.join(tmpDir, 'member-b.img');
  const C = path.join(tmpDir, 'copy-target.img');
  const S = path.join(tmpDir, 'dd-target.img');
  const sock = path.join(tmpDir, 'engine.sock');
  for (const f of [A, B]) await fallocateAfresh(f, memberBytes);

  // A 2-member set on the blank files (the engine lays out its metadata), prefilled with fio's
  // non-zero data through the engine, so both members hold real data everywhere.
  let engine = await new Engine([A, B], sock).start();
  const st0 = await engine.status();
  if (st0.size !== setBytes) throw new Error(`the engine exports ${st0.size} bytes, expected ${setBytes}`);
  const chunkSize = st0.chunkSize;
  const chunks = Math.ceil(setBytes / chunkSize);
  console.log(`set:     ${fmtNum(setBytes / MiB)} MiB, ${fmtNum(chunks)} chunks of ${chunkSize / KiB} KiB, members A and B`);
  process.stdout.write('prefill: sequential 1M write of the whole set through the engine... ');
  let t0 = now();
  await runFio(fioArgs(engine.uri, { rw: 'write', bs: '1M', iodepth: 4 }, [`--size=${setBytes}`]), 600);
  await settle([A, B]);
  console.log(`${((now() - t0) / 1000).toFixed(1)} s`);
  const idB = await engine.memberId(B);

  const result = {
    when: new Date().toISOString(),
    args: process.argv.slice(2),
    machine,
    config: { ...cfg, setBytes, memberBytes, headerBytes: HEADER_BYTES, chunkSize, chunks },
    fullCopy: [], dd: [], minicopy: [], minimerge: [], fullMerge: [], uniformMinimerge: [], intent: [],
    verify: [],
  };
  const verify = async (what, a, b) => {
    const v = await sameData(a, b, HEADER_BYTES, setBytes);
    result.verify.push({ what, ...v });
    if (!v.same) throw new Error(`${what}: the data areas differ (${v.detail}) — the engine left members inconsistent`);
  };

  // ------------------------------------------------------------------ copies
  /**
   * The copy targets (the engine's new member C, dd's output S) are made the same way before every
   * timed copy: fallocated once, then zeroed in full with an fdatasync, untimed. Zeroing makes them blank
   * for the engine and puts both on blocks the storage has already written. Without it the result
   * depends on history: on the development VM (ext4 mounted with discard, on a virtual disk) a 1 GiB
   * write into a fresh fallocated file took ~3 s, but ~0.4 s when it reused the blocks of a file deleted
   * just before, so whichever copy ran second in a round was several times faster (dd alone shows it).
   */
  const blank = async (file) => {
    if (!fs.existsSync(file)) await fallocateAfresh(file, memberBytes);
    const z = await exec('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${memberBytes}`, 'iflag=count_bytes', 'conv=notrunc,fdatasync'],
      { timeoutMs: 600_000 });
    if (!z.ok) throw new Error(`zeroing ${file} failed: ${z.stderr.trim()}`);
  };
  if (has('copy')) {
    const rand = prng(cfg.seed);
    for (let round = 1; round <= cfg.rounds; round++) {
      // Full copy and dd alternate which goes first.
      const order = round % 2 ? ['engine', 'dd'] : ['dd', 'engine'];
      for (const which of order) {
        if (which === 'engine') {
          // A blank member (see blank()): add it, time until the copy completed, then make it durable.
          await blank(C);
          await settle([A, B]);
          const from = engine.mark();
          const ta = now();
          const added = await engine.api('POST', '/v1/members/add', { location: C });
          const began = await engine.waitFor((l) => l.event === 'CopyStarted' && l.target === added.id, { from, what: 'CopyStarted' });
          const done = await engine.waitJob('CopyCompleted', 'CopyStopped', { from, target: added.id });
          const tb = now();
          await settle([C]);
          const tc = now();
          await engine.waitState(added.id, 'InSync');
          const r = {
            round, apiSeconds: (tb - ta) / 1000, setupSeconds: (began.at - ta) / 1000, copySeconds: (done.at - began.at) / 1000,
            flushSeconds: (tc - tb) / 1000, seconds: (tc - ta) / 1000, engineSeconds: done.seconds, bytes: done.bytes,
          };
          result.fullCopy.push(r);
          console.log(`  round ${round} full copy     ${fmtS(r.seconds)} s  (add -> CopyStarted ${fmtS(r.setupSeconds)} s, copying ${fmtS(r.copySeconds)} s, ` +
            `fdatasync ${fmtS(r.flushSeconds)} s; engine's own ${fmtS(r.engineSeconds)} s), ${fmtNum(r.bytes / MiB)} MiB`);
          await verify(`full copy round ${round}`, A, C);
          await engine.api('POST', '/v1/members/remove', { member: added.id, minicopy: 'Never' });
        } else {
          // This machine's copy of the same bytes: A's data area into a blank target prepared exactly like
          // the engine's, 1 MiB blocks, with one fdatasync at the end (conv=fdatasync).
          await blank(S);
          await settle([A, B]);
          const ta = now();
          const dd = await exec('dd', [`if=${A}`, `of=${S}`, 'bs=1M', `skip=${HEADER_BYTES}`, `seek=${HEADER_BYTES}`, `count=${setBytes}`,
            'iflag=skip_bytes,count_bytes', 'oflag=seek_bytes', 'conv=notrunc,fdatasync'], { timeoutMs: 600_000 });
          const tb = now();
          if (!dd.ok) throw new Error(`dd failed: ${dd.stderr.trim()}`);
          const own = /copied, ([\d.]+) s/.exec(dd.stderr);
          const r = { round, seconds: (tb - ta) / 1000, ddSeconds: own ? Number(own[1]) : null, bytes: setBytes };
          result.dd.push(r);
          console.log(`  round ${round} dd            ${fmtS(r.seconds)} s  (dd's own ${fmtS(r.ddSeconds)} s)`);
        }
      }

      // Minicopies: B leaves with a write bitmap, p % of the chunks are written (one 4 KiB block at a
      // random 4 KiB offset in each of k distinct random chunks), B returns; time until it is back.
      // Then, for information, the smallest p once more with its k chunks in one contiguous region.
      const minicopies = [...cfg.percents.map((pct) => ({ pct, clustered: false })), { pct: cfg.percents[0], clustered: true }];
      for (const { pct, clustered } of minicopies) {
        const k = Math.max(1, Math.round((chunks * pct) / 100));
        await engine.waitIntentIdle();
        const removed = await engine.api('POST', '/v1/members/remove', { member: idB, minicopy: 'Required' });
        const picked = clustered ? pickRegion(chunks, k, rand) : pickChunks(chunks, k, rand);
        const client = await NbdClientBackend.open(engine.uri);
        try {
          let next = 0;
          const blocksPerChunk = chunkSize / (4 * KiB);
          const worker = async () => {
            while (next < picked.length) {
              const c = picked[next++];
              const off = c * chunkSize + Math.floor(rand() * blocksPerChunk) * 4 * KiB;
              await client.write(randomBytes(4 * KiB), off, false);
            }
          };
          await Promise.all(Array.from({ length: 32 }, worker));
          await client.flush();
        } finally {
          await client.close();
        }
        const bm = (await engine.api('GET', '/v1/bitmaps')).find((b) => b.id === removed.bitmap);
        if (!bm) throw new Error(`write bitmap ${removed.bitmap} for B is gone`);
        await engine.waitIntentIdle();
        await settle([A, B]);
        const from = engine.mark();
        const ta = now();
        await engine.api('POST', '/v1/members/return', { member: idB, minicopy: 'Required' });
        const began = await engine.waitFor((l) => l.event === 'MinicopyStarted' && l.target === idB, { from, what: 'MinicopyStarted' });
        const done = await engine.waitJob('MinicopyCompleted', 'MinicopyStopped', { from, target: idB });
        const tb = now();
        await settle([B]);
        const tc = now();
        await engine.waitState(idB, 'InSync');
        // The same chunks copied bare, A into dd's target (both cached and on disk, like A and B here).
        await settle([A, S]);
        const bare = bareCopy(A, S, picked, chunkSize, HEADER_BYTES);
        const bareSeconds = bare.seconds;
        const r = {
          round, pct, clustered, chunksWritten: k, bitmapPct: bm.percentPopulated, bitmapChunks: Math.round(bm.dirtyBytes / chunkSize),
          apiSeconds: (tb - ta) / 1000, setupSeconds: (began.at - ta) / 1000, copySeconds: (done.at - began.at) / 1000,
          flushSeconds: (tc - tb) / 1000, seconds: (tc - ta) / 1000, engineSeconds: done.seconds, bytes: done.bytes, bareSeconds, bareSyncSeconds: bare.syncSeconds,
        };
        result.minicopy.push(r);
        console.log(`  round ${round} minicopy ${String(pct).padStart(3)} %${clustered ? ' in one region' : ''} ${fmtS(r.seconds)} s  (${fmtNum(k)} chunks written, bitmap ${bm.percentPopulated} %, ` +
          `${fmtNum(r.bytes / MiB, 1)} MiB copied; return -> MinicopyStarted ${fmtS(r.setupSeconds)} s, copying ${fmtS(r.copySeconds)} s; ` +
          `bare copy of the same chunks ${fmtS(bareSeconds)} s, of which fdatasync ${fmtS(bare.syncSeconds)} s)`);
      }
      await verify(`minicopies round ${round}`, A, B);
    }
  }

  // ------------------------------------------------------------------ merges
  if (has('merge')) {
    const hotBytes = Math.max(1, Math.ceil((chunks * cfg.hotPct) / 100)) * chunkSize;
    /** 4k randwrite QD16 over [0, bytes) through the engine; kill -9 after crashAfter s; restart. */
    const crash = async (bytes) => {
      const dirtyBefore = await engine.waitIntentIdle();
      await settle([A, B]);
      const fio = track(spawn('fio', fioArgs(engine.uri, RANDWRITE, ['--time_based', '--runtime=600', '--offset=0', `--size=${bytes}`]),
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
      let fioOut = '';
      fio.stdout.on('data', (d) => { fioOut = (fioOut + d).slice(-8192); });
      fio.stderr.on('data', (d) => { fioOut = (fioOut + d).slice(-8192); });
      const fioExit = new Promise((r) => fio.once('exit', r));
      await sleep(cfg.crashAfter * 1000);
      if (fio.exitCode !== null) throw new Error(`fio ended before the crash: ${fioOut.trim()}`);
      const before = await engine.status();
      await engine.kill9();
      const fioTimer = setTimeout(() => fio.kill('SIGKILL'), 30_000);
      await fioExit;
      clearTimeout(fioTimer);
      const restart = now();
      engine = await new Engine([A, B], sock).start();
      const req = await engine.waitFor((l) => l.event === 'MergeRequired', { what: 'MergeRequired' });
      const s = await engine.waitFor((l) => l.event === 'MergeStarted', { what: 'MergeStarted' });
      const done = await engine.waitJob('MergeCompleted', 'MergeStopped');
      return {
        dirtyBeforeLoad: dirtyBefore, writesBeforeKill: before.nbd.requests.write ?? before.nbd.requests.WRITE ?? null,
        dirtyAtKill: before.intentLog.dirtyChunks, full: req.full, chunks: req.chunks,
        seconds: done.seconds, observedSeconds: (done.at - s.at) / 1000, restartSeconds: (done.at - restart) / 1000, bytes: done.bytes,
      };
    };
    for (let round = 1; round <= cfg.rounds; round++) {
      const hot = { round, ...(await crash(hotBytes)) };
      result.minimerge.push(hot);
      console.log(`  round ${round} minimerge      ${fmtS(hot.seconds)} s  (kill -9 under 4k randwrite on ${fmtNum(hotBytes / MiB, 1)} MiB: ` +
        `${fmtNum(hot.chunks)} chunks${hot.full ? ', FULL merge' : ''}, ${fmtNum(hot.bytes / MiB, 1)} MiB; between the log lines' arrival ` +
        `${fmtS(hot.observedSeconds)} s; restart -> MergeCompleted ${fmtS(hot.restartSeconds)} s)`);
      await verify(`minimerge round ${round}`, A, B);

      await engine.waitIntentIdle();
      await settle([A, B]);
      const from = engine.mark();
      const ta = now();
      await engine.api('POST', '/v1/merge', { full: true });
      const s = await engine.waitFor((l) => l.event === 'MergeStarted', { from, what: 'MergeStarted' });
      const done = await engine.waitJob('MergeCompleted', 'MergeStopped', { from });
      const full = { round, seconds: done.seconds, observedSeconds: (done.at - s.at) / 1000, apiSeconds: (done.at - ta) / 1000, bytes: done.bytes };
      result.fullMerge.push(full);
      console.log(`  round ${round} full merge     ${fmtS(full.seconds)} s  (POST -> MergeCompleted ${fmtS(full.apiSeconds)} s, between the log lines' ` +
        `arrival ${fmtS(full.observedSeconds)} s, ${fmtNum(full.bytes / MiB)} MiB)`);

      const uni = { round, ...(await crash(setBytes)) };
      result.uniformMinimerge.push(uni);
      console.log(`  round ${round} minimerge (whole-set load) ${fmtS(uni.seconds)} s  (${fmtNum(uni.chunks)} chunks${uni.full ? ', FULL merge' : ''}, ` +
        `${fmtNum(uni.bytes / MiB)} MiB; restart -> MergeCompleted ${fmtS(uni.restartSeconds)} s)`);
      await verify(`minimerge after whole-set load round ${round}`, A, B);
    }
  }

  // ------------------------------------------------------------------ intent log
  if (has('intent')) {
    await engine.stop();
    for (let round = 1; round <= cfg.iopsRounds; round++) {
      const order = round % 2 ? [true, false] : [false, true];
      for (const intentLog of order) {
        await settle([A, B]);
        const e = await new Engine([A, B], sock, { intentLog }).start();
        engine = e;
        const s = await e.status();
        if (s.intentLog.enabled !== intentLog) throw new Error(`engine reports intentLog.enabled=${s.intentLog.enabled}, expected ${intentLog}`);
        const cpu0 = cpuSeconds(e.pid);
        const w0 = now();
        const job = await runFio(fioArgs(e.uri, RANDWRITE, ['--time_based', `--runtime=${cfg.runtime}`, `--ramp_time=${cfg.ramp}`, `--size=${setBytes}`]),
          cfg.runtime + cfg.ramp);
        const wall = (now() - w0) / 1000;
        const cpu1 = cpuSeconds(e.pid);
        e.assertAlive();
        const end = await e.status();
        await e.stop();
        const pct = job.write.clat_ns?.percentile ?? {};
        const r = {
          round, intentLog, iops: job.write.iops, clatP99Us: pct['99.000000'] !== undefined ? pct['99.000000'] / 1000 : null,
          serverCpuPct: cpu0 !== null && cpu1 !== null ? (100 * (cpu1 - cpu0)) / wall : null, dirtyChunksAtEnd: end.intentLog.dirtyChunks,
        };
        result.intent.push(r);
        console.log(`  round ${round} 4k randwrite QD16 ${intentLog ? 'with intent log   ' : 'without intent log'} ${fmtNum(r.iops)} IOPS ` +
          `(p99 ${r.clatP99Us === null ? '-' : (r.clatP99Us / 1000).toFixed(2)} ms, engine CPU ${r.serverCpuPct === null ? '-' : r.serverCpuPct.toFixed(0)} %, ` +
          `${fmtNum(r.dirtyChunksAtEnd)} chunks marked at the end)`);
      }
    }
    engine = null;
  }
  if (engine) await engine.stop();

  // ------------------------------------------------------------------ report
  machine.loadavgEnd = loadavg();
  result.durationSeconds = Math.round((Date.now() - started) / 1000);
  const sum = summarize(result, cfg);
  result.summary = sum;
  const text = report(result, cfg);
  console.log('\n' + text);

  if (cfg.json) {
    await writeFile(path.resolve(cfg.json), JSON.stringify(result, null, 2) + '\n');
    console.log(`results written to ${cfg.json}`);
  }
  await writeDocs(result, cfg, cfg.docs);
  return 0;
}

async function writeDocs(result, cfg, docs) {
  if (!docs) return;
  const dir = path.resolve(docs);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'resync-bench.md'), markdown(result, cfg));
  await writeFile(path.join(dir, 'resync-bench.svg'), svgChart(result));
  console.log(`docs written to ${path.join(docs, 'resync-bench.md')} and ${path.join(docs, 'resync-bench.svg')}`);
}

// ---------------------------------------------------------------------------------------------
// Summary, text report, markdown and chart

function summarize(r, cfg) {
  const s = { minicopy: [], targets: [] };
  const copy = median(r.fullCopy.map((x) => x.seconds));
  const dd = median(r.dd.map((x) => x.seconds));
  s.fullCopy = copy === null ? null : {
    seconds: copy, apiSeconds: median(r.fullCopy.map((x) => x.apiSeconds)), engineSeconds: median(r.fullCopy.map((x) => x.engineSeconds)),
    setupSeconds: median(r.fullCopy.map((x) => x.setupSeconds)), copySeconds: median(r.fullCopy.map((x) => x.copySeconds)),
    flushSeconds: median(r.fullCopy.map((x) => x.flushSeconds)), mibps: r.config.setBytes / MiB / copy, perRound: r.fullCopy.map((x) => x.seconds),
  };
  s.dd = dd === null ? null : { seconds: dd, ddSeconds: median(r.dd.map((x) => x.ddSeconds)), mibps: r.config.setBytes / MiB / dd, perRound: r.dd.map((x) => x.seconds) };
  const minicopyRow = (runs) => {
    const pct = runs[0].pct;
    const sec = median(runs.map((x) => x.seconds));
    const row = {
      pct, chunksWritten: runs[0].chunksWritten, bitmapPct: median(runs.map((x) => x.bitmapPct)), mib: median(runs.map((x) => x.bytes)) / MiB,
      seconds: sec, engineSeconds: median(runs.map((x) => x.engineSeconds)), pctOfFull: copy ? (100 * sec) / copy : null,
      setupSeconds: median(runs.map((x) => x.setupSeconds)), copySeconds: median(runs.map((x) => x.copySeconds)),
      manual: MANUAL.find((m) => m.pct === pct)?.ratio ?? null, perRound: runs.map((x) => x.seconds),
      bareSeconds: median(runs.map((x) => x.bareSeconds ?? null).filter((x) => x !== null)),
      bareSyncSeconds: median(runs.map((x) => x.bareSyncSeconds ?? null).filter((x) => x !== null)),
    };
    row.barePctOfFull = copy && row.bareSeconds !== null ? (100 * row.bareSeconds) / copy : null;
    return row;
  };
  for (const pct of cfg.percents) {
    const runs = r.minicopy.filter((x) => x.pct === pct && !x.clustered);
    if (runs.length > 0) s.minicopy.push(minicopyRow(runs));
  }
  const clustered = r.minicopy.filter((x) => x.clustered);
  s.minicopyClustered = clustered.length > 0 ? minicopyRow(clustered) : null;
  const mm = median(r.minimerge.map((x) => x.seconds));
  const fm = median(r.fullMerge.map((x) => x.seconds));
  const um = median(r.uniformMinimerge.map((x) => x.seconds));
  s.minimerge = mm === null ? null : {
    seconds: mm, chunks: median(r.minimerge.map((x) => x.chunks)), pctOfFull: fm ? (100 * mm) / fm : null, perRound: r.minimerge.map((x) => x.seconds),
    observedSeconds: median(r.minimerge.map((x) => x.observedSeconds ?? null).filter((x) => x !== null)),
    restartSeconds: median(r.minimerge.map((x) => x.restartSeconds ?? null).filter((x) => x !== null)),
  };
  s.fullMerge = fm === null ? null : { seconds: fm, apiSeconds: median(r.fullMerge.map((x) => x.apiSeconds)), chunks: r.config.chunks, perRound: r.fullMerge.map((x) => x.seconds) };
  s.uniformMinimerge = um === null ? null : { seconds: um, chunks: median(r.uniformMinimerge.map((x) => x.chunks)), pctOfFull: fm ? (100 * um) / fm : null, perRound: r.uniformMinimerge.map((x) => x.seconds) };
  const withLog = r.intent.filter((x) => x.intentLog).map((x) => x.iops);
  const without = r.intent.filter((x) => !x.intentLog).map((x) => x.iops);
  s.intent = withLog.length && without.length ? {
    withLog: median(withLog), without: median(without), costPct: 100 * (1 - median(withLog) / median(without)),
    withLogPerRound: withLog, withoutPerRound: without,
    withLogP99Us: median(r.intent.filter((x) => x.intentLog).map((x) => x.clatP99Us)),
    withoutP99Us: median(r.intent.filter((x) => !x.intentLog).map((x) => x.clatP99Us)),
  } : null;

  const one = s.minicopy.find((x) => x.pct === 1);
  const t = TARGETS;
  if (one?.pctOfFull != null) s.targets.push({ key: 'minicopy', label: t.minicopy.label, value: one.pctOfFull, unit: '%', cmp: '<=', limit: t.minicopy.max, pass: one.pctOfFull <= t.minicopy.max });
  if (s.minimerge?.pctOfFull != null) s.targets.push({ key: 'minimerge', label: t.minimerge.label, value: s.minimerge.pctOfFull, unit: '%', cmp: '<=', limit: t.minimerge.max, pass: s.minimerge.pctOfFull <= t.minimerge.max });
  if (s.intent) s.targets.push({ key: 'intentLog', label: t.intentLog.label, value: s.intent.costPct, unit: '%', cmp: '<=', limit: t.intentLog.max, pass: s.intent.costPct <= t.intentLog.max });
  if (s.fullCopy && s.dd) {
    const v = (100 * s.dd.seconds) / s.fullCopy.seconds;
    s.targets.push({ key: 'copyRate', label: t.copyRate.label, value: v, unit: '%', cmp: '>=', limit: t.copyRate.min, pass: v >= t.copyRate.min });
  }
  return s;
}

const noisy = (xs) => (spreadPct(xs) > 20 ? '  (noisy)' : '');
const rounds = (xs) => xs.map(fmtS).join(' / ') + noisy(xs);

/** The tables as rows, shared by the text report and the markdown. */
function tables(r, cfg) {
  const s = r.summary;
  const out = [];
  if (s.fullCopy) {
    const rows = [['full copy', fmtNum(r.config.chunks), fmtNum(r.config.setBytes / MiB, 1), fmtS(s.fullCopy.seconds), '100 %', '100 %',
      fmtS(s.fullCopy.setupSeconds), fmtS(s.fullCopy.copySeconds), s.dd ? `${fmtS(s.dd.seconds)} (dd)` : '-', s.dd ? fmtPct((100 * s.dd.seconds) / s.fullCopy.seconds) : '-',
      rounds(s.fullCopy.perRound)]];
    for (const m of s.minicopy) {
      rows.push([`${m.pct} %`, fmtNum(m.chunksWritten), fmtNum(m.mib, 1), fmtS(m.seconds), fmtPct(m.pctOfFull), m.manual === null ? '-' : `${m.manual} %`,
        fmtS(m.setupSeconds), fmtS(m.copySeconds), fmtS(m.bareSeconds), fmtPct(m.barePctOfFull), rounds(m.perRound)]);
    }
    const c = s.minicopyClustered;
    if (c) {
      rows.push([`${c.pct} % in one region (info)`, fmtNum(c.chunksWritten), fmtNum(c.mib, 1), fmtS(c.seconds), fmtPct(c.pctOfFull), '-',
        fmtS(c.setupSeconds), fmtS(c.copySeconds), fmtS(c.bareSeconds), fmtPct(c.barePctOfFull), rounds(c.perRound)]);
    }
    out.push({
      title: `Minicopy vs. full copy (the manual's table 7-1): ${fmtNum(r.config.setBytes / MiB)} MiB set, ${r.config.chunkSize / KiB} KiB chunks, medians of ${cfg.rounds} round${cfg.rounds === 1 ? '' : 's'}`,
      note: 'seconds = API call -> *Completed + fdatasync of the target; setup = API call -> *Started (open, probe, metadata); copying = *Started -> *Completed; ' +
        'bare copy = the same chunks copied with no engine (pread/pwrite, one fdatasync), the floor for this pattern on this machine',
      header: ['chunks written', 'chunks', 'MiB copied', 'seconds', '% of full copy', 'manual 7-1', 'of which setup', 'copying', 'bare copy (s)', 'bare, % of full copy', 'per round (s)'],
      right: [false, true, true, true, true, true, true, true, true, true, false],
      rows,
    });
  }
  if (s.fullCopy && s.dd) {
    out.push({
      title: 'Full copy vs. this machine\'s copy of the same bytes (same blank target, both end with data on disk)',
      header: ['copy', 'seconds', 'MiB/s', 'per round (s)'],
      right: [false, true, true, false],
      rows: [
        [`engine full copy (add -> CopyCompleted ${fmtS(s.fullCopy.apiSeconds)} s + fdatasync ${fmtS(s.fullCopy.flushSeconds)} s)`, fmtS(s.fullCopy.seconds), fmtNum(s.fullCopy.mibps), rounds(s.fullCopy.perRound)],
        ['dd bs=1M conv=fdatasync of the same data area', fmtS(s.dd.seconds), fmtNum(s.dd.mibps), rounds(s.dd.perRound)],
      ],
    });
  }
  if (s.fullMerge) {
    const rows = [];
    if (s.minimerge) rows.push([`minimerge: kill -9 under 4k randwrite on ${fmtNum(cfg.hotPct)} % of the set`, fmtNum(s.minimerge.chunks), fmtS(s.minimerge.seconds), fmtPct(s.minimerge.pctOfFull), rounds(s.minimerge.perRound)]);
    rows.push(['full merge (POST /v1/merge {"full":true})', fmtNum(s.fullMerge.chunks), fmtS(s.fullMerge.seconds), '100 %', rounds(s.fullMerge.perRound)]);
    if (s.uniformMinimerge) rows.push(['minimerge: kill -9 under 4k randwrite on the whole set (info)', fmtNum(s.uniformMinimerge.chunks), fmtS(s.uniformMinimerge.seconds), fmtPct(s.uniformMinimerge.pctOfFull), rounds(s.uniformMinimerge.perRound)]);
    out.push({
      title: `Merge after a crash: MergeStarted -> MergeCompleted, medians of ${cfg.rounds}`,
      header: ['merge', 'chunks', 'seconds', '% of full merge', 'per round (s)'],
      right: [false, true, true, true, false],
      rows,
    });
  }
  if (s.intent) {
    const ir = (xs) => xs.map((x) => fmtNum(x)).join(' / ') + noisy(xs);
    const lat = (us) => (us === null ? '-' : `${(us / 1000).toFixed(2)} ms`);
    out.push({
      title: `Cost of the write-intent log: 4k randwrite QD16 over the whole set, ${cfg.runtime} s (+${cfg.ramp} s ramp), medians of ${cfg.iopsRounds}`,
      header: ['engine', 'IOPS', 'p99 clat', 'per round (IOPS)'],
      right: [false, true, true, false],
      rows: [
        ['with the write-intent log (default)', fmtNum(s.intent.withLog), lat(s.intent.withLogP99Us), ir(s.intent.withLogPerRound)],
        ['--no-intent-log', fmtNum(s.intent.without), lat(s.intent.withoutP99Us), ir(s.intent.withoutPerRound)],
        ['cost of the log', fmtPct(s.intent.costPct), '', ''],
      ],
    });
  }
  return out;
}

function targetLine(t) {
  return `${t.pass ? 'PASS' : 'FAIL'}  ${t.label}: ${t.value.toFixed(t.value < 10 ? 2 : 1)} ${t.unit} (${t.cmp} ${t.limit} ${t.unit})`;
}

function report(r, cfg) {
  const parts = tables(r, cfg).map((t) => `${t.title}\n${table(t.header, t.rows, t.right)}${t.note ? `\n  (${t.note})` : ''}`);
  const ts = r.summary.targets;
  parts.push(`targets met: ${ts.filter((t) => t.pass).length}/${ts.length}\n${ts.map((t) => '  ' + targetLine(t)).join('\n')}`);
  parts.push(`members verified identical (cmp of the data areas): ${r.verify.length} check${r.verify.length === 1 ? '' : 's'}, all passed\n` +
    `load average at start ${r.machine.loadavgStart.join(' ')}, at end ${r.machine.loadavgEnd.join(' ')} (${r.machine.nproc} CPUs); run took ${Math.round(r.durationSeconds / 60)} min`);
  return parts.join('\n\n');
}

function markdown(r, cfg) {
  const m = r.machine;
  const ts = r.summary.targets;
  const lines = [
    '# Resync benchmark: full copy vs. minicopy, minimerge vs. full merge, cost of the write-intent log',
    '',
    // The flags as given, less where results were written (--json PATH): a path of the machine the bench
    // ran on has no place in a report that is committed.
    `Generated by \`npm run bench:resync -- ${dropFlag(r.args ?? ['--docs', 'docs'], 'json').join(' ')}\` (\`bench/resync-bench.mjs\`; the method and the fairness choices are in`,
    '[bench/README.md](../bench/README.md), section "Resync benchmark"). One run, on the machine below; rerun for your own.',
    '',
    `- when: ${r.when}, repo ${m.repo ?? '?'}, run time ${Math.round(r.durationSeconds / 60)} min`,
    `- machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memGiB} GiB RAM, ${m.kernel}; node ${m.node}, ${m.fio}`,
    `- load average ${m.loadavgStart.join(' ')} at start, ${m.loadavgEnd.join(' ')} at end — a shared machine: treat single figures as rough`,
    `- set: ${fmtNum(r.config.setBytes / MiB)} MiB virtual unit, ${fmtNum(r.config.chunks)} chunks of ${r.config.chunkSize / KiB} KiB, two members ` +
      `(fallocated files of ${fmtNum(r.config.memberBytes / MiB)} MiB, prefilled with non-zero data), file page cache warm`,
    '',
    '## Targets',
    '',
    ...ts.map((t) => `- ${targetLine(t).replace(/^(PASS|FAIL)/, '**$1**')}`),
    '',
    '![minicopy time as % of the full-copy time vs. % of chunks written](resync-bench.svg)',
    '',
  ];
  const obs = observations(r);
  if (obs.length) lines.push('## Observations (computed from this run)', '', ...obs.map((o) => `- ${o}`), '');
  for (const t of tables(r, cfg)) lines.push(`## ${t.title}`, '', mdTable(t.header, t.rows, t.right), '', ...(t.note ? [`${t.note}.`, ''] : []));
  lines.push(
    '## How to read it',
    '',
    '- **Minicopy at p %**: member B leaves with `minicopy: "Required"`; then one 4 KiB block (random data, random',
    '  4 KiB-aligned offset) is written into each of p % of the chunks, chosen at random without repetition — a',
    '  scattered pattern, so p % of the bitmap\'s bits are set; B returns and the time runs from `POST',
    '  /v1/members/return` to `MinicopyCompleted`, plus an `fdatasync` of B. The full copy is timed the same way:',
    '  `POST /v1/members/add` of a blank member (a fallocated file zeroed beforehand, untimed) to `CopyCompleted`,',
    '  plus an `fdatasync` of it.',
    '- **The manual\'s column** is table 7-1 of the OpenVMS shadowing manual (1 % → 6.5 %, 10 % → 33 %, 50 % → 72 %',
    '  of the full-copy time); it gives no other points.',
    '- **dd** copies the same 1 GiB data area of member A (in the page cache, as it is for the engine) into a',
    '  target prepared exactly like the engine\'s new member, with 1 MiB blocks and one `fdatasync` at the end;',
    '  the engine\'s full copy also ends with its data on disk (the bench `fdatasync`s the new member and counts',
    '  that time).',
    '- **Minimerge**: 4k randwrite QD16 (fio, nbd engine) on the first ' + `${fmtNum(cfg.hotPct)} % of the set for ${cfg.crashAfter} s, then`,
    '  `kill -9` of the engine, a restart, and `MergeStarted` → `MergeCompleted` of the merge the restart runs.',
    '  **Full merge**: `POST /v1/merge {"full":true}` on the same set, `MergeStarted` → `MergeCompleted`. Both are',
    '  the `seconds` the engine reports with `MergeCompleted` (its monotonic clock, from the moment it logs',
    '  `MergeStarted`): at a few milliseconds, when the bench received the two log lines says more about the pipe',
    '  and the logger than about the merge (both figures are in the per-round output). The restart starts its',
    '  merge once it serves (listeners up, I/O threads running); restart → `MergeCompleted` is given too. The',
    '  whole-set row repeats the crash with the load spread over the entire set: a large share of the chunks was',
    '  written within the last second or two, so the log marks most of them and the minimerge approaches a full',
    '  merge (shown for information; no target).',
    '- **Intent log cost**: fio 4k randwrite QD16 over the whole set, the engine restarted with and without the',
    '  hidden `--no-intent-log` flag for each run, the order alternating from round to round.',
    '- After every full copy, round of minicopies and merge, the members\' data areas were compared with `cmp`;',
    `  all ${r.verify.length} checks found them identical.`,
    '',
  );
  return lines.join('\n');
}

/** Plain statements derived from the figures, for the markdown. */
function observations(r) {
  const s = r.summary;
  const out = [];
  const fc = s.fullCopy;
  const one = s.minicopy.find((m) => m.pct === 1);
  if (fc && one) {
    out.push(`The 1 % minicopy took ${fmtS(one.seconds)} s, of which ${fmtS(one.setupSeconds)} s setup (open, probe, metadata) and ` +
      `${fmtS(one.copySeconds)} s copying; its copying phase alone is ${fmtPct((100 * one.copySeconds) / fc.copySeconds)} of the full copy's ` +
      `(${fmtS(fc.copySeconds)} s).`);
    if (one.bareSeconds !== null) {
      out.push(`Copying the same ${fmtNum(one.chunksWritten)} chunks with no engine at all (pread/pwrite, one fdatasync) took ${fmtS(one.bareSeconds)} s = ` +
        `${fmtPct(one.barePctOfFull)} of the full copy: the floor for this pattern on this machine (scattered 64 KiB writes reach the disk ` +
        `far more slowly per byte than a sequential stream); the minicopy took ${(one.seconds / one.bareSeconds).toFixed(1)}× the bare copy.` +
        (one.bareSyncSeconds !== null && fc.seconds
          ? ` The bare copy's fdatasync alone (writing back the scattered chunks) took ${fmtS(one.bareSyncSeconds)} s = ` +
            `${fmtPct((100 * one.bareSyncSeconds) / fc.seconds)} of the full copy.`
          : ''));
    }
  }
  const cl = s.minicopyClustered;
  if (fc && cl) {
    out.push(`With the same ${fmtNum(cl.chunksWritten)} chunks in one contiguous region (info, no target) the minicopy took ${fmtS(cl.seconds)} s = ` +
      `${fmtPct(cl.pctOfFull)} of the full copy (setup ${fmtS(cl.setupSeconds)} s), the bare copy of them ${fmtS(cl.bareSeconds)} s = ${fmtPct(cl.barePctOfFull)}.`);
  }
  const ten = s.minicopy.find((m) => m.pct === 10) ?? s.minicopy[Math.floor(s.minicopy.length / 2)];
  if (fc && ten && ten.copySeconds && fc.copySeconds) {
    const per = (ten.copySeconds / ten.chunksWritten) / (fc.copySeconds / r.config.chunks);
    out.push(`A scattered chunk costs the minicopy ${per.toFixed(1)}× what a chunk costs the sequential full copy ` +
      `(${ten.pct} % row: ${fmtNum((1e6 * ten.copySeconds) / ten.chunksWritten)} µs vs. ${fmtNum((1e6 * fc.copySeconds) / r.config.chunks)} µs per 64 KiB chunk).`);
  }
  if (fc && s.dd) {
    out.push(`The full copy moved ${fmtNum(fc.mibps)} MiB/s, dd ${fmtNum(s.dd.mibps)} MiB/s; ` +
      `the engine's fdatasync at the end took ${fmtS(fc.flushSeconds)} s of its ${fmtS(fc.seconds)} s.`);
  }
  if (s.minimerge && s.fullMerge) {
    const mm = s.minimerge;
    out.push(`The minimerge merged ${fmtNum(mm.chunks)} chunks in ${fmtS(mm.seconds)} s (engine's clock); the bench received its ` +
      `MergeStarted and MergeCompleted lines ${fmtS(mm.observedSeconds)} s apart, and the whole restart (process start, assembly, ` +
      `I/O threads, the merge) took ${fmtS(mm.restartSeconds)} s from spawn to MergeCompleted.`);
  }
  if (s.intent) {
    out.push(`4k randwrite QD16: ${fmtNum(s.intent.withLog)} IOPS with the write-intent log, ${fmtNum(s.intent.without)} without ` +
      `(p99 ${(s.intent.withLogP99Us / 1000).toFixed(1)} ms vs. ${(s.intent.withoutP99Us / 1000).toFixed(1)} ms).`);
  }
  return out;
}

function svgChart(r) {
  const s = r.summary;
  const W = 800, H = 470;
  const L = 70, R = 250, T = 50, B = 60;
  const pw = W - L - R, ph = H - T - B;
  const ours = s.minicopy.filter((m) => m.pctOfFull !== null);
  const top = Math.max(0, ...ours.map((m) => m.pctOfFull)) * 1.06; // room for the labels above the points
  const ymax = top <= 100 ? 100 : Math.ceil(top / 20) * 20;
  const lx = (p) => L + (Math.log10(p) / 2) * pw; // 1 % .. 100 %, log scale
  const ly = (v) => T + ph - (v / ymax) * ph;
  const esc = (t) => String(t).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
  const el = [];
  el.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  el.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  el.push(`<text x="${L}" y="24" font-size="15" font-weight="bold">Minicopy time as % of the full-copy time</text>`);
  el.push(`<text x="${L}" y="40" fill="#555">${esc(`${fmtNum(r.config.setBytes / MiB)} MiB set, ${r.config.chunkSize / KiB} KiB chunks; one 4 KiB write in each chunk written; median of ${r.config.rounds} round${r.config.rounds === 1 ? '' : 's'}`)}</text>`);
  // Grid and axes.
  for (let v = 0; v <= ymax; v += ymax > 100 ? 20 : 10) {
    el.push(`<line x1="${L}" y1="${ly(v)}" x2="${L + pw}" y2="${ly(v)}" stroke="#e4e4e4"/>`);
    el.push(`<text x="${L - 8}" y="${ly(v) + 4}" text-anchor="end">${v} %</text>`);
  }
  for (const p of [1, 2, 5, 10, 25, 50, 100]) {
    el.push(`<line x1="${lx(p)}" y1="${T}" x2="${lx(p)}" y2="${T + ph}" stroke="#e4e4e4"/>`);
    el.push(`<text x="${lx(p)}" y="${T + ph + 18}" text-anchor="middle">${p} %</text>`);
  }
  el.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  el.push(`<text x="${L + pw / 2}" y="${H - 16}" text-anchor="middle">chunks written while the member was away (% of all chunks, log scale)</text>`);
  el.push(`<text transform="translate(18 ${T + ph / 2}) rotate(-90)" text-anchor="middle">minicopy time, % of full copy</text>`);
  // Proportional reference: copying p % of the chunks in p % of the time.
  const prop = Array.from({ length: 41 }, (_, i) => 10 ** (i / 20));
  el.push(`<polyline fill="none" stroke="#999" stroke-dasharray="2 4" points="${prop.map((p) => `${lx(p).toFixed(1)},${ly(p).toFixed(1)}`).join(' ')}"/>`);
  // Target: <= 2 % at 1 %.
  el.push(`<line x1="${lx(1) - 6}" y1="${ly(2)}" x2="${lx(1) + 6}" y2="${ly(2)}" stroke="#2a7" stroke-width="3"/>`);
  // The manual's table 7-1.
  el.push(`<polyline fill="none" stroke="#c55" stroke-width="2" stroke-dasharray="6 4" points="${MANUAL.map((m) => `${lx(m.pct)},${ly(m.ratio)}`).join(' ')}"/>`);
  for (const m of MANUAL) {
    el.push(`<rect x="${lx(m.pct) - 4}" y="${ly(m.ratio) - 4}" width="8" height="8" fill="#c55"/>`);
    el.push(`<text x="${lx(m.pct) + 8}" y="${ly(m.ratio) + 16}" fill="#c55">${m.ratio} %</text>`);
  }
  // This run: the copying phase alone (CopyStarted/MinicopyStarted -> *Completed), then the whole operation.
  const phase = s.fullCopy?.copySeconds ? ours.filter((m) => m.copySeconds !== null) : [];
  if (phase.length) {
    el.push(`<polyline fill="none" stroke="#93b4f5" stroke-width="1.5" stroke-dasharray="5 3" points="${phase.map((m) => `${lx(m.pct)},${ly(Math.min(ymax, (100 * m.copySeconds) / s.fullCopy.copySeconds))}`).join(' ')}"/>`);
  }
  const bare = ours.filter((m) => m.barePctOfFull != null);
  if (bare.length) {
    el.push(`<polyline fill="none" stroke="#8a5cc7" stroke-width="1.5" points="${bare.map((m) => `${lx(m.pct)},${ly(Math.min(ymax, m.barePctOfFull))}`).join(' ')}"/>`);
    for (const m of bare) el.push(`<circle cx="${lx(m.pct)}" cy="${ly(Math.min(ymax, m.barePctOfFull))}" r="3" fill="#8a5cc7"/>`);
  }
  if (ours.length) {
    el.push(`<polyline fill="none" stroke="#2563eb" stroke-width="2.5" points="${ours.map((m) => `${lx(m.pct)},${ly(m.pctOfFull)}`).join(' ')}"/>`);
    for (const m of ours) {
      el.push(`<circle cx="${lx(m.pct)}" cy="${ly(m.pctOfFull)}" r="4.5" fill="#2563eb"/>`);
      const first = m === ours[0];
      el.push(`<text x="${lx(m.pct) + (first ? 6 : -4)}" y="${ly(m.pctOfFull) - 9}" text-anchor="${first ? 'start' : 'end'}" fill="#2563eb">${m.pctOfFull < 10 ? m.pctOfFull.toFixed(1) : m.pctOfFull.toFixed(0)} %</text>`);
    }
  }
  // Legend.
  const gx = L + pw + 20;
  const legend = [
    ['line', '#2563eb', '', 'this engine (this run)'],
    ['line', '#93b4f5', '5 3', 'same, copying phase only'],
    ['line', '#8a5cc7', '', 'bare copy of the same chunks'],
    ['line', '#c55', '6 4', 'OpenVMS manual, table 7-1'],
    ['line', '#999', '2 4', 'proportional to chunks written'],
    ['tick', '#2a7', '', 'target: <= 2 % at 1 %'],
  ];
  legend.forEach(([kind, color, dash, label], i) => {
    const y = T + 10 + i * 22;
    if (kind === 'line') el.push(`<line x1="${gx}" y1="${y}" x2="${gx + 26}" y2="${y}" stroke="${color}" stroke-width="2.5"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
    else el.push(`<line x1="${gx + 7}" y1="${y}" x2="${gx + 19}" y2="${y}" stroke="${color}" stroke-width="3"/>`);
    el.push(`<text x="${gx + 34}" y="${y + 4}">${esc(label)}</text>`);
  });
  if (s.fullCopy) {
    const y = T + 10 + legend.length * 22 + 14;
    el.push(`<text x="${gx}" y="${y}" fill="#555">full copy: ${fmtS(s.fullCopy.seconds)} s</text>`);
    if (s.dd) el.push(`<text x="${gx}" y="${y + 18}" fill="#555">dd, same bytes: ${fmtS(s.dd.seconds)} s</text>`);
  }
  el.push('</svg>');
  return el.join('\n') + '\n';
}

runBench('resync-bench', HELP, parseConfig, main);
