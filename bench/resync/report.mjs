/**
 * resync-bench's tables (shared by the text report and the markdown), the target lines, and the text
 * report printed at the end of a run.
 */
import { fmtNum, plural, table } from '../lib/format.mjs';
import { noisyMark } from '../lib/measure.mjs';
import { KiB, MiB } from '../lib/run.mjs';
import { scaleTables } from './scale-summary.mjs';

/** Seconds: three decimals below one second, two above; '-' when missing. */
export const fmtS = (s) => (s === null || s === undefined ? '-' : s < 1 ? s.toFixed(3) : s.toFixed(2));
/** A percentage: two decimals below 10, one above; '-' when missing. */
export const fmtPct = (p) => (p === null || p === undefined ? '-' : `${p < 10 ? p.toFixed(2) : p.toFixed(1)} %`);

const rounds = (xs) => xs.map(fmtS).join(' / ') + noisyMark(xs);

/** The tables as rows, shared by the text report and the markdown. */
export function tables(r, cfg) {
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
      title: `Minicopy vs. full copy (the manual's table 7-1): ${fmtNum(r.config.setBytes / MiB)} MiB set, ${r.config.chunkSize / KiB} KiB chunks, medians of ${plural(cfg.rounds, 'round')}`,
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
    const ir = (xs) => xs.map((x) => fmtNum(x)).join(' / ') + noisyMark(xs);
    const lat = (us) => (us === null ? '-' : `${(us / 1000).toFixed(2)} ms`);
    out.push({
      title: `Cost of the write-intent log: 4k randwrite QD16 over the whole set, ${cfg.runtime} s (+${cfg.ramp} s ramp), medians of ${cfg.iopsRounds}`,
      header: ['engine', 'IOPS', 'p99 clat', 'per round (IOPS)'],
      right: [false, true, true, false],
      rows: [
        ['--intent-log-cap-mib 256', fmtNum(s.intent.withLog), lat(s.intent.withLogP99Us), ir(s.intent.withLogPerRound)],
        ...(s.intent.uncapped === null ? [] : [['--intent-log-cap-mib 0 (no cap, the default)', fmtNum(s.intent.uncapped), lat(s.intent.uncappedP99Us), ir(s.intent.uncappedPerRound)]]),
        ['--no-intent-log', fmtNum(s.intent.without), lat(s.intent.withoutP99Us), ir(s.intent.withoutPerRound)],
        ...(s.intent.defaultCostPct == null ? [] : [['cost of the log as shipped (no cap)', fmtPct(s.intent.defaultCostPct), '', '']]),
        [s.intent.defaultCostPct == null ? 'cost of the log' : 'cost of the log capped at 256 MiB', fmtPct(s.intent.costPct), '', ''],
        ...(s.intent.capCostPct === null ? [] : [['cost of the cap (vs. no cap)', fmtPct(s.intent.capCostPct), '', '']]),
      ],
    });
  }
  return out.concat(scaleTables(r));
}

/** Every figure with a target beside it: figure, measured, target, met / not met (rows for table()). */
export function targetRows(ts) {
  const v = (x, unit) => `${x.toFixed(Math.abs(x) < 10 ? 2 : 1)}${unit === 'x' ? 'x' : ` ${unit}`}`;
  return ts.map((t) => [t.label, v(t.value, t.unit), `${t.cmp} ${t.limit}${t.unit === 'x' ? 'x' : ` ${t.unit}`}`, t.pass ? 'met' : 'NOT MET']);
}
export const TARGET_HEADER = ['figure', 'measured', 'target', 'met?'];

/** The text report: the tables, the targets, the cmp checks and the load average. */
export function report(r, cfg) {
  const parts = tables(r, cfg).map((t) => `${t.title}\n${table(t.header, t.rows, t.right)}${t.note ? `\n  (${t.note})` : ''}`);
  const ts = r.summary.targets;
  parts.push(`Every figure beside its target: ${ts.filter((t) => t.pass).length} of ${ts.length} met\n${table(TARGET_HEADER, targetRows(ts), [false, true, false, false])}`);
  parts.push(`members verified identical (cmp of the data areas): ${plural(r.verify.length, 'check')}, all passed\n` +
    `load average at start ${r.machine.loadavgStart.join(' ')}, at end ${r.machine.loadavgEnd.join(' ')} (${r.machine.nproc} CPUs); run took ${Math.round(r.durationSeconds / 60)} min`);
  return parts.join('\n\n');
}
