/**
 * resync-bench's scale chart (DIR/resync-scale.svg): seconds of a minicopy and of a minimerge of the same
 * writes against the set's size (log scale), each with a flat line at its smallest set's time — what
 * "cost independent of the set's size" looks like — and, beside it, the full copy of a half-holes
 * source against a full one. Plain SVG from the measured figures, no tools.
 */
import { fmtNum } from '../lib/format.mjs';

const esc = (t) => String(t).replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
const f3 = (x) => (x < 1 ? x.toFixed(3) : x.toFixed(2));

/** The SVG text for summary `s` (with s.scale and/or s.zero), or null when neither phase ran. */
export function scaleSvg(s, when) {
  if (!s.scale && !s.zero) return null;
  const W = 860, H = 430, L = 70, T = 60, B = 60, PW = 440, PH = H - T - B;
  const el = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${L}" y="24" font-size="15" font-weight="bold">Resync cost with the set's size, and a full copy of a half-empty source</text>`,
    `<text x="${L}" y="42" fill="#555">${esc(`medians of the bench's rounds; measured ${when ?? ''} on a shared, loaded 2-CPU machine`)}</text>`,
  ];
  if (s.scale) {
    const rows = s.scale.rows;
    const gmin = rows[0].gib, gmax = Math.max(rows.at(-1).gib, gmin * 2);
    const full = rows.every((r) => r.fullCopy !== null);
    const ymax = niceMax(Math.max(...rows.flatMap((r) => [r.minicopy, r.minimerge, ...(full ? [r.fullCopy] : [])])) * 1.15);
    const lx = (g) => +(L + (Math.log(g / gmin) / Math.log(gmax / gmin)) * PW).toFixed(1);
    const ly = (v) => +(T + PH - (v / ymax) * PH).toFixed(1);
    for (let i = 0; i <= 5; i++) {
      const v = (ymax * i) / 5;
      el.push(`<line x1="${L}" y1="${ly(v)}" x2="${L + PW}" y2="${ly(v)}" stroke="#e4e4e4"/>`, `<text x="${L - 8}" y="${ly(v) + 4}" text-anchor="end">${f3(v)} s</text>`);
    }
    for (const r of rows) el.push(`<text x="${lx(r.gib)}" y="${T + PH + 18}" text-anchor="middle">${r.gib} GiB</text>`);
    el.push(`<rect x="${L}" y="${T}" width="${PW}" height="${PH}" fill="none" stroke="#888"/>`);
    el.push(`<text x="${L + PW / 2}" y="${H - 16}" text-anchor="middle">${esc(`set size (sparse file members), the same ${fmtNum(s.scale.writeMiB)} MiB of scattered writes`)}</text>`);
    el.push(`<text transform="translate(18 ${T + PH / 2}) rotate(-90)" text-anchor="middle">seconds</text>`);
    const series = [['minicopy', '#2563eb'], ['minimerge', '#c55'], ...(full ? [['fullCopy', '#7c3aed']] : [])];
    for (const [key, color] of series) {
      el.push(`<line x1="${L}" y1="${ly(rows[0][key])}" x2="${L + PW}" y2="${ly(rows[0][key])}" stroke="${color}" stroke-opacity="0.45" stroke-dasharray="4 4"/>`);
      el.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${rows.map((r) => `${lx(r.gib)},${ly(r[key])}`).join(' ')}"/>`);
      for (const r of rows) {
        el.push(`<circle cx="${lx(r.gib)}" cy="${ly(r[key])}" r="4.5" fill="${color}"/>`);
        el.push(`<text x="${lx(r.gib) + (r === rows.at(-1) ? -6 : 6)}" y="${ly(r[key]) - 8}" text-anchor="${r === rows.at(-1) ? 'end' : 'start'}" fill="${color}">${f3(r[key])} s</text>`);
      }
    }
    const gx = L + PW + 24;
    const legend = [
      ['#2563eb', `minicopy on return (${fmtNum(rows[0].minicopyMiB, 1)} MiB copied)`],
      ['#c55', 'minimerge after kill -9 under the writes'],
      ...(full ? [['#7c3aed', 'full copy of the set (its holes unread)']] : []),
    ];
    legend.forEach(([color, label], i) => {
      el.push(`<line x1="${gx}" y1="${T + 10 + i * 22}" x2="${gx + 26}" y2="${T + 10 + i * 22}" stroke="${color}" stroke-width="2.5"/>`);
      el.push(`<text x="${gx + 34}" y="${T + 14 + i * 22}">${esc(label)}</text>`);
    });
    const below = T + 10 + legend.length * 22;
    el.push(`<text x="${gx}" y="${below + 8}" fill="#555">dashed: the smallest set's time (flat = target)</text>`);
    if (s.scale.minicopyRatio != null) {
      el.push(`<text x="${gx}" y="${below + 30}">${esc(`${rows.at(-1).gib} GiB / ${rows[0].gib} GiB: minicopy ${s.scale.minicopyRatio.toFixed(2)}x, minimerge ${s.scale.minimergeRatio.toFixed(2)}x`)}</text>`);
      if (s.scale.fullCopyRatio != null) el.push(`<text x="${gx}" y="${below + 48}">${esc(`full copy ${s.scale.fullCopyRatio.toFixed(2)}x`)}</text>`);
    }
  }
  if (s.zero) {
    const gx = L + PW + 24, top = T + 170, bw = 250;
    const max = Math.max(s.zero.full, s.zero.half);
    el.push(`<text x="${gx}" y="${top}" font-weight="bold">${esc(`full copy, ${fmtNum(s.zero.setMiB)} MiB set (file members)`)}</text>`);
    [['source all data', s.zero.full, '#2563eb'], ['source half holes', s.zero.half, '#2a7']].forEach(([label, v, color], i) => {
      const y = top + 18 + i * 46;
      el.push(`<text x="${gx}" y="${y + 10}">${esc(label)}</text>`);
      const w = +((bw * v) / max).toFixed(1);
      el.push(`<rect x="${gx}" y="${y + 16}" width="${w}" height="16" fill="${color}"/>`);
      el.push(`<text x="${gx + w + 6}" y="${y + 29}">${f3(v)} s</text>`);
    });
    if (s.zero.ratio !== null) el.push(`<text x="${gx}" y="${top + 124}">${esc(`half holes / all data, same round: ${s.zero.ratio.toFixed(2)}x (median; target ~0.5)`)}</text>`);
  }
  el.push('</svg>');
  return el.join('\n') + '\n';
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}
