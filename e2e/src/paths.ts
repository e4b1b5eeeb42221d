// Paths derived from this file's location (e2e/dist/paths.js once compiled), never from the machine.
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** The e2e workspace. */
export const e2eRoot = join(repoRoot, 'e2e');
