import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isEngineError } from '../core/errors.js';
import { LocationPolicy, normalizeLocation, normalizePrefix } from './location-policy.js';

const policy = new LocationPolicy(
  ['/dev/shadow/m0', 'nbd://10.0.0.7/m1', 'rel.img'],
  ['/dev/shadow/', 'nbds://', 'nbd+unix:///?socket=/run/members/'],
);

const refused = (loc: string) =>
  assert.throws(() => policy.check(loc), (e) => isEngineError(e, 'ENG_LOCATION_NOT_ALLOWED'), `${loc} must be refused`);

test('members given at start pass exactly as given; prefixes admit what is under them', () => {
  assert.equal(policy.check('/dev/shadow/m0'), '/dev/shadow/m0');
  assert.equal(policy.check('nbd://10.0.0.7/m1'), 'nbd://10.0.0.7/m1');
  assert.equal(policy.check('rel.img'), 'rel.img');
  assert.equal(policy.check('/dev/shadow/new'), '/dev/shadow/new');
  assert.equal(policy.check('/dev/shadow//x/./y'), '/dev/shadow/x/y', 'opened in its normal form');
  assert.equal(policy.check('nbds://10.1.2.3:10810/member'), 'nbds://10.1.2.3:10810/member');
  assert.equal(policy.check('nbd+unix:///?socket=/run/members//a.sock'), 'nbd+unix:///?socket=/run/members/a.sock');
});

test('host paths, escapes from a prefix, relative paths and other members are refused', () => {
  for (const loc of [
    '/dev/sda', '/etc/passwd', '/dev/shadow/../sda', '/dev/shadow/x/../../sda', '/dev/shadowX', '/dev/shadow',
    'sda', './rel.img', '../dev/sda', 'file:///dev/sda', 'nbd://10.0.0.7/m2', 'nbd://10.0.0.8/m1',
    'nbd+unix:///x?socket=/run/other.sock', 'nbd+unix:///x?socket=/run/members/../other.sock',
    'nbd+unix:///x?socket=/run/members/a&socket=/tmp/b', 'nbd+unix:///x?socket=relative/a.sock',
    'nbds://user@10.0.0.9/x', 'nbds://10.0.0.9/x#frag', 'nbds://10.0.0.9/x?tls=off', 'nbds://10.0.0.9/ x',
  ]) refused(loc);
});

test('a path is normalized before the prefix is compared', () => {
  assert.equal(normalizeLocation('/dev/shadow/../sda'), '/dev/sda');
  assert.equal(normalizeLocation('//dev///shadow/a'), '/dev/shadow/a');
  assert.equal(normalizeLocation('/..'), '/');
  assert.equal(normalizeLocation('nbd+unix:///e?socket=/run//m/./a.sock'), 'nbd+unix:///e?socket=/run/m/a.sock');
  assert.equal(normalizeLocation(normalizeLocation('nbd+unix:///e%20x?socket=/r/a%2Bb')), 'nbd+unix:///e%20x?socket=/r/a%2Bb', 'normal form is stable');
});

test('prefixes: absolute paths keep their trailing slash; relative ones are refused at start', () => {
  assert.equal(normalizePrefix('/dev//shadow/'), '/dev/shadow/');
  assert.equal(normalizePrefix('nbds://'), 'nbds://');
  assert.throws(() => normalizePrefix('dev/shadow/'), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  assert.throws(() => normalizePrefix(''), (e) => isEngineError(e, 'ENG_INVALID_ARGUMENT'));
  const exactUri = new LocationPolicy([], ['nbd://h:1/x?opt=1']);
  assert.equal(exactUri.check('nbd://h:1/x?opt=1'), 'nbd://h:1/x?opt=1', 'an allowed entry given exactly passes as given');
  assert.throws(() => exactUri.check('nbd://h:1/x?opt=1&socket=/x'), (e) => isEngineError(e, 'ENG_LOCATION_NOT_ALLOWED'));
  const none = new LocationPolicy(['/a/b'], []);
  assert.equal(none.check('/a//b'), '/a/b', 'a start member in another spelling is that member');
  assert.throws(() => none.check('/a/c'), (e) => isEngineError(e, 'ENG_LOCATION_NOT_ALLOWED'));
});
