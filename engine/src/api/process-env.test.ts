import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ENGINE_NODE_FLAGS, engineProcessEnv } from './process-env.js';

const BIN = fileURLToPath(new URL('../../bin/shadow-engine.js', import.meta.url));

test('the command starts node with the engine flags, and runs when executed directly', async () => {
  const first = readFileSync(BIN, 'utf8').split('\n')[0];
  assert.equal(first, `#!/usr/bin/env -S node ${ENGINE_NODE_FLAGS.join(' ')}`);
  // Through its first line, as the image's entrypoint runs it: node must accept the flags.
  const out = await new Promise<string>((resolve, reject) => {
    execFile(BIN, ['--help'], { timeout: 30_000 }, (e, stdout) => (e ? reject(e) : resolve(stdout)));
  });
  assert.match(out, /^usage: shadow-engine serve/);
});

test('engineProcessEnv adds the flags after the caller\'s NODE_OPTIONS and keeps the rest', () => {
  assert.deepEqual(engineProcessEnv({ PATH: '/bin', UNSET: undefined }), { PATH: '/bin', NODE_OPTIONS: ENGINE_NODE_FLAGS.join(' ') });
  assert.equal(engineProcessEnv({ NODE_OPTIONS: '--enable-source-maps' }).NODE_OPTIONS, `--enable-source-maps ${ENGINE_NODE_FLAGS.join(' ')}`);
});
