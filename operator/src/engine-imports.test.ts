// The operator imports the engine's API only: its schemas and the pure core modules they stand on, never
// the engine's runtime, adapters or logger. Checked on the module graph node actually loads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Engine modules (paths under engine/dist) that loading `entry` brings in. */
function engineModulesLoadedBy(entry: string): string[] {
  const hooks = `export async function resolve(s, c, next) {
    const r = await next(s, c);
    const i = r.url.indexOf('/engine/dist/');
    if (i >= 0) process.stderr.write('ENGINE-MODULE ' + r.url.slice(i + 13) + '\\n');
    return r;
  }`;
  const script = `import { register } from 'node:module';
    register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}));
    await import(${JSON.stringify(entry)});`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, cwd: fileURLToPath(new URL('.', import.meta.url)) });
  assert.equal(r.status, 0, r.stderr);
  return [...new Set(r.stderr.split('\n').flatMap((l) => (l.startsWith('ENGINE-MODULE ') ? [l.slice(14)] : [])))].sort();
}

test('the operator loads only the engine\'s API and the pure core modules it is built on', () => {
  const loaded = engineModulesLoadedBy(new URL('./index.js', import.meta.url).href);
  assert.ok(loaded.includes('api/index.js'), `the operator does use the engine API: ${loaded.join(', ')}`);
  assert.deepEqual(loaded.filter((m) => !m.startsWith('api/') && !m.startsWith('core/')), [], 'no engine runtime, adapter or CLI module');
});
