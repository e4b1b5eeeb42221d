import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isCsiError } from '../errors.js';
import { parseParameters } from './params.js';

const refused = (raw: Record<string, string>, names: string) => {
  assert.throws(() => parseParameters(raw), (e) => {
    assert.ok(isCsiError(e, 'InvalidArgument'), String(e));
    assert.match(e.message, new RegExp(names), `the message names ${names}: ${e.message}`);
    return true;
  });
};

test('parameters: the member class alone gives two members and no overrides', () => {
  assert.deepEqual(parseParameters({ memberClass: 'local-block' }), { memberClass: 'local-block', members: 2 });
});

test('parameters: every setting, as strings, becomes its number or name', () => {
  const p = parseParameters({
    memberClass: 'fast', members: '3', minicopyPolicy: 'Required', memberTimeoutSeconds: '30',
    copyBytesPerSecond: '65536', mergeBytesPerSecond: '0', maxCopies: '2',
    'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'db', 'csi.storage.k8s.io/pv/name': 'pvc-1',
  });
  assert.deepEqual(p, {
    memberClass: 'fast', members: 3, minicopyPolicy: 'Required', memberTimeoutSeconds: 30, copyBytesPerSecond: 65536,
    mergeBytesPerSecond: 0, maxCopies: 2, 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'db',
    'csi.storage.k8s.io/pv/name': 'pvc-1',
  });
});

test('parameters: unknown or invalid ones are refused, naming the parameter', () => {
  refused({}, 'memberClass');
  refused({ memberClass: 'Not_A_Class' }, 'memberClass');
  refused({ memberClass: 'c', member: '2' }, 'unknown parameter member');
  refused({ memberClass: 'c', 'csi.storage.k8s.io/fstype': 'ext4' }, 'csi.storage.k8s.io/fstype');
  for (const n of ['0', '7', 'two', '-1', '2.5', '']) refused({ memberClass: 'c', members: n }, 'members');
  refused({ memberClass: 'c', minicopyPolicy: 'Sometimes' }, 'minicopyPolicy');
  refused({ memberClass: 'c', minicopyPolicy: 'required' }, 'minicopyPolicy');
  refused({ memberClass: 'c', memberTimeoutSeconds: '0' }, 'memberTimeoutSeconds');
  refused({ memberClass: 'c', memberTimeoutSeconds: '86401' }, 'memberTimeoutSeconds');
  refused({ memberClass: 'c', copyBytesPerSecond: '65535' }, 'copyBytesPerSecond');
  refused({ memberClass: 'c', mergeBytesPerSecond: '1k' }, 'mergeBytesPerSecond');
  refused({ memberClass: 'c', maxCopies: '65' }, 'maxCopies');
  refused({ memberClass: 'c', maxCopies: '0' }, 'maxCopies');
  refused({ memberClass: 'c', 'csi.storage.k8s.io/pvc/namespace': 'Bad NS' }, 'pvc/namespace');
});

test('parameters: the bounds are the engine API\'s (the extremes are accepted)', () => {
  const p = parseParameters({ memberClass: 'c', members: '6', memberTimeoutSeconds: '86400', copyBytesPerSecond: '0', maxCopies: '64' });
  assert.equal(p.members, 6);
  assert.equal(p.memberTimeoutSeconds, 86400);
  assert.equal(parseParameters({ memberClass: 'c', members: '1', memberTimeoutSeconds: '1' }).members, 1);
});

test('parameters: several faults are all named in one message', () => {
  refused({ memberClass: 'c', members: '9', maxCopies: '0', colour: 'blue' }, 'members.*maxCopies|maxCopies.*members');
  assert.throws(() => parseParameters({ memberClass: 'c', members: '9', colour: 'blue' }), /colour/);
});
