/**
 * resync-bench's chart (DIR/resync-bench.svg): minicopy time as % of the full-copy time against the %
 * of chunks written, this run's curve next to the manual's table 7-1, the copying phase alone, the
 * bare copy of the same chunks, the proportional line and the target. Drawn top to bottom: frame,
 * grid, reference lines, this run, legend.
 */
import { fmtNum, plural } from '../lib/format.mjs';
import { KiB, MiB } from '../lib/run.mjs';
import { MANUAL } from './config.mjs';
import { fmtS } from './report.mjs';

/** The SVG text for result `r` (with its summary). */
export function svgChart(r) {
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
  el.push(`<text x="${L}" y="40" fill="#555">${esc(`${fmtNum(r.config.setBytes / MiB)} MiB set, ${r.config.chunkSize / KiB} KiB chunks; one 4 KiB write in each chunk written; median of ${plural(r.config.rounds, 'round')}`)}</text>`);
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
