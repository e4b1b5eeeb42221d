#!/usr/bin/env node
// Writes crds/*.yaml and the chart's copy from the zod schemas (operator/src/api, compiled), and the chart's
// values.schema.json from the zod schema of its values (operator/src/api/values.ts).
// --check: exit 1 if any generated file differs from what is on disk (CI uses the test instead).
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCrds, renderCrd } from '../dist/api/crd.js';
import { renderChartValuesSchema } from '../dist/api/values-schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const targets = [join(root, 'crds'), join(root, 'charts', 'shadowset', 'crds')];
const check = process.argv.includes('--check');
let drift = 0;
for (const { file, object } of buildCrds()) {
  const text = renderCrd(object);
  for (const dir of targets) {
    const path = join(dir, file);
    const old = existsSync(path) ? readFileSync(path, 'utf8') : null;
    if (old === text) continue;
    if (check) {
      console.error(`out of date: ${path.slice(root.length + 1)}`);
      drift++;
    } else {
      mkdirSync(dir, { recursive: true });
      writeFileSync(path, text);
      console.log(`wrote ${path.slice(root.length + 1)}`);
    }
  }
}
{
  const path = join(root, 'charts', 'shadowset', 'values.schema.json');
  const text = renderChartValuesSchema();
  const old = existsSync(path) ? readFileSync(path, 'utf8') : null;
  if (old !== text && check) {
    console.error(`out of date: ${path.slice(root.length + 1)}`);
    drift++;
  } else if (old !== text) {
    writeFileSync(path, text);
    console.log(`wrote ${path.slice(root.length + 1)}`);
  }
}
process.exit(drift ? 1 : 0);
