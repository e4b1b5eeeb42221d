/**
 * The demo's workload, run by the node simulator as the container of the demo's pod (command
 * `shadowset-demo-writer <device>`): it reads the record the previous pod left in the first 4 KiB of the block
 * device (the shadowset PVC as the pod sees it), writes its own (pod, node, time, a count that goes up with
 * every pod), flushes it to the device, reads it back and compares, and says so on stdout. Then it waits
 * for SIGTERM (the pod's deletion) and exits 0. Not a library: nothing imports this file.
 */
import { open } from 'node:fs/promises';

const RECORD_BYTES = 4096;
const MAGIC = 'shadowset-demo-record\n';

const device = process.argv[2];
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function main(): Promise<void> {
  if (!device) throw new Error('usage: shadowset-demo-writer <block device>');
  const fh = await open(device, 'r+');
  try {
    const before = Buffer.alloc(RECORD_BYTES);
    await fh.read(before, 0, RECORD_BYTES, 0);
    let count = 0;
    if (before.subarray(0, MAGIC.length).toString('latin1') === MAGIC) {
      const prev = JSON.parse(before.subarray(MAGIC.length).toString('utf8').replace(/[\0\s]+$/, '')) as { count: number };
      count = prev.count;
      say({ event: 'FoundRecord', record: prev });
    } else {
      say({ event: 'NoRecord', message: 'the device holds no record yet (a new volume)' });
    }
    const record = { count: count + 1, pod: process.env.POD_NAME, node: process.env.NODE_NAME, at: new Date().toISOString() };
    const buf = Buffer.alloc(RECORD_BYTES);
    buf.write(MAGIC + JSON.stringify(record), 'utf8');
    await fh.write(buf, 0, RECORD_BYTES, 0);
    await fh.sync(); // fsync of a block device: the write has reached the shadow set's members
    const back = Buffer.alloc(RECORD_BYTES);
    await fh.read(back, 0, RECORD_BYTES, 0);
    if (!back.equals(buf)) throw new Error('the record read back differs from the one written');
    say({ event: 'RecordWritten', record, message: `wrote record ${record.count} to ${device}, flushed, read it back` });
  } finally {
    await fh.close();
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
    setInterval(() => undefined, 1 << 30);
  });
  process.exit(0);
}

main().catch((e: unknown) => {
  say({ event: 'Failed', message: (e as Error).message });
  process.exit(1);
});
