/**
 * The summary, targets and tables of resync-bench's scale and zero phases and of the engine's memory:
 * how a minicopy and a minimerge of the same writes cost on sets of different sizes, what a full copy
 * of a half-holes source costs against a full one, and the engine's RSS idle and under each load.
 */
import { fmtNum } from '../lib/format.mjs';
import { median, noisyMark } from '../lib/measure.mjs';
import { MiB } from '../lib/run.mjs';

/** Seconds as report.mjs prints them (not imported: report.mjs imports this module). */
const fmtS = (x) => (x === null || x === undefined ? '-' : x < 1 ? x.toFixed(3) : x.toFixed(2));

export const SCALE_TARGETS = {
  scaleMinicopy: { label: 'minicopy of the same writes: largest set / smallest set (target ~1)', max: 1.25 },
  scaleMinimerge: { label: 'minimerge after kill -9 under the same writes: largest set / smallest set (target ~1)', max: 1.25 },
  scaleFullCopy: { label: 'full copy of the same sparse set (its source\'s holes unread): largest set / smallest set (target ~1)', max: 1.25 },
  zeroCopy: { label: 'full copy of a half-holes source / of a full source, median of the rounds\' ratios (target ~0.5)', max: 0.6 },
  memory: { label: 'engine RSS, peak under any bench load (MiB)', max: 128 },
};

/** Adds s.scale, s.zero and s.memory (and their targets) to summary `s` of result `r`. */
export function summarizeScale(r, s) {
  const sc = r.scale;
  if (sc?.runs?.length) {
    const sizes = [...new Set(sc.runs.map((x) => x.gib))].sort((a, b) => a - b);
    s.scale = {
      when: sc.when ?? null, writeMiB: sc.writeMiB, skipped: sc.skipped ?? [],
      rows: sizes.map((gib) => {
        const runs = sc.runs.filter((x) => x.gib === gib);
        return {
          gib, chunksWritten: runs[0].chunksWritten,
          minicopy: median(runs.map((x) => x.minicopy.seconds)), minicopyPerRound: runs.map((x) => x.minicopy.seconds),
          minicopySetup: median(runs.map((x) => x.minicopy.setupSeconds)), minicopyMiB: median(runs.map((x) => x.minicopy.bytes)) / MiB,
          minimerge: median(runs.map((x) => x.minimerge.seconds)), minimergePerRound: runs.map((x) => x.minimerge.seconds),
          mergeChunks: median(runs.map((x) => x.minimerge.chunks)), restart: median(runs.map((x) => x.minimerge.restartSeconds)),
          // Runs from before the full copy was part of the phase have none.
          fullCopy: runs.every((x) => x.fullCopy) ? median(runs.map((x) => x.fullCopy.seconds)) : null,
          fullCopyPerRound: runs.filter((x) => x.fullCopy).map((x) => x.fullCopy.seconds),
          fullCopyUnreadGiB: runs.every((x) => x.fullCopy) ? median(runs.map((x) => x.fullCopy.unreadBytes ?? 0)) / (1024 * MiB) : null,
          idleRssMiB: median(runs.map((x) => x.idleRssMiB)),
          peakRssMiB: Math.max(...runs.flatMap((x) => [x.minicopy.peakRssMiB, x.minimerge.loadPeakRssMiB, x.minimerge.peakRssMiB, x.fullCopy?.peakRssMiB]).filter(Number.isFinite)),
        };
      }),
    };
    const [lo, hi] = [s.scale.rows[0], s.scale.rows.at(-1)];
    if (s.scale.rows.length > 1) {
      s.scale.minicopyRatio = hi.minicopy / lo.minicopy;
      s.scale.minimergeRatio = hi.minimerge / lo.minimerge;
      const what = `${hi.gib} GiB / ${lo.gib} GiB`;
      s.targets.push(target('scaleMinicopy', s.scale.minicopyRatio, 'x', `${what}`));
      s.targets.push(target('scaleMinimerge', s.scale.minimergeRatio, 'x', `${what}`));
      if (hi.fullCopy !== null && lo.fullCopy !== null) {
        s.scale.fullCopyRatio = hi.fullCopy / lo.fullCopy;
        s.targets.push(target('scaleFullCopy', s.scale.fullCopyRatio, 'x', `${what}`));
      }
    }
  }
  const z = r.zero;
  if (z?.runs?.length) {
    const of = (v) => z.runs.filter((x) => x.variant === v);
    const full = median(of('full').map((x) => x.seconds));
    const half = median(of('half').map((x) => x.seconds));
    // Paired by round (the two copies of a round ran side by side): the block allocator and the page
    // cache change from round to round on a shared VM more than between the two copies of one round.
    const pairs = of('half').map((h) => { const f = of('full').find((x) => x.round === h.round); return f ? h.seconds / f.seconds : null; });
    s.zero = {
      setMiB: z.setMiB, full, half, ratio: median(pairs), perRoundRatio: pairs, fullPerRound: of('full').map((x) => x.seconds), halfPerRound: of('half').map((x) => x.seconds),
      fullCopying: median(of('full').map((x) => x.copySeconds)), halfCopying: median(of('half').map((x) => x.copySeconds)),
    };
    if (s.zero.ratio !== null) s.targets.push(target('zeroCopy', s.zero.ratio, 'x'));
  }
  // Memory: every peak the bench sampled, by load.
  const loads = [];
  const peak = (xs) => Math.max(...xs.filter(Number.isFinite));
  // The set of the copy, merge and intent phases (--set-mib; a JSON from before the field: unnamed).
  const set = r.config?.setBytes ? `the ${fmtNum(r.config.setBytes / MiB)} MiB set` : 'the set';
  if (r.idleRssMiB?.prefillPeak != null) loads.push([`sequential 1M write (prefill of ${set})`, r.idleRssMiB.prefillPeak]);
  const fromRuns = (label, xs) => { if (xs.some(Number.isFinite)) loads.push([label, peak(xs)]); };
  fromRuns(`full copy of ${set}`, r.fullCopy.map((x) => x.peakRssMiB));
  fromRuns(`minicopies of ${set}`, r.minicopy.map((x) => x.peakRssMiB));
  fromRuns('4k randwrite QD16 before kill -9', r.minimerge.concat(r.uniformMinimerge).map((x) => x.loadPeakRssMiB));
  fromRuns('merges (minimerge and full)', r.minimerge.concat(r.uniformMinimerge, r.fullMerge).map((x) => x.peakRssMiB));
  fromRuns('4k randwrite QD16 (intent-log runs)', r.intent.map((x) => x.peakRssMiB));
  if (sc?.runs?.length) {
    fromRuns('scale: minicopies', sc.runs.map((x) => x.minicopy.peakRssMiB));
    fromRuns('scale: 64 KiB writes before kill -9', sc.runs.map((x) => x.minimerge.loadPeakRssMiB));
    fromRuns('scale: minimerges', sc.runs.map((x) => x.minimerge.peakRssMiB));
    fromRuns('scale: full copies of the sparse sets', sc.runs.map((x) => x.fullCopy?.peakRssMiB));
  }
  if (z?.runs?.length) fromRuns('full copies of sparse sources', z.runs.map((x) => x.peakRssMiB));
  const idle = r.idleRssMiB?.started ?? sc?.idleRssMiB?.[0]?.rssMiB ?? null;
  if (loads.length || idle !== null) {
    s.memory = { idleRssMiB: idle, idleAfterPrefillMiB: r.idleRssMiB?.afterPrefill ?? null, loads, peakMiB: loads.length ? peak(loads.map((l) => l[1])) : null };
    if (s.memory.peakMiB !== null) s.targets.push(target('memory', s.memory.peakMiB, 'MiB'));
  }
}

function target(key, value, unit, note = '') {
  const t = SCALE_TARGETS[key];
  return { key, label: note ? `${t.label}, ${note}` : t.label, value, unit, cmp: '<=', limit: t.max, pass: value <= t.max };
}

/** The tables of these phases, in the shape report.mjs's tables() returns. */
export function scaleTables(r) {
  const s = r.summary;
  const out = [];
  const rounds = (xs) => xs.map(fmtS).join(' / ') + noisyMark(xs);
  const sc = r.scale;
  if (s.scale) {
    out.push({
      title: `Cost with the set's size: the same ${fmtNum(s.scale.writeMiB)} MiB of scattered whole-chunk writes on sparse sets, medians`,
      note: `${sc.when ? `run ${sc.when.slice(0, 16).replace('T', ' ')} UTC; ` : ''}` +
        'minicopy = return -> MinicopyCompleted + fdatasync; minimerge = MergeStarted -> MergeCompleted after kill -9 while the writes ran ' +
        '(the intent log marks 1 MiB groups, so it merges more chunks than were written); full copy = add of a fresh sparse file -> CopyCompleted + fdatasync, ' +
        'after the minimerge (the set then holds both sets of writes), with what its source\'s map let it leave unread' +
        (s.scale.skipped.length ? `; skipped: ${s.scale.skipped.map((k) => `${k.gib} GiB (${k.why})`).join(', ')}` : ''),
      header: ['set', 'minicopy (s)', 'of which setup', 'MiB copied', 'per round (s)', 'minimerge (s)', 'chunks merged', 'per round (s)',
        'full copy (s)', 'GiB unread', 'per round (s)', 'RSS idle / peak (MiB)'],
      right: [true, true, true, true, false, true, true, false, true, true, false, true],
      rows: s.scale.rows.map((x) => [`${x.gib} GiB`, fmtS(x.minicopy), fmtS(x.minicopySetup), fmtNum(x.minicopyMiB, 1), rounds(x.minicopyPerRound),
        fmtS(x.minimerge), fmtNum(x.mergeChunks), rounds(x.minimergePerRound),
        x.fullCopy === null ? '-' : fmtS(x.fullCopy), x.fullCopyUnreadGiB === null ? '-' : fmtNum(x.fullCopyUnreadGiB, 2),
        x.fullCopyPerRound.length ? rounds(x.fullCopyPerRound) : '-', `${fmtNum(x.idleRssMiB)} / ${fmtNum(x.peakRssMiB)}`]),
    });
  }
  if (s.zero) {
    out.push({
      title: `Full copy of a ${fmtNum(s.zero.setMiB)} MiB set of sparse file members onto a fresh sparse file${r.zero.fileSystem ? ` (${r.zero.fileSystem})` : ''}, medians`,
      ...(r.zero.when ? { note: `run ${r.zero.when.slice(0, 16).replace('T', ' ')} UTC` } : {}),
      header: ['source', 'seconds', 'copying', 'per round (s)', 'vs. full, same round (median)'],
      right: [false, true, true, false, true],
      rows: [
        ['data everywhere', fmtS(s.zero.full), fmtS(s.zero.fullCopying), rounds(s.zero.fullPerRound), '1.00x'],
        ['every other MiB a hole', fmtS(s.zero.half), fmtS(s.zero.halfCopying), rounds(s.zero.halfPerRound),
          s.zero.ratio === null ? '-' : `${s.zero.ratio.toFixed(2)}x (rounds: ${(s.zero.perRoundRatio ?? []).map((x) => x?.toFixed(2)).join(' / ')})`],
      ],
    });
  }
  if (s.memory) {
    out.push({
      title: 'Engine memory (VmRSS from /proc/<pid>/status, sampled every 100 ms)',
      header: ['engine', 'RSS (MiB)'],
      right: [false, true],
      rows: [
        ['idle, 2-member set (its I/O thread serving)', fmtNum(s.memory.idleRssMiB)],
        ...(s.memory.idleAfterPrefillMiB === null ? [] : [['idle, after the prefill', fmtNum(s.memory.idleAfterPrefillMiB)]]),
        ...s.memory.loads.map(([label, v]) => [`peak: ${label}`, fmtNum(v)]),
      ],
    });
  }
  return out;
}
