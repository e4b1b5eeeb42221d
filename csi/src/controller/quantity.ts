/**
 * Bytes of a Kubernetes quantity as claims carry them ("1073741824", "1Gi", "500M"). What cannot be read
 * counts as 0: a claim whose size is unknown is treated as not yet big enough, never as big enough.
 */
const UNITS: Record<string, number> = {
  '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

export function bytesOfQuantity(q: string | undefined): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.exec(q ?? '');
  if (!m) return 0;
  return Math.ceil(Number(m[1]) * UNITS[m[2] ?? '']!);
}
