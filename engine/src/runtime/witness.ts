/**
 * The witness: the last generation this engine recorded on its members, kept in a small file beside it
 * (the engine pod's own volume survives a restart of its container). A restart whose members show an
 * older newest record knows the newest data is on a member it could not open, and refuses to go back in
 * time instead of starting from it.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { z } from 'zod/v3';

const witnessSchema = z.object({ setId: z.string(), generation: z.number().int().nonnegative() });

/** The generation last recorded for `setId`, or 0 (no file, another set's, or unreadable). */
export async function readWitness(file: string | undefined, setId: string): Promise<number> {
  if (!file) return 0;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return 0;
  }
  try {
    const w = witnessSchema.parse(JSON.parse(text));
    return w.setId === setId ? w.generation : 0;
  } catch {
    return 0;
  }
}

/** Record `generation` for `setId`: written beside, forced to stable storage, then renamed over the old file. */
export async function writeWitness(file: string, setId: string, generation: number): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify({ setId, generation }) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}
