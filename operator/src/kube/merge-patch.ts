/**
 * A JSON merge patch (RFC 7386) that turns `from` into `to`. A merge patch keeps every key it does not
 * mention, so a key that disappeared must be sent as null (a status whose recovery ended would otherwise
 * keep `recovery.mode` forever). Arrays and scalars are replaced whole.
 */
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatchFrom(from: unknown, to: unknown): unknown {
  if (!isObject(from) || !isObject(to)) return to;
  const patch: Record<string, unknown> = {};
  for (const k of Object.keys(from)) if (!(k in to)) patch[k] = null;
  for (const [k, v] of Object.entries(to)) patch[k] = k in from ? mergePatchFrom(from[k], v) : v;
  return patch;
}
