/**
 * resync-bench's set-up: the member files A and B, the copy targets C (the engine's new member) and
 * S (dd's and the bare copies' target), the engine serving A and B, and the checks that members hold
 * the same data after every copy and merge.
 */
import fs from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';

import { fmtNum } from '../lib/format.mjs';
import { fallocateFile } from '../lib/host.mjs';
import { prefill } from '../lib/measure.mjs';
import { memoryOf, withPeakRss } from '../lib/memory.mjs';
import { KiB, MiB, exec, sleep } from '../lib/run.mjs';
import { Engine } from './engine.mjs';

export class Rig {
  constructor(cfg, headerBytes, dir) {
    this.headerBytes = headerBytes;
    this.setBytes = cfg.setMiB * MiB;
    this.memberBytes = this.setBytes + headerBytes;
    this.A = path.join(dir, 'member-a.img');
    this.B = path.join(dir, 'member-b.img');
    this.C = path.join(dir, 'copy-target.img');
    this.S = path.join(dir, 'dd-target.img');
    this.sock = path.join(dir, 'engine.sock');
    this.engine = null;
    this.chunkSize = null;
    this.chunks = null;
    /** Every cmp of two members' data areas, in order (all passed: a difference throws). */
    this.checks = [];
  }

  /**
   * A 2-member set on blank fallocated files (the engine lays out its metadata), prefilled with fio's
   * non-zero data through the engine, so both members hold real data everywhere and a copy really copies.
   */
  static async create(cfg, headerBytes, dir) {
    const rig = new Rig(cfg, headerBytes, dir);
    for (const f of [rig.A, rig.B]) await fallocateAfresh(f, rig.memberBytes);
    const st = await (await rig.startEngine()).status();
    if (st.size !== rig.setBytes) throw new Error(`the engine exports ${st.size} bytes, expected ${rig.setBytes}`);
    rig.chunkSize = st.chunkSize;
    rig.chunks = Math.ceil(rig.setBytes / rig.chunkSize);
    console.log(`set:     ${fmtNum(rig.setBytes / MiB)} MiB, ${fmtNum(rig.chunks)} chunks of ${rig.chunkSize / KiB} KiB, members A and B`);
    // Idle 2.5 s after it answered (its I/O thread serves both members by then; unannounced).
    await sleep(2500);
    const fresh = memoryOf(rig.engine.pid);
    const { peakRssMiB } = await withPeakRss(rig.engine.pid,
      () => prefill(rig.engine.uri, rig.setBytes, [rig.A, rig.B], { what: 'set', expectSeconds: 600 }));
    // The engine's memory with a 2-member set and nothing to do: once started, and after the prefill.
    rig.idleRssMiB = { started: fresh?.rssMiB ?? null, afterPrefill: memoryOf(rig.engine.pid)?.rssMiB ?? null, prefillPeak: peakRssMiB };
    console.log(`memory:  engine RSS ${fmtNum(rig.idleRssMiB.started ?? 0)} MiB idle after start, ${fmtNum(peakRssMiB ?? 0)} MiB peak during the prefill, ` +
      `${fmtNum(rig.idleRssMiB.afterPrefill ?? 0)} MiB idle after it`);
    return rig;
  }

  /** A new engine on A and B (the previous one must be stopped or dead), now this.engine. */
  async startEngine(opts) {
    this.engine = await new Engine([this.A, this.B], this.sock, opts).start();
    return this.engine;
  }

  /** Throws unless the data areas of `a` and `b` are identical; `what` names the step in the record and the error. */
  async verify(what, a, b) {
    const v = await sameData(a, b, this.headerBytes, this.setBytes);
    this.checks.push({ what, ...v });
    if (!v.same) throw new Error(`${what}: the data areas differ (${v.detail}) — the engine left members inconsistent`);
  }

  /**
   * The copy targets (the engine's new member C, dd's output S) are made the same way before every
   * timed copy: fallocated once, then zeroed in full with an fdatasync, untimed. Zeroing makes them blank
   * for the engine and puts both on blocks the storage has already written. Without it the result
   * depends on history: on the development VM (ext4 mounted with discard, on a virtual disk) a 1 GiB
   * write into a fresh fallocated file took ~3 s, but ~0.4 s when it reused the blocks of a file deleted
   * just before, so whichever copy ran second in a round was several times faster (dd alone shows it).
   */
  async blank(file) {
    if (!fs.existsSync(file)) await fallocateAfresh(file, this.memberBytes);
    const z = await exec('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${this.memberBytes}`, 'iflag=count_bytes', 'conv=notrunc,fdatasync'],
      { timeoutMs: 600_000 });
    if (!z.ok) throw new Error(`zeroing ${file} failed: ${z.stderr.trim()}`);
  }
}

/** fallocateFile, replacing whatever is at `file`. */
async function fallocateAfresh(file, bytes) {
  await rm(file, { force: true });
  await fallocateFile(file, bytes);
}

/** Data area of two member files identical? (cmp skips the 8 MiB headers, which differ by design.) */
async function sameData(a, b, header, bytes) {
  const r = await exec('cmp', ['-n', String(bytes), '-i', `${header}:${header}`, a, b], { timeoutMs: 300_000 });
  if (r.ok) return { same: true };
  if (r.code === 1) return { same: false, detail: r.stdout.trim() };
  throw new Error(`cmp ${a} ${b} failed: ${r.stderr.trim()}`);
}
