import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';
import { chartValuesSchema } from './values.js';
import { chartValuesJsonSchema, renderChartValuesSchema } from './values-schema.js';

const chart = fileURLToPath(new URL('../../../charts/shadowset/', import.meta.url));
const valuesYaml = (): unknown => yaml.load(readFileSync(`${chart}values.yaml`, 'utf8'));

/** Dotted paths of every leaf (a scalar, an array, or an empty object). */
function leaves(v: unknown, prefix = ''): string[] {
  if (!v || typeof v !== 'object' || Array.isArray(v) || Object.keys(v).length === 0) return [prefix];
  return Object.entries(v).flatMap(([k, x]) => leaves(x, prefix ? `${prefix}.${k}` : k));
}

test('charts/shadowset/values.schema.json matches the zod schema (run `npm run gen` after changing values.ts)', () => {
  assert.equal(readFileSync(`${chart}values.schema.json`, 'utf8'), renderChartValuesSchema());
});

test('the JSON schema is draft-07 and refuses unknown keys at the top level', () => {
  const s = chartValuesJsonSchema();
  assert.equal(s.$schema, 'http://json-schema.org/draft-07/schema#');
  assert.equal(s.additionalProperties, false);
});

test('values.yaml parses against the zod schema, and its values are exactly the schema\'s defaults', () => {
  const parsed = chartValuesSchema.parse(valuesYaml());
  assert.deepEqual(parsed, chartValuesSchema.parse({}));
  // Same leaves both ways: nothing in values.yaml that the schema lacks a default for, and vice versa.
  assert.deepEqual(leaves(valuesYaml()).sort(), leaves(chartValuesSchema.parse({})).sort());
});

test('bad values are refused by the zod schema too', () => {
  for (const bad of [{ replicas: 'two' }, { logLevel: 'loud' }, { typo: 1 }, { engine: { maxCopies: 65 } }, { watchNamespace: 'UPPER' }]) {
    assert.equal(chartValuesSchema.safeParse(bad).success, false, JSON.stringify(bad));
  }
});

test('the chart README lists every value (or the object holding it)', () => {
  const readme = readFileSync(`${chart}README.md`, 'utf8');
  for (const key of leaves(chartValuesSchema.parse({}))) {
    const parts = key.split('.');
    const listed = parts.some((_, i) => readme.includes(`| \`${parts.slice(0, i + 1).join('.')}\``));
    assert.ok(listed, `README.md's values table lacks \`${key}\``);
  }
});
