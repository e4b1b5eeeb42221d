// Which local program runs a container of the project's image. Processes are not in containers here, so a
// container's command must be mapped to something on this machine. The mapping is a small table keyed by
// program name; a container command matches an entry when
//   - command[0]'s base name is the entry's name             (`shadow-engine`, `/usr/local/bin/shadow-engine`), or
//   - command[0] is `node` and command[1]'s base name is `<name>.js` or `<name>.mjs`
//                                                             (`node /app/engine/bin/shadow-engine.js`).
// The matched entry runs as `node <script> <the rest of the command> <args>`. A container without a
// command runs the image's entrypoint, `shadow-engine`. To add an operator binary later, add a line below.
import { basename, join } from 'node:path';
import { repoRoot } from '../paths.js';

/** The project's image; any tag or digest. Containers of other images are only marked Running. */
export const PROJECT_IMAGE = 'ghcr.io/shadowset/shadowset';
/** What the image runs when a container has no command (its ENTRYPOINT). */
export const IMAGE_ENTRYPOINT = 'shadow-engine';

/** Program name → node script. Paths are absolute (derived from the repo root). */
export type CommandTable = Readonly<Record<string, string>>;

export const DEFAULT_COMMANDS: CommandTable = {
  'shadow-engine': join(repoRoot, 'engine', 'bin', 'shadow-engine.js'),
};

export function isProjectImage(image: string | undefined): boolean {
  if (!image) return false;
  const at = image.indexOf('@');
  const noDigest = at >= 0 ? image.slice(0, at) : image;
  const colon = noDigest.lastIndexOf(':');
  const repo = colon > noDigest.lastIndexOf('/') ? noDigest.slice(0, colon) : noDigest;
  return repo === PROJECT_IMAGE;
}

export interface LocalCommand {
  /** the executable to spawn (node) */
  file: string;
  argv: string[];
  /** the table entry that matched */
  program: string;
}

function stripExt(name: string): string {
  return name.replace(/\.(m?js)$/, '');
}

/** Maps a container's command and args to a local command, or explains why it cannot. */
export function resolveCommand(table: CommandTable, command: string[] | undefined, args: string[] | undefined):
  LocalCommand | { error: string } {
  const cmd = command && command.length > 0 ? command : [IMAGE_ENTRYPOINT];
  const rest = args ?? [];
  const first = cmd[0] ?? '';
  let program: string | undefined;
  let tail: string[];
  if (basename(first) === 'node' && cmd.length > 1) {
    const script = cmd[1] ?? '';
    program = /\.m?js$/.test(script) ? stripExt(basename(script)) : undefined;
    tail = cmd.slice(2);
  } else {
    program = basename(first);
    tail = cmd.slice(1);
  }
  const script = program !== undefined ? table[program] : undefined;
  if (program === undefined || script === undefined) {
    return { error: `no local program for command ${JSON.stringify(cmd)}; known: ${Object.keys(table).join(', ')}` };
  }
  return { file: process.execPath, argv: [script, ...tail, ...rest], program };
}
