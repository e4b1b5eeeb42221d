/**
 * resync-bench's medians over the rounds of every measurement, and the targets with their verdicts:
 * the summary that the text report, the markdown and the chart are made from (also when re-rendered
 * from a saved JSON file with --render).
 */
import { median } from '../lib/measure.mjs';
import { MiB } from '../lib/run.mjs';
import { MANUAL, TARGETS } from './config.mjs';
import { summarizeScale } from './scale-summary.mjs';

/** The summary of result `r` (its runs as the bench recorded them) under configuration `cfg`. */
export function summarize(r, cfg) {
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
  // Runs recorded before the cap existed have no variant: theirs is the log as shipped then.
  const variantOf = (x) => x.variant ?? (x.intentLog ? 'capped' : 'none');
  const runsOf = (v) => r.intent.filter((x) => variantOf(x) === v);
  const withLog = runsOf('capped').map((x) => x.iops);
  const without = runsOf('none').map((x) => x.iops);
  const uncapped = runsOf('uncapped').map((x) => x.iops);
  s.intent = withLog.length && without.length ? {
    withLog: median(withLog), without: median(without), costPct: 100 * (1 - median(withLog) / median(without)),
    withLogPerRound: withLog, withoutPerRound: without,
    withLogP99Us: median(runsOf('capped').map((x) => x.clatP99Us)),
    withoutP99Us: median(runsOf('none').map((x) => x.clatP99Us)),
    uncapped: uncapped.length ? median(uncapped) : null, uncappedPerRound: uncapped,
    uncappedP99Us: uncapped.length ? median(runsOf('uncapped').map((x) => x.clatP99Us)) : null,
    capCostPct: uncapped.length ? 100 * (1 - median(withLog) / median(uncapped)) : null,
    // The log as the engine ships it (no cap by default) against no log: what the intent-log target is about.
    defaultCostPct: uncapped.length ? 100 * (1 - median(uncapped) / median(without)) : null,
    capChunks: median(runsOf('capped').map((x) => x.capChunks ?? 0)),
  } : null;
  const capChunks = median(r.uniformMinimerge.map((x) => x.capChunks ?? 0)) ?? s.intent?.capChunks ?? 0;
  const capMiB = (capChunks * (r.config.chunkSize ?? 65536)) / (1024 * 1024);
  if (s.uniformMinimerge) s.uniformMinimerge.mib = median(r.uniformMinimerge.map((x) => x.bytes)) / (1024 * 1024);

  const one = s.minicopy.find((x) => x.pct === 1);
  const t = TARGETS;
  if (one?.pctOfFull != null) s.targets.push({ key: 'minicopy', label: t.minicopy.label, value: one.pctOfFull, unit: '%', cmp: '<=', limit: t.minicopy.max, pass: one.pctOfFull <= t.minicopy.max });
  if (s.minimerge?.pctOfFull != null) s.targets.push({ key: 'minimerge', label: t.minimerge.label, value: s.minimerge.pctOfFull, unit: '%', cmp: '<=', limit: t.minimerge.max, pass: s.minimerge.pctOfFull <= t.minimerge.max });
  if (s.intent) {
    // Runs made before the cap existed have no uncapped variant: theirs is the log as shipped then.
    const cost = s.intent.defaultCostPct ?? s.intent.costPct;
    s.targets.push({ key: 'intentLog', label: t.intentLog.label, value: cost, unit: '%', cmp: '<=', limit: t.intentLog.max, pass: cost <= t.intentLog.max });
  }
  if (s.intent?.capCostPct != null) s.targets.push({ key: 'intentCap', label: t.intentCap.label, value: s.intent.capCostPct, unit: '%', cmp: '<=', limit: t.intentCap.max, pass: s.intent.capCostPct <= t.intentCap.max });
  if (s.uniformMinimerge && capMiB > 0) {
    // QD16 4k writes touch at most 16 groups of 1 MiB at once; each may be marked while the cap is being kept.
    const limit = capMiB + 16;
    s.targets.push({ key: 'capMerge', label: t.capMerge.label, value: s.uniformMinimerge.mib, unit: 'MiB', cmp: '<=', limit, pass: s.uniformMinimerge.mib <= limit });
  }
  if (s.fullCopy && s.dd) {
    const v = (100 * s.dd.seconds) / s.fullCopy.seconds;
    s.targets.push({ key: 'copyRate', label: t.copyRate.label, value: v, unit: '%', cmp: '>=', limit: t.copyRate.min, pass: v >= t.copyRate.min });
  }
  // Issue 16: every row of table 7-1 at or below the manual's ratio, and within 1.25x of a bare copy of the same chunks.
  for (const m of s.minicopy.filter((x) => x.manual !== null && x.pctOfFull !== null)) {
    s.targets.push({ key: `manual${m.pct}`, label: `minicopy at ${m.pct} % of chunks, % of full-copy time (the manual's table 7-1)`, value: m.pctOfFull, unit: '%', cmp: '<=', limit: m.manual, pass: m.pctOfFull <= m.manual });
  }
  for (const m of s.minicopy.filter((x) => x.manual !== null && x.bareSeconds)) {
    const v = m.seconds / m.bareSeconds;
    s.targets.push({ key: `bare${m.pct}`, label: `minicopy at ${m.pct} % / bare copy of the same chunks`, value: v, unit: 'x', cmp: '<=', limit: t.bareRatio.max, pass: v <= t.bareRatio.max });
  }
  summarizeScale(r, s);
  return s;
}
