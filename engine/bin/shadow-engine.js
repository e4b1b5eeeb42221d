#!/usr/bin/env -S node --max-semi-space-size=2
// The first line starts node with the engine's memory flag (engine/src/api/process-env.ts says why; a
// unit test keeps the two in step). `env -S` splits the line into words (GNU coreutils 8.30 or later).
import { main } from '../dist/cli/main.js';

main(process.argv.slice(2)).then(
  // A number means main is done (help, bad arguments, a start that failed): end here even if some
  // handle were left open, so a failed start never leaves a hung process.
  (code) => { if (typeof code === 'number') process.exit(code); },
  (err) => {
    process.stderr.write(`shadow-engine: ${err && err.message ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
