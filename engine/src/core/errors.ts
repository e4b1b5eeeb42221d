/**
 * Engine errors. Every error carries a stable `code`; edges (NBD, HTTP, CLI) map codes, never messages.
 */
export type EngineErrorCode =
  | 'ENG_INVALID_ARGUMENT'
  | 'ENG_OUT_OF_RANGE'
  | 'ENG_TOO_LARGE'
  | 'ENG_IO'
  | 'ENG_TIMEOUT'
  | 'ENG_NO_FULL_MEMBER'
  | 'ENG_FOREIGN_DATA'
  | 'ENG_OTHER_SET'
  | 'ENG_SET_MISMATCH'
  | 'ENG_MEMBER_TOO_SMALL'
  | 'ENG_METADATA_CORRUPT'
  | 'ENG_UNSUPPORTED'
  | 'ENG_SHUTTING_DOWN'
  | 'ENG_NOT_FOUND'
  | 'ENG_CONFLICT'
  | 'ENG_LAST_FULL_MEMBER'
  | 'ENG_MERGE_ACTIVE'
  | 'ENG_BITMAP_REQUIRED'
  | 'ENG_UNAUTHORIZED'
  | 'ENG_LOCATION_NOT_ALLOWED';

export class EngineError extends Error {
  readonly code: EngineErrorCode;
  constructor(code: EngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'EngineError';
  }
}

export function isEngineError(e: unknown, code?: EngineErrorCode): e is EngineError {
  return e instanceof EngineError && (code === undefined || e.code === code);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
