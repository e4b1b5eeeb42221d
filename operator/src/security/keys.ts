/**
 * Per-set secrets derived from the operator's one key: HMAC-SHA256(key, purpose + namespace/name/uid).
 * The operator can always compute a set's control token and PSKs again, so it never needs to read the
 * Secrets it creates (it has no get or list on Secrets); the set's uid makes a re-created set's keys new.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const MIN_KEY_BYTES = 32;
/** The identities in the PSK files (not secret; qemu calls it the username). */
export const MEMBER_PSK_IDENTITY = 'shadowset-member';
export const EXPORT_PSK_IDENTITY = 'shadowset-export';

export interface SetIdentity {
  namespace: string;
  name: string;
  uid: string;
}

export interface SetKeys {
  /** Bearer token of the engine's control API (64 hex characters). */
  controlToken: string;
  /** `identity:hexkey` line shared by the engine and its member servers. */
  memberPsk: string;
  /** `identity:hexkey` line for the export, for the set's consumers. */
  exportPsk: string;
}

const derive = (key: Buffer, purpose: string, s: SetIdentity) =>
  createHmac('sha256', key).update(`${purpose}:${s.namespace}/${s.name}/${s.uid}`).digest('hex');

export function deriveSetKeys(key: Buffer, s: SetIdentity): SetKeys {
  if (key.length < MIN_KEY_BYTES) throw new Error(`the operator key has ${key.length} bytes; at least ${MIN_KEY_BYTES} are required`);
  return {
    controlToken: derive(key, 'control-token', s),
    memberPsk: `${MEMBER_PSK_IDENTITY}:${derive(key, 'member-psk', s)}`,
    exportPsk: `${EXPORT_PSK_IDENTITY}:${derive(key, 'export-psk', s)}`,
  };
}

/** The operator's key: the file's bytes, surrounding whitespace trimmed; at least 32 bytes. */
export function readKeyFile(path: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw new Error(`--key-file ${path} cannot be read: ${(e as Error).message}`);
  }
  const key = Buffer.from(raw.toString('latin1').trim(), 'latin1');
  if (key.length < MIN_KEY_BYTES) throw new Error(`--key-file ${path} holds ${key.length} bytes; at least ${MIN_KEY_BYTES} are required`);
  return key;
}
