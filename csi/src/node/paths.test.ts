import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isCsiError } from '../errors.js';
import { parseMountInfo } from './mounts.js';
import { checkPath } from './paths.js';

test('paths from the CO: absolute, normal, under the kubelet directory, and no symlink leading out', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'csi-paths-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kubelet = join(dir, 'kubelet');
  await mkdir(join(kubelet, 'pods'), { recursive: true });
  await symlink('/etc', join(kubelet, 'pods', 'out'));
  assert.equal(await checkPath(join(kubelet, 'pods/p/volumes/v/mount'), 'target_path', kubelet), join(kubelet, 'pods/p/volumes/v/mount'));
  assert.equal(await checkPath(`${join(kubelet, 'plugins/x')}/`, 'target_path', kubelet), join(kubelet, 'plugins/x'));
  const refused = async (p: string | undefined, why: RegExp) =>
    assert.rejects(checkPath(p, 'target_path', kubelet), (e) => isCsiError(e, 'InvalidArgument') && why.test(e.message));
  await refused(undefined, /target_path is required/);
  await refused('relative/path', /absolute path/);
  await refused(`${kubelet}/pods/../../etc`, /without \. or \.\./);
  await refused(`${kubelet}/./pods`, /without \. or \.\./);
  await refused(`${kubelet}x/pods`, /not under the kubelet's directory/);
  await refused(kubelet, /not under the kubelet's directory/);
  await refused('/etc/passwd', /not under the kubelet's directory/);
  await refused(`${kubelet}/pods\0/x`, /absolute path/);
  await refused(join(kubelet, 'pods/out/shadow'), /leads out of/);
});

test('mountinfo: fields and octal escapes (spaces in paths) are read as the kernel writes them', () => {
  const text = [
    '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
    '44 27 0:6 /loop3 /var/lib/kubelet/plugins/pub/pod-1 rw,relatime - devtmpfs devtmpfs rw,size=1k',
    '50 27 7:3 / /var/lib/kubelet/staging rw - ext4 /dev/loop3 rw',
  ].join('\n');
  assert.deepEqual(parseMountInfo(text), [
    { device: '98:0', root: '/mnt1', mountPoint: '/mnt/with space', fsType: 'ext3', source: '/dev/root' },
    { device: '0:6', root: '/loop3', mountPoint: '/var/lib/kubelet/plugins/pub/pod-1', fsType: 'devtmpfs', source: 'devtmpfs' },
    { device: '7:3', root: '/', mountPoint: '/var/lib/kubelet/staging', fsType: 'ext4', source: '/dev/loop3' },
  ]);
});
