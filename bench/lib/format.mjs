/** How the benches print: numbers, plain-text tables, plurals. */

/** x with thousands separators and `digits` decimals; '-' for a missing value. */
export function fmtNum(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** `n word` or `n words`. */
export const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** A plain-text table, indented by two spaces; right[i] right-aligns column i. */
export function table(header, rows, right) {
  const all = [header, ...rows];
  const w = header.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => ('  ' + r.map((c, i) => (right[i] ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ')).trimEnd();
  return [line(header), '  ' + w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n');
}
