/** Waiting a bounded time for promises that may never settle (a device that hangs). */

/** Wait until every promise settled or `ms` passed; true if they all settled in time. */
export async function settledWithin(ps: (Promise<unknown> | undefined)[], ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([Promise.allSettled(ps).then(() => true), limit]);
  } finally {
    clearTimeout(timer);
  }
}
