/**
 * A member on a regular file or a block device, through positioned reads and writes on the libuv
 * thread pool. Its descriptors are closed only once no request may still use them (see close()).
 */
import fs from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { EngineError, errorMessage } from '../../core/errors.js';
import type { BlockBackend } from '../../ports/block-backend.js';
import { probeDataExtents, type DataExtents } from './data-extents.js';

const ZERO_CHUNK = 1024 * 1024;
/** statfs f_type of ext4 (also ext2/3), XFS, btrfs and tmpfs: see holdsNoData and dataExtents. */
const BLOCKS_COUNT_PENDING_DATA = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994]);

function ioError(op: string, location: string, err: unknown): EngineError {
  return new EngineError('ENG_IO', `${op} on ${location} failed: ${errorMessage(err)}`, { cause: err });
}

/** Size of a block device from sysfs (fstat reports 0 for devices). */
async function blockDeviceBytes(rdev: number): Promise<number> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
  return sectors * 512;
}

export class FileBackend implements BlockBackend {
  private inFlight = 0;
  private closed: EngineError | null = null;
  private closing: Promise<void> | null = null;
  private idle: (() => void) | null = null;

  /**
   * `fd` for ordinary I/O; `syncFd` is the same file opened O_DSYNC: a write through it returns once that
   * range is on stable storage, without flushing every other dirty page of the member (which is what an
   * fdatasync after the write would do, and what made each metadata update cost a full writeback).
   */
  private constructor(readonly location: string, readonly fd: number, readonly syncFd: number, public size: number) {}

  /**
   * The size as the device says it now: fstat for a file (grown with truncate), sysfs for a block
   * device (a loop device after `losetup -c`, a volume after expansion). Positioned I/O needs nothing
   * else to reach the new bytes. A device never shrinks under a set: a smaller answer is an error.
   */
  refreshSize(): Promise<number> {
    return this.track(async () => {
      const st = await new Promise<fs.Stats>((res, rej) => fs.fstat(this.fd, (e, s) => (e ? rej(ioError('fstat', this.location, e)) : res(s))));
      const now = st.isBlockDevice() ? await blockDeviceBytes(st.rdev) : st.size;
      if (now < this.size) throw new EngineError('ENG_IO', `${this.location} shrank from ${this.size} to ${now} bytes`);
      this.size = now;
      return now;
    });
  }

  static async open(path: string): Promise<FileBackend> {
    let fd: number;
    try {
      fd = await new Promise<number>((res, rej) => fs.open(path, 'r+', (e, f) => (e ? rej(e) : res(f))));
    } catch (e) {
      throw new EngineError('ENG_IO', `cannot open member ${path}: ${errorMessage(e)}`, { cause: e });
    }
    const st = fs.fstatSync(fd);
    let size: number;
    if (st.isBlockDevice()) size = await blockDeviceBytes(st.rdev);
    else if (st.isFile()) size = st.size;
    else {
      fs.closeSync(fd);
      throw new EngineError('ENG_INVALID_ARGUMENT', `member ${path} is neither a regular file nor a block device`);
    }
    const syncFd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_DSYNC);
    return new FileBackend(path, fd, syncFd, size);
  }

  /**
   * A regular file with no allocated blocks is all holes: it reads as zeros everywhere. Only believed on
   * file systems whose st_blocks counts data not yet written back (ext4, XFS and btrfs add their delayed
   * allocations, tmpfs counts pages): elsewhere a file written a moment ago may still report 0 blocks (ZFS
   * until its transaction group commits; network file systems as their server says). A block device
   * reports no blocks at all, so it is never taken as empty. A file with blocks allocated is empty too
   * when the file system says none of them holds data (SEEK_DATA finds none: a preallocated file whose
   * unwritten extents read as zeros), on the same file systems.
   */
  async holdsNoData(): Promise<boolean> {
    if (this.closed) return false;
    try {
      const st = await new Promise<fs.Stats>((res, rej) => fs.fstat(this.fd, (e, x) => (e ? rej(e) : res(x))));
      if (!st.isFile()) return false;
      if (!BLOCKS_COUNT_PENDING_DATA.has((await statfs(this.location)).type)) return false;
      if (st.blocks === 0) return true;
      const extents = await probeDataExtents(this.fd, st.size);
      return extents !== null && extents.length === 0;
    } catch {
      return false;
    }
  }

  /**
   * Where the file holds data (SEEK_DATA/SEEK_HOLE, see data-extents.ts); null for a block device, or
   * when the file system's answer cannot be had. Only asked of the file systems whose answer counts
   * data not yet written back (ext4, XFS, btrfs, tmpfs: the same list as holdsNoData's): OpenZFS, for
   * one, reported dirty data as a hole until late 2023, and a hole taken for one would be a chunk never
   * copied. Counted as a request, so close() waits for it.
   */
  dataExtents(): Promise<DataExtents | null> {
    return this.track(async () => {
      const st = await new Promise<fs.Stats>((res, rej) => fs.fstat(this.fd, (e, x) => (e ? rej(e) : res(x))));
      if (!st.isFile()) return null;
      if (!BLOCKS_COUNT_PENDING_DATA.has((await statfs(this.location)).type)) return null;
      return probeDataExtents(this.fd, st.size);
    }).catch(() => null);
  }

  /**
   * Run a request unless closed, counting it until it settles. The caller gets the request's own promise,
   * not one derived from it: whatever the caller chained on it runs before close() can go on to close the
   * descriptors (a derived promise settled a turn later, after close() had already asked the thread pool
   * to close them, so a caller looking at the descriptors when its request settled could find them gone).
   */
  private track<T>(run: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    this.inFlight++;
    const p = run();
    const settled = () => {
      if (--this.inFlight === 0) this.idle?.();
    };
    p.then(settled, settled);
    return p;
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.track(() => this.readAt(buf, offset));
  }

  write(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    return this.track(() => this.writeAt(buf, offset, fua));
  }

  flush(): Promise<void> {
    return this.track(() => this.sync());
  }

  // Node offers no hole punching; zeros are written, which keeps the contract (the range reads as zeros).
  discard(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, false);
  }

  writeZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    return this.track(() => this.zero(offset, length, fua));
  }

  /**
   * The BlockBackend contract: new requests fail, the descriptors are closed once every request issued
   * before has settled. A request that never returns (a hung device) keeps them open for good, on
   * purpose: closing a number a system call may still use would let it reach whatever file is opened next
   * under that number.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = new EngineError('ENG_IO', `member ${this.location} is closed`);
      if (this.inFlight > 0) await new Promise<void>((r) => (this.idle = r));
      await new Promise<void>((resolve) => fs.close(this.fd, () => fs.close(this.syncFd, () => resolve())));
    })();
    return this.closing;
  }

  private readAt(buf: Buffer, offset: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const step = (done: number) => {
        fs.read(this.fd, buf, done, buf.length - done, offset + done, (e, n) => {
          if (e) return reject(ioError('read', this.location, e));
          if (n === 0) {
            buf.fill(0, done); // past the end of a file reads as zeros
            return resolve();
          }
          if (done + n < buf.length) return step(done + n);
          resolve();
        });
      };
      step(0);
    });
  }

  private writeAt(buf: Buffer, offset: number, fua: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const fd = fua ? this.syncFd : this.fd;
      const step = (done: number) => {
        fs.write(fd, buf, done, buf.length - done, offset + done, (e, n) => {
          if (e) return reject(ioError('write', this.location, e));
          if (done + n < buf.length) return step(done + n);
          resolve();
        });
      };
      step(0);
    });
  }

  private sync(): Promise<void> {
    return new Promise((resolve, reject) =>
      fs.fdatasync(this.fd, (e) => (e ? reject(ioError('fdatasync', this.location, e)) : resolve())),
    );
  }

  private async zero(offset: number, length: number, fua: boolean): Promise<void> {
    const zero = Buffer.alloc(Math.min(length, ZERO_CHUNK));
    for (let done = 0; done < length; done += zero.length) {
      const n = Math.min(zero.length, length - done);
      await this.writeAt(n === zero.length ? zero : zero.subarray(0, n), offset + done, false);
    }
    if (fua) await this.sync();
  }
}
