#!/usr/bin/env node
// Fails (exit 1) when the TypeScript modules of a source tree import each other in a loop, and names each
// loop. Part of `npm run lint`. Every import counts: type-only ones and dynamic import() too, since a loop
// of types or of a lazily loaded factory still means two modules that cannot be understood one without
// the other. Only relative imports are followed (a package cannot import itself by name here, and tsc's
// project references already refuse loops between packages).
//   node scripts/check-import-cycles.mjs [dir ...]   (default: every source tree of the repository)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const trees = process.argv.length > 2
  ? process.argv.slice(2)
  : ['engine/src', 'engine/itest', 'operator/src', 'e2e/src', 'e2e/scenarios/src', 'testkit/src', 'csi/src'];

function sources(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'dist' || name === 'node_modules') continue;
    if (statSync(p).isDirectory()) sources(p, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const files = trees.flatMap((t) => sources(resolve(root, t), []));
const known = new Set(files);
/** module → the modules of the same trees it imports (compiled .js specifiers name the .ts source). */
const graph = new Map(files.map((f) => {
  const { importedFiles } = ts.preProcessFile(readFileSync(f, 'utf8'), true, true);
  const deps = importedFiles
    .map((i) => i.fileName)
    .filter((s) => s.startsWith('.'))
    .map((s) => resolve(dirname(f), s.replace(/\.js$/, '.ts')))
    .filter((p) => known.has(p));
  return [f, [...new Set(deps)]];
}));

// Tarjan's strongly connected components: every component of more than one module (or a module that
// imports itself) is a loop.
const index = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const loops = [];
let next = 0;
function visit(v) {
  index.set(v, next);
  low.set(v, next++);
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v)) {
    if (!index.has(w)) {
      visit(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), index.get(w)));
  }
  if (low.get(v) !== index.get(v)) return;
  const component = [];
  for (let w = stack.pop(); ; w = stack.pop()) {
    onStack.delete(w);
    component.push(w);
    if (w === v) break;
  }
  if (component.length > 1 || graph.get(v).includes(v)) loops.push(component);
}
for (const f of files) if (!index.has(f)) visit(f);

if (loops.length > 0) {
  for (const c of loops) {
    const names = new Set(c);
    console.error(`import loop: ${c.map((f) => relative(root, f)).sort().join(', ')}`);
    for (const f of [...c].sort()) {
      const inLoop = graph.get(f).filter((d) => names.has(d)).map((d) => relative(root, d));
      console.error(`  ${relative(root, f)} imports ${inLoop.join(', ')}`);
    }
  }
  process.exit(1);
}
console.log(`no import loops among ${files.length} modules (${trees.join(', ')})`);
